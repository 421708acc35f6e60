//! The scenarios. Each run gets a fresh database; baselines run on a fresh database of their own too.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::Args;
use jobdock::{Handler, JobContext, JobError, NewJob, Output, Registry};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::http;
use crate::pgbench::{self, Limit};
use crate::report::{percentiles, Report};
use crate::target::{BenchDatabase, JobdockProcess, Server};
use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long each run sends load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

impl Default for SubmitArgs {
    fn default() -> Self {
        SubmitArgs {
            concurrency: 32,
            seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Jobs enqueued before the workers start.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// `--workers` for the `jobdock worker` process; left out, it runs with its defaults (no flags).
    #[arg(long)]
    pub workers: Option<usize>,
}

impl Default for DrainArgs {
    fn default() -> Self {
        DrainArgs {
            jobs: 20_000,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PickupArgs {
    /// Jobs submitted one at a time.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
}

impl Default for PickupArgs {
    fn default() -> Self {
        PickupArgs { probes: 200 }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AgedArgs {
    /// Finished jobs (with results) in the table before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    pub finished: u64,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub pickup: PickupArgs,
}

impl Default for AgedArgs {
    fn default() -> Self {
        AgedArgs {
            finished: 1_000_000,
            drain: DrainArgs::default(),
            pickup: PickupArgs::default(),
        }
    }
}

/// What a closed-loop load run saw.
struct Load {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `concurrency` clients, each on its own keep-alive connection, send requests back to back for `seconds`;
/// client `c` sends `requests[(c + n * concurrency) % len]` as its `n`-th request. A response with status
/// `expect` counts as answered, anything else as an error.
async fn http_load(
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
    expect: u16,
    requests: Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for client in 0..concurrency {
        let requests = requests.clone();
        let mut connection = http::Connection::open(addr).await?;
        clients.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            let mut n = client;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match connection.send(&requests[n % requests.len()]).await {
                    Ok(status) if status == expect => {
                        ok += 1;
                        latencies.push(sent.elapsed());
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        // A broken connection is replaced; if that fails too, this client is done.
                        match http::Connection::open(addr).await {
                            Ok(fresh) => connection = fresh,
                            Err(_) => break,
                        }
                    }
                }
                n += concurrency;
            }
            (ok, errors, latencies)
        }));
    }
    let mut load = Load {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for client in clients {
        let (ok, errors, latencies) = client.await?;
        load.ok += ok;
        load.errors += errors;
        load.latencies.extend(latencies);
    }
    load.elapsed = started.elapsed();
    Ok(load)
}

/// The submit request every HTTP scenario sends: an `echo` job with an empty payload.
/// The real `jobdock serve` with its defaults but no workers: the API alone, as these scenarios measure.
async fn api_only(database: &BenchDatabase) -> anyhow::Result<JobdockProcess> {
    JobdockProcess::serve(database, &["--workers".to_owned(), "0".to_owned()]).await
}

fn submit_request(addr: SocketAddr) -> Arc<Vec<Vec<u8>>> {
    Arc::new(vec![http::post_json(
        addr,
        "/v1/jobs",
        r#"{"kind":"echo"}"#,
    )])
}

pub async fn submit(common: &Common, args: &SubmitArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "submit",
        json!({"concurrency": args.concurrency, "seconds": args.seconds}),
    );
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let server = api_only(&database).await?;
        let addr = server.addr()?;
        let requests = submit_request(addr);
        let load = http_load(addr, args.concurrency, args.seconds, 202, requests).await?;
        server.stop().await?;
        database.drop_database().await?;
        let baseline_db = BenchDatabase::create(&common.database_url).await?;
        let baseline = pgbench::run(
            &baseline_db.url,
            pgbench::INSERT,
            args.concurrency,
            Limit::Seconds(args.seconds),
        )?;
        baseline_db.drop_database().await?;
        let (p50, p99) = percentiles(load.latencies);
        report.add_run(json!({
            "accepted_per_sec": load.ok as f64 / load.elapsed.as_secs_f64(),
            "latency_p50_ms": p50, "latency_p99_ms": p99, "errors": load.errors,
            "pgbench_insert_tps": baseline.tps,
        }));
    }
    report.finish(&[(
        "submit_vs_pgbench_insert",
        "accepted_per_sec",
        "pgbench_insert_tps",
    )]);
    Ok(())
}

pub async fn submit_batch(common: &Common, args: &SubmitArgs) -> anyhow::Result<()> {
    let concurrency = args.concurrency.min(4);
    let mut report = Report::new(
        "submit_batch",
        json!({"concurrency": concurrency, "seconds": args.seconds, "batch": 1000}),
    );
    let batch: Value = json!({"jobs": vec![json!({"kind": "echo"}); 1000]});
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let server = api_only(&database).await?;
        let addr = server.addr()?;
        let requests = Arc::new(vec![http::post_json(
            addr,
            "/v1/jobs/batch",
            &batch.to_string(),
        )]);
        let load = http_load(addr, concurrency, args.seconds, 202, requests).await?;
        server.stop().await?;
        database.drop_database().await?;
        let baseline_db = BenchDatabase::create(&common.database_url).await?;
        let baseline = pgbench::run(
            &baseline_db.url,
            pgbench::INSERT_BATCH,
            concurrency,
            Limit::Seconds(args.seconds),
        )?;
        baseline_db.drop_database().await?;
        let (p50, p99) = percentiles(load.latencies);
        report.add_run(json!({
            "jobs_per_sec": load.ok as f64 * 1000.0 / load.elapsed.as_secs_f64(),
            "request_p50_ms": p50, "request_p99_ms": p99, "errors": load.errors,
            "pgbench_batch_insert_rows_per_sec": baseline.tps * 1000.0,
        }));
    }
    report.finish(&[(
        "submit_batch_vs_pgbench_batch_insert",
        "jobs_per_sec",
        "pgbench_batch_insert_rows_per_sec",
    )]);
    Ok(())
}

async fn enqueue_echo_jobs(pool: &PgPool, count: usize) -> anyhow::Result<()> {
    enqueue_jobs(pool, "echo", count).await
}

/// Inserts `count` jobs of `kind` with an empty payload, 1,000 per statement.
pub(crate) async fn enqueue_jobs(pool: &PgPool, kind: &str, count: usize) -> anyhow::Result<()> {
    let mut left = count;
    while left > 0 {
        let chunk: Vec<NewJob> = (0..left.min(1000))
            .map(|_| NewJob::new(kind, json!({})))
            .collect();
        left -= chunk.len();
        jobdock::store::jobs::insert_many(pool, &chunk).await?;
    }
    Ok(())
}

/// Vacuums and analyzes the freshly filled table before a drain is timed: otherwise autovacuum's pass
/// for the inserts (due at its next wake-up, anywhere in the next minute) sometimes lands inside a drain
/// that lasts about a second and takes one of the two cores from it, which made runs differ by 1.5x.
pub(crate) async fn settle_inserts(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    Ok(())
}

/// Watches a drain of pre-enqueued jobs for its end, on a [`BenchDatabase::observer`] connection.
pub(crate) struct DrainWatch {
    observer: sqlx::PgConnection,
    /// The job the queue hands out last (its order: priority, then `run_at`, then id): the queue cannot
    /// be empty while it is still queued.
    last: Option<uuid::Uuid>,
}

impl DrainWatch {
    /// Call after the jobs are enqueued and before the drain starts.
    pub(crate) async fn new(database: &BenchDatabase) -> anyhow::Result<DrainWatch> {
        let mut observer = database.observer().await?;
        let last = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority, run_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&mut observer)
        .await?;
        Ok(DrainWatch { observer, last })
    }

    /// Whether any job is still queued or running. While the last job in queue order is still queued, a
    /// primary-key lookup answers; only then does it look for any queued or running job (EXISTS stops at
    /// the first row). The watch must not load the database it measures: that search walks the index
    /// entries of every job claimed since the last vacuum, and asked every 10 ms from the start it took
    /// about 4% of the CPU of a drain, which the pgbench ceilings never pay.
    pub(crate) async fn pending(&mut self) -> anyhow::Result<bool> {
        if let Some(last) = self.last {
            let queued: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status = 'queued')",
            )
            .bind(last)
            .fetch_one(&mut self.observer)
            .await?;
            if queued {
                return Ok(true);
            }
            self.last = None;
        }
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued') \
                 OR EXISTS (SELECT 1 FROM jobs WHERE status = 'running')",
        )
        .fetch_one(&mut self.observer)
        .await?)
    }
}

