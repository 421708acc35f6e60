//! Fair share and tenant caps (DESIGN §11) in the claim: one tenant's burst does not starve another, and
//! `[tenants.NAME] max_running` holds across worker pools sharing the database.

use std::sync::Arc;
use std::time::Duration;

use jobdock::job::NewJob;
use jobdock::store::leases::TenantCaps;
use jobdock::worker::WorkerPool;
use jobdock::Registry;
use serde_json::json;

use crate::common::eventually;
use crate::support::*;

fn of_tenant(tenant: &str, kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob {
        tenant: tenant.to_owned(),
        ..NewJob::new(kind, payload)
    }
}

async fn insert_in_chunks(pool: &sqlx::PgPool, jobs: Vec<NewJob>) {
    for chunk in jobs.chunks(1_000) {
        insert(pool, chunk).await;
    }
}

/// How many of A's jobs had finished by the time B's last one did.
async fn a_finished_before_b(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant = 'a' AND status = 'succeeded' \
           AND finished_at <= (SELECT max(finished_at) FROM jobs WHERE tenant = 'b')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn until_b_is_done(pool: &sqlx::PgPool) -> bool {
    eventually(Duration::from_secs(60), || async {
        crate::common::count(
            pool,
            "SELECT count(*) FROM jobs WHERE tenant = 'b' AND status = 'succeeded'",
        )
        .await
            == 100
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_behind_a_big_burst_finishes_before_the_burst_is_a_quarter_done() {
    let db = Db::new().await;
    let pool = &db.pool;
    insert_in_chunks(
        pool,
        (0..20_000)
            .map(|_| of_tenant("a", "echo", json!({})))
            .collect(),
    )
    .await;
    insert_in_chunks(
        pool,
        (0..100)
            .map(|_| of_tenant("b", "echo", json!({})))
            .collect(),
    )
    .await;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::builtin(),
        config(64, Duration::from_secs(30), Duration::from_secs(1)),
    );
    assert!(until_b_is_done(pool).await);
    workers.shutdown(Duration::from_secs(5)).await;
    let a_before_b = a_finished_before_b(pool).await;
    assert!(
        a_before_b < 5_000,
        "{a_before_b} of A's jobs finished before B's last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_arrives_while_workers_drain_another_is_served_at_once() {
    let db = Db::new().await;
    let pool = &db.pool;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::builtin(),
        config(64, Duration::from_secs(30), Duration::from_secs(1)),
    );
    // One statement each: A's burst is already being drained (and its tenants remembered) when B's jobs
    // arrive; their notification must make the workers look for tenants again.
    insert(
        pool,
        &(0..20_000)
            .map(|_| of_tenant("a", "echo", json!({})))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            crate::common::count(pool, "SELECT count(*) FROM jobs WHERE status = 'succeeded'").await
                >= 1_000
        })
        .await
    );
    insert(
        pool,
        &(0..100)
            .map(|_| of_tenant("b", "echo", json!({})))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(until_b_is_done(pool).await);
    workers.shutdown(Duration::from_secs(5)).await;
    // Counted from B's arrival as the database recorded it: a count taken by the test before inserting B
    // would also take in the jobs A finished while the test itself waited for a busy machine.
    let a_meanwhile: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant = 'a' AND status = 'succeeded' \
           AND finished_at >= (SELECT min(created_at) FROM jobs WHERE tenant = 'b') \
           AND finished_at <= (SELECT max(finished_at) FROM jobs WHERE tenant = 'b')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        a_meanwhile < 5_000,
        "{a_meanwhile} of A's jobs finished between B's arrival and B's last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_caps_a_tenant_across_worker_pools_and_leaves_others_alone() {
    let db = Db::new().await;
    let pool = &db.pool;
    let caps = Arc::new(TenantCaps::new([("capped".to_owned(), 3)]));
    let start = || {
        let mut config = config(16, Duration::from_secs(30), Duration::from_secs(1));
        config.caps = caps.clone();
        WorkerPool::start(pool.clone(), Registry::builtin(), config)
    };
    let (first, second) = (start(), start());
    insert(
        pool,
        &(0..24)
            .map(|_| of_tenant("capped", "sleep", json!({"ms": 150})))
            .chain((0..12).map(|_| of_tenant("free", "sleep", json!({"ms": 600}))))
            .collect::<Vec<_>>(),
    )
    .await;
    let most = Arc::new(std::sync::Mutex::new((0i64, 0i64)));
    let finished = eventually(Duration::from_secs(60), || async {
        let (capped, free, left): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'running' AND tenant = 'capped'), \
                    count(*) FILTER (WHERE status = 'running' AND tenant = 'free'), \
                    count(*) FILTER (WHERE status <> 'succeeded') FROM jobs",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let mut most = most.lock().unwrap();
        *most = (most.0.max(capped), most.1.max(free));
        left == 0
    })
    .await;
    first.shutdown(Duration::from_secs(5)).await;
    second.shutdown(Duration::from_secs(5)).await;
    assert!(finished, "every job should finish");
    let (most_capped, most_free) = *most.lock().unwrap();
    assert!(most_capped <= 3, "{most_capped} capped jobs ran at once");
    assert!(most_capped >= 1);
    assert!(
        most_free > 3,
        "the uncapped tenant ran only {most_free} at once"
    );
}
