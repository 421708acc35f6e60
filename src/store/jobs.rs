//! Jobs as the API sees them: insert, get, list, cancel, delete.

use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::job_columns;
use crate::job::{Job, JobStatus, NewJob};

/// Whose jobs a caller may see: `Some(tenant)` for that tenant's only, `None` for every tenant's (an
/// `admin` key, or a server without keys). Another tenant's job is treated as if it did not exist.
pub type Visible<'a> = Option<&'a str>;

/// What inserting a job with an idempotency key found.
#[derive(Debug)]
pub enum Inserted {
    /// A new job was stored.
    Created(Job),
    /// The key was used before with the same request: this is that job.
    Existing(Job),
    /// The key was used before with a different request.
    KeyConflict,
}

/// Stores jobs in one statement (one commit), in order. It sends no notification: tell the workers with
/// [`super::notify::jobs_submitted`] once it has committed.
///
/// Jobs carrying an idempotency key are not allowed here; use [`insert_one`] for those.
pub async fn insert_many(
    db: impl sqlx::PgExecutor<'_>,
    jobs: &[NewJob],
) -> super::Result<Vec<Job>> {
    debug_assert!(jobs.iter().all(|job| job.idempotency.is_none()));
    // One statement, so one round trip and one commit.
    let query = sqlx::query_as(concat!(
        "WITH inserted AS (",
        "  INSERT INTO jobs (id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, ",
        "                    callback_url) ",
        "  SELECT id, kind, queue, payload, priority, coalesce(run_at, now()), max_attempts, timeout_secs, ",
        "         tenant, callback_url ",
        "  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[], $6::timestamptz[], ",
        "              $7::int4[], $8::int4[], $9::text[], $10::text[]) ",
        "       AS t(id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, ",
        "            callback_url) ",
        "  RETURNING ",
        job_columns!(),
        ") SELECT * FROM inserted ORDER BY id"
    ));
    bind_columns(query, jobs)
        .fetch_all(db)
        .await
        .map_err(Into::into)
}

/// Stores one job, honouring its idempotency key if it has one. Like [`insert_many`], it sends no
/// notification.
pub async fn insert_one(pool: &PgPool, job: &NewJob) -> super::Result<Inserted> {
    let Some(idem) = &job.idempotency else {
        let mut rows = insert_many(pool, std::slice::from_ref(job)).await?;
        return Ok(rows
            .pop()
            .map(Inserted::Created)
            .unwrap_or(Inserted::KeyConflict));
    };
    let created: Option<Job> = sqlx::query_as(concat!(
        "WITH inserted AS (",
        "  INSERT INTO jobs (id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, ",
        "                    idempotency_caller, idempotency_key, request_fingerprint, tenant, callback_url) ",
        "  VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8, $9, $10, $11, $12, $13) ",
        "  ON CONFLICT (idempotency_caller, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING ",
        "  RETURNING ",
        job_columns!(),
        ") SELECT * FROM inserted"
    ))
    .bind(job.id)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(job.timeout_secs)
    .bind(&idem.caller)
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .bind(&job.tenant)
    .bind(&job.callback_url)
    .fetch_optional(pool)
    .await?;
    if let Some(created) = created {
        return Ok(Inserted::Created(created));
    }
    // The key is taken. The conflicting row is committed (ON CONFLICT waited for it), so it is visible.
    let existing: Option<JobWithFingerprint> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        ", request_fingerprint FROM jobs WHERE idempotency_caller = $1 AND idempotency_key = $2"
    ))
    .bind(&idem.caller)
    .bind(&idem.key)
    .fetch_optional(pool)
    .await?;
    match existing {
        Some(found) if found.request_fingerprint.as_deref() == Some(idem.fingerprint.as_str()) => {
            Ok(Inserted::Existing(found.job))
        }
        Some(_) => Ok(Inserted::KeyConflict),
        // The other job was deleted between our insert and our read: the key is free again.
        None => Box::pin(insert_one(pool, job)).await,
    }
}

/// What inserting a batch under one idempotency key found.
#[derive(Debug)]
pub enum BatchInserted {
    /// Every job was stored, in the order given.
    Created(Vec<Job>),
    /// The key was used before with the same batch: these are its jobs, in order.
    Existing(Vec<Job>),
    /// The key was used before with a different batch.
    KeyConflict,
}

