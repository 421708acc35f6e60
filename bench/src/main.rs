//! `jobdock-bench`: the load generator. Each scenario runs against a fresh database on the local
//! PostgreSQL, prints a human summary and one JSON line, and measures a baseline (pgbench on the same
//! server) in the same run, so figures are read as ratios on a noisy machine.
//!
//! ```text
//! cargo run --release -p jobdock-bench -- drain
//! cargo run --release -p jobdock-bench -- submit --concurrency 32 --seconds 10
//! cargo run --release -p jobdock-bench -- all --runs 3
//! ```

mod external;
mod facade;
mod http;
mod pgbench;
mod report;
mod scenarios;
mod soak;
mod target;
mod waiting;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jobdock-bench",
    about = "Measure jobdock against baselines on the same PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,

    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Any database on the server to measure; each run creates (and drops) a database of its own beside it.
    #[arg(
        long,
        env = "JOBDOCK_BENCH_DATABASE_URL",
        default_value = "postgres://localhost/postgres",
        global = true
    )]
    pub database_url: String,

    /// Runs per scenario; the summary reports medians.
    #[arg(long, default_value_t = 3, global = true)]
    pub runs: usize,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// HTTP POST /v1/jobs at a concurrency for a while → accepted/s, latency; baseline: pgbench INSERT.
    Submit(scenarios::SubmitArgs),
    /// POST /v1/jobs/batch with 1,000 jobs per request → jobs/s; baseline: pgbench 1,000-row INSERTs at the
    /// same concurrency.
    SubmitBatch(scenarios::SubmitArgs),
    /// N no-op jobs pre-enqueued, then workers started → jobs/s to the last result; baseline: the SQL-only
    /// ceiling of claim + complete in batches of 500 (pgbench).
    Drain(scenarios::DrainArgs),
    /// Submit over HTTP and process at the same time → completed jobs/s, submit→result latency; baseline:
    /// pgbench insert-then-claim-and-complete lifecycle.
    E2e(scenarios::SubmitArgs),
    /// An idle server, one job at a time → submit-to-handler-start latency; baseline: pgbench's single-row
    /// INSERT latency.
    Pickup(scenarios::PickupArgs),
    /// GET /v1/jobs/{id} at a concurrency → requests/s; baseline: pgbench primary-key SELECT.
    Status(scenarios::SubmitArgs),
    /// N pre-enqueued jobs of an external kind drained by HTTP workers (claim batches, one `complete` per
    /// job) → jobs/s; baseline: the in-process drain of as many jobs.
    External(external::ExternalArgs),
    /// N pre-enqueued jobs of an `http` kind in front of a local upstream that answers at once → jobs/s
    /// and claim→result time; baseline: the in-process `echo` drain of as many jobs.
    Http(facade::FacadeArgs),
    /// Clients following `sleep` jobs through `?wait=` long polls, against polling blindly every second →
    /// submit-to-302 latency and requests per job.
    LongPoll(waiting::WaitArgs),
    /// `Prefer: wait=10` on a fast kind (one round trip to the 303), against submit then long poll.
    PreferWait(waiting::WaitArgs),
    /// Steady submit + process load for minutes with a short retention → table size, dead rows, claim
    /// latency and RSS every 10 s, and an SVG chart of them (where autovacuum is off, they must level off).
    Soak(soak::SoakArgs),
    /// `drain` and `pickup` again with many finished jobs already in the table.
    Aged(scenarios::AgedArgs),
    /// Every scenario at its defaults.
    All,
    /// Internal: the server process the HTTP scenarios measure.
    #[command(hide = true)]
    ServeForBench {
        database_url: String,
        workers: usize,
        #[arg(long)]
        retention_secs: Option<u64>,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(cli).await {
        eprintln!("jobdock-bench: {err:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = cli.common;
    match cli.scenario {
        Scenario::Submit(args) => scenarios::submit(&common, &args).await,
        Scenario::SubmitBatch(args) => scenarios::submit_batch(&common, &args).await,
        Scenario::Drain(args) => scenarios::drain(&common, &args).await,
        Scenario::E2e(args) => scenarios::e2e(&common, &args).await,
        Scenario::Pickup(args) => scenarios::pickup(&common, &args).await,
        Scenario::Status(args) => scenarios::status(&common, &args).await,
        Scenario::Aged(args) => scenarios::aged(&common, &args).await,
        Scenario::Soak(args) => soak::soak(&common, &args).await,
        Scenario::LongPoll(args) => waiting::long_poll(&common, &args).await,
        Scenario::PreferWait(args) => waiting::prefer_wait(&common, &args).await,
        Scenario::External(args) => external::external(&common, &args).await,
        Scenario::Http(args) => facade::facade(&common, &args).await,
        Scenario::All => {
            let submit = scenarios::SubmitArgs::default();
            scenarios::submit(&common, &submit).await?;
            scenarios::submit_batch(&common, &submit).await?;
            scenarios::drain(&common, &scenarios::DrainArgs::default()).await?;
            scenarios::e2e(&common, &submit).await?;
            scenarios::pickup(&common, &scenarios::PickupArgs::default()).await?;
            scenarios::status(&common, &submit).await?;
            external::external(&common, &external::ExternalArgs::default()).await?;
            facade::facade(&common, &facade::FacadeArgs::default()).await?;
            let wait = waiting::WaitArgs::default();
            waiting::long_poll(&common, &wait).await?;
            waiting::prefer_wait(&common, &wait).await?;
            scenarios::aged(&common, &scenarios::AgedArgs::default()).await
        }
        Scenario::ServeForBench {
            database_url,
            workers,
            retention_secs,
        } => target::serve_for_bench(&database_url, workers, retention_secs).await,
    }
}
