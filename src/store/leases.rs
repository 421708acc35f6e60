//! The workers' side of the queue: claim, heartbeat, progress, complete, fail, release.
//!
//! Every write after the claim is fenced by the lease token: it applies only while the job is still
//! `running` under the same token. A worker whose lease expired and was rescued (so the token changed or was
//! cleared) cannot complete, fail, heartbeat or report progress for the job any more.
//!
//! Batched fenced writes join `unnest($ids, $tokens)` to `jobs`, and the only plan that stays good at every
//! table size is a primary-key lookup per job. They spell the match `j.id = ANY(ARRAY[t.id]) AND
//! j.lease_token = ANY(ARRAY[t.token])` because that form can drive an index scan but cannot be hashed,
//! which leaves PostgreSQL no other plan. `EXPLAIN ANALYZE` under `plan_cache_mode = force_generic_plan`
//! showed what the natural spellings cost:
//! - `j.id = t.id AND j.lease_token = t.token`: a hash join over a sequential scan of `jobs` once the
//!   batch is large next to the table (twice the time at 500 jobs in a 30,000-row table);
//! - adding `j.id = ANY($ids)`: a nested loop with a join filter, quadratic in the batch (106 ms instead
//!   of 3 ms for 500 completions);
//! - adding `j.status = 'running'`: a hash join over a bitmap scan of the partial index on running jobs,
//!   which visits every job that has run since the last vacuum. The token is enough: a constraint keeps
//!   tokens on running jobs only.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::notify_jobs_channel;
use crate::job::JobStatus;

/// A job a worker has claimed, with the lease that lets it write the outcome.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub kind: String,
    /// The payload as PostgreSQL prints it, parsed by the executor: a payload that cannot be parsed back
    /// fails its own job instead of every claim that returns it.
    pub payload: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub lease_token: Uuid,
    pub cancel_requested: bool,
    /// When the job was submitted (for `jobdock_job_wait_seconds`).
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Claims up to `limit` due jobs of the given kinds, in priority order, in one statement that commits at once.
///
/// The CTE picks rows with `FOR UPDATE SKIP LOCKED` (so concurrent workers never take the same job and never
/// wait on each other) and the `UPDATE` flips exactly those rows; without the CTE the planner may update
/// more rows than the limit. The `UPDATE` finds them by `ctid`: a TID scan is always chosen, whereas a
/// lookup by id let a prepared statement's plan, made while `jobs` was small and kept as it grew, scan
/// the whole table on every claim. The locked rows cannot move before the `UPDATE` reads them; one whose
/// newest version our snapshot cannot see is skipped and stays `queued` for the next claim.
pub async fn claim_available(
    pool: &PgPool,
    kinds: &[String],
    limit: i64,
    lease: Duration,
    worker_id: &str,
) -> super::Result<Vec<ClaimedJob>> {
    let tenants = queued_tenants(pool, None).await?;
    let claim = Claim {
        kinds,
        limit,
        lease,
        worker_id,
        caps: TenantCaps::none(),
        tenants: &tenants,
    };
    Ok(complete_and_claim(&mut *pool.acquire().await?, &[], &claim)
        .await?
        .claimed)
}

/// What [`complete_and_claim`] should claim.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub kinds: &'a [String],
    /// 0 claims nothing.
    pub limit: i64,
    pub lease: Duration,
    pub worker_id: &'a str,
    pub caps: &'a TenantCaps,
    /// The tenants to claim from (see [`queued_tenants`]).
    pub tenants: &'a [String],
}

/// `[tenants.NAME] max_running`: the most running jobs of each named tenant, across all replicas.
#[derive(Debug, Clone, Default)]
pub struct TenantCaps {
    pub names: Vec<String>,
    pub max_running: Vec<i64>,
}

impl TenantCaps {
    pub fn new(caps: impl IntoIterator<Item = (String, u32)>) -> TenantCaps {
        let (names, max_running) = caps
            .into_iter()
            .map(|(name, max)| (name, i64::from(max)))
            .unzip();
        TenantCaps { names, max_running }
    }

    pub fn none() -> &'static TenantCaps {
        static NONE: TenantCaps = TenantCaps {
            names: Vec::new(),
            max_running: Vec::new(),
        };
        &NONE
    }
}

/// The advisory lock that claims under tenant caps take in turn (an arbitrary constant: "jobdock" + 1).
const CAPPED_CLAIM_LOCK: i64 = 0x6a6f_6264_6f63_6b01;

