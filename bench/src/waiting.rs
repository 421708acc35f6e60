//! Waiting for results (DESIGN §12), measured from the client's side:
//!
//! - `long-poll`: clients submit a job that runs `--job-ms` and follow it to its 302 through `?wait=`
//!   (with `If-None-Match`), against the same clients polling blindly every second, on the same server in
//!   the same run → submit-to-302 latency and requests per job.
//! - `prefer-wait`: clients submit a fast job (`echo`) with `Prefer: wait=10` and get the 303 in one
//!   round trip, against submit (202) followed by a long poll → submit-to-done latency and jobs/s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::http;
use crate::report::{percentiles, Report};
use crate::target::{BenchDatabase, ServerProcess};
use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Concurrent clients, each following one job at a time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long each way of waiting is measured per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// How long each job runs (`long-poll`; `sleep` jobs).
    #[arg(long, default_value_t = 300)]
    pub job_ms: u64,
}

impl Default for WaitArgs {
    fn default() -> Self {
        WaitArgs {
            concurrency: 16,
            seconds: 10,
            job_ms: 300,
        }
    }
}

/// Workers of the measured server: more than the clients, so no job waits for a slot.
const WORKERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    /// `GET /v1/jobs/{id}?wait=30` with `If-None-Match` until the 302.
    LongPoll,
    /// `GET /v1/jobs/{id}`, then sleep 1 s, until the 302.
    Blind,
    /// `POST /v1/jobs` with `Prefer: wait=10`: 303 at once.
    Prefer,
}

/// What the clients saw: submit-to-done latencies and requests sent.
struct Seen {
    latencies: Vec<Duration>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
}

impl Seen {
    fn figures(&self, prefix: &str) -> Value {
        let (p50, p99) = percentiles(self.latencies.clone());
        let jobs = self.latencies.len().max(1) as f64;
        json!({
            format!("{prefix}_p50_ms"): p50,
            format!("{prefix}_p99_ms"): p99,
            format!("{prefix}_jobs_per_sec"): self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            format!("{prefix}_requests_per_job"): self.requests as f64 / jobs,
            format!("{prefix}_errors"): self.errors,
        })
    }
}

pub async fn long_poll(common: &Common, args: &WaitArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "long-poll",
        json!({"concurrency": args.concurrency, "seconds": args.seconds, "job_ms": args.job_ms}),
    );
    let submit = format!(r#"{{"kind":"sleep","payload":{{"ms":{}}}}}"#, args.job_ms);
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let server = ServerProcess::start(&database, WORKERS).await?;
        let long = clients(server.addr, args, &submit, Way::LongPoll).await?;
        let blind = clients(server.addr, args, &submit, Way::Blind).await?;
        server.stop().await?;
        database.drop_database().await?;
        let mut figures = long.figures("long_poll");
        merge(&mut figures, blind.figures("blind"));
        report.add_run(figures);
    }
    report.finish(&[(
        "blind_p50_over_long_poll_p50",
        "blind_p50_ms",
        "long_poll_p50_ms",
    )]);
    Ok(())
}

pub async fn prefer_wait(common: &Common, args: &WaitArgs) -> anyhow::Result<()> {
    let mut report = Report::new(
        "prefer-wait",
        json!({"concurrency": args.concurrency, "seconds": args.seconds}),
    );
    let submit = r#"{"kind":"echo","payload":{"n":1}}"#;
    for _ in 0..common.runs {
        let database = BenchDatabase::create(&common.database_url).await?;
        let server = ServerProcess::start(&database, WORKERS).await?;
        let prefer = clients(server.addr, args, submit, Way::Prefer).await?;
        let long = clients(server.addr, args, submit, Way::LongPoll).await?;
        server.stop().await?;
        database.drop_database().await?;
        let mut figures = prefer.figures("prefer_wait");
        merge(&mut figures, long.figures("submit_then_long_poll"));
        report.add_run(figures);
    }
    report.finish(&[
        (
            "prefer_jobs_per_sec_vs_submit_then_long_poll",
            "prefer_wait_jobs_per_sec",
            "submit_then_long_poll_jobs_per_sec",
        ),
        (
            "submit_then_long_poll_p50_over_prefer_p50",
            "submit_then_long_poll_p50_ms",
            "prefer_wait_p50_ms",
        ),
    ]);
    Ok(())
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// `args.concurrency` clients, each submitting `body` and following the job to its end `way`, until
/// `args.seconds` pass.
async fn clients(addr: SocketAddr, args: &WaitArgs, body: &str, way: Way) -> anyhow::Result<Seen> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut connection = http::Connection::open(addr).await?;
        let submit = match way {
            Way::Prefer => http::post_json_with(addr, "/v1/jobs", ("prefer", "wait=10"), body),
            _ => http::post_json(addr, "/v1/jobs", body),
        };
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen {
                latencies: Vec::new(),
                requests: 0,
                errors: 0,
                elapsed: Duration::ZERO,
            };
            while Instant::now() < deadline {
                let sent = Instant::now();
                match follow(&mut connection, addr, &submit, way, &mut seen.requests).await {
                    Ok(()) => seen.latencies.push(sent.elapsed()),
                    Err(_) => {
                        seen.errors += 1;
                        match http::Connection::open(addr).await {
                            Ok(fresh) => connection = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            seen
        }));
    }
    let mut all = Seen {
        latencies: Vec::new(),
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let seen = task.await?;
        all.latencies.extend(seen.latencies);
        all.requests += seen.requests;
        all.errors += seen.errors;
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

/// Submits one job and follows it until the server says it succeeded.
async fn follow(
    connection: &mut http::Connection,
    addr: SocketAddr,
    submit: &[u8],
    way: Way,
    requests: &mut u64,
) -> anyhow::Result<()> {
    *requests += 1;
    let status = connection.send(submit).await?;
    if way == Way::Prefer {
        anyhow::ensure!(status == 303, "Prefer: wait answered {status}");
        return Ok(());
    }
    anyhow::ensure!(status == 202, "submit answered {status}");
    let monitor: Value = serde_json::from_slice(connection.body())?;
    let id = monitor["id"].as_str().unwrap_or_default().to_owned();
    let mut etag = connection.header("etag").map(str::to_owned);
    loop {
        let request = match (way, &etag) {
            (Way::LongPoll, Some(tag)) => http::get_with(
                addr,
                &format!("/v1/jobs/{id}?wait=30"),
                ("if-none-match", tag),
            ),
            (Way::LongPoll, None) => http::get(addr, &format!("/v1/jobs/{id}?wait=30")),
            _ => http::get(addr, &format!("/v1/jobs/{id}")),
        };
        *requests += 1;
        match connection.send(&request).await? {
            302 => return Ok(()),
            200 | 304 => {
                if let Some(tag) = connection.header("etag") {
                    etag = Some(tag.to_owned());
                }
                if way == Way::Blind {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            other => anyhow::bail!("the monitor answered {other}"),
        }
    }
}
