//! The job: its states, the row as stored, and a validated request to create one.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Where a job is in its life. Stored as text in `jobs.status`.
///
/// - `Queued`: waiting for `run_at`. A worker's claim moves it to `Running`; a cancel moves it to `Cancelled`.
/// - `Running`: a worker holds its lease. The worker moves it to `Succeeded`, `Failed` or `Cancelled`, or back
///   to `Queued` for a retry; the rescuer moves it back to `Queued` (or `Failed`, when attempts are spent) once
///   the lease expires; a worker shutting down releases it to `Queued`.
/// - `Succeeded`, `Failed`, `Cancelled`: terminal. Nothing moves a job out of them; only deletion or pruning
///   removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status `{s}`: expected one of queued, running, succeeded, failed, cancelled")
            })
    }
}

/// A job as the status monitor shows it (lease internals and the payload are not part of it; the payload is
/// read only by the worker that claims the job).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub status: JobStatus,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub progress: Option<Value>,
    pub error: Option<Value>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the final monitor is POSTed when the job ends (DESIGN §12); never shown on the monitor.
    pub callback_url: Option<String>,
    /// Whose job it is (DESIGN §11); not shown on the monitor.
    pub tenant: String,
}

/// A validated request to create a job. Built only by [`NewJob::new`] and the API's parsing, so every field
/// is in range by the time it reaches the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub payload: Value,
    pub priority: i32,
    /// `None` means "now" by the database clock, so all replicas agree on what is due.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub idempotency: Option<Idempotency>,
    /// Whose job it is (DESIGN §11): the tenant of the key that submitted it.
    pub tenant: String,
    /// Where to POST the final monitor when the job ends, already checked against `[webhooks] allow`.
    pub callback_url: Option<String>,
}

/// An idempotency key with the caller it is scoped to and a fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotency {
    pub caller: String,
    pub key: String,
    pub fingerprint: String,
}

pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;
pub const DEFAULT_TIMEOUT_SECS: i32 = 300;

impl NewJob {
    /// A job of `kind` with `payload` and every other field at its default.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        NewJob {
            id: Uuid::now_v7(),
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            idempotency: None,
            tenant: crate::tenant::DEFAULT_TENANT.to_owned(),
            callback_url: None,
        }
    }
}
