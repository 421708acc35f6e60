//! Maintenance SQL, safe to run on every replica at once: each statement takes a bounded batch of rows
//! with `FOR UPDATE SKIP LOCKED`, so replicas split the work instead of queueing behind each other.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::job::JobStatus;

/// A job the rescuer moved, and where to.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Rescued {
    pub id: Uuid,
    pub status: JobStatus,
}

/// Returns up to `limit` running jobs whose lease expired (their worker died or stalled) to `queued`, or to
/// `failed` when their attempts are spent, or to `cancelled` when they were asked to stop. Wakes idle
/// workers when any job was requeued.
pub async fn rescue_expired(pool: &PgPool, limit: i64) -> Result<Vec<Rescued>, sqlx::Error> {
    let rescued: Vec<Rescued> = sqlx::query_as(
        "WITH expired AS ( \
           SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < now() \
           ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         next AS ( \
           SELECT j.id, CASE WHEN j.cancel_requested THEN 'cancelled' \
                             WHEN j.attempt >= j.max_attempts THEN 'failed' \
                             ELSE 'queued' END AS status \
           FROM jobs j JOIN expired USING (id)), \
         rescued AS ( \
           UPDATE jobs j SET status = next.status, updated_at = now(), \
             lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
             finished_at = CASE WHEN next.status = 'queued' THEN NULL ELSE now() END, \
             run_at = CASE WHEN next.status = 'queued' THEN now() ELSE j.run_at END, \
             error = jsonb_build_object( \
               'type', 'urn:jobdock:problem:lease-expired', \
               'title', 'The worker running this job stopped responding', \
               'detail', format('attempt %s of %s lost its lease (the worker crashed, was killed or stalled)', \
                                j.attempt, j.max_attempts), \
               'attempt', j.attempt, 'retryable', next.status = 'queued') \
           FROM next WHERE j.id = next.id \
           RETURNING j.id, j.status) \
         SELECT id, status FROM rescued",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if rescued.iter().any(|r| r.status == JobStatus::Queued) {
        super::notify::jobs_available(pool).await?;
    }
    Ok(rescued)
}

/// Deletes up to `limit` jobs that finished more than `retention` ago; their results go with them by
/// cascade. Returns how many were deleted.
pub async fn prune_finished(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "WITH old AS ( \
           SELECT id FROM jobs WHERE finished_at < now() - make_interval(secs => $1) \
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         DELETE FROM jobs j USING old WHERE j.id = old.id",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