/// Makes claims under tenant caps take turns across replicas (until `tx` ends), so two of them cannot both
/// see room for the same last slots of a tenant.
pub(crate) async fn lock_capped_claims(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> super::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CAPPED_CLAIM_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The tenants with queued jobs (all of them, or only `only`), by a loose scan of
/// `jobs_claimable_by_tenant`: one index probe per tenant.
///
/// Each probe walks the index entries of jobs claimed since the last vacuum, so this is not part of every
/// claim (inside the claim statement it cost the drain more than half its rate): the in-process runtime
/// keeps the answer until a notification or poll tick says something new may have arrived.
pub async fn queued_tenants(
    pool: &PgPool,
    only: super::jobs::Visible<'_>,
) -> super::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE found(tenant) AS ( \
           (SELECT tenant FROM jobs WHERE status = 'queued' AND ($1::text IS NULL OR tenant = $1) \
            ORDER BY tenant LIMIT 1) \
           UNION ALL \
           SELECT (SELECT j.tenant FROM jobs j WHERE j.status = 'queued' AND j.tenant > f.tenant \
                     AND ($1::text IS NULL OR j.tenant = $1) \
                   ORDER BY j.tenant LIMIT 1) \
           FROM found f WHERE f.tenant IS NOT NULL) \
         SELECT tenant FROM found WHERE tenant IS NOT NULL",
    )
    .bind(only)
    .fetch_all(pool)
    .await?)
}

/// The claim's choice of rows (the CTEs `active`, `candidates` and `next`), shared by the in-process and
/// the external claims. Arguments are the parameters holding the kinds, the limit, the tenants to claim
/// from (see [`queued_tenants`]), the capped tenants' names and caps, and extra SQL conditions.
///
/// Fair share: each tenant gives up to `limit` of its claimable rows in claim order, and the claim takes
/// them in turns (each tenant's first, then each one's second, ...). One tenant's burst therefore cannot
/// starve another, and with one tenant the claim is what it always was. A capped tenant gives no more
/// than its room under `max_running`.
macro_rules! fair_claim {
    ($kinds:literal, $limit:literal, $tenants:literal, $cap_names:literal, $cap_max:literal, $extra:literal) => {
        concat!(
            "active AS ( \
               SELECT t.tenant, CASE WHEN cap.max IS NULL THEN ",
            $limit,
            "::int8 \
                 ELSE least(",
            $limit,
            "::int8, greatest(0, cap.max - (SELECT count(*) FROM jobs r \
                   WHERE r.status = 'running' AND r.tenant = t.tenant))) END AS room \
               FROM unnest(",
            $tenants,
            "::text[]) AS t(tenant) \
               LEFT JOIN unnest(",
            $cap_names,
            "::text[], ",
            $cap_max,
            "::int8[]) \
                 AS cap(tenant, max) ON cap.tenant = t.tenant), \
             candidates AS ( \
               SELECT c.ctid, c.priority, c.run_at, c.id, row_number() OVER ( \
                 PARTITION BY a.tenant ORDER BY c.priority DESC, c.run_at, c.id) AS turn \
               FROM active a CROSS JOIN LATERAL ( \
                 SELECT ctid, priority, run_at, id FROM jobs \
                 WHERE tenant = a.tenant AND status = 'queued' AND run_at <= now() \
                   AND kind = ANY(",
            $kinds,
            ") ",
            $extra,
            " \
                 ORDER BY priority DESC, run_at, id \
                 LIMIT a.room \
                 FOR UPDATE SKIP LOCKED) c), \
             next AS ( \
               SELECT ctid FROM candidates ORDER BY turn, priority DESC, run_at, id LIMIT ",
            $limit,
            ")"
        )
    };
}
pub(crate) use fair_claim;

/// What [`complete_and_claim`] did.
#[derive(Debug, Default)]
pub struct Step {
    /// The completions that applied; the others had lost their lease.
    pub completed: Vec<Uuid>,
    /// In claim order: priority, then `run_at`, then id.
    pub claimed: Vec<ClaimedJob>,
}

