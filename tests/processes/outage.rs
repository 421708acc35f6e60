//! A database outage under a running server: submits are refused with 503 + Retry-After (quickly, no hang),
//! readiness fails while liveness holds, and when PostgreSQL is back the same process recovers on its own
//! and every job it accepted, before and after, runs to one result.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cluster::Cluster;
use crate::common::{client, eventually};
use crate::support::*;

/// The longest any request may take while the database is down.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_database_outage_gives_503_and_the_server_recovers_when_postgres_returns() {
    let Some(bin) = Cluster::find_binaries() else {
        eprintln!(
            "SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) found; set JOBDOCK_TEST_PG_BIN to \
             their directory to run this test"
        );
        return;
    };
    let cluster = Cluster::start(bin);
    let url = cluster.url("jobdock_outage");
    let mut server = Jobdock::serve(
        "outage",
        &url,
        &[
            "--workers",
            "3",
            "--lease-secs",
            "2",
            "--poll-interval-ms",
            "200",
            "--retry-base-ms",
            "100",
            "--db-max-connections",
            "6",
        ],
    )
    .await;
    let http = client();
    let mut accepted: Vec<Uuid> = Vec::new();
    for _ in 0..6 {
        accepted.push(submit(&http, &server, &sleep_job(1_500)).await);
    }
    {
        let pool = test_pool(&url).await;
        let running = eventually(Duration::from_secs(10), || async {
            count_jobs(&pool, &accepted, "status = 'running'").await > 0
        })
        .await;
        assert!(running, "no job started before the outage");
        pool.close().await;
    }

    cluster.stop_server();

    // Submitting: 503 with Retry-After, in bounded time.
    let asked = Instant::now();
    let refused = http
        .post(server.url("/v1/jobs"))
        .json(&sleep_job(10))
        .timeout(BOUND)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!("no answer within {BOUND:?} while the database is down: {err}")
        });
    let took = asked.elapsed();
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    assert!(took < BOUND, "the 503 took {took:?}");
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    assert!(
        retry_after.is_some_and(|secs| secs > 0),
        "503 needs Retry-After in seconds, got {:?}",
        refused.headers().get("retry-after")
    );
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );

    // Readiness fails, liveness holds.
    let asked = Instant::now();
    let ready = http
        .get(server.url("/readyz"))
        .timeout(BOUND)
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 503);
    assert!(
        asked.elapsed() < BOUND,
        "/readyz took {:?}",
        asked.elapsed()
    );
    let asked = Instant::now();
    let live = http
        .get(server.url("/healthz"))
        .timeout(BOUND)
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(live.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "/healthz must not wait for the database"
    );

    // PostgreSQL comes back; the same process recovers without a restart.
    cluster.start_server();
    let ready_again = eventually(Duration::from_secs(20), || async {
        http.get(server.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(
        ready_again,
        "/readyz never returned to 200 after PostgreSQL came back"
    );
    for _ in 0..3 {
        accepted.push(submit(&http, &server, &sleep_job(200)).await);
    }

    let pool = test_pool(&url).await;
    await_all_succeeded(&pool, &accepted, Duration::from_secs(40)).await;
    assert_one_result_each(&pool, &accepted).await;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the same process served before, during and after the outage"
    );
    pool.close().await;
}