/// Starts a measurement from a clean state: a checkpoint now, so one triggered by the setup's bulk writes
/// (a million aged rows write gigabytes of WAL) does not land in the middle of the run. Needs a superuser;
/// without one the run goes on, noisier.
pub(crate) async fn settle(pool: &PgPool) {
    if let Err(err) = sqlx::query("CHECKPOINT").execute(pool).await {
        tracing::warn!(error = %err, "CHECKPOINT failed; figures may include one");
    }
}

/// Drains `args.jobs` pre-enqueued jobs on `database` (which may hold other, finished jobs) with a real
/// `jobdock worker` process, timed from its start until the queue is empty; jobs/s.
pub(crate) async fn drain_once(database: &BenchDatabase, args: &DrainArgs) -> anyhow::Result<f64> {
    let pool = database.pool().await?;
    enqueue_echo_jobs(&pool, args.jobs).await?;
    settle_inserts(&pool).await?;
    settle(&pool).await;
    let flags: Vec<String> = match args.workers {
        Some(workers) => vec!["--workers".to_owned(), workers.to_string()],
        None => Vec::new(),
    };
    let mut watch = DrainWatch::new(database).await?;
    let started = Instant::now();
    let worker = JobdockProcess::worker(database, &flags)?;
    while watch.pending().await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    worker.stop().await?;
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE j.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = j.id)",
    )
    .fetch_one(&pool)
    .await?;
    if unfinished > 0 {
        bail!("{unfinished} succeeded jobs have no result");
    }
    pool.close().await;
    Ok(args.jobs as f64 / elapsed.as_secs_f64())
}

