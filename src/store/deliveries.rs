//! Webhook deliveries: claimed by one replica at a time under a short lease, retried with backoff, and the
//! state the status monitor shows. Rows are queued by a trigger when a job with a callback ends.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A delivery due now, claimed for [`CLAIM_SECS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The bytes fixed at the first attempt (`None` before it).
    pub body: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// How long a claimed delivery stays out of other replicas' reach; after a crash it is retried then.
pub const CLAIM_SECS: i64 = 60;

/// Claims up to `limit` due deliveries (SKIP LOCKED: replicas never claim the same one), counting the
/// attempt and pushing `next_at` out, so that it is retried if this process dies mid-attempt.
pub async fn claim_due(pool: &PgPool, limit: i64) -> super::Result<Vec<Due>> {
    sqlx::query_as(
        "UPDATE deliveries d SET attempts = d.attempts + 1, \
                next_at = now() + make_interval(secs => $2) \
         FROM (SELECT id FROM deliveries WHERE state = 'pending' AND next_at <= now() \
               ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE d.id = due.id \
         RETURNING d.id, d.job_id, d.url, d.attempts, d.body, d.created_at",
    )
    .bind(limit)
    .bind(CLAIM_SECS as f64)
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: done.
    Delivered { status: i32 },
    /// 410 Gone: the receiver asked for no more.
    Stopped { status: i32 },
    /// Try again at `next_at` (another status, or no answer).
    Retry {
        status: Option<i32>,
        error: String,
        next_at: DateTime<Utc>,
    },
    /// Given up (a day of retries spent, or nothing to send).
    Failed { status: Option<i32>, error: String },
}

/// Records an attempt's outcome, and the body sent if this was the first attempt.
pub async fn record(pool: &PgPool, id: Uuid, body: &[u8], outcome: &Outcome) -> super::Result<()> {
    let (state, status, error, next_at) = match outcome {
        Outcome::Delivered { status } => ("delivered", Some(*status), None, None),
        Outcome::Stopped { status } => ("stopped", Some(*status), None, None),
        Outcome::Retry {
            status,
            error,
            next_at,
        } => ("pending", *status, Some(error.as_str()), Some(*next_at)),
        Outcome::Failed { status, error } => ("failed", *status, Some(error.as_str()), None),
    };
    sqlx::query(
        "UPDATE deliveries SET state = $2, last_status = $3, last_error = $4, \
                next_at = coalesce($5, next_at), body = coalesce(body, $6), \
                finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(status)
    .bind(error)
    .bind(next_at)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// A job's delivery as the monitor shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryState {
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
}

/// The delivery of job `job_id`, once its job has ended.
pub async fn state_of(pool: &PgPool, job_id: Uuid) -> super::Result<Option<DeliveryState>> {
    sqlx::query_as("SELECT state, attempts, last_status FROM deliveries WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .map_err(Into::into)
}

/// Deletes finished deliveries older than `older_than_secs`, at most `limit` of them.
pub async fn prune(pool: &PgPool, older_than_secs: f64, limit: i64) -> super::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM deliveries WHERE id IN ( \
           SELECT id FROM deliveries WHERE finished_at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind(older_than_secs)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
