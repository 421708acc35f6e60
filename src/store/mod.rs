//! All SQL lives here, one concept per file, queries named entity–verb.
//!
//! - [`db`]: connecting, creating the database, migrations, readiness.
//! - [`jobs`]: inserting, reading, listing, cancelling and deleting jobs (the API's side).
//! - [`leases`]: claiming, heartbeats, completion, failure and release (the workers' side, fenced by the
//!   lease token).
//! - [`maintenance`]: rescuing expired leases and pruning finished jobs.
//! - [`results`]: reading stored results.
//! - [`notify`]: the LISTEN/NOTIFY channels that wake idle workers and running jobs.

pub mod db;
pub mod jobs;
pub mod leases;
pub mod maintenance;
pub mod notify;
pub mod results;

/// The columns of a [`crate::job::Job`], in one place so every query returns the same shape.
macro_rules! job_columns {
    () => {
        "id, kind, queue, status, priority, run_at, attempt, max_attempts, timeout_secs, progress, \
         error, cancel_requested, created_at, updated_at, started_at, finished_at"
    };
}
pub(crate) use job_columns;

/// The channel that tells idle workers new jobs are due. The payload is empty: it is only a hint.
macro_rules! notify_jobs_channel {
    () => {
        "jobdock_jobs"
    };
}
pub(crate) use notify_jobs_channel;

/// How a database error should reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database cannot be reached or is shutting down: try again later (503).
    Unavailable,
    /// The input was rejected by the database as data (SQLSTATE class 22): the client's fault (400).
    BadData,
    /// Anything else: a bug or an unexpected state (500).
    Internal,
}

/// Sorts a database error into what the API should answer.
pub fn classify(err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => ErrorClass::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // connection_exception, operator_intervention (admin shutdown, cannot connect now),
            // insufficient_resources (too many connections, disk full).
            Some(code)
                if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") =>
            {
                ErrorClass::Unavailable
            }
            Some(code) if code.starts_with("22") => ErrorClass::BadData,
            // transaction_rollback (serialization failure, deadlock): the same statement can succeed
            // when tried again.
            Some(code) if code.starts_with("40") => ErrorClass::Unavailable,
            _ => ErrorClass::Internal,
        },
        _ => ErrorClass::Internal,
    }
}
