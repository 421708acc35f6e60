//! SIGTERM: stop claiming, let running jobs finish within the grace period, release the rest to the queue at
//! once (not when their lease expires), answer in-flight requests, exit 0.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::common::{client, eventually, TestDatabase};
use crate::support::*;

#[tokio::test]
async fn sigterm_releases_unfinished_jobs_at_once_and_another_replica_runs_them() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    // A 60 s lease: only an explicit release can get these jobs to another replica quickly.
    let mut a = Jobdock::serve(
        "a",
        &database.url,
        &[
            "--workers",
            "3",
            "--lease-secs",
            "60",
            "--shutdown-grace-secs",
            "1",
            "--poll-interval-ms",
            "100",
        ],
    )
    .await;
    let http = client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&http, &a, &sleep_job(30_000)).await);
    }
    let claimed = eventually(Duration::from_secs(10), || async {
        running_under(&pool, &a).await.len() == 3
    })
    .await;
    assert!(
        claimed,
        "a should run all three: {}",
        summary(&pool, &ids).await
    );

    // B comes up only now, so A holds every job; B polls slowly, so a prompt pick-up means NOTIFY.
    let b = Jobdock::worker(
        "b",
        &database.url,
        &["--workers", "3", "--lease-secs", "60"],
    );
    let b_connected = eventually(Duration::from_secs(15), || async {
        backends_of(&pool, &b).await > 0
    })
    .await;
    assert!(b_connected, "worker b never connected");

    let signalled = Instant::now();
    let status = a.terminate_within(Duration::from_secs(10)).await;
    let exited_after = signalled.elapsed();
    assert!(
        status.success(),
        "SIGTERM should end in exit status 0, got {status}"
    );
    assert!(
        exited_after < Duration::from_secs(6),
        "with a 1 s grace period, a took {exited_after:?} to exit"
    );
    // Released at once: right after A's exit none is still held by A...
    let still_held = running_under(&pool, &a).await;
    assert!(
        still_held.is_empty(),
        "jobs still held by the stopped process: {still_held:?}"
    );
    // ... and B runs them within seconds, long before the 60 s lease would have expired.
    let picked_up = eventually(Duration::from_secs(5), || async {
        running_under(&pool, &b).await.len() == 3
    })
    .await;
    assert!(
        picked_up,
        "b should run the released jobs within 5 s: {}",
        summary(&pool, &ids).await
    );
    // A release gives the attempt back: this is the jobs' first real attempt.
    for (id, attempt) in attempts(&pool, &ids).await {
        assert_eq!(attempt, 1, "released job {id} should not spend an attempt");
    }
}

#[tokio::test]
async fn a_job_finishing_within_the_grace_period_completes_and_queued_jobs_are_not_claimed() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    let mut server = Jobdock::serve(
        "graceful",
        &database.url,
        &[
            "--workers",
            "1",
            "--lease-secs",
            "60",
            "--shutdown-grace-secs",
            "15",
            "--poll-interval-ms",
            "100",
        ],
    )
    .await;
    let http = client();
    let running = submit(&http, &server, &sleep_job(2_000)).await;
    let started = eventually(Duration::from_secs(10), || async {
        count_jobs(&pool, &[running], "status = 'running'").await == 1
    })
    .await;
    assert!(started, "the job never started");
    // One worker, busy: this one waits in the queue.
    let waiting = submit(&http, &server, &sleep_job(10)).await;

    server.signal("TERM");
    // Taken after the signal: a job finished later than this finished after SIGTERM.
    let signalled_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .expect("now");
    let status = server.wait_exit(Duration::from_secs(12)).await;
    assert!(
        status.success(),
        "SIGTERM should end in exit status 0, got {status}"
    );

    let (state, attempt, finished_at): (String, i32, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT status, attempt, finished_at FROM jobs WHERE id = $1")
            .bind(running)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert_eq!(
        state, "succeeded",
        "the running job should finish in the grace period"
    );
    assert_eq!(attempt, 1);
    assert!(
        finished_at.is_some_and(|at| at > signalled_at),
        "the job should have finished after SIGTERM (finished {finished_at:?}, signalled {signalled_at})"
    );
    assert_one_result_each(&pool, &[running]).await;

    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1")
            .bind(waiting)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert_eq!(
        (state.as_str(), attempt),
        ("queued", 0),
        "a stopping process claims nothing new"
    );
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_still_gets_its_answer() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    let mut server = Jobdock::serve(
        "drain",
        &database.url,
        &[
            "--workers",
            "0",
            "--lease-secs",
            "60",
            "--shutdown-grace-secs",
            "15",
        ],
    )
    .await;
    let address = server
        .address
        .clone()
        .expect("serve has an address")
        .trim_start_matches("http://")
        .to_owned();

    // Hold inserts into `jobs` back: the submit below is provably inside its handler while we signal.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE jobs IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock jobs");
    let in_flight = tokio::spawn({
        let url = server.url("/v1/jobs");
        async move {
            let response = client()
                .post(url)
                .json(&json!({ "kind": "echo", "payload": { "drained": true } }))
                .send()
                .await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        }
    });
    let waiting = eventually(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO jobs%'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        n > 0
    })
    .await;
    assert!(waiting, "the submit never reached the database");

    server.signal("TERM");
    // Shutdown has begun once the listener is closed.
    let closed = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&address).await.is_err()
    })
    .await;
    assert!(
        closed,
        "the server kept accepting connections after SIGTERM"
    );
    if in_flight.is_finished() {
        let early = in_flight.await.expect("request task");
        panic!("the in-flight request ended before its insert could finish: {early:?}");
    }

    blocker.rollback().await.expect("release the lock");
    let (status, body) = in_flight
        .await
        .expect("request task")
        .expect("the in-flight request should get an answer");
    assert_eq!(status, 202, "{body}");
    let id = accepted_id(&body).expect("job id");
    let exit = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.success(),
        "SIGTERM should end in exit status 0, got {exit}"
    );
    assert_eq!(count_jobs(&pool, &[id], "status = 'queued'").await, 1);
}
