//! The `http` scenario: jobdock as an asynchronous facade (DESIGN §9) in front of a local upstream that
//! answers at once, so what is measured is what the facade adds: N pre-enqueued jobs of an `http` kind
//! drained by the server's workers → jobs/s and the time each job spends from claim to result beyond
//! the upstream's own; next to the in-process `echo` drain of as many jobs in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use poem::{handler, EndpointExt, Response, Route};
use serde_json::json;

use crate::report::Report;
use crate::scenarios::{self, DrainArgs};
use crate::target::{BenchDatabase, Server};
use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct FacadeArgs {
    /// Jobs enqueued before the workers start.
    #[arg(long, default_value_t = 5_000)]
    pub jobs: usize,
    /// Worker slots of the server (the `http` kind's `max_concurrency` is set to match).
    #[arg(long, default_value_t = 256)]
    pub workers: usize,
}

impl Default for FacadeArgs {
    fn default() -> Self {
        FacadeArgs {
            jobs: 5_000,
            workers: 256,
        }
    }
}

#[handler]
fn answer(counter: poem::web::Data<&Arc<AtomicU64>>) -> Response {
    counter.fetch_add(1, Ordering::Relaxed);
    Response::builder()
        .content_type("application/json")
        .body(r#"{"ok":true}"#)
}

pub async fn facade(common: &Common, args: &FacadeArgs) -> anyhow::Result<()> {
    let mut report = Report::new("http", json!({"jobs": args.jobs, "workers": args.workers}));
    let calls = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    drop(listener);
    let routes = Route::new()
        .at("/report/:customer", poem::post(answer))
        .data(calls.clone());
    let server = tokio::spawn(
        poem::Server::new(poem::listener::TcpListener::bind(upstream.to_string())).run(routes),
    );
    let config = format!(
        "[kinds.report]\nhandler = \"http\"\nurl = \"http://{upstream}/report/{{customer}}\"\n\
         max_concurrency = {}\n",
        args.workers
    );
    for _ in 0..common.runs {
        calls.store(0, Ordering::Relaxed);
        let database = BenchDatabase::create(&common.database_url).await?;
        let (jobs_per_sec, added_p50, added_p99) = facade_once(&database, args, &config).await?;
        database.drop_database().await?;
        if calls.load(Ordering::Relaxed) < args.jobs as u64 {
            bail!(
                "the upstream saw {} calls for {} jobs",
                calls.load(Ordering::Relaxed),
                args.jobs
            );
        }
        let database = BenchDatabase::create(&common.database_url).await?;
        let drain = DrainArgs {
            jobs: args.jobs,
            workers: Some(args.workers),
        };
        let echo = scenarios::drain_once(&database, &drain).await?;
        database.drop_database().await?;
        report.add_run(json!({
            "jobs_per_sec": jobs_per_sec,
            "claim_to_result_p50_ms": added_p50,
            "claim_to_result_p99_ms": added_p99,
            "echo_drain_jobs_per_sec": echo,
        }));
    }
    server.abort();
    report.finish(&[(
        "http_vs_echo_drain",
        "jobs_per_sec",
        "echo_drain_jobs_per_sec",
    )]);
    Ok(())
}

/// Drains the `http` jobs; (jobs/s, claim→result p50 and p99 in ms).
async fn facade_once(
    database: &BenchDatabase,
    args: &FacadeArgs,
    config: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let pool = database.pool().await?;
    let mut left = args.jobs;
    while left > 0 {
        let chunk: Vec<jobdock::NewJob> = (0..left.min(1000))
            .map(|n| jobdock::NewJob::new("report", json!({"customer": format!("c{n}")})))
            .collect();
        left -= chunk.len();
        jobdock::store::jobs::insert_many(&pool, &chunk).await?;
    }
    scenarios::settle_inserts(&pool).await?;
    scenarios::settle(&pool).await;
    let mut watch = scenarios::DrainWatch::new(database).await?;
    let started = Instant::now();
    let server =
        Server::start_with(database, args.workers, jobdock::Registry::builtin(), config).await?;
    while watch.pending().await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    server.stop().await?;
    let (done, p50, p99): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000 \
         FROM jobs WHERE status = 'succeeded'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    if done != args.jobs as i64 {
        bail!("{done} of {} http jobs succeeded", args.jobs);
    }
    Ok((
        args.jobs as f64 / elapsed.as_secs_f64(),
        p50.unwrap_or_default(),
        p99.unwrap_or_default(),
    ))
}
