//! Maintenance SQL, safe to run on every replica at once: each statement takes a bounded batch of rows
//! with `FOR UPDATE SKIP LOCKED`, so replicas split the work instead of queueing behind each other.
//!
//! It also refreshes the planner's statistics of `jobs` while the table grows fast
//! ([`analyze_if_grown`]).
//!
//! Rows picked that way are then written by `ctid`, as the claim does (see [`super::leases`]): a TID scan
//! is the one plan that stays right when the table's statistics are stale.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::attempt;
use crate::job::JobStatus;

/// A job the rescuer moved, and where to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rescued {
    pub id: Uuid,
    pub status: JobStatus,
    pub kind: String,
}

/// Queued and running jobs by kind, queue and status (at most `limit` groups), for the queue-depth gauge.
pub async fn queue_depth(
    pool: &PgPool,
    limit: i64,
) -> super::Result<Vec<(String, String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT kind, queue, status, count(*) FROM jobs WHERE status IN ('queued', 'running') \
         GROUP BY kind, queue, status ORDER BY count(*) DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Returns up to `limit` running jobs whose lease expired (their worker died or stalled, or, for external
/// workers, whose lease ran into the job's `timeout_secs`) to `queued`, or to `failed` when their attempts
/// are spent, or to `cancelled` when they were asked to stop. The error says which: a lost lease, or a
/// timeout when the attempt has run past `timeout_secs`. Wakes idle
/// workers when any job was requeued.
pub async fn rescue_expired(pool: &PgPool, limit: i64) -> super::Result<Vec<Rescued>> {
    let rescued: Vec<Rescued> = sqlx::query_as(
        "WITH expired AS ( \
           SELECT ctid FROM jobs WHERE status = 'running' AND lease_expires_at < now() \
           ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         rescued AS ( \
           UPDATE jobs j SET \
             status = CASE WHEN j.cancel_requested THEN 'cancelled' \
                           WHEN j.attempt >= j.max_attempts THEN 'failed' \
                           ELSE 'queued' END, \
             updated_at = now(), lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
             finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN now() END, \
             run_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN j.run_at \
                           ELSE now() END, \
             error = CASE WHEN j.started_at + make_interval(secs => j.timeout_secs) <= now() \
                 THEN $4::jsonb || jsonb_build_object('detail', format($5, j.attempt, j.timeout_secs)) \
                 ELSE $2::jsonb || jsonb_build_object('detail', format($3, j.attempt, j.max_attempts)) \
               END || jsonb_build_object( \
                 'attempt', j.attempt, \
                 'retryable', NOT (j.cancel_requested OR j.attempt >= j.max_attempts)) \
           WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM expired)) \
           RETURNING j.id, j.status, j.kind) \
         SELECT id, status, kind FROM rescued",
    )
    .bind(limit)
    .bind(attempt::lease_expired())
    .bind(attempt::LEASE_EXPIRED_DETAIL)
    .bind(attempt::timed_out_template())
    .bind(attempt::TIMED_OUT_DETAIL)
    .fetch_all(pool)
    .await?;
    if rescued.iter().any(|r| r.status == JobStatus::Queued) {
        super::notify::jobs_available(pool).await?;
    }
    Ok(rescued)
}

/// Deletes up to `limit` jobs that finished more than `retention` ago; their results go with them by
/// cascade. Returns how many were deleted.
pub async fn prune_finished(pool: &PgPool, retention: Duration, limit: i64) -> super::Result<u64> {
    let deleted = sqlx::query(
        "WITH old AS ( \
           SELECT ctid FROM jobs WHERE finished_at < now() - make_interval(secs => $1) \
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         DELETE FROM jobs WHERE ctid = ANY(ARRAY(SELECT ctid FROM old))",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Key of the advisory lock that lets one replica at a time refresh statistics.
const ANALYZE_LOCK: i64 = 0x6a6f_6264_6f63_6b01;
/// Below this many pages (8 KiB each) `jobs` is small enough for any plan.
const ANALYZE_MIN_PAGES: i32 = 16;

/// Runs `ANALYZE jobs` when the table has more than doubled since PostgreSQL last measured it. Returns
/// whether it did.
///
/// Why: a prepared statement keeps the generic plan it chose while `jobs` was small (a sequential scan
/// is right for a few pages), and PostgreSQL replans only when the table's statistics change. Autovacuum
/// refreshes them at most once a minute, so a new queue hit by a burst would scan its whole table on
/// every claim until then. Doubling as the trigger keeps the count of `ANALYZE` runs logarithmic in the
/// table's size; the advisory lock keeps replicas from running it together. A role that does not own
/// the table may not analyze it (PostgreSQL would only warn, every second), so it leaves this to
/// autovacuum.
pub async fn analyze_if_grown(pool: &PgPool) -> super::Result<bool> {
    // Checked outside a transaction: this runs every second and is almost always false.
    let grown: bool = sqlx::query_scalar(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int \
                  > greatest(2 * c.relpages, $1) \
                AND pg_has_role(c.relowner, 'USAGE') \
         FROM pg_class c WHERE c.oid = 'jobs'::regclass",
    )
    .bind(ANALYZE_MIN_PAGES)
    .fetch_one(pool)
    .await?;
    if !grown {
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(ANALYZE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if locked {
        sqlx::query("ANALYZE jobs").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(locked)
}
