//! Graceful shutdown in-process: jobs that finish within the grace complete, the rest go back to the
//! queue at once without spending an attempt, and no claimed job is ever stranded.

use std::time::{Duration, Instant};

use jobdock::worker::WorkerPool;
use jobdock::{JobStatus, Registry};

use crate::common::{count, eventually};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_jobs_that_finish_within_the_grace_and_releases_the_rest_at_once() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (quick, mut quick_events, quick_gate) =
        Gate::new("quick", "quick done", GateMode::WaitForGate);
    // Ignores the stop signal: the worst case, a handler shutdown has to abandon.
    let (stuck, mut stuck_events, _stuck_gate) = Gate::new("stuck", "never", GateMode::WaitForGate);
    // A 30 s lease: a release that waited for the lease to expire would blow the bounds below.
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(quick).with(stuck),
        config(4, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let quick_id = insert_one(pool, new_job("quick")).await;
    let stuck_id = insert_one(pool, new_job("stuck")).await;
    assert!(matches!(
        next_event(&mut quick_events, Duration::from_secs(10)).await,
        Event::Started { attempt: 1, .. }
    ));
    assert!(matches!(
        next_event(&mut stuck_events, Duration::from_secs(10)).await,
        Event::Started { attempt: 1, .. }
    ));
    assert_eq!(workers.running(), 2);

    let grace = Duration::from_secs(1);
    let begun = Instant::now();
    let shutdown = tokio::spawn(workers.shutdown(grace));
    // The quick job finishes within the grace.
    quick_gate.notify_one();
    shutdown.await.expect("shutdown task");
    let took = begun.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(3),
        "shutdown took {took:?} with a grace of {grace:?}"
    );

    let quick_job = get(pool, quick_id).await;
    assert_eq!(quick_job.status, JobStatus::Succeeded);
    assert_eq!(result_body(pool, quick_id).await, "quick done");

    let stuck_job = get(pool, stuck_id).await;
    assert_eq!(stuck_job.status, JobStatus::Queued, "{stuck_job:?}");
    assert_eq!(stuck_job.attempt, 0, "the released attempt was counted");
    assert!(
        stuck_job.run_at <= db_now(pool).await,
        "released, yet not due"
    );
    assert_eq!(lease_row(pool, stuck_id).await.lease_token, None);
    assert_eq!(results_of(pool, stuck_id).await, 0);

    // Released jobs are claimable by the next worker at once, with the attempt numbered as the first.
    let next = claim(pool, "stuck", 10, Duration::from_secs(30)).await;
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].id, next[0].attempt), (stuck_id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_a_job_that_honours_the_stop_signal_too() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (polite, mut events, _gate) = Gate::new("polite", "never", GateMode::HonourStop);
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(polite),
        config(2, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let id = insert_one(pool, new_job("polite")).await;
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(10)).await,
        Event::Started { .. }
    ));
    workers.shutdown(Duration::from_millis(200)).await;
    let job = get(pool, id).await;
    // Stopping for shutdown is not a cancellation.
    assert_eq!(job.status, JobStatus::Queued, "{job:?}");
    assert_eq!(job.attempt, 0);
    assert!(!job.cancel_requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_right_after_start_never_strands_a_claimed_job_as_running() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (stuck, _events, _gate) = Gate::new("stuck", "never", GateMode::WaitForGate);
    let registry = Registry::empty().with(stuck);
    let jobs: Vec<_> = (0..200).map(|_| new_job("stuck")).collect();
    insert(pool, &jobs).await;
    for round in 0..150_u64 {
        let workers = WorkerPool::start(
            pool.clone(),
            registry.clone(),
            config(8, Duration::from_secs(30), Duration::from_millis(10)),
        );
        // Stop at varying moments around the first claim: before it, while it is in flight, just after.
        for _ in 0..round % 5 {
            tokio::task::yield_now().await;
        }
        if round % 5 == 4 {
            assert!(eventually(Duration::from_secs(5), || async { workers.running() > 0 }).await);
        }
        workers.shutdown(Duration::ZERO).await;
        let running = count(pool, "SELECT count(*) FROM jobs WHERE status = 'running'").await;
        assert_eq!(
            running, 0,
            "round {round}: {running} claimed jobs were left running with no worker"
        );
    }
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM jobs WHERE status = 'queued' AND attempt = 0"
        )
        .await,
        200,
        "every job is back in the queue with no attempt spent"
    );
}

#[tokio::test]
async fn release_returns_jobs_without_spending_the_attempt_and_ends_cancel_requested_ones() {
    let db = Db::new().await;
    let pool = &db.pool;
    let keep = insert_one(pool, new_job("echo")).await;
    let drop = insert_one(pool, new_job("echo")).await;
    let claimed = claim(pool, "echo", 10, Duration::from_secs(30)).await;
    assert_eq!(claimed.len(), 2);
    assert!(matches!(
        jobdock::store::jobs::cancel(pool, drop, None)
            .await
            .expect("cancel"),
        jobdock::store::jobs::Cancelled::Requested(_)
    ));
    let leases: Vec<_> = claimed.iter().map(lease_of).collect();
    let mut released = jobdock::store::leases::release_many(pool, &leases)
        .await
        .expect("release");
    released.sort();
    let mut expected = vec![keep, drop];
    expected.sort();
    assert_eq!(released, expected);

    let job = get(pool, keep).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0));
    assert!(job.run_at <= db_now(pool).await);
    assert_eq!(lease_row(pool, keep).await.worker_id, None);
    let job = get(pool, drop).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at.is_some());
    // Releasing twice does nothing.
    assert!(jobdock::store::leases::release_many(pool, &leases)
        .await
        .expect("release")
        .is_empty());
}