/// Stores a batch whose jobs carry per-position idempotency keys derived from one client key (same
/// caller, same fingerprint): all of them in one transaction, or, when the keys are taken, the jobs
/// stored under them by the same batch before. Like [`insert_many`], it sends no notification.
pub async fn insert_many_keyed(
    pool: &PgPool,
    jobs: &[NewJob],
    caller: &str,
    keys: &[String],
    fingerprint: &str,
) -> super::Result<BatchInserted> {
    let mut tx = pool.begin().await?;
    let query = sqlx::query_as(concat!(
        "WITH inserted AS (",
        "  INSERT INTO jobs (id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, ",
        "                    idempotency_caller, idempotency_key, request_fingerprint, tenant, callback_url) ",
        "  SELECT id, kind, queue, payload, priority, coalesce(run_at, now()), max_attempts, timeout_secs, ",
        "         $11, key, $12, tenant, callback_url ",
        "  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[], $6::timestamptz[], ",
        "              $7::int4[], $8::int4[], $9::text[], $10::text[], $13::text[]) ",
        "       AS t(id, kind, queue, payload, priority, run_at, max_attempts, timeout_secs, tenant, ",
        "            callback_url, key) ",
        "  ON CONFLICT (idempotency_caller, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING ",
        "  RETURNING ",
        job_columns!(),
        ") SELECT * FROM inserted ORDER BY id"
    ));
    let created: Vec<Job> = bind_columns(query, jobs)
        .bind(caller)
        .bind(fingerprint)
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
    if created.len() == jobs.len() {
        tx.commit().await?;
        return Ok(BatchInserted::Created(created));
    }
    // Some keys are taken (ON CONFLICT waited for their rows to commit): this batch stores nothing.
    tx.rollback().await?;
    let existing: Vec<JobWithFingerprint> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        ", request_fingerprint FROM jobs WHERE idempotency_caller = $1 AND idempotency_key = ANY($2) \
         ORDER BY id"
    ))
    .bind(caller)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    let same = existing.len() == jobs.len()
        && existing
            .iter()
            .all(|found| found.request_fingerprint.as_deref() == Some(fingerprint));
    Ok(if same {
        BatchInserted::Existing(existing.into_iter().map(|found| found.job).collect())
    } else {
        BatchInserted::KeyConflict
    })
}

#[derive(sqlx::FromRow)]
struct JobWithFingerprint {
    #[sqlx(flatten)]
    job: Job,
    request_fingerprint: Option<String>,
}

/// One job by id, if `tenant` may see it (see [`Visible`]).
pub async fn get(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    tenant: Visible<'_>,
) -> super::Result<Option<Job>> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await
    .map_err(Into::into)
}

/// Several jobs by id in one statement: for each `(id, tenant)` asked, the job if that tenant may see it
/// (see [`Visible`]), in the order asked. Concurrent monitor reads share it (one round trip for many).
pub async fn get_each(
    db: impl sqlx::PgExecutor<'_>,
    wanted: &[(Uuid, Option<String>)],
) -> super::Result<Vec<Option<Job>>> {
    let ids: Vec<Uuid> = wanted.iter().map(|(id, _)| *id).collect();
    let rows: Vec<Job> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let by_id: std::collections::HashMap<Uuid, &Job> =
        rows.iter().map(|job| (job.id, job)).collect();
    Ok(wanted
        .iter()
        .map(|(id, tenant)| {
            by_id
                .get(id)
                .filter(|job| tenant.as_deref().is_none_or(|tenant| job.tenant == tenant))
                .map(|job| (*job).clone())
        })
        .collect())
}

/// Filters for [`list`]. `before` is the keyset cursor: only jobs with a smaller id (older) are returned.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Only this tenant's jobs; `None`: every tenant's.
    pub tenant: Option<String>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// How long a list query may run, in milliseconds.
macro_rules! list_timeout_ms {
    () => {
        "2000"
    };
}

/// The SQLSTATE of a statement cancelled by its `statement_timeout`.
pub const QUERY_CANCELED: &str = "57014";

/// The most jobs a page filtered by kind, queue or tenant looks at.
pub const LIST_WINDOW: i64 = 10_000;

/// A page of [`list`].
#[derive(Debug, Default)]
pub struct Listed {
    pub jobs: Vec<Job>,
    /// Set when the page looked at its whole window: the next page starts below this id, even if this
    /// one holds fewer jobs than asked for.
    pub window_end: Option<Uuid>,
}