/// The fewest jobs the SQL-only ceiling drains.
const CEILING_MIN_JOBS: usize = 100_000;

/// The SQL-only ceiling: pgbench doing a drain's SQL in batches of 500 with 2 clients; jobs/s.
async fn drain_ceiling(common: &Common, jobs: usize) -> anyhow::Result<f64> {
    // At 500 jobs a transaction, 20,000 jobs are 20 transactions per client: too short a run for a stable
    // rate (it varied 37k–67k jobs/s between runs). Drain at least 100,000.
    let jobs = jobs.max(CEILING_MIN_JOBS);
    let database = BenchDatabase::create(&common.database_url).await?;
    let pool = database.pool().await?;
    enqueue_echo_jobs(&pool, jobs).await?;
    settle_inserts(&pool).await?;
    // Prepared as the drain is (see `drain_once`): after a checkpoint, the first change to each page
    // writes the whole page to the WAL, so a ceiling run without one did less work than the drain.
    settle(&pool).await;
    pool.close().await;
    drain_with_pgbench(database, pgbench::DRAIN_CEILING, jobs).await
}

/// Runs a drain `script` (500 jobs a transaction) with 2 pgbench clients over `jobs` queued jobs in
/// `database`, then drops it; jobs/s.
async fn drain_with_pgbench(
    database: BenchDatabase,
    script: &str,
    jobs: usize,
) -> anyhow::Result<f64> {
    let transactions = (jobs / 500 / 2).max(1) as u64;
    let figures = pgbench::run(&database.url, script, 2, Limit::Transactions(transactions))?;
    database.drop_database().await?;
    Ok(figures.tps * 500.0)
}

/// The design's ceiling: the same work as [`drain_ceiling`] on a minimal table (see
/// [`pgbench::MINIMAL_SCHEMA`]); jobs/s.
async fn drain_design_ceiling(common: &Common, jobs: usize) -> anyhow::Result<f64> {
    let jobs = jobs.max(CEILING_MIN_JOBS);
    let database = BenchDatabase::create(&common.database_url).await?;
    let pool = database.pool().await?;
    sqlx::raw_sql(pgbench::MINIMAL_SCHEMA)
        .execute(&pool)
        .await?;
    // Time-ordered ids, as jobdock's: random ones would scatter every index write (and its WAL).
    let mut left = jobs;
    while left > 0 {
        let ids: Vec<uuid::Uuid> = (0..left.min(10_000))
            .map(|_| uuid::Uuid::now_v7())
            .collect();
        left -= ids.len();
        sqlx::query(
            "INSERT INTO mini_jobs (id, status) SELECT id, 'queued' FROM unnest($1::uuid[]) AS t(id)",
        )
        .bind(&ids)
        .execute(&pool)
        .await?;
    }
    sqlx::query("VACUUM ANALYZE mini_jobs")
        .execute(&pool)
        .await?;
    settle(&pool).await;
    pool.close().await;
    drain_with_pgbench(database, pgbench::DRAIN_CEILING_DESIGN, jobs).await
}

