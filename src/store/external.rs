//! The external workers' side of the queue (`/v1/worker/...`): claim with a lease of the worker's
//! choosing, heartbeat with progress, complete one job, and tell a lost lease from an unknown job.
//!
//! The same guarantees as the in-process runtime's (`super::leases`): one `SKIP LOCKED` claim statement,
//! every later write fenced by the lease token. On top, an external job's lease never runs past its
//! `timeout_secs` (the claim and every heartbeat cap it), and no write is accepted once that time is up:
//! the rescuer then ends the attempt as timed out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::leases::Lease;

/// A job claimed by an external worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExternalJob {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    /// As PostgreSQL prints it; the API parses it (see [`super::leases::ClaimedJob::payload`]).
    pub payload: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub lease_token: Uuid,
    pub lease_expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What to claim: up to `limit` due jobs of `kinds`, in `queues` when given.
#[derive(Debug, Clone, Copy)]
pub struct ExternalClaim<'a> {
    pub kinds: &'a [String],
    pub queues: Option<&'a [String]>,
    pub limit: i64,
    pub lease: Duration,
    pub worker_id: &'a str,
    /// Only this tenant's jobs; `None`: any tenant's.
    pub tenant: super::jobs::Visible<'a>,
    pub caps: &'a super::leases::TenantCaps,
}

/// Claims due jobs in priority order, in one statement that commits at once (the claim of
/// [`super::leases::claim_available`], fair share and tenant caps included, with a queue filter and the
/// lease capped by each job's timeout).
pub async fn claim(pool: &PgPool, claim: &ExternalClaim<'_>) -> super::Result<Vec<ExternalJob>> {
    let secs = i32::try_from(claim.lease.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let tenants = match claim.tenant {
        Some(tenant) => vec![tenant.to_owned()],
        None => super::leases::queued_tenants(pool, None).await?,
    };
    let query = sqlx::query_as(concat!(
        "WITH ",
        super::leases::fair_claim!(
            "$1",
            "$3",
            "$6",
            "$7",
            "$8",
            "AND ($2::text[] IS NULL OR queue = ANY($2))"
        ),
        " UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, lease_token = gen_random_uuid(), \
           lease_secs = $4, lease_expires_at = now() + make_interval(secs => least($4, j.timeout_secs)), \
           worker_id = $5, started_at = now(), updated_at = now(), progress = NULL, error = NULL \
         WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM next)) \
         RETURNING j.id, j.kind, j.queue, j.payload::text AS payload, j.attempt, j.max_attempts, \
           j.timeout_secs, j.lease_token, j.lease_expires_at, j.created_at, j.priority, j.run_at",
    ))
    .bind(claim.kinds)
    .bind(claim.queues)
    .bind(claim.limit)
    .bind(secs)
    .bind(claim.worker_id)
    .bind(&tenants)
    .bind(&claim.caps.names)
    .bind(&claim.caps.max_running);
    let jobs: Vec<ClaimRow> = if claim.caps.names.is_empty() {
        query.fetch_all(pool).await?
    } else {
        let mut tx = pool.begin().await?;
        super::leases::lock_capped_claims(&mut tx).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows
    };
    let mut jobs: Vec<(ExternalJob, i32, DateTime<Utc>)> = jobs
        .into_iter()
        .map(|row: ClaimRow| (row.job, row.priority, row.run_at))
        .collect();
    // RETURNING gives no order: hand them out in claim order.
    jobs.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.id.cmp(&b.0.id)));
    Ok(jobs.into_iter().map(|(job, _, _)| job).collect())
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    job: ExternalJob,
    priority: i32,
    run_at: DateTime<Utc>,
}

/// A held lease after a heartbeat.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Renewed {
    pub lease_expires_at: DateTime<Utc>,
    pub cancel_requested: bool,
}

/// Extends a lease by the job's own `lease_secs` (or `default_lease`), never past its timeout, and
/// records `progress` when given. `None` when the lease is not held (or the attempt has timed out).
pub async fn heartbeat(
    pool: &PgPool,
    lease: Lease,
    default_lease: Duration,
    progress: Option<&Value>,
) -> super::Result<Option<Renewed>> {
    Ok(sqlx::query_as(
        "UPDATE jobs SET \
           lease_expires_at = least(now() + make_interval(secs => coalesce(lease_secs, $3)), \
                                    started_at + make_interval(secs => timeout_secs)), \
           progress = coalesce($4, progress), \
           updated_at = CASE WHEN $4 IS NULL THEN updated_at ELSE now() END \
         WHERE id = $1 AND lease_token = $2 \
           AND started_at + make_interval(secs => timeout_secs) > now() \
         RETURNING lease_expires_at, cancel_requested",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(default_lease.as_secs_f64())
    .bind(progress)
    .fetch_optional(pool)
    .await?)
}

/// What [`complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// The job is `succeeded` with this result.
    Done,
    /// The same lease completed it before (a repeated call after a lost reply): nothing changed.
    AlreadyDone,
    /// The lease is not held: the job was rescued, timed out, ended otherwise, or belongs to another.
    LeaseLost,
    NotFound,
}

