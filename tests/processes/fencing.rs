//! A stalled worker is fenced: once its lease expired and the job was rescued and claimed elsewhere, nothing
//! the stalled process writes when it wakes up lands.

use std::time::Duration;

use crate::common::{client, eventually, TestDatabase};
use crate::support::*;

/// The job runs this long; A's lease is as long, so the window between B's claim and B's completion (in
/// which A wakes up and must be fenced) is about this wide.
const JOB_MS: u64 = 3_000;

#[tokio::test]
async fn a_stalled_worker_cannot_complete_a_job_that_was_rescued_and_run_elsewhere() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    // API only; its rescuer runs every half lease (1 s lease: every 500 ms).
    let api = Jobdock::serve(
        "api",
        &database.url,
        &["--workers", "0", "--lease-secs", "1"],
    )
    .await;
    let mut a = Jobdock::worker(
        "a",
        &database.url,
        &[
            "--workers",
            "1",
            "--lease-secs",
            "3",
            "--poll-interval-ms",
            "50",
            "--shutdown-grace-secs",
            "5",
        ],
    );
    let http = client();
    let job = submit(&http, &api, &sleep_job(JOB_MS)).await;
    let claimed_by_a = eventually(Duration::from_secs(15), || async {
        running_under(&pool, &a).await == [job]
    })
    .await;
    assert!(
        claimed_by_a,
        "worker a never claimed the job: {}",
        summary(&pool, &[job]).await
    );

    a.signal("STOP");
    // B starts only now, with a long lease of its own so that it keeps the job while we look.
    let b = Jobdock::worker(
        "b",
        &database.url,
        &[
            "--workers",
            "1",
            "--lease-secs",
            "30",
            "--poll-interval-ms",
            "50",
        ],
    );
    let claimed_by_b = eventually(Duration::from_secs(15), || async {
        running_under(&pool, &b).await == [job]
    })
    .await;
    assert!(
        claimed_by_b,
        "the stalled job was not rescued and run by b: {}",
        summary(&pool, &[job]).await
    );
    // By now A's own run of the job is overdue: waking up, it tries to finish (or notices the lost lease).
    let attempt_b: i32 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await
        .expect("attempt");
    assert_eq!(attempt_b, 2, "b's claim is the second attempt");
    a.signal("CONT");
    // Once A has exited, whatever it was going to write has been written (or refused).
    let exit = a.terminate_within(Duration::from_secs(10)).await;
    assert!(exit.success(), "a should exit 0 on SIGTERM, got {exit}");

    let (status, attempt, results): (String, i32, i64) = sqlx::query_as(
        "SELECT status, attempt, (SELECT count(*) FROM results WHERE job_id = id) FROM jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("job");
    assert_eq!(
        (status.as_str(), attempt, results),
        ("running", 2, 0),
        "a's late completion landed on a job b holds (or b finished before the check: JOB_MS too short)"
    );
    assert_eq!(
        running_under(&pool, &b).await,
        [job],
        "b still holds the job"
    );

    await_all_succeeded(&pool, &[job], Duration::from_secs(15)).await;
    assert_one_result_each(&pool, &[job]).await;
    let (status, attempt): (String, i32) =
        sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert_eq!((status.as_str(), attempt), ("succeeded", 2));
    eprintln!(
        "a noticed the lost lease: {}",
        a.log_text().contains("lease")
    );
}