pub async fn drain(common: &Common, args: &DrainArgs) -> anyhow::Result<()> {
    let mut report = Report::new("drain", json!({"jobs": args.jobs, "workers": args.workers}));
    for _ in 0..common.runs {
        // The SQL ceiling is measured just before and just after the drain, and their mean is the
        // run's ceiling: on this shared machine the same pgbench run varied by a quarter from one minute
        // to the next, and a single ceiling measured after the drain made the ratio swing with it.
        let ceiling_before = drain_ceiling(common, args.jobs).await?;
        let database = BenchDatabase::create(&common.database_url).await?;
        let jobs_per_sec = drain_once(&database, args).await?;
        database.drop_database().await?;
        let ceiling_after = drain_ceiling(common, args.jobs).await?;
        let design = drain_design_ceiling(common, args.jobs).await?;
        report.add_run(json!({
            "jobs_per_sec": jobs_per_sec,
            "sql_ceiling_jobs_per_sec": (ceiling_before + ceiling_after) / 2.0,
            "sql_ceiling_before_jobs_per_sec": ceiling_before,
            "sql_ceiling_after_jobs_per_sec": ceiling_after,
            "design_ceiling_jobs_per_sec": design,
        }));
    }
    report.finish(&[
        (
            "drain_vs_sql_ceiling",
            "jobs_per_sec",
            "sql_ceiling_jobs_per_sec",
        ),
        (
            "drain_vs_design_ceiling",
            "jobs_per_sec",
            "design_ceiling_jobs_per_sec",
        ),
        (
            "sql_ceiling_vs_design_ceiling",
            "sql_ceiling_jobs_per_sec",
            "design_ceiling_jobs_per_sec",
        ),
    ]);
    Ok(())
}

/// The largest resident memory of process `pid` seen until `stop`, sampled every 50 ms, in MiB.
async fn max_rss_while(pid: Option<u32>, stop: tokio_util::sync::CancellationToken) -> f64 {
    let mut max: f64 = 0.0;
    let Some(pid) = pid else { return max };
    while !stop.is_cancelled() {
        if let Some(rss) = crate::target::rss_mib(pid) {
            max = max.max(rss);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    max
}

pub async fn e2e(common: &Common, args: &SubmitArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "e2e",
        json!({"concurrency": args.concurrency, "seconds": args.seconds}),
    );
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        // The real server with its defaults: what a user gets from `jobdock serve`.
        let server = JobdockProcess::serve(&database, &[]).await?;
        let addr = server.addr()?;
        // Idle: started, migrated, workers waiting for jobs.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = server
            .pid()
            .and_then(crate::target::rss_mib)
            .unwrap_or_default();
        let window_start: chrono::DateTime<chrono::Utc> = chrono::Utc::now();
        let sampling = tokio_util::sync::CancellationToken::new();
        let peak = tokio::spawn(max_rss_while(server.pid(), sampling.clone()));
        let requests = submit_request(addr);
        let load = http_load(addr, args.concurrency, args.seconds, 202, requests).await?;
        sampling.cancel();
        let load_rss = peak.await?;
        let window_end = window_start + chrono::Duration::from_std(load.elapsed)?;
        let pool = database.pool().await?;
        let (completed, p50, p99): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT count(*), \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000, \
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000 \
             FROM jobs WHERE status = 'succeeded' AND finished_at <= $1",
        )
        .bind(window_end)
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        server.stop().await?;
        database.drop_database().await?;
        let baseline_db = BenchDatabase::create(&common.database_url).await?;
        let baseline = pgbench::run(
            &baseline_db.url,
            pgbench::LIFECYCLE,
            32,
            Limit::Seconds(args.seconds),
        )?;
        baseline_db.drop_database().await?;
        report.add_run(json!({
            "completed_per_sec": completed as f64 / load.elapsed.as_secs_f64(),
            "accepted_per_sec": load.ok as f64 / load.elapsed.as_secs_f64(),
            "submit_to_result_p50_ms": p50.unwrap_or(0.0), "submit_to_result_p99_ms": p99.unwrap_or(0.0),
            "errors": load.errors, "pgbench_lifecycle_tps": baseline.tps,
            "server_rss_idle_mib": idle_rss, "server_rss_max_under_load_mib": load_rss,
        }));
    }
    report.finish(&[(
        "e2e_vs_pgbench_lifecycle",
        "completed_per_sec",
        "pgbench_lifecycle_tps",
    )]);
    Ok(())
}

