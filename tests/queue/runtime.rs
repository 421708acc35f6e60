//! The worker runtime: timeouts, cancellation of running jobs, panicking handlers, heartbeats, and running
//! a dead worker's job again.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use jobdock::job::NewJob;
use jobdock::store::jobs::{self, Cancelled};
use jobdock::store::maintenance;
use jobdock::worker::WorkerPool;
use jobdock::{JobStatus, Registry};
use serde_json::json;

use crate::common::eventually;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_is_stopped_at_its_timeout_and_the_attempt_fails_retryably() {
    let db = Db::new().await;
    let pool = &db.pool;
    // The gate never opens: the handler hangs until the executor gives up on it.
    let (hangs, mut events, _gate) = Gate::new("hangs", "never", GateMode::WaitForGate);
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(hangs),
        // A long retry base, so the retry waits where the test can see it.
        config(2, Duration::from_secs(30), Duration::from_secs(60)),
    );
    let id = insert_one(
        pool,
        NewJob {
            timeout_secs: 1,
            max_attempts: 2,
            ..new_job("hangs")
        },
    )
    .await;
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { id, attempt: 1 }
    );
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(pool, id).await == JobStatus::Queued
        })
        .await,
        "the hanging attempt was not stopped: {:?}",
        get(pool, id).await
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopping took {:?} for a 1 s timeout",
        started.elapsed()
    );
    let job = get(pool, id).await;
    assert_eq!(job.attempt, 1);
    let error = job.error.expect("timeout error");
    assert_eq!(error["type"], json!("urn:jobdock:problem:job-timed-out"));
    assert_eq!(error["attempt"], json!(1));
    let ran = (job.updated_at - job.started_at.expect("started_at"))
        .to_std()
        .expect("positive run time");
    assert!(
        ran >= Duration::from_secs(1) && ran < Duration::from_secs(3),
        "the attempt ran {ran:?}"
    );
    assert!(job.run_at > db_now(pool).await, "a retry is due later");
    assert_eq!(lease_row(pool, id).await.lease_token, None);
    assert_eq!(
        workers.running(),
        0,
        "the hung handler still counts as running"
    );

    // The last attempt times out too and the job fails.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .expect("make due");
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { id, attempt: 2 }
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(pool, id).await == JobStatus::Failed
        })
        .await
    );
    let job = get(pool, id).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.error.expect("error")["type"],
        json!("urn:jobdock:problem:job-timed-out")
    );
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_promptly_through_notify_and_stores_no_result() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (waits, mut events, _gate) = Gate::new("waits", "finished", GateMode::HonourStop);
    // A 30 s lease puts heartbeats 10 s apart: only the NOTIFY can stop the job within the bound below.
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(waits),
        config(2, Duration::from_secs(30), Duration::from_millis(10)),
    );
    assert!(
        eventually(Duration::from_secs(10), || listener_is_up(pool)).await,
        "the worker pool never started listening"
    );
    let id = insert_one(pool, new_job("waits")).await;
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { id, attempt: 1 }
    );

    let asked = Instant::now();
    match jobs::cancel(pool, id, None).await.expect("cancel") {
        Cancelled::Requested(job) => assert!(job.cancel_requested),
        other => panic!("cancelling a running job answered {other:?}"),
    }
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Event::SawStop { id }
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(pool, id).await == JobStatus::Cancelled
        })
        .await,
        "the job did not end cancelled: {:?}",
        get(pool, id).await
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "cancellation took {:?}",
        asked.elapsed()
    );
    let job = get(pool, id).await;
    assert_eq!(
        job.error.expect("error")["type"],
        json!("urn:jobdock:problem:job-cancelled")
    );
    assert!(job.finished_at.is_some());
    assert_eq!(results_of(pool, id).await, 0);
    assert_eq!(lease_row(pool, id).await.lease_token, None);
    // A second cancel is a no-op that reports the job cancelled.
    assert!(matches!(
        jobs::cancel(pool, id, None).await.expect("cancel"),
        Cancelled::Already(_)
    ));
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_notification_is_lost_is_noticed_by_the_next_heartbeat() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (waits, mut events, _gate) = Gate::new("waits", "finished", GateMode::HonourStop);
    // Heartbeats every 0.5 s.
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(waits),
        config(2, Duration::from_millis(1500), Duration::from_millis(10)),
    );
    let id = insert_one(pool, new_job("waits")).await;
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { id, attempt: 1 }
    );
    // Flag the job as the API does, but send no NOTIFY: as if the notification were lost.
    sqlx::query("UPDATE jobs SET cancel_requested = true WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .expect("flag cancel");
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Event::SawStop { id }
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(pool, id).await == JobStatus::Cancelled
        })
        .await,
        "{:?}",
        get(pool, id).await
    );
    assert_eq!(results_of(pool, id).await, 0);
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_runs_the_next_job() {
    let db = Db::new().await;
    let pool = &db.pool;
    // One slot: the next job can only run if the slot the panic held was given back.
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::builtin().with(PanicsOnce {
            panicked: AtomicBool::new(false),
        }),
        config(1, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let panics = insert_one(
        pool,
        NewJob {
            max_attempts: 1,
            ..new_job("panics")
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(pool, panics).await == JobStatus::Failed
        })
        .await,
        "the panicking job did not fail: {:?}",
        get(pool, panics).await
    );
    let error = get(pool, panics).await.error.expect("error");
    let detail = error["detail"].as_str().expect("detail").to_owned();
    assert!(
        detail.contains("panicked") && detail.contains("kaboom in job"),
        "the error does not tell of the panic: {error}"
    );

    let echo = insert_one(pool, NewJob::new("echo", json!({"still": "alive"}))).await;
    // A retryable job of the same kind now succeeds on the same worker too.
    let again = insert_one(pool, new_job("panics")).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(pool, echo).await == JobStatus::Succeeded
                && status(pool, again).await == JobStatus::Succeeded
        })
        .await,
        "the worker stopped running jobs after a panic"
    );
    assert_eq!(result_body(pool, echo).await, r#"{"still":"alive"}"#);
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_extend_the_lease_of_a_long_job_so_it_is_never_rescued() {
    let db = Db::new().await;
    let pool = &db.pool;
    let lease = Duration::from_secs(2);
    let (long, mut events, gate) = Gate::new("long", "done", GateMode::WaitForGate);
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(long),
        config(1, lease, Duration::from_millis(10)),
    );
    let id = insert_one(pool, new_job("long")).await;
    assert_eq!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { id, attempt: 1 }
    );
    let first = lease_row(pool, id).await;
    let first_expiry = first.lease_expires_at.expect("lease");

    // Outlive the first lease by half a lease. The pool's own rescuer runs every second meanwhile, and
    // would take the job back if the heartbeats had not extended it.
    assert!(
        eventually(Duration::from_secs(10), || async {
            db_now(pool).await > first_expiry + chrono::Duration::milliseconds(1000)
        })
        .await
    );
    assert!(maintenance::rescue_expired(pool, 10)
        .await
        .expect("rescue")
        .is_empty());
    let job = get(pool, id).await;
    assert_eq!(job.status, JobStatus::Running, "{job:?}");
    assert_eq!(job.attempt, 1, "the job was rescued and claimed again");
    let now = lease_row(pool, id).await;
    assert_eq!(now.lease_token, first.lease_token);
    let expiry = now.lease_expires_at.expect("lease");
    assert!(expiry > first_expiry, "the lease never moved: {expiry}");
    assert!(
        expiry > db_now(pool).await,
        "the lease has lapsed: {expiry}"
    );

    gate.notify_one();
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(pool, id).await == JobStatus::Succeeded
        })
        .await
    );
    assert_eq!(results_of(pool, id).await, 1);
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_rescued_and_run_again_by_a_live_pool() {
    let db = Db::new().await;
    let pool = &db.pool;
    let id = insert_one(pool, NewJob::new("echo", json!({"n": 1}))).await;
    // A worker claims it and dies: nobody will heartbeat this lease.
    let dead = claim_one(pool, "echo", Duration::from_millis(200)).await;
    // A live pool, and maintenance beside it as `app` runs it; a short lease makes the rescuer run every
    // 0.5 s.
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::builtin(),
        config(2, Duration::from_secs(1), Duration::from_millis(10)),
    );
    let maintenance = jobdock::maintenance::Maintenance::start(
        pool.clone(),
        jobdock::maintenance::MaintenanceConfig {
            lease: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 86_400),
        },
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(pool, id).await == JobStatus::Succeeded
        })
        .await,
        "the dead worker's job never ran again: {:?}",
        get(pool, id).await
    );
    let job = get(pool, id).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(results_of(pool, id).await, 1);
    // The dead worker coming back to life changes nothing.
    assert!(
        jobdock::store::leases::complete_many(pool, &[completion(lease_of(&dead), "zombie")])
            .await
            .expect("complete")
            .is_empty()
    );
    assert_eq!(result_body(pool, id).await, r#"{"n":1}"#);
    workers.shutdown(Duration::from_secs(1)).await;
    maintenance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_statement_dies_mid_write_is_written_by_the_next_one_without_running_again()
{
    let db = Db::new().await;
    let pool = &db.pool;
    let (gated, mut events, gate) = Gate::new("gated", "the one result", GateMode::WaitForGate);
    let id = insert_one(pool, NewJob::new("gated", json!({}))).await;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(gated),
        config(2, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let Event::Started { attempt: 1, .. } = next_event(&mut events, Duration::from_secs(5)).await
    else {
        panic!("expected the first attempt to start");
    };
    // Hold the job's row, so the statement that writes its result waits on it once the handler returns.
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .expect("lock the row");
    gate.notify_one();
    let writer = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                  AND wait_event_type = 'Lock' AND query LIKE 'WITH done AS%'";
    let waiting = eventually(Duration::from_secs(5), || async {
        sqlx::query_scalar::<_, i32>(writer)
            .fetch_optional(pool)
            .await
            .expect("pg_stat_activity")
            .is_some()
    })
    .await;
    assert!(waiting, "the result's statement never waited on the row");
    // The connection dies under the statement (as in a failover): an error the dispatcher must retry.
    let killed: bool = sqlx::query_scalar(&format!(
        "SELECT pg_terminate_backend(pid) FROM ({writer}) w"
    ))
    .fetch_one(pool)
    .await
    .expect("terminate the writer");
    assert!(killed);
    holder.rollback().await.expect("release the row");

    assert!(
        eventually(Duration::from_secs(10), || async {
            status(pool, id).await == JobStatus::Succeeded
        })
        .await,
        "the result was never written after its statement died"
    );
    assert_eq!(result_body(pool, id).await, "the one result");
    assert_eq!(results_of(pool, id).await, 1);
    assert_eq!(get(pool, id).await.attempt, 1, "the job ran again");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err(),
        "the handler started again"
    );
    workers.shutdown(Duration::from_secs(5)).await;
}