/// A job an external worker's upload completed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CompletedJob {
    pub id: Uuid,
    pub kind: String,
    /// Seconds from the claim to the completion.
    pub ran_secs: f64,
}

/// A result an external worker uploads.
#[derive(Debug, Clone)]
pub struct Upload {
    pub lease: Lease,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Marks jobs `succeeded` with their results, in one statement (one commit for many workers' calls),
/// each fenced by its lease token and its job's timeout. Returns the ids whose completion applied; ask
/// [`why_not_completed`] about the others. Each job may appear once.
///
/// Rows are locked in id order (the input is sorted), as every batched write of running jobs does, so two
/// batches never wait on each other in a circle.
pub async fn complete_many(pool: &PgPool, uploads: &[&Upload]) -> super::Result<Vec<CompletedJob>> {
    let mut uploads = uploads.to_vec();
    uploads.sort_by_key(|upload| upload.lease.id);
    Ok(sqlx::query_as(
        "WITH done AS ( \
           UPDATE jobs j SET status = 'succeeded', finished_at = now(), updated_at = now(), \
             lease_token = NULL, lease_expires_at = NULL, error = NULL \
           FROM unnest($1::uuid[], $2::uuid[]) AS t(id, token) \
           WHERE j.id = ANY(ARRAY[t.id]) AND j.lease_token = ANY(ARRAY[t.token]) \
             AND j.started_at + make_interval(secs => j.timeout_secs) > now() \
           RETURNING j.id, j.kind, extract(epoch FROM now() - j.started_at)::float8 AS ran_secs), \
         stored AS ( \
           INSERT INTO results (job_id, content_type, body, lease_token) \
           SELECT t.id, t.content_type, t.body, t.token \
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bytea[]) AS t(id, token, content_type, body) \
           JOIN done ON done.id = t.id \
           RETURNING job_id) \
         SELECT done.id, done.kind, done.ran_secs FROM stored JOIN done ON done.id = stored.job_id",
    )
    .bind(uploads.iter().map(|u| u.lease.id).collect::<Vec<_>>())
    .bind(uploads.iter().map(|u| u.lease.token).collect::<Vec<_>>())
    .bind(
        uploads
            .iter()
            .map(|u| u.content_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(uploads.iter().map(|u| u.body.as_slice()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?)
}

/// Why a completion did not apply: the same lease completed the job before, or the lease is lost, or
/// there is no such job.
pub async fn why_not_completed(pool: &PgPool, lease: Lease) -> super::Result<Completed> {
    let found: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT r.lease_token FROM jobs j LEFT JOIN results r ON r.job_id = j.id WHERE j.id = $1",
    )
    .bind(lease.id)
    .fetch_optional(pool)
    .await?;
    Ok(match found {
        None => Completed::NotFound,
        Some(Some(token)) if token == lease.token => Completed::AlreadyDone,
        Some(_) => Completed::LeaseLost,
    })
}

/// Where a lease stands, before an external worker's `fail` is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Held, on this attempt of a job of this kind.
    Held {
        attempt: i32,
        kind: String,
    },
    /// Not held (rescued, timed out, ended, or never this token's).
    Lost,
    NotFound,
}

/// Whether `lease` still holds its job, within the job's timeout.
pub async fn lease_state(pool: &PgPool, lease: Lease) -> super::Result<LeaseState> {
    let row: Option<(Option<Uuid>, i32, bool, String)> = sqlx::query_as(
        "SELECT lease_token, attempt, \
           coalesce(started_at + make_interval(secs => timeout_secs) > now(), false), kind \
         FROM jobs WHERE id = $1",
    )
    .bind(lease.id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => LeaseState::NotFound,
        Some((Some(token), attempt, true, kind)) if token == lease.token => {
            LeaseState::Held { attempt, kind }
        }
        Some(_) => LeaseState::Lost,
    })
}

/// Whether a job exists that `tenant` may see (for telling 404 from 409 after a fenced write changed
/// nothing, and another tenant's job from one's own).
pub async fn exists(
    pool: &PgPool,
    id: Uuid,
    tenant: super::jobs::Visible<'_>,
) -> super::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2))",
    )
    .bind(id)
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}