/// Reports how long after its submission each probe job's handler started.
struct Probe;

fn probe_channel() -> &'static OnceLock<mpsc::UnboundedSender<Duration>> {
    static CHANNEL: OnceLock<mpsc::UnboundedSender<Duration>> = OnceLock::new();
    &CHANNEL
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[async_trait]
impl Handler for Probe {
    fn kind(&self) -> &str {
        "bench_probe"
    }

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let started = epoch().elapsed();
        let sent = Duration::from_micros(payload["sent_us"].as_u64().unwrap_or(0));
        if let Some(channel) = probe_channel().get() {
            let _ = channel.send(started.saturating_sub(sent));
        }
        Output::json(&json!({}))
    }
}

pub async fn pickup(common: &Common, args: &PickupArgs) -> anyhow::Result<()> {
    let mut report = Report::new("pickup", json!({"probes": args.probes}));
    let mut all = Vec::new();
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        all.push(pickup_round(&database, args.probes).await?);
        database.drop_database().await?;
    }
    for (p50, p99, baseline) in all {
        report.add_run(json!({"pickup_p50_ms": p50, "pickup_p99_ms": p99, "pgbench_insert_latency_ms": baseline}));
    }
    // Targets (issue 13): p50 ≤ 3× and p99 ≤ 8× of one single-row INSERT's latency, measured in the same run.
    report.finish(&[
        (
            "pickup_p50_vs_insert_latency",
            "pickup_p50_ms",
            "pgbench_insert_latency_ms",
        ),
        (
            "pickup_p99_vs_insert_latency",
            "pickup_p99_ms",
            "pgbench_insert_latency_ms",
        ),
    ]);
    Ok(())
}

/// One pickup measurement plus its baseline (pgbench's single-client insert latency: one round trip and
/// one commit).
async fn pickup_round(database: &BenchDatabase, probes: usize) -> anyhow::Result<(f64, f64, f64)> {
    let latencies = pickup_probes(database, probes).await?;
    let (p50, p99) = percentiles(latencies);
    let baseline = pgbench::run(&database.url, pgbench::INSERT, 1, Limit::Seconds(3))?;
    Ok((p50, p99, baseline.latency_ms))
}

/// Probes sent before the measured ones.
const PICKUP_WARM_UP: usize = 20;

/// The probe channel is process-wide, so every pickup in this process shares one receiver.
async fn pickup_probes(database: &BenchDatabase, probes: usize) -> anyhow::Result<Vec<Duration>> {
    static RECEIVER: OnceLock<tokio::sync::Mutex<mpsc::UnboundedReceiver<Duration>>> =
        OnceLock::new();
    let receiver = RECEIVER.get_or_init(|| {
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = probe_channel().set(sender);
        tokio::sync::Mutex::new(receiver)
    });
    let mut received = receiver.lock().await;
    while received.try_recv().is_ok() {}
    let server = Server::start(database, 32, Registry::builtin().with(Probe)).await?;
    let mut connection = http::Connection::open(server.addr).await?;
    // Let the workers settle into their idle wait first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(probes);
    // The first probes prepare statements on the pool's connections and make the metric series: not
    // what an idle server's pickup costs. They are run and not counted.
    for probe in 0..PICKUP_WARM_UP + probes {
        let sent_us = epoch().elapsed().as_micros() as u64;
        let body = json!({"kind": "bench_probe", "payload": {"sent_us": sent_us}}).to_string();
        let status = connection
            .send(&http::post_json(server.addr, "/v1/jobs", &body))
            .await?;
        if status != 202 {
            bail!("probe was answered {status}");
        }
        let latency = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .context("a probe job never started")?
            .context("probe channel closed")?;
        if probe >= PICKUP_WARM_UP {
            latencies.push(latency);
        }
    }
    server.stop().await?;
    Ok(latencies)
}

