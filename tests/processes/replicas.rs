//! Several replicas share one database: any of them answers for any job, a killed one's jobs are rescued by
//! the others within a few lease times, and every job runs to exactly one result.

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use uuid::Uuid;

use crate::common::{client, eventually, TestDatabase};
use crate::support::*;

const LEASE_SECS: u64 = 2;
const JOBS: usize = 300;

const ARGS: [&str; 10] = [
    "--workers",
    "16",
    "--lease-secs",
    "2",
    "--poll-interval-ms",
    "200",
    "--db-max-connections",
    "5",
    "--retry-base-ms",
    "100",
];

#[tokio::test]
async fn three_replicas_share_one_database_and_rescue_a_killed_one() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    // Started together: the migrator's advisory lock keeps concurrent start-ups safe.
    let (a, b, c) = tokio::join!(
        Jobdock::serve("replica-a", &database.url, &ARGS),
        Jobdock::serve("replica-b", &database.url, &ARGS),
        Jobdock::serve("replica-c", &database.url, &ARGS),
    );
    let mut replicas = [a, b, c];
    let http = client();

    // Any replica answers for any job.
    let probe = submit(&http, &replicas[0], &sleep_job(10)).await;
    for other in &replicas[1..] {
        let monitor: serde_json::Value = http
            .get(other.url(&format!("/v1/jobs/{probe}?redirect=false")))
            .send()
            .await
            .expect("GET monitor")
            .json()
            .await
            .expect("monitor json");
        assert_eq!(
            monitor["id"],
            probe.to_string(),
            "`{}` should know a job submitted to `{}`",
            other.label,
            replicas[0].label
        );
    }

    // A few hundred jobs, spread round-robin over the three.
    let submitted: Vec<Uuid> = stream::iter(0..JOBS)
        .map(|i| {
            let http = &http;
            let replica = &replicas[i % replicas.len()];
            async move { submit(http, replica, &sleep_job(600)).await }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut ids = submitted;
    ids.push(probe);

    // Kill replica c while it runs jobs and others still wait.
    let victim = 2;
    let busy = eventually(Duration::from_secs(10), || async {
        !running_under(&pool, &replicas[victim]).await.is_empty()
            && count_jobs(&pool, &ids, "status = 'queued'").await > 0
    })
    .await;
    assert!(
        busy,
        "`{}` should be running jobs while others wait: {}",
        replicas[victim].label,
        summary(&pool, &ids).await
    );
    replicas[victim].kill();
    let killed_at = Instant::now();
    await_backends_gone(&pool, &replicas[victim]).await;
    let orphaned = running_under(&pool, &replicas[victim]).await;
    assert!(
        !orphaned.is_empty(),
        "the kill should leave running jobs behind"
    );

    // The survivors rescue them within a few lease times (not after some long default).
    let pattern = replicas[victim].worker_pattern();
    let rescued = eventually(Duration::from_secs(4 * LEASE_SECS), || async {
        count_jobs(
            &pool,
            &orphaned,
            &format!("status = 'running' AND worker_id LIKE '{pattern}'"),
        )
        .await
            == 0
    })
    .await;
    assert!(
        rescued,
        "the killed replica's {} jobs were not rescued within {} lease times ({:?} after the kill): {}",
        orphaned.len(),
        4,
        killed_at.elapsed(),
        summary(&pool, &orphaned).await
    );

    // Restart the killed replica; everything finishes.
    let label = replicas[victim].label.clone();
    replicas[victim] = Jobdock::serve(&format!("{label}-restarted"), &database.url, &ARGS).await;
    await_all_succeeded(&pool, &ids, Duration::from_secs(45)).await;
    assert_one_result_each(&pool, &ids).await;
    for (id, attempt) in attempts(&pool, &orphaned).await {
        assert_eq!(
            attempt, 2,
            "job {id} ran on the killed replica and once more after its rescue"
        );
    }
    // Completions of jobs the killed replica never held did not need a second attempt.
    let retried = count_jobs(&pool, &ids, "attempt <> 1").await;
    assert_eq!(
        retried,
        i64::try_from(orphaned.len()).expect("count"),
        "only the orphaned jobs ran more than once: {}",
        summary(&pool, &ids).await
    );
}