/// One row of [`complete_and_claim`]'s answer: a completed id, or a claimed job.
struct StepRow {
    completed: bool,
    id: Uuid,
    kind: Option<String>,
    payload: Option<String>,
    attempt: Option<i32>,
    max_attempts: Option<i32>,
    timeout_secs: Option<i32>,
    lease_token: Option<Uuid>,
    cancel_requested: Option<bool>,
    priority: Option<i32>,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Decoded by position (the statement's select list, in order), not by name: looking each column up by
/// name for every one of 500 rows a statement was a tenth of a draining worker's CPU.
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for StepRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(StepRow {
            completed: row.try_get(0)?,
            id: row.try_get(1)?,
            kind: row.try_get(2)?,
            payload: row.try_get(3)?,
            attempt: row.try_get(4)?,
            max_attempts: row.try_get(5)?,
            timeout_secs: row.try_get(6)?,
            lease_token: row.try_get(7)?,
            cancel_requested: row.try_get(8)?,
            priority: row.try_get(9)?,
            run_at: row.try_get(10)?,
            created_at: row.try_get(11)?,
        })
    }
}

/// The statement of [`complete_and_claim`], with `$next` the CTEs that choose the rows to claim.
macro_rules! complete_and_claim_sql {
    ($next:expr) => {
        concat!(
        "WITH done AS ( \
           UPDATE jobs j SET status = 'succeeded', finished_at = now(), updated_at = now(), \
             lease_token = NULL, lease_expires_at = NULL, error = NULL \
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $9::jsonb[]) \
             AS input(id, token, content_type, body, headers) \
           WHERE j.id = ANY(ARRAY[input.id]) AND j.lease_token = ANY(ARRAY[input.token]) \
           RETURNING j.id, input.content_type, input.body, input.headers), \
         stored AS ( \
           INSERT INTO results (job_id, content_type, body, headers) \
           SELECT id, content_type, body, headers FROM done \
           RETURNING job_id), ",
        $next,
        ", \
         claimed AS ( \
           UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, lease_token = gen_random_uuid(), \
             lease_expires_at = now() + make_interval(secs => $7), worker_id = $8, started_at = now(), \
             updated_at = now(), error = NULL \
           WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM next)) \
           RETURNING j.id, j.kind, j.payload::text AS payload, j.attempt, j.max_attempts, j.timeout_secs, \
             j.lease_token, j.cancel_requested, j.priority, j.run_at, j.created_at) \
         SELECT true AS completed, job_id AS id, NULL::text AS kind, NULL::text AS payload, \
           NULL::int4 AS attempt, NULL::int4 AS max_attempts, NULL::int4 AS timeout_secs, \
           NULL::uuid AS lease_token, NULL::bool AS cancel_requested, NULL::int4 AS priority, \
           NULL::timestamptz AS run_at, NULL::timestamptz AS created_at \
         FROM stored \
         UNION ALL \
         SELECT false, id, kind, payload, attempt, max_attempts, timeout_secs, lease_token, \
           cancel_requested, priority, run_at, created_at \
         FROM claimed",
        )
    };
}

/// One tenant and no caps (the usual case): the claim without turns. Taking turns costs a window sort of
/// the candidates, which a single tenant does not need.
const STEP_ONE_TENANT: &str = complete_and_claim_sql!(
    "next AS ( \
       SELECT ctid FROM jobs \
       WHERE tenant = ($10::text[])[1] AND status = 'queued' AND run_at <= now() AND kind = ANY($5) \
       ORDER BY priority DESC, run_at, id \
       LIMIT $6 \
       FOR UPDATE SKIP LOCKED)"
);
/// Several tenants, or caps: fair share (see [`fair_claim`]).
const STEP_FAIR: &str = complete_and_claim_sql!(fair_claim!("$5", "$6", "$10", "$11", "$12", ""));

