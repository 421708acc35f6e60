//! Submitted jobs stored by a `serve` process, some of them already claimed by that process's idle
//! workers: one statement (one commit) stores the group, and the jobs given to the workers start without
//! the round trip of a notification and a claim, and without a second write of their rows. A claimed
//! row is what a claim ([`super::leases`]) would have made of it.

use std::time::Duration;

use sqlx::FromRow;

use super::leases::ClaimedJob;
use crate::job::{Job, NewJob};

/// A job as [`insert_many_started`] stored it.
#[derive(Debug)]
pub struct Stored {
    /// The job as it was accepted (`queued`, attempt 0: what the 202 shows, for every job alike).
    pub job: Job,
    /// Its claim, if it was stored started.
    pub claimed: Option<ClaimedJob>,
}

#[derive(FromRow)]
struct StoredRow {
    #[sqlx(flatten)]
    job: Job,
    lease_token: Option<uuid::Uuid>,
    claimed_payload: Option<String>,
}

/// Stores `jobs` (which carry no idempotency key) in one statement, in order; those whose `started` is
/// true already claimed for `worker_id` under a lease of `lease`, the others queued. It sends no
/// notification: tell the workers about the queued ones with [`super::notify::jobs_submitted`] once it
/// has committed.
pub async fn insert_many_started(
    db: impl sqlx::PgExecutor<'_>,
    jobs: &[NewJob],
    started: &[bool],
    lease: Duration,
    worker_id: &str,
) -> super::Result<Vec<Stored>> {
    debug_assert!(jobs.iter().all(|job| job.idempotency.is_none()));
    debug_assert_eq!(jobs.len(), started.len());
    let query = sqlx::query_as(
        "WITH inserted AS ( \
           INSERT INTO jobs (id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, \
                             callback_url, status, attempt, lease_token, lease_expires_at, worker_id, started_at) \
           SELECT id, kind, queue, payload, priority, coalesce(run_at, now()), max_attempts, timeout_secs, \
                  tenant, callback_url, \
                  CASE WHEN started THEN 'running' ELSE 'queued' END, \
                  CASE WHEN started THEN 1 ELSE 0 END, \
                  CASE WHEN started THEN gen_random_uuid() END, \
                  CASE WHEN started THEN now() + make_interval(secs => $12) END, \
                  CASE WHEN started THEN $13::text END, \
                  CASE WHEN started THEN now() END \
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[], $6::timestamptz[], \
                       $7::int4[], $8::int4[], $9::text[], $10::text[], $11::bool[]) \
                AS t(id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, \
                     callback_url, started) \
           RETURNING id, kind, queue, 'queued' AS status, priority, run_at, 0 AS attempt, max_attempts, \
             timeout_secs, progress, error, cancel_requested, created_at, updated_at, \
             NULL::timestamptz AS started_at, finished_at, callback_url, tenant, lease_token, \
             CASE WHEN lease_token IS NOT NULL THEN payload::text END AS claimed_payload) \
         SELECT * FROM inserted ORDER BY id",
    );
    let rows: Vec<StoredRow> = super::jobs::bind_columns(query, jobs)
        .bind(started)
        .bind(lease.as_secs_f64())
        .bind(worker_id)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let claimed = row
                .lease_token
                .zip(row.claimed_payload)
                .map(|(lease_token, payload)| ClaimedJob {
                    id: row.job.id,
                    kind: row.job.kind.clone(),
                    payload,
                    attempt: 1,
                    max_attempts: row.job.max_attempts,
                    timeout_secs: row.job.timeout_secs,
                    lease_token,
                    cancel_requested: false,
                    created_at: row.job.created_at,
                });
            Stored {
                job: row.job,
                claimed,
            }
        })
        .collect())
}
