//! `soak`: steady submit + process load for a long while with a short retention, sampling every 10 s the
//! size of `jobs` and `results` (tables and indexes), their dead rows, the claim latency and the server's
//! RSS. The claim latency is timed by the bench itself on probe jobs of a kind the server does not run: the
//! server's own workers take most submissions straight from its API (the intake) and claim little, but a
//! claim's time is what grows when dead index entries pile up. The point is what happens where autovacuum is off: the series must level off, not grow.
//! Prints the series, the ratios to the value at minute 2, and draws them as an SVG chart.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::http;
use crate::target::{rss_mib, BenchDatabase, ServerProcess};
use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Jobs submitted per second (spread over 8 clients).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// The server's `--retention`, in seconds.
    #[arg(long, default_value_t = 60)]
    pub retention_secs: u64,
    /// Where to write the chart.
    #[arg(long, default_value = "soak.svg")]
    pub chart: String,
}

const CLIENTS: u64 = 8;
/// Probe claims per sample; the sample is their median.
const PROBES: usize = 21;

/// The median time, in ms, of [`PROBES`] claims of one job each, as a worker's claim after a poll tick
/// does it (the search for tenants with queued jobs, then the claim statement); each probe is submitted
/// just before and completed just after.
async fn claim_latency_ms(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    use jobdock::store::leases::{self, Completion, Lease};
    let kinds = ["soak_probe".to_owned()];
    let mut times = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let probe = jobdock::NewJob::new("soak_probe", json!({}));
        jobdock::store::jobs::insert_many(pool, std::slice::from_ref(&probe)).await?;
        let started = Instant::now();
        let claimed =
            leases::claim_available(pool, &kinds, 1, Duration::from_secs(60), "soak-probe").await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let completions: Vec<Completion> = claimed
            .iter()
            .map(|job| Completion {
                lease: Lease {
                    id: job.id,
                    token: job.lease_token,
                },
                content_type: "application/json".to_owned(),
                body: b"{}".to_vec(),
                headers: None,
            })
            .collect();
        leases::complete_many(pool, &completions).await?;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One sample of the series.
#[derive(Debug, Clone, Copy)]
struct Sample {
    minute: f64,
    size_mib: f64,
    dead_rows: f64,
    claim_p50_ms: f64,
    rss_mib: f64,
}

pub async fn soak(common: &Common, args: &SoakArgs) -> anyhow::Result<()> {
    let database = BenchDatabase::create(&common.database_url).await?;
    let server = ServerProcess::start_with(
        &database,
        jobdock::config::Settings::default().workers,
        &[
            "--retention-secs".to_owned(),
            args.retention_secs.to_string(),
        ],
    )
    .await?;
    let pool = database.pool().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.minutes * 60);
    let mut load = Vec::new();
    let period = Duration::from_secs_f64(CLIENTS as f64 / args.rate.max(1) as f64);
    for _ in 0..CLIENTS {
        let mut connection = http::Connection::open(server.addr).await?;
        let request = http::post_json(
            server.addr,
            "/v1/jobs",
            r#"{"kind":"echo","payload":{"n":1}}"#,
        );
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                if connection.send(&request).await.ok() != Some(202) {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut samples = Vec::new();
    let mut next = started + SAMPLE_EVERY;
    eprintln!("  minute   size MiB   dead rows   claim p50 ms   RSS MiB");
    while next <= deadline {
        tokio::time::sleep_until(next.into()).await;
        next += SAMPLE_EVERY;
        let (size, dead): (i64, i64) = sqlx::query_as(
            "SELECT pg_total_relation_size('jobs') + pg_total_relation_size('results'), \
                    (SELECT coalesce(sum(n_dead_tup), 0)::int8 FROM pg_stat_user_tables \
                      WHERE relname IN ('jobs', 'results'))",
        )
        .fetch_one(&pool)
        .await?;
        let claim = claim_latency_ms(&pool).await?;
        let sample = Sample {
            minute: started.elapsed().as_secs_f64() / 60.0,
            size_mib: size as f64 / 1_048_576.0,
            dead_rows: dead as f64,
            claim_p50_ms: claim,
            rss_mib: server.pid().and_then(rss_mib).unwrap_or_default(),
        };
        eprintln!(
            "  {:>6.2} {:>10.1} {:>11} {:>14.2} {:>9.1}",
            sample.minute, sample.size_mib, sample.dead_rows, sample.claim_p50_ms, sample.rss_mib
        );
        samples.push(sample);
    }
    let mut errors = 0;
    for client in load {
        errors += client.await?;
    }
    let vacuums: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(vacuum_count), 0)::int8 FROM pg_stat_user_tables WHERE relname IN ('jobs', 'results')",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    server.stop().await?;
    database.drop_database().await?;

    // The targets compare everything after minute 2 with the sample at minute 2.
    let at_two = samples.iter().find(|s| s.minute >= 2.0).copied();
    let worst = |value: fn(&Sample) -> f64| -> Option<f64> {
        let base = value(&at_two?);
        (base > 0.0).then(|| {
            samples
                .iter()
                .filter(|s| s.minute > 2.0)
                .map(|s| value(s) / base)
                .fold(0.0, f64::max)
        })
    };
    // Claim latencies are a millisecond or two on a machine busy with the load, and single samples jitter
    // by half either way with no trend: they are compared as medians of a minute (six samples), the minute
    // up to minute 2 against each whole minute after it. The worst single sample is reported beside it.
    let worst_minute = |value: fn(&Sample) -> f64| -> Option<f64> {
        let median_of_minute = |end: f64| {
            let mut values: Vec<f64> = samples
                .iter()
                .filter(|s| s.minute > end - 1.0 && s.minute <= end + 0.01)
                .map(value)
                .collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied()
        };
        let base = median_of_minute(2.0)?;
        let last = samples.last()?.minute.round() as u64;
        let worst = (3..=last)
            .filter_map(|end| median_of_minute(end as f64))
            .map(|v| v / base)
            .fold(0.0, f64::max);
        (base > 0.0).then_some(worst)
    };
    let figures = json!({
        "scenario": "soak",
        "config": {"minutes": args.minutes, "rate": args.rate, "retention_secs": args.retention_secs},
        "errors": errors,
        "vacuums_of_jobs_and_results": vacuums,
        "max_size_vs_minute_2": worst(|s| s.size_mib),
        "max_claim_p50_vs_minute_2": worst_minute(|s| s.claim_p50_ms),
        "max_claim_p50_sample_vs_minute_2_sample": worst(|s| s.claim_p50_ms),
        "max_rss_vs_minute_2": worst(|s| s.rss_mib),
        "samples": samples.iter().map(|s| json!([
            (s.minute * 100.0).round() / 100.0, (s.size_mib * 10.0).round() / 10.0, s.dead_rows,
            (s.claim_p50_ms * 100.0).round() / 100.0, (s.rss_mib * 10.0).round() / 10.0
        ])).collect::<Vec<_>>(),
    });
    std::fs::write(&args.chart, chart(&samples))?;
    eprintln!("soak: chart written to {}", args.chart);
    println!("{figures}");
    Ok(())
}

/// A chart's title and the value it draws.
type Series = (&'static str, fn(&Sample) -> f64);

/// Four small line charts side by side, drawn as SVG by hand (a polyline each; no fonts needed).
fn chart(samples: &[Sample]) -> String {
    let series: [Series; 4] = [
        ("jobs + results, MiB", |s| s.size_mib),
        ("dead rows", |s| s.dead_rows),
        ("claim p50, ms", |s| s.claim_p50_ms),
        ("server RSS, MiB", |s| s.rss_mib),
    ];
    let (width, height, pad) = (300.0, 180.0, 36.0);
    let minutes = samples.last().map(|s| s.minute).unwrap_or(1.0).max(1.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        width * 4.0,
        height + 20.0
    );
    for (index, (title, value)) in series.iter().enumerate() {
        let x0 = index as f64 * width;
        let top = samples.iter().map(value).fold(0.0, f64::max).max(1e-9) * 1.1;
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                let x = x0 + pad + (s.minute / minutes) * (width - pad - 10.0);
                let y = 20.0 + (height - pad) * (1.0 - value(s) / top);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r##"<rect x="{x0}" y="0" width="{width}" height="{h}" fill="white"/>
<text x="{tx}" y="14">{title}</text>
<line x1="{ax}" y1="20" x2="{ax}" y2="{by}" stroke="#999"/>
<line x1="{ax}" y1="{by}" x2="{bx}" y2="{by}" stroke="#999"/>
<text x="{ax}" y="{ly}">0</text><text x="{bx2}" y="{ly}" text-anchor="end">{minutes:.0} min</text>
<text x="{ax2}" y="28">{top:.0}</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>"##,
            h = height + 20.0,
            tx = x0 + pad,
            ax = x0 + pad,
            ax2 = x0 + 2.0,
            by = 20.0 + height - pad,
            bx = x0 + width - 10.0,
            bx2 = x0 + width - 10.0,
            ly = 20.0 + height - pad + 14.0,
            top = top / 1.1,
            points = points.join(" "),
        );
    }
    svg.push_str("</svg>\n");
    svg
}