/// Completes a batch of succeeded jobs and claims the next batch, in one statement: one round trip and one
/// commit where a worker would otherwise pay two. This is the worker's hot path.
///
/// Completion marks each job `succeeded` and stores its result, fenced by its lease token (a job whose
/// lease was lost is left alone and missing from [`Step::completed`]). The claim is the one described at
/// [`claim_available`]. The two parts cannot touch the same row: completion updates `running` rows, the
/// claim `queued` ones.
pub async fn complete_and_claim(
    conn: &mut sqlx::PgConnection,
    completions: &[Completion],
    claim: &Claim<'_>,
) -> super::Result<Step> {
    // Running rows are locked in id order by every batched write (heartbeats, completions, releases),
    // so two of them never wait on each other in a circle (a deadlock seen once in 40,000 jobs).
    let mut completions: Vec<&Completion> = completions.iter().collect();
    completions.sort_by_key(|c| c.lease.id);
    let sql = if claim.tenants.len() <= 1 && claim.caps.names.is_empty() {
        STEP_ONE_TENANT
    } else {
        STEP_FAIR
    };
    let query = sqlx::query_as(sql)
        .bind(completions.iter().map(|c| c.lease.id).collect::<Vec<_>>())
        .bind(
            completions
                .iter()
                .map(|c| c.lease.token)
                .collect::<Vec<_>>(),
        )
        .bind(
            completions
                .iter()
                .map(|c| c.content_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            completions
                .iter()
                .map(|c| c.body.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(claim.kinds)
        .bind(claim.limit)
        .bind(claim.lease.as_secs_f64())
        .bind(claim.worker_id)
        .bind(
            completions
                .iter()
                .map(|c| c.headers.as_ref())
                .collect::<Vec<_>>(),
        )
        .bind(claim.tenants)
        .bind(&claim.caps.names)
        .bind(&claim.caps.max_running);
    let rows: Vec<StepRow> = if claim.caps.names.is_empty() || claim.limit == 0 {
        query.fetch_all(&mut *conn).await?
    } else {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        lock_capped_claims(&mut tx).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows
    };
    let mut step = Step::default();
    // Claimed jobs with their place in claim order, sorted here rather than by the statement: a sort of
    // every returned row was PostgreSQL work the queue's ceiling does not do, on the two cores both share.
    let mut claimed: Vec<((i32, chrono::DateTime<chrono::Utc>), ClaimedJob)> = Vec::new();
    for row in rows {
        let id = row.id;
        if row.completed {
            step.completed.push(id);
            continue;
        }
        // The claim part of the statement fills every column (they are NOT NULL in `jobs`).
        let (
            Some(kind),
            Some(payload),
            Some(attempt),
            Some(max_attempts),
            Some(timeout_secs),
            Some(lease_token),
            Some(priority),
            Some(run_at),
            Some(created_at),
        ) = (
            row.kind,
            row.payload,
            row.attempt,
            row.max_attempts,
            row.timeout_secs,
            row.lease_token,
            row.priority,
            row.run_at,
            row.created_at,
        )
        else {
            return Err(super::Error::Inconsistent(format!(
                "claimed job {id} came back with missing columns"
            )));
        };
        let job = ClaimedJob {
            id,
            kind,
            payload,
            attempt,
            max_attempts,
            timeout_secs,
            lease_token,
            cancel_requested: row.cancel_requested.unwrap_or(false),
            created_at,
        };
        claimed.push(((priority, run_at), job));
    }
    claimed
        .sort_by(|((pa, ra), a), ((pb, rb), b)| pb.cmp(pa).then(ra.cmp(rb)).then(a.id.cmp(&b.id)));
    step.claimed = claimed.into_iter().map(|(_, job)| job).collect();
    Ok(step)
}

/// A lease to extend: the job and the token its worker holds.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub id: Uuid,
    pub token: Uuid,
}

/// A lease that is still held after a heartbeat, and whether its job was asked to stop.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Heartbeat {
    pub id: Uuid,
    pub cancel_requested: bool,
}

/// Extends every still-held lease in `leases` in one statement. A lease missing from the answer was lost
/// (rescued, or the job was deleted): its worker must stop.
pub async fn heartbeat_many(
    pool: &PgPool,
    leases: &[Lease],
    lease: Duration,
) -> super::Result<Vec<Heartbeat>> {
    let leases = in_id_order(leases);
    sqlx::query_as(
        "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3) \
         FROM unnest($1::uuid[], $2::uuid[]) AS t(id, token) \
         WHERE j.id = ANY(ARRAY[t.id]) AND j.lease_token = ANY(ARRAY[t.token]) \
         RETURNING j.id, j.cancel_requested",
    )
    .bind(leases.iter().map(|l| l.id).collect::<Vec<_>>())
    .bind(leases.iter().map(|l| l.token).collect::<Vec<_>>())
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// Records a running job's progress. Returns false when the lease is no longer held.
pub async fn set_progress(pool: &PgPool, lease: Lease, progress: &Value) -> super::Result<bool> {
    let updated = sqlx::query(
        "UPDATE jobs SET progress = $3, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(progress)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A succeeded job's outcome.
#[derive(Debug, Clone)]
pub struct Completion {
    pub lease: Lease,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Headers served with the result, as a JSON array of `[name, value]` pairs; `None` for none.
    pub headers: Option<Value>,
}

/// Marks jobs `succeeded` and stores their results, in one statement (so one transaction), fenced by each
/// job's lease token. Returns the ids whose completion applied; the others had lost their lease.
pub async fn complete_many(pool: &PgPool, completions: &[Completion]) -> super::Result<Vec<Uuid>> {
    let nothing = Claim {
        kinds: &[],
        limit: 0,
        lease: Duration::ZERO,
        worker_id: "",
        caps: TenantCaps::none(),
        tenants: &[],
    };
    Ok(
        complete_and_claim(&mut *pool.acquire().await?, completions, &nothing)
            .await?
            .completed,
    )
}

/// Ends an attempt that failed. A retryable failure with attempts left goes back to `queued`, due after
/// `retry_in`; a job that was asked to stop ends `cancelled` (with `cancelled_error`); anything else ends
/// `failed`. The error is kept on the job either way, so the status monitor shows each attempt's error.
/// The policy (delays, error shapes) is `crate::attempt`'s.
///
/// Returns the status the job moved to, or `None` when the lease was no longer held.
pub async fn fail_attempt(
    pool: &PgPool,
    lease: Lease,
    error: &Value,
    cancelled_error: &Value,
    retryable: bool,
    retry_in: Duration,
) -> super::Result<Option<JobStatus>> {
    let moved = sqlx::query_scalar(
        "WITH cur AS ( \
           SELECT id, CASE WHEN cancel_requested THEN 'cancelled' \
                           WHEN $4 AND attempt < max_attempts THEN 'queued' \
                           ELSE 'failed' END AS next \
           FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE) \
         UPDATE jobs j SET status = cur.next, updated_at = now(), \
           error = CASE WHEN cur.next = 'cancelled' THEN $6 ELSE $3 END, \
           lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
           run_at = CASE WHEN cur.next = 'queued' THEN now() + make_interval(secs => $5) ELSE j.run_at END, \
           finished_at = CASE WHEN cur.next = 'queued' THEN NULL ELSE now() END \
         FROM cur WHERE j.id = cur.id \
         RETURNING j.status",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(error)
    .bind(retryable)
    .bind(retry_in.as_secs_f64())
    .bind(cancelled_error)
    .fetch_optional(pool)
    .await?;
    Ok(moved)
}

/// Ends a running job as `cancelled` (its handler stopped on request). Returns false when the lease was
/// no longer held.
pub async fn cancel_running(pool: &PgPool, lease: Lease, error: &Value) -> super::Result<bool> {
    let updated = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', error = $3, finished_at = now(), updated_at = now(), \
           lease_token = NULL, lease_expires_at = NULL, worker_id = NULL \
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Gives jobs back to the queue at once (at shutdown), without spending an attempt, and wakes idle workers
/// in every replica. A job that was asked to stop ends `cancelled` instead. Returns the ids released.
pub async fn release_many(pool: &PgPool, leases: &[Lease]) -> super::Result<Vec<Uuid>> {
    let leases = in_id_order(leases);
    sqlx::query_scalar(concat!(
        "WITH released AS ( \
           UPDATE jobs j SET \
             status = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END, \
             finished_at = CASE WHEN j.cancel_requested THEN now() ELSE NULL END, \
             attempt = greatest(j.attempt - 1, 0), run_at = now(), updated_at = now(), \
             lease_token = NULL, lease_expires_at = NULL, worker_id = NULL \
           FROM unnest($1::uuid[], $2::uuid[]) AS t(id, token) \
           WHERE j.id = ANY(ARRAY[t.id]) AND j.lease_token = ANY(ARRAY[t.token]) \
           RETURNING j.id), \
         notified AS (SELECT pg_notify('",
        notify_jobs_channel!(),
        "', '')) \
         SELECT released.id FROM released, notified"
    ))
    .bind(leases.iter().map(|l| l.id).collect::<Vec<_>>())
    .bind(leases.iter().map(|l| l.token).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// `leases` sorted by job id: the order every batched write locks running rows in (see
/// [`complete_and_claim`]).
fn in_id_order(leases: &[Lease]) -> Vec<Lease> {
    let mut sorted = leases.to_vec();
    sorted.sort_by_key(|lease| lease.id);
    sorted
}
