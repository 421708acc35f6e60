//! Retries: a retryable failure goes back to the queue with exponential backoff and jitter, until the
//! attempts are spent; a permanent failure ends the job at once.

use std::time::Duration;

use async_trait::async_trait;
use jobdock::job::NewJob;
use jobdock::kinds::{Handler, JobContext, JobError, Output};
use jobdock::worker::WorkerPool;
use jobdock::{Job, JobStatus, Registry};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::eventually;
use crate::support::*;

/// Fails every attempt, saying which attempt it was; retryable unless the payload says `"permanent"`.
struct Flaky;

#[async_trait]
impl Handler for Flaky {
    fn kind(&self) -> &str {
        "flaky"
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let message = format!("attempt {} failed", ctx.attempt());
        Err(if payload["permanent"] == json!(true) {
            JobError::Permanent(message)
        } else {
            JobError::Retryable(message)
        })
    }
}

/// Waits until job `id` has reached `status` at `attempt`; returns it.
async fn await_state(pool: &PgPool, id: Uuid, status: JobStatus, attempt: i32) -> Job {
    let reached = eventually(Duration::from_secs(10), || async {
        let job = get(pool, id).await;
        job.status == status && job.attempt == attempt
    })
    .await;
    let job = get(pool, id).await;
    assert!(
        reached,
        "job never reached {status} at attempt {attempt}; last seen {job:?}"
    );
    job
}

/// Makes a job that waits for its retry due now, so the test need not wait out the backoff.
async fn make_due(pool: &PgPool, id: Uuid) {
    let updated = sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1 AND status = 'queued'")
        .bind(id)
        .execute(pool)
        .await
        .expect("make due");
    assert_eq!(updated.rows_affected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_backs_off_exponentially_then_fails_when_attempts_are_spent() {
    let db = Db::new().await;
    let pool = &db.pool;
    let base = Duration::from_secs(10);
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(Flaky),
        config(2, Duration::from_secs(30), base),
    );
    let id = insert_one(
        pool,
        NewJob {
            max_attempts: 3,
            ..new_job("flaky")
        },
    )
    .await;

    for attempt in 1..=2 {
        let job = await_state(pool, id, JobStatus::Queued, attempt).await;
        let error = job.error.clone().expect("error of the failed attempt");
        assert_eq!(error["detail"], json!(format!("attempt {attempt} failed")));
        assert_eq!(error["attempt"], json!(attempt));
        assert_eq!(error["type"], json!("urn:jobdock:problem:job-failed"));
        assert_eq!(job.finished_at, None);
        assert!(
            job.run_at > db_now(pool).await,
            "attempt {attempt}: the retry is due at once"
        );
        // fail_attempt sets updated_at = now() and run_at = now() + delay in one statement.
        let delay = (job.run_at - job.updated_at)
            .to_std()
            .expect("positive delay");
        let nominal = base * 2u32.pow(attempt as u32 - 1);
        assert!(
            delay >= nominal.mul_f64(0.5) && delay < nominal.mul_f64(1.5),
            "attempt {attempt}: a backoff of {delay:?} is outside the jittered bounds of {nominal:?}"
        );
        // Not claimed while it waits for its backoff.
        assert!(claim(pool, "flaky", 10, Duration::from_secs(30))
            .await
            .is_empty());
        make_due(pool, id).await;
    }

    let job = await_state(pool, id, JobStatus::Failed, 3).await;
    let error = job.error.expect("final error");
    assert_eq!(error["detail"], json!("attempt 3 failed"));
    assert_eq!(error["attempt"], json!(3));
    assert!(job.finished_at.is_some());
    assert_eq!(results_of(pool, id).await, 0);
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_ends_the_job_failed_at_once() {
    let db = Db::new().await;
    let pool = &db.pool;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(Flaky),
        config(2, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let id = insert_one(
        pool,
        NewJob {
            max_attempts: 5,
            ..NewJob::new("flaky", json!({"permanent": true}))
        },
    )
    .await;
    let job = await_state(pool, id, JobStatus::Failed, 1).await;
    assert_eq!(
        job.error.expect("error")["detail"],
        json!("attempt 1 failed")
    );
    assert!(job.finished_at.is_some());
    workers.shutdown(Duration::from_secs(1)).await;
    // Still failed at attempt 1: it was not retried behind our back.
    assert_eq!(get(pool, id).await.attempt, 1);
}

#[tokio::test]
async fn fail_attempt_requeues_with_the_given_delay_only_while_attempts_remain() {
    let db = Db::new().await;
    let pool = &db.pool;
    let id = insert_one(
        pool,
        NewJob {
            max_attempts: 2,
            ..new_job("echo")
        },
    )
    .await;
    let lease = lease_of(&claim_one(pool, "echo", Duration::from_secs(30)).await);
    let moved = jobdock::store::leases::fail_attempt(
        pool,
        lease,
        &json!({"detail": "one"}),
        &serde_json::json!({"title": "cancelled"}),
        true,
        Duration::from_secs(120),
    )
    .await
    .expect("fail");
    assert_eq!(moved, Some(JobStatus::Queued));
    let job = get(pool, id).await;
    assert_eq!(
        (job.run_at - job.updated_at).num_seconds(),
        120,
        "run_at was not pushed by the delay"
    );
    assert_eq!(lease_row(pool, id).await.lease_token, None);

    make_due(pool, id).await;
    let lease = lease_of(&claim_one(pool, "echo", Duration::from_secs(30)).await);
    let moved = jobdock::store::leases::fail_attempt(
        pool,
        lease,
        &json!({"detail": "two"}),
        &serde_json::json!({"title": "cancelled"}),
        true,
        Duration::from_secs(120),
    )
    .await
    .expect("fail");
    assert_eq!(moved, Some(JobStatus::Failed), "attempts were spent");
    let job = get(pool, id).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.error, Some(json!({"detail": "two"})));
}
