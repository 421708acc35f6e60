//! Prometheus metrics (DESIGN §13): the named series, recorded where things happen, rendered by
//! `GET /metrics` with the `metrics-exporter-prometheus` crate. Queue depth comes from a query every few
//! seconds, never from a scrape.

use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const JOBS_SUBMITTED: &str = "jobdock_jobs_submitted_total";
pub const JOBS_FINISHED: &str = "jobdock_jobs_finished_total";
pub const QUEUE_DEPTH: &str = "jobdock_queue_depth";
pub const JOB_WAIT: &str = "jobdock_job_wait_seconds";
pub const JOB_RUN: &str = "jobdock_job_run_seconds";
pub const HTTP_REQUESTS: &str = "jobdock_http_requests_total";
pub const HTTP_DURATION: &str = "jobdock_http_request_duration_seconds";
pub const DB_POOL: &str = "jobdock_db_pool_connections";

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How often the queue depth is counted.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// The most `{kind, queue, status}` series the depth gauge keeps: a flood of one-off queue names must not
/// flood the scrape.
const MAX_DEPTH_SERIES: i64 = 500;

/// Bucket bounds in seconds: from a fast HTTP answer to an hour-long job.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
    3600.0,
];

/// The process's recorder, installed on first use (once per process: tests start many servers).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    // Histograms keep their samples until upkeep folds them in: without it a process
                    // nobody scrapes (`jobdock worker`) would grow without bound.
                    let upkeep = handle.clone();
                    let started = std::thread::Builder::new()
                        .name("metrics-upkeep".to_owned())
                        .spawn(move || loop {
                            std::thread::sleep(UPKEEP_EVERY);
                            upkeep.run_upkeep();
                        });
                    if let Err(err) = started {
                        tracing::warn!(error = %err, "metrics upkeep thread not started");
                    }
                    describe();
                    Some(handle)
                }
                Err(err) => {
                    // Another recorder is in place (an embedding program's): jobdock's series go there.
                    tracing::warn!(error = %err, "metrics recorder not installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// The `# HELP` line of each series.
fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(JOBS_SUBMITTED, "Jobs accepted by this replica.");
    metrics::describe_counter!(
        JOBS_FINISHED,
        "Jobs that ended succeeded, failed or cancelled, as seen by this replica."
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Queued and running jobs in the whole database, counted every few seconds."
    );
    metrics::describe_histogram!(
        JOB_WAIT,
        Unit::Seconds,
        "From submission to the start of a run."
    );
    metrics::describe_histogram!(
        JOB_RUN,
        Unit::Seconds,
        "From the start of a run to its result."
    );
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by documented route and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request durations by route."
    );
    metrics::describe_gauge!(DB_POOL, "Connections of this process's PostgreSQL pool.");
}

/// The exposition text, with the pool's connections counted now.
pub fn render(pool: &PgPool) -> String {
    let size = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    metrics::gauge!(DB_POOL, "state" => "idle").set(idle);
    metrics::gauge!(DB_POOL, "state" => "in_use").set((size - idle).max(0.0));
    metrics::gauge!(DB_POOL, "state" => "max").set(f64::from(pool.options().get_max_connections()));
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// The handles of one kind's series. Made once per kind and process: building a series' key on every
/// call (allocating its labels and hashing them into the recorder's registry) cost measurable time on
/// the hot paths. Kinds are the registry's, so the cache is bounded, and each kind's handles are leaked
/// once and lent as `&'static`: cloning the six handles (an `Arc` each) on every call
/// was itself a few percent of a drain's CPU.
struct KindSeries {
    submitted: Counter,
    wait: Histogram,
    run: Histogram,
    succeeded: Counter,
    failed: Counter,
    cancelled: Counter,
}

fn kind_series(kind: &str) -> &'static KindSeries {
    static CACHE: OnceLock<RwLock<HashMap<String, &'static KindSeries>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(series) = read(cache).get(kind) {
        return series;
    }
    // Handles made before the recorder exists would stay no-ops.
    let _ = handle();
    let finished = |status: crate::JobStatus| metrics::counter!(JOBS_FINISHED, "kind" => kind.to_owned(), "status" => status.as_str());
    let mut cache = write(cache);
    if let Some(series) = cache.get(kind) {
        return series;
    }
    let series: &'static KindSeries = Box::leak(Box::new(KindSeries {
        submitted: metrics::counter!(JOBS_SUBMITTED, "kind" => kind.to_owned()),
        wait: metrics::histogram!(JOB_WAIT, "kind" => kind.to_owned()),
        run: metrics::histogram!(JOB_RUN, "kind" => kind.to_owned()),
        succeeded: finished(crate::JobStatus::Succeeded),
        failed: finished(crate::JobStatus::Failed),
        cancelled: finished(crate::JobStatus::Cancelled),
    }));
    cache.insert(kind.to_owned(), series);
    series
}

