//! A job submitted to a `serve` process whose workers are idle with a free slot: stored already claimed
//! by that process, in one statement (one commit), so it starts without the round trip of a notification
//! and a claim. The row is what a claim ([`super::leases`]) would have made of it.

use std::time::Duration;

use sqlx::{FromRow, PgPool, Row};

use super::leases::ClaimedJob;
use crate::job::{Job, NewJob};

/// Stores `job` (which carries no idempotency key) already claimed for `worker_id` under a lease of
/// `lease`: one statement, one round trip, one commit. It returns the job as it was accepted (`queued`,
/// attempt 0: what the 202 shows, the state every other submission is answered with) and the claim. No
/// notification is sent: no other worker needs to look for it.
pub async fn insert_started(
    pool: &PgPool,
    job: &NewJob,
    lease: Duration,
    worker_id: &str,
) -> super::Result<(Job, ClaimedJob)> {
    debug_assert!(job.idempotency.is_none());
    let row = sqlx::query(
        "INSERT INTO jobs (id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, \
                           callback_url, status, attempt, lease_token, lease_expires_at, worker_id, started_at) \
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8, $9, $10, 'running', 1, gen_random_uuid(), \
                 now() + make_interval(secs => $11), $12, now()) \
         RETURNING id, kind, queue, 'queued' AS status, priority, run_at, 0 AS attempt, max_attempts, \
           timeout_secs, progress, error, cancel_requested, created_at, updated_at, \
           NULL::timestamptz AS started_at, finished_at, callback_url, tenant, \
           payload::text AS claimed_payload, lease_token",
    )
    .bind(job.id)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(job.timeout_secs)
    .bind(&job.tenant)
    .bind(&job.callback_url)
    .bind(lease.as_secs_f64())
    .bind(worker_id)
    .fetch_one(pool)
    .await?;
    let accepted = Job::from_row(&row)?;
    let claimed = ClaimedJob {
        id: accepted.id,
        kind: accepted.kind.clone(),
        payload: row.try_get("claimed_payload")?,
        attempt: 1,
        max_attempts: accepted.max_attempts,
        timeout_secs: accepted.timeout_secs,
        lease_token: row.try_get("lease_token")?,
        cancel_requested: false,
        created_at: accepted.created_at,
    };
    Ok((accepted, claimed))
}
