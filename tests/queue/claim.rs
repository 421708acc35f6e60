//! Claiming: exclusive under concurrency, in priority order, only due jobs of the asked kinds, never more
//! than the limit.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use jobdock::store::leases;
use uuid::Uuid;

use crate::support::*;

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_claim_the_same_job_and_together_claim_all() {
    let db = Db::with_connections(12).await;
    let total = 3000;
    let jobs: Vec<_> = (0..total).map(|_| new_job("echo")).collect();
    let inserted: HashSet<Uuid> = insert(&db.pool, &jobs)
        .await
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(inserted.len(), total);

    let claimers = 6;
    let mut handles = Vec::new();
    for worker in 0..claimers {
        let pool = db.pool.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let kinds = kinds(&["echo"]);
            loop {
                // Varying batch sizes make the claimers' row windows overlap in different ways.
                let limit = 7 + 13 * worker as i64;
                let claimed =
                    leases::claim_available(&pool, &kinds, limit, LEASE, &format!("w{worker}"))
                        .await
                        .expect("claim");
                assert!(claimed.len() as i64 <= limit);
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|job| job.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claimed_total = 0;
    let mut per_claimer = Vec::new();
    for handle in handles {
        let mine = handle.await.expect("claimer task");
        per_claimer.push(mine.len());
        claimed_total += mine.len();
        for id in mine {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(claimed_total, total, "claims per claimer: {per_claimer:?}");
    assert_eq!(seen, inserted, "the claims must cover every job");
    assert!(
        per_claimer.iter().filter(|n| **n > 0).count() > 1,
        "the claimers did not actually run concurrently: {per_claimer:?}"
    );
    assert_eq!(
        crate::common::count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'running' AND attempt = 1"
        )
        .await,
        total as i64
    );
}

#[tokio::test]
async fn claims_follow_priority_then_run_at_then_id_and_respect_due_kind_and_limit() {
    let db = Db::new().await;
    let now = Utc::now();
    let mut jobs = Vec::new();
    // (priority, seconds relative to now, kind): due jobs in a scrambled order, a future job with the top
    // priority, and a job of a kind nobody asks for.
    let spec: [(i32, i64, &str); 9] = [
        (0, -10, "echo"),
        (5, -1, "echo"),
        (5, -30, "echo"),
        (-3, -100, "echo"),
        (0, -10, "echo"), // same priority and run_at as the first: the id breaks the tie
        (10, -5, "echo"),
        (100, 3600, "echo"),  // not due
        (1000, -60, "other"), // not asked for
        (5, -30, "echo"),     // ties with the third on priority and run_at
    ];
    for (priority, offset, kind) in spec {
        let mut job = new_job(kind);
        job.priority = priority;
        job.run_at = Some(now + chrono::Duration::seconds(offset));
        jobs.push(job);
    }
    let inserted = insert(&db.pool, &jobs).await;
    assert_eq!(inserted.len(), spec.len());
    let by_index = |i: usize| jobs[i].id;
    let expected = vec![
        by_index(5), // priority 10
        by_index(2), // priority 5, run_at -30, smaller id
        by_index(8), // priority 5, run_at -30, larger id
        by_index(1), // priority 5, run_at -1
        by_index(0), // priority 0, run_at -10, smaller id
        by_index(4), // priority 0, run_at -10, larger id
        by_index(3), // priority -3
    ];
    // UUIDv7 ids made in this order compare in this order, which the tie-breaks above rely on.
    assert!(jobs[2].id < jobs[8].id && jobs[0].id < jobs[4].id);

    // Claim in small batches: each batch is the next slice of the order, and never more than the limit.
    let mut order = Vec::new();
    for limit in [1_i64, 2, 3, 5] {
        let claimed = claim(&db.pool, "echo", limit, LEASE).await;
        assert!(
            claimed.len() as i64 <= limit,
            "claimed {} with limit {limit}",
            claimed.len()
        );
        order.extend(claimed.iter().map(|job| job.id));
    }
    assert_eq!(order, expected, "claim order");

    // Nothing else is claimable: the future job and the other kind stay queued.
    assert!(claim(&db.pool, "echo", 100, LEASE).await.is_empty());
    assert_eq!(
        status(&db.pool, by_index(6)).await,
        jobdock::JobStatus::Queued
    );
    assert_eq!(
        status(&db.pool, by_index(7)).await,
        jobdock::JobStatus::Queued
    );

    // The other kind is claimable by a worker that asks for it; the future job by nobody, yet.
    let other = leases::claim_available(
        &db.pool,
        &kinds(&["other", "echo"]),
        100,
        LEASE,
        "test-worker",
    )
    .await
    .expect("claim");
    assert_eq!(
        other.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![by_index(7)]
    );
}

#[tokio::test]
async fn a_claim_sets_a_fresh_lease_and_counts_the_attempt() {
    let db = Db::new().await;
    let id = insert_one(&db.pool, new_job("echo")).await;
    let before = db_now(&db.pool).await;
    let claimed = claim_one(&db.pool, "echo", Duration::from_secs(30)).await;
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.attempt, 1);
    let row = lease_row(&db.pool, id).await;
    assert_eq!(row.lease_token, Some(claimed.lease_token));
    assert_eq!(row.worker_id.as_deref(), Some("test-worker"));
    let expires = row.lease_expires_at.expect("lease expiry");
    assert!(
        expires >= before + chrono::Duration::seconds(29)
            && expires <= before + chrono::Duration::seconds(40),
        "lease expires at {expires}, claimed at about {before}"
    );
    let job = get(&db.pool, id).await;
    assert_eq!(job.status, jobdock::JobStatus::Running);
    assert!(job.started_at.is_some());
}