/// A poisoned cache is still a valid cache: entries are inserted whole.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn job_submitted(kind: &str) {
    kind_series(kind).submitted.increment(1);
}

pub fn job_finished(kind: &str, status: crate::JobStatus) {
    let series = kind_series(kind);
    match status {
        crate::JobStatus::Succeeded => series.succeeded.increment(1),
        crate::JobStatus::Failed => series.failed.increment(1),
        crate::JobStatus::Cancelled => series.cancelled.increment(1),
        // Not an end: nothing to count.
        crate::JobStatus::Queued | crate::JobStatus::Running => {}
    }
}

/// `count` jobs of `kind` succeeded (the dispatcher counts a batch of results at once).
pub fn jobs_succeeded(kind: &str, count: u64) {
    kind_series(kind).succeeded.increment(count);
}

pub fn job_started(kind: &str, waited: Duration) {
    kind_series(kind).wait.record(waited.as_secs_f64());
}

pub fn job_ran(kind: &str, ran: Duration) {
    kind_series(kind).run.record(ran.as_secs_f64());
}

/// Records one request of a documented `route` (or `other`). Handles are cached per route and status,
/// as for kinds; routes are the document's, statuses a few dozen.
pub fn http_request(route: &str, status: u16, took: Duration) {
    type Series = (Counter, Histogram);
    static CACHE: OnceLock<RwLock<HashMap<u16, HashMap<String, Series>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let cached = read(cache)
        .get(&status)
        .and_then(|routes| routes.get(route))
        .cloned();
    let (requests, duration) = cached.unwrap_or_else(|| {
        let _ = handle();
        let series = (
            metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(), "status" => status.to_string()),
            metrics::histogram!(HTTP_DURATION, "route" => route.to_owned()),
        );
        write(cache)
            .entry(status)
            .or_default()
            .insert(route.to_owned(), series.clone());
        series
    });
    requests.increment(1);
    duration.record(took.as_secs_f64());
}

/// Counts queued and running jobs every few seconds into `jobdock_queue_depth`, until `stop`.
pub fn count_depth(pool: PgPool, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let _ = handle();
    tokio::spawn(async move {
        let mut shown: HashSet<(String, String, String)> = HashSet::new();
        let mut tick = tokio::time::interval(DEPTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match crate::store::maintenance::queue_depth(&pool, MAX_DEPTH_SERIES).await {
                Ok(rows) => {
                    let now: HashSet<(String, String, String)> = rows
                        .iter()
                        .map(|(kind, queue, status, _)| {
                            (kind.clone(), queue.clone(), status.clone())
                        })
                        .collect();
                    // A series that emptied reads 0, not its last value.
                    for (kind, queue, status) in shown.difference(&now) {
                        metrics::gauge!(QUEUE_DEPTH, "kind" => kind.clone(), "queue" => queue.clone(), "status" => status.clone()).set(0.0);
                    }
                    for (kind, queue, status, count) in rows {
                        metrics::gauge!(QUEUE_DEPTH, "kind" => kind, "queue" => queue, "status" => status).set(count as f64);
                    }
                    shown.extend(now);
                }
                Err(err) => tracing::debug!(error = %err, "queue depth not counted"),
            }
        }
    })
}
