//! A SIGKILLed server loses nothing: a new process on the same database rescues what was running and
//! runs what was queued.

use std::time::Duration;

use uuid::Uuid;

use crate::common::{client, eventually, TestDatabase};
use crate::support::*;

#[tokio::test]
async fn jobs_survive_a_kill_dash_nine() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    let args = [
        "--workers",
        "4",
        "--lease-secs",
        "2",
        "--poll-interval-ms",
        "100",
        "--db-max-connections",
        "4",
    ];
    let mut first = Jobdock::serve("first", &database.url, &args).await;
    let http = client();

    // More jobs than workers: some run, the rest wait.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&http, &first, &sleep_job(400)).await);
    }
    let busy = eventually(Duration::from_secs(10), || async {
        count_jobs(&pool, &ids, "status = 'running'").await >= 2
            && count_jobs(&pool, &ids, "status = 'queued'").await >= 4
    })
    .await;
    assert!(
        busy,
        "expected jobs both running and queued before the kill: {}",
        summary(&pool, &ids).await
    );

    first.kill();
    await_backends_gone(&pool, &first).await;
    let orphaned: Vec<Uuid> = running_under(&pool, &first).await;
    assert!(
        !orphaned.is_empty(),
        "the kill should leave running jobs behind"
    );
    let queued = count_jobs(&pool, &ids, "status = 'queued'").await;
    assert!(queued > 0, "the kill should leave queued jobs behind");

    let _second = Jobdock::serve("second", &database.url, &args).await;
    await_all_succeeded(&pool, &ids, Duration::from_secs(30)).await;
    assert_one_result_each(&pool, &ids).await;
    // The jobs that were running when the process died were rescued and ran again: attempt 2.
    for (id, attempt) in attempts(&pool, &orphaned).await {
        assert_eq!(
            attempt, 2,
            "orphaned job {id} should have run exactly twice"
        );
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(total, 20, "no job appeared from nowhere");
}
