//! All SQL lives here, one concept per file, queries named entity–verb.
//!
//! - [`error`]: the store's error type, sorted by what a caller can do about it.
//! - [`api_keys`]: API keys (hashes only), their tenants and scopes.
//! - [`db`]: connecting, creating the database, migrations, readiness.
//! - [`lanes`]: pooled connections kept from one short read to the next, without the pool's ping.
//! - [`jobs`]: inserting, reading, listing, cancelling and deleting jobs (the API's side).
//! - [`forecast`]: run times, running counts and queue positions, for forecasts of when a job finishes.
//! - [`deliveries`]: webhook deliveries: claimed, retried, shown on the monitor.
//! - [`external`]: the external workers' claims, heartbeats and completions over HTTP.
//! - [`intake`]: a job stored and claimed in one commit by an idle `serve` process.
//! - [`kind_pauses`]: kinds paused by their upstream's back-pressure.
//! - [`leases`]: claiming, heartbeats, completion, failure and release (the workers' side, fenced by the
//!   lease token).
//! - [`maintenance`]: rescuing expired leases and pruning finished jobs.
//! - [`results`]: reading stored results.
//! - [`vacuum`]: `VACUUM` of jobdock's tables where autovacuum does not keep them bounded.
//! - [`notify`]: the LISTEN/NOTIFY channels that wake idle workers and running jobs.
//! - [`watch`]: jobs somebody waits for, whose changes are notified.

pub mod api_keys;
pub mod db;
pub mod deliveries;
pub mod error;
pub mod external;
pub mod forecast;
pub mod intake;
pub mod jobs;
pub mod kind_pauses;
pub mod lanes;
pub mod leases;
pub mod maintenance;
pub mod notify;
pub mod results;
pub mod vacuum;
pub mod watch;

/// The columns of a [`crate::job::Job`], in one place so every query returns the same shape.
macro_rules! job_columns {
    () => {
        "id, kind, queue, status, priority, run_at, attempt, max_attempts, timeout_secs, progress, \
         error, cancel_requested, created_at, updated_at, started_at, finished_at, callback_url, tenant"
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

pub use error::{Error, Result};