/// Jobs newest first, filtered, at most `filter.limit` of them, within two seconds (else an error with
/// code [`QUERY_CANCELED`]).
///
/// Filters by kind, queue and tenant have no index: another index on the hot table would cost every job
/// version an entry (the `drain` lost about a third of its rate with two). Instead such a page looks at
/// the [`LIST_WINDOW`] newest jobs below its cursor, along the primary key, and says where it stopped
/// ([`Listed::window_end`]): the cost of a page is bounded whatever the table's size and however rare the
/// filtered jobs are.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> super::Result<Listed> {
    let windowed = filter.kind.is_some() || filter.queue.is_some() || filter.tenant.is_some();
    // A list is for people and dashboards: it may not hold a pooled connection for long.
    let mut tx = pool.begin().await?;
    sqlx::query(concat!(
        "SET LOCAL statement_timeout = ",
        list_timeout_ms!()
    ))
    .execute(&mut *tx)
    .await?;
    let window_end: Option<Uuid> = if windowed {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC OFFSET $2 LIMIT 1",
        )
        .bind(filter.before)
        .bind(LIST_WINDOW - 1)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        None
    };
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(concat!("SELECT ", job_columns!(), " FROM jobs WHERE true"));
    if let Some(end) = window_end {
        query.push(" AND id >= ").push_bind(end);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status);
    }
    if let Some(kind) = &filter.kind {
        query.push(" AND kind = ").push_bind(kind);
    }
    if let Some(queue) = &filter.queue {
        query.push(" AND queue = ").push_bind(queue);
    }
    if let Some(tenant) = &filter.tenant {
        query.push(" AND tenant = ").push_bind(tenant);
    }
    if let Some(before) = filter.before {
        query.push(" AND id < ").push_bind(before);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.limit);
    let jobs = query.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(Listed { jobs, window_end })
}

/// What a cancel request did.
#[derive(Debug)]
pub enum Cancelled {
    /// The job was queued and is now `cancelled`.
    Done(Job),
    /// The job was cancelled before.
    Already(Job),
    /// The job is running; it has been asked to stop.
    Requested(Job),
    /// The job already succeeded or failed.
    Finished(Job),
    NotFound,
}

/// Cancels a queued job at once, or flags a running one so its worker stops it.
pub async fn cancel(pool: &PgPool, id: Uuid, tenant: Visible<'_>) -> super::Result<Cancelled> {
    let updated: Option<Job> = sqlx::query_as(concat!(
        "UPDATE jobs SET ",
        "  status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, ",
        "  finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END, ",
        "  error = CASE WHEN status = 'queued' THEN $2::jsonb ELSE error END, ",
        "  cancel_requested = true, updated_at = now() ",
        "WHERE id = $1 AND status IN ('queued', 'running') AND ($3::text IS NULL OR tenant = $3) ",
        "RETURNING ",
        job_columns!()
    ))
    .bind(id)
    .bind(crate::attempt::cancelled_before_start())
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    match updated {
        Some(job) if job.status == JobStatus::Running => {
            // The flag is committed: the cancel has happened. The NOTIFY only makes the worker notice at
            // once; if it fails, the worker's next heartbeat reads the flag instead.
            if let Err(err) = super::notify::cancel_requested(pool, id).await {
                tracing::warn!(job = %id, error = %err, "cancel notification not sent; the next heartbeat will see it");
            }
            Ok(Cancelled::Requested(job))
        }
        Some(job) => Ok(Cancelled::Done(job)),
        None => Ok(match get(pool, id, tenant).await? {
            None => Cancelled::NotFound,
            Some(job) if job.status == JobStatus::Cancelled => Cancelled::Already(job),
            // Between our update and this read the job can only have moved to a terminal state.
            Some(job) => Cancelled::Finished(job),
        }),
    }
}

/// What a delete request did.
#[derive(Debug)]
pub enum Deleted {
    Done,
    /// The job is queued or running and was left alone.
    NotFinished(JobStatus),
    NotFound,
}

/// Removes a finished job and (by cascade) its result.
pub async fn delete(pool: &PgPool, id: Uuid, tenant: Visible<'_>) -> super::Result<Deleted> {
    let deleted = sqlx::query(
        "DELETE FROM jobs WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled') \
           AND ($2::text IS NULL OR tenant = $2)",
    )
    .bind(id)
    .bind(tenant)
    .execute(pool)
    .await?;
    if deleted.rows_affected() > 0 {
        return Ok(Deleted::Done);
    }
    let status: Option<JobStatus> = sqlx::query_scalar(
        "SELECT status FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(match status {
        None => Deleted::NotFound,
        Some(status) if status.is_terminal() => Box::pin(delete(pool, id, tenant)).await?,
        Some(status) => Deleted::NotFinished(status),
    })
}

type JobsQuery<'q, O = Job> = sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>;

/// Binds the columns of `jobs` as the arrays `$1` to `$10` of an `unnest` insert: id, kind, queue,
/// payload, priority, run_at, max_attempts, timeout_secs, tenant, callback_url.
pub(super) fn bind_columns<'q, O>(query: JobsQuery<'q, O>, jobs: &'q [NewJob]) -> JobsQuery<'q, O> {
    query
        .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.payload.clone()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.timeout_secs).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| j.callback_url.as_deref())
                .collect::<Vec<_>>(),
        )
}