pub async fn status(common: &Common, args: &SubmitArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "status",
        json!({"concurrency": args.concurrency, "seconds": args.seconds}),
    );
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let pool = database.pool().await?;
        let jobs: Vec<NewJob> = (0..1000).map(|_| NewJob::new("echo", json!({}))).collect();
        let ids: Arc<Vec<uuid::Uuid>> = Arc::new(
            jobdock::store::jobs::insert_many(&pool, &jobs)
                .await?
                .iter()
                .map(|j| j.id)
                .collect(),
        );
        pool.close().await;
        let server = api_only(&database).await?;
        let addr = server.addr()?;
        let requests = Arc::new(
            ids.iter()
                .map(|id| http::get(addr, &format!("/v1/jobs/{id}")))
                .collect(),
        );
        let load = http_load(addr, args.concurrency, args.seconds, 200, requests).await?;
        server.stop().await?;
        let baseline = pgbench::run(
            &database.url,
            &pgbench::status(ids[0]),
            args.concurrency,
            Limit::Seconds(args.seconds),
        )?;
        database.drop_database().await?;
        let (p50, p99) = percentiles(load.latencies);
        report.add_run(json!({
            "requests_per_sec": load.ok as f64 / load.elapsed.as_secs_f64(),
            "latency_p50_ms": p50, "latency_p99_ms": p99, "errors": load.errors,
            "pgbench_select_tps": baseline.tps,
        }));
    }
    report.finish(&[(
        "status_vs_pgbench_select",
        "requests_per_sec",
        "pgbench_select_tps",
    )]);
    Ok(())
}

/// Fills `database` with `count` succeeded jobs and their results, as months of use would.
async fn age(database: &BenchDatabase, count: u64) -> anyhow::Result<()> {
    let pool = database.pool().await?;
    sqlx::query(
        "WITH old AS ( \
           INSERT INTO jobs (id, kind, status, attempt, created_at, updated_at, started_at, finished_at, run_at) \
           SELECT gen_random_uuid(), 'echo', 'succeeded', 1, now() - interval '1 day', now(), now(), now(), \
                  now() - interval '1 day' \
           FROM generate_series(1, $1) RETURNING id) \
         INSERT INTO results (job_id, content_type, body) SELECT id, 'application/json', '\\x7b7d' FROM old",
    )
    .bind(i64::try_from(count)?)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    sqlx::query("VACUUM ANALYZE results").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

pub async fn aged(common: &Common, args: &AgedArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "aged",
        json!({"finished": args.finished, "jobs": args.drain.jobs, "probes": args.pickup.probes}),
    );
    for _ in 0..common.runs {
        let fresh = BenchDatabase::create(&common.database_url).await?;
        let fresh_drain = drain_once(&fresh, &args.drain).await?;
        let (fresh_p50, fresh_p99, _) = pickup_round(&fresh, args.pickup.probes).await?;
        fresh.drop_database().await?;
        let aged = BenchDatabase::create(&common.database_url).await?;
        age(&aged, args.finished).await?;
        let aged_drain = drain_once(&aged, &args.drain).await?;
        let (aged_p50, aged_p99, _) = pickup_round(&aged, args.pickup.probes).await?;
        aged.drop_database().await?;
        report.add_run(json!({
            "fresh_drain_jobs_per_sec": fresh_drain, "aged_drain_jobs_per_sec": aged_drain,
            "fresh_pickup_p50_ms": fresh_p50, "aged_pickup_p50_ms": aged_p50,
            "fresh_pickup_p99_ms": fresh_p99, "aged_pickup_p99_ms": aged_p99,
        }));
    }
    report.finish(&[
        (
            "aged_vs_fresh_drain",
            "aged_drain_jobs_per_sec",
            "fresh_drain_jobs_per_sec",
        ),
        (
            "aged_vs_fresh_pickup_p50",
            "aged_pickup_p50_ms",
            "fresh_pickup_p50_ms",
        ),
        (
            "aged_vs_fresh_pickup_p99",
            "aged_pickup_p99_ms",
            "fresh_pickup_p99_ms",
        ),
    ]);
    Ok(())
}
