//! The `external` scenario: jobs of an external kind drained by HTTP workers (DESIGN §8), next to the
//! in-process drain of as many jobs in the same run.
//!
//! Each worker is one keep-alive connection that claims a batch (`max_jobs`) and completes each job
//! with its own request, as the reference worker does; the server runs in a process of its own with no
//! in-process workers, so the figure is what the worker protocol costs end to end.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::http::{self, Connection};
use crate::report::Report;
use crate::scenarios::{self, DrainArgs};
use crate::target::{BenchDatabase, ServerProcess, EXTERNAL_KIND};
use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct ExternalArgs {
    /// Jobs enqueued before the workers start.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// HTTP workers, each one connection.
    #[arg(long, default_value_t = 8)]
    pub http_workers: usize,
    /// Jobs each claim asks for.
    #[arg(long, default_value_t = 100)]
    pub max_jobs: usize,
    /// Jobs each worker runs (and completes) at once, each on a connection of its own: a worker runs the
    /// jobs of a claim concurrently, as the reference worker does.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Worker slots of the in-process drain it is compared with.
    #[arg(long, default_value_t = 2000)]
    pub workers: usize,
}

impl Default for ExternalArgs {
    fn default() -> Self {
        ExternalArgs {
            jobs: 20_000,
            http_workers: 8,
            max_jobs: 100,
            parallel: 4,
            workers: 2000,
        }
    }
}

pub async fn external(common: &Common, args: &ExternalArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "external",
        json!({"jobs": args.jobs, "http_workers": args.http_workers, "max_jobs": args.max_jobs,
               "parallel": args.parallel, "in_process_workers": args.workers}),
    );
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let (jobs_per_sec, requests_per_sec) = external_once(&database, args).await?;
        database.drop_database().await?;
        let database = BenchDatabase::create(&common.database_url).await?;
        let drain = DrainArgs {
            jobs: args.jobs,
            workers: Some(args.workers),
        };
        let in_process = scenarios::drain_once(&database, &drain).await?;
        database.drop_database().await?;
        report.add_run(json!({
            "jobs_per_sec": jobs_per_sec,
            "http_requests_per_sec": requests_per_sec,
            "in_process_drain_jobs_per_sec": in_process,
        }));
    }
    report.finish(&[(
        "external_vs_in_process_drain",
        "jobs_per_sec",
        "in_process_drain_jobs_per_sec",
    )]);
    Ok(())
}

/// Drains `args.jobs` external jobs through the HTTP protocol; (jobs/s, requests/s).
async fn external_once(
    database: &BenchDatabase,
    args: &ExternalArgs,
) -> anyhow::Result<(f64, f64)> {
    let pool = database.pool().await?;
    scenarios::enqueue_jobs(&pool, EXTERNAL_KIND, args.jobs).await?;
    scenarios::settle_inserts(&pool).await?;
    scenarios::settle(&pool).await;
    let server = ServerProcess::start(database, 0).await?;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.http_workers)
        .map(|n| tokio::spawn(http_worker(server.addr, n, args.max_jobs, args.parallel)))
        .collect();
    let mut requests = 0;
    for worker in workers {
        requests += worker.await??;
    }
    let elapsed = started.elapsed();
    server.stop().await?;
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j JOIN results r ON r.job_id = j.id WHERE j.status = 'succeeded'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    if done != args.jobs as i64 {
        bail!(
            "{done} of {} external jobs succeeded with a result",
            args.jobs
        );
    }
    let secs = elapsed.as_secs_f64();
    Ok((args.jobs as f64 / secs, requests as f64 / secs))
}

/// Claims and completes until a claim comes back empty; returns the requests it sent.
async fn http_worker(
    addr: std::net::SocketAddr,
    n: usize,
    max_jobs: usize,
    parallel: usize,
) -> anyhow::Result<u64> {
    let mut connection = Connection::open(addr).await?;
    let mut runners = Vec::with_capacity(parallel);
    for _ in 0..parallel.max(1) {
        runners.push(Connection::open(addr).await?);
    }
    let claim = http::post_json(
        addr,
        "/v1/worker/claim",
        &json!({"worker_id": format!("bench-{n}"), "kinds": [EXTERNAL_KIND],
                "max_jobs": max_jobs, "wait_secs": 0})
        .to_string(),
    );
    let mut requests = 0;
    loop {
        let status = connection.send(&claim).await?;
        requests += 1;
        if status != 200 {
            bail!("claim answered {status}");
        }
        let answer: Value =
            serde_json::from_slice(connection.body()).context("the claim's answer is not JSON")?;
        let jobs: Vec<(String, String)> = answer["jobs"]
            .as_array()
            .context("no jobs in the claim's answer")?
            .iter()
            .filter_map(|job| {
                Some((
                    job["id"].as_str()?.to_owned(),
                    job["lease_token"].as_str()?.to_owned(),
                ))
            })
            .collect();
        if jobs.is_empty() {
            return Ok(requests);
        }
        requests += jobs.len() as u64;
        // Each runner completes every `parallel`-th job of the claim, one request per job.
        let share = runners.len();
        let completing = runners.iter_mut().enumerate().map(|(k, runner)| {
            let mine: Vec<&(String, String)> = jobs.iter().skip(k).step_by(share).collect();
            async move {
                for (id, token) in mine {
                    let complete = http::post_json_with(
                        addr,
                        &format!("/v1/worker/jobs/{id}/complete"),
                        ("lease-token", token),
                        "{}",
                    );
                    let status = runner.send(&complete).await?;
                    if status != 204 {
                        bail!("complete answered {status}");
                    }
                }
                anyhow::Ok(())
            }
        });
        for done in futures_util::future::join_all(completing).await {
            done?;
        }
    }
}
