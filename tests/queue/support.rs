//! Helpers for the queue tests: a migrated database, job builders, direct SQL probes, and handlers whose
//! timing the test controls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobdock::job::NewJob;
use jobdock::kinds::{Handler, JobContext, JobError, Output};
use jobdock::store::leases::{self, ClaimedJob, Completion, Lease};
use jobdock::worker::WorkerConfig;
use jobdock::{Job, JobStatus};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::common::{eventually, TestDatabase};

/// A fresh, migrated database and a pool on it. The pool is declared first, so it goes before the database
/// is dropped.
pub struct Db {
    pub pool: PgPool,
    _database: TestDatabase,
}

impl Db {
    pub fn url(&self) -> &str {
        &self._database.url
    }

    pub async fn new() -> Db {
        Db::with_connections(10).await
    }

    pub async fn with_connections(max_connections: u32) -> Db {
        let database = TestDatabase::create().await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&database.url)
            .await
            .expect("connect to test database");
        jobdock::store::db::migrate(&pool).await.expect("migrate");
        Db {
            pool,
            _database: database,
        }
    }
}

/// A job of `kind` with every field at its default.
pub fn new_job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({}))
}

/// Stores `jobs` and tells idle workers, as the API does.
pub async fn insert(pool: &PgPool, jobs: &[NewJob]) -> Vec<Job> {
    let stored = jobdock::store::jobs::insert_many(pool, jobs)
        .await
        .expect("insert jobs");
    let tenants: Vec<String> = stored.iter().map(|job| job.tenant.clone()).collect();
    jobdock::store::notify::jobs_submitted(pool, &tenants)
        .await
        .expect("notify");
    stored
}

pub async fn insert_one(pool: &PgPool, job: NewJob) -> Uuid {
    insert(pool, &[job]).await[0].id
}

pub fn kinds(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

pub async fn claim(pool: &PgPool, kind: &str, limit: i64, lease: Duration) -> Vec<ClaimedJob> {
    leases::claim_available(pool, &kinds(&[kind]), limit, lease, "test-worker")
        .await
        .expect("claim")
}

/// Claims exactly one job of `kind`; panics when there is none.
pub async fn claim_one(pool: &PgPool, kind: &str, lease: Duration) -> ClaimedJob {
    let mut claimed = claim(pool, kind, 1, lease).await;
    assert_eq!(claimed.len(), 1, "expected to claim one `{kind}` job");
    claimed.remove(0)
}

pub fn lease_of(job: &ClaimedJob) -> Lease {
    Lease {
        id: job.id,
        token: job.lease_token,
    }
}

pub fn completion(lease: Lease, body: &str) -> Completion {
    Completion {
        headers: None,
        lease,
        content_type: "text/plain".to_owned(),
        body: body.as_bytes().to_vec(),
    }
}

pub async fn get(pool: &PgPool, id: Uuid) -> Job {
    jobdock::store::jobs::get(pool, id, None)
        .await
        .expect("get job")
        .expect("job exists")
}

pub async fn status(pool: &PgPool, id: Uuid) -> JobStatus {
    get(pool, id).await.status
}

/// How many result rows job `id` has.
pub async fn results_of(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM results WHERE job_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count results")
}

/// The stored result body of job `id`, as text.
pub async fn result_body(pool: &PgPool, id: Uuid) -> String {
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM results WHERE job_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("result row");
    String::from_utf8(body).expect("utf-8 body")
}

/// The lease columns, which the `Job` the API sees leaves out.
#[derive(Debug, sqlx::FromRow)]
pub struct LeaseRow {
    pub lease_token: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
}

pub async fn lease_row(pool: &PgPool, id: Uuid) -> LeaseRow {
    sqlx::query_as("SELECT lease_token, lease_expires_at, worker_id FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("lease row")
}

/// Moves a running job's lease into the past, as if its worker had stalled for a whole lease.
/// Forces a running job's lease into the past and rescues it, until it is back in the queue. A heartbeat can
/// renew the lease in between, and a pool's own rescuer may win the race; either way the job ends queued.
pub async fn rescue_until_queued(pool: &PgPool, id: Uuid) -> bool {
    eventually(Duration::from_secs(10), || async {
        expire_lease(pool, id).await;
        jobdock::store::maintenance::rescue_expired(pool, 10)
            .await
            .expect("rescue");
        status(pool, id).await == JobStatus::Queued
    })
    .await
}

pub async fn expire_lease(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("expire lease");
}

/// The database clock, which every timestamp in the queue is written with.
pub async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .expect("now()")
}

/// A worker configuration for tests: a quick poll, the given lease and retry base.
pub fn config(slots: usize, lease: Duration, retry_base: Duration) -> WorkerConfig {
    WorkerConfig {
        slots,
        lease,
        poll_interval: Duration::from_millis(50),
        retry_base,
        worker_id: format!("queue-test-{}", &Uuid::new_v4().simple().to_string()[..8]),
        caps: Default::default(),
    }
}

/// True once the pool's LISTEN connection is up, so NOTIFY reaches it.
pub async fn listener_is_up(pool: &PgPool) -> bool {
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE '%LISTEN%jobdock_cancel%' \
           AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity");
    listening > 0
}

/// What a [`Gate`] job reports as it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started {
        id: Uuid,
        attempt: i32,
    },
    /// The context said stop (cancel, lost lease or shutdown).
    SawStop {
        id: Uuid,
    },
}

