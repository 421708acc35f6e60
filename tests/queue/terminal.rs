//! Terminal states never change: concurrent cancel, completion, claim and rescue always leave one
//! consistent outcome, and nothing overwrites it afterwards.

use std::time::Duration;

use jobdock::store::jobs::{self, Cancelled};
use jobdock::store::{leases, maintenance};
use jobdock::JobStatus;
use serde_json::json;

use crate::support::*;

const ITERATIONS: usize = 60;
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_completion_ends_succeeded_once_and_nothing_changes_it_later() {
    let db = Db::new().await;
    let pool = &db.pool;
    let mut requested_first = 0;
    for _ in 0..ITERATIONS {
        let id = insert_one(pool, new_job("echo")).await;
        let claimed = claim_one(pool, "echo", LEASE).await;
        let lease = lease_of(&claimed);
        let done = [completion(lease, "done")];
        let (cancelled, completed) = tokio::join!(
            jobs::cancel(pool, id, None),
            leases::complete_many(pool, &done)
        );
        let cancelled = cancelled.expect("cancel");
        let completed = completed.expect("complete");
        // A running job is only flagged by cancel, so the completion always applies; cancel saw it either
        // running (and asked it to stop) or already finished.
        assert_eq!(completed, vec![id], "the completion was refused");
        match cancelled {
            Cancelled::Requested(job) => {
                requested_first += 1;
                assert_eq!(job.status, JobStatus::Running);
            }
            Cancelled::Finished(job) => assert_eq!(job.status, JobStatus::Succeeded),
            other => panic!("cancel of a running job answered {other:?}"),
        }
        let job = get(pool, id).await;
        assert_eq!(job.status, JobStatus::Succeeded);
        assert!(job.finished_at.is_some());
        assert_eq!(results_of(pool, id).await, 1);

        // Later writes are refused and change nothing.
        assert!(matches!(
            jobs::cancel(pool, id, None).await.expect("cancel"),
            Cancelled::Finished(_)
        ));
        assert!(leases::complete_many(pool, &[completion(lease, "again")])
            .await
            .expect("complete")
            .is_empty());
        assert!(!leases::cancel_running(pool, lease, &json!({}))
            .await
            .expect("cancel_running"));
        assert_eq!(
            leases::fail_attempt(
                pool,
                lease,
                &json!({}),
                &serde_json::json!({"title": "cancelled"}),
                true,
                Duration::ZERO
            )
            .await
            .expect("fail"),
            None
        );
        let after = get(pool, id).await;
        assert_eq!(after.status, JobStatus::Succeeded);
        assert_eq!(after.finished_at, job.finished_at);
        assert_eq!(result_body(pool, id).await, "done");
    }
    eprintln!("cancel saw the job running in {requested_first} of {ITERATIONS} races");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_racing_rescue_applies_exactly_one_of_them() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (mut completions_won, mut rescues_won) = (0, 0);
    for _ in 0..ITERATIONS {
        let id = insert_one(pool, new_job("echo")).await;
        let claimed = claim_one(pool, "echo", LEASE).await;
        expire_lease(pool, id).await;
        let done = [completion(lease_of(&claimed), "done")];
        let (completed, rescued) = tokio::join!(
            leases::complete_many(pool, &done),
            maintenance::rescue_expired(pool, 10)
        );
        let completed = completed.expect("complete") == vec![id];
        let rescued = rescued.expect("rescue").iter().any(|r| r.id == id);
        let job = get(pool, id).await;
        let results = results_of(pool, id).await;
        match (completed, rescued) {
            (true, false) => {
                completions_won += 1;
                assert_eq!(job.status, JobStatus::Succeeded);
                assert_eq!(results, 1);
                // The rescuer never touches it later either.
                assert!(maintenance::rescue_expired(pool, 10)
                    .await
                    .expect("rescue")
                    .is_empty());
                assert_eq!(status(pool, id).await, JobStatus::Succeeded);
            }
            (false, true) => {
                rescues_won += 1;
                assert_eq!(job.status, JobStatus::Queued);
                assert_eq!(results, 0);
                // Clear it out of the way of the next iteration's claim.
                let again = claim_one(pool, "echo", LEASE).await;
                assert_eq!(again.id, id);
                assert_eq!(
                    leases::complete_many(pool, &[completion(lease_of(&again), "done")])
                        .await
                        .expect("complete"),
                    vec![id]
                );
            }
            (true, true) => panic!("both the completion and the rescue applied: {job:?}"),
            (false, false) => panic!("neither the completion nor the rescue applied: {job:?}"),
        }
    }
    eprintln!("completion won {completions_won}, rescue won {rescues_won} of {ITERATIONS} races");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_a_claim_either_cancels_the_queued_job_or_flags_the_claimed_one() {
    let db = Db::new().await;
    let pool = &db.pool;
    let (mut cancelled_first, mut claimed_first) = (0, 0);
    for _ in 0..ITERATIONS {
        let id = insert_one(pool, new_job("echo")).await;
        let (cancelled, claimed) =
            tokio::join!(jobs::cancel(pool, id, None), claim(pool, "echo", 1, LEASE));
        match (cancelled.expect("cancel"), claimed.as_slice()) {
            (Cancelled::Done(job), []) => {
                cancelled_first += 1;
                assert_eq!(job.status, JobStatus::Cancelled);
                // A cancelled job is never claimed later.
                assert!(claim(pool, "echo", 10, LEASE).await.is_empty());
                assert_eq!(status(pool, id).await, JobStatus::Cancelled);
            }
            (Cancelled::Requested(job), [claimed]) => {
                claimed_first += 1;
                assert_eq!(job.status, JobStatus::Running);
                assert_eq!(claimed.id, id);
                // The worker stops on request and ends the job cancelled, once.
                assert!(leases::cancel_running(
                    pool,
                    lease_of(claimed),
                    &json!({"detail": "stopped"})
                )
                .await
                .expect("cancel_running"));
                assert!(matches!(
                    jobs::cancel(pool, id, None).await.expect("cancel"),
                    Cancelled::Already(_)
                ));
                assert!(
                    leases::complete_many(pool, &[completion(lease_of(claimed), "late")])
                        .await
                        .expect("complete")
                        .is_empty()
                );
                assert_eq!(status(pool, id).await, JobStatus::Cancelled);
                assert_eq!(results_of(pool, id).await, 0);
            }
            (cancelled, claimed) => {
                panic!("inconsistent race: cancel answered {cancelled:?}, claim got {claimed:?}")
            }
        }
    }
    eprintln!("cancel won {cancelled_first}, claim won {claimed_first} of {ITERATIONS} races");
}

#[tokio::test]
async fn terminal_jobs_are_never_claimed_rescued_or_released() {
    let db = Db::new().await;
    let pool = &db.pool;
    // One job in each terminal state, reached through the store's own paths.
    let succeeded = insert_one(pool, new_job("echo")).await;
    let lease_s = lease_of(&claim_one(pool, "echo", LEASE).await);
    leases::complete_many(pool, &[completion(lease_s, "ok")])
        .await
        .expect("complete");
    let failed = insert_one(pool, new_job("echo")).await;
    let lease_f = lease_of(&claim_one(pool, "echo", LEASE).await);
    leases::fail_attempt(
        pool,
        lease_f,
        &json!({"detail": "no"}),
        &serde_json::json!({"title": "cancelled"}),
        false,
        Duration::ZERO,
    )
    .await
    .expect("fail");
    let cancelled = insert_one(pool, new_job("echo")).await;
    jobs::cancel(pool, cancelled, None).await.expect("cancel");

    // Even with a lease expiry forced onto them, nothing moves them.
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 hour'")
        .execute(pool)
        .await
        .expect("backdate leases");
    assert!(maintenance::rescue_expired(pool, 100)
        .await
        .expect("rescue")
        .is_empty());
    assert!(claim(pool, "echo", 100, LEASE).await.is_empty());
    assert!(leases::release_many(pool, &[lease_s, lease_f])
        .await
        .expect("release")
        .is_empty());
    assert_eq!(status(pool, succeeded).await, JobStatus::Succeeded);
    assert_eq!(status(pool, failed).await, JobStatus::Failed);
    assert_eq!(status(pool, cancelled).await, JobStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_a_retryable_failure_or_a_release_always_ends_cancelled() {
    let db = Db::new().await;
    let pool = &db.pool;
    for iteration in 0..ITERATIONS {
        let id = insert_one(pool, new_job("echo")).await;
        let claimed = claim_one(pool, "echo", LEASE).await;
        let lease = lease_of(&claimed);
        // Either way the job would go back to the queue; a cancel that lands at any point must win.
        let (cancelled, requeued) = if iteration % 2 == 0 {
            let error = json!({"detail": "flaky"});
            let cancelled_error = json!({"title": "cancelled"});
            let (cancelled, moved) = tokio::join!(
                jobs::cancel(pool, id, None),
                leases::fail_attempt(pool, lease, &error, &cancelled_error, true, Duration::ZERO)
            );
            (cancelled, moved.expect("fail").is_some())
        } else {
            let leases = [lease];
            let (cancelled, released) = tokio::join!(
                jobs::cancel(pool, id, None),
                leases::release_many(pool, &leases)
            );
            (cancelled, released.expect("release") == vec![id])
        };
        assert!(requeued, "the worker's own write was refused");
        assert!(
            matches!(
                cancelled.expect("cancel"),
                Cancelled::Done(_) | Cancelled::Requested(_)
            ),
            "cancel of a live job must be accepted"
        );
        let job = get(pool, id).await;
        assert_eq!(
            job.status,
            JobStatus::Cancelled,
            "iteration {iteration}: {job:?}"
        );
        assert!(job.finished_at.is_some());
        assert!(claim(pool, "echo", 10, LEASE).await.is_empty());
    }
}
