//! The store's own error: what went wrong talking to PostgreSQL, sorted by what a caller can do about it.
//!
//! The store says nothing about HTTP: the API maps [`Error::Unavailable`] to 503 and [`Error::Rejected`]
//! to 400 (`api::problem`), the runtime retries writes that hit [`Error::Unavailable`].

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached, is shutting down, or asked for the statement to be tried again
    /// (serialization failure, deadlock): the same call can succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused a value as data (SQLSTATE class 22): the input is at fault, not the database.
    #[error("the database rejected a value: {0}")]
    Rejected(#[source] sqlx::Error),
    /// Any other database error: a bug or an unexpected state.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The database answered something the store's invariants rule out.
    #[error("the database returned an inconsistent answer: {0}")]
    Inconsistent(String),
}

impl Error {
    /// True when trying again later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// The SQLSTATE of a database error, if it is one.
    pub fn code(&self) -> Option<String> {
        match self {
            Error::Unavailable(err) | Error::Rejected(err) | Error::Database(err) => match err {
                sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
                _ => None,
            },
            Error::Inconsistent(_) => None,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Error::Unavailable(err),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // connection_exception, operator_intervention (admin shutdown, cannot connect now),
                // insufficient_resources (too many connections, disk full), transaction_rollback
                // (serialization failure, deadlock: the same statement can succeed when tried again).
                Some(code)
                    if ["08", "57", "53", "40"]
                        .iter()
                        .any(|class| code.starts_with(class)) =>
                {
                    Error::Unavailable(err)
                }
                Some(code) if code.starts_with("22") => Error::Rejected(err),
                _ => Error::Database(err),
            },
            _ => Error::Database(err),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