/// How a [`Gate`] job behaves once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Returns `Ok(tag)` when the gate opens; ignores the context (a stalled or stubborn worker).
    WaitForGate,
    /// Waits for the context's stop signal, reports it, then waits for the gate and returns `Ok(tag)`
    /// anyway (a worker that lost its lease and finishes regardless).
    SeeStopThenGate,
    /// Returns `Err(Cancelled)` as soon as the context says stop.
    HonourStop,
    /// Returns `Ok(tag)` at once.
    Immediate,
}

/// A handler whose timing the test controls: it reports `Started` on a channel, then behaves per `mode`.
/// The result body is `tag`, so a test can tell which worker's completion landed.
pub struct Gate {
    pub kind: &'static str,
    pub tag: &'static str,
    pub mode: GateMode,
    pub events: mpsc::UnboundedSender<Event>,
    pub gate: Arc<Notify>,
}

impl Gate {
    pub fn new(
        kind: &'static str,
        tag: &'static str,
        mode: GateMode,
    ) -> (Gate, mpsc::UnboundedReceiver<Event>, Arc<Notify>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        (
            Gate {
                kind,
                tag,
                mode,
                events,
                gate: gate.clone(),
            },
            receiver,
            gate,
        )
    }
}

#[async_trait]
impl Handler for Gate {
    fn kind(&self) -> &str {
        self.kind
    }

    async fn run(&self, ctx: JobContext, _payload: Value) -> Result<Output, JobError> {
        let id = ctx.id();
        let _ = self.events.send(Event::Started {
            id,
            attempt: ctx.attempt(),
        });
        match self.mode {
            GateMode::Immediate => {}
            GateMode::WaitForGate => self.gate.notified().await,
            GateMode::SeeStopThenGate => {
                ctx.cancelled().await;
                let _ = self.events.send(Event::SawStop { id });
                self.gate.notified().await;
            }
            GateMode::HonourStop => {
                ctx.cancelled().await;
                let _ = self.events.send(Event::SawStop { id });
                return Err(JobError::Cancelled);
            }
        }
        Ok(Output::bytes("text/plain", self.tag))
    }
}

/// Awaits the next event, failing the test after `timeout`.
pub async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>, timeout: Duration) -> Event {
    tokio::time::timeout(timeout, events.recv())
        .await
        .expect("timed out waiting for a handler event")
        .expect("handler event channel closed")
}

/// A handler that panics on its first attempt, and succeeds after.
pub struct PanicsOnce {
    pub panicked: AtomicBool,
}

#[async_trait]
impl Handler for PanicsOnce {
    fn kind(&self) -> &str {
        "panics"
    }

    async fn run(&self, ctx: JobContext, _payload: Value) -> Result<Output, JobError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("kaboom in job {}", ctx.id());
        }
        Ok(Output::bytes("text/plain", "fine"))
    }
}
