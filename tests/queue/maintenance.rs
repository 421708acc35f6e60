//! Maintenance at the store level: the rescuer (expired leases) and the pruner (retention).

use std::collections::HashSet;
use std::time::Duration;

use jobdock::job::NewJob;
use jobdock::store::jobs::{self, Cancelled};
use jobdock::store::{leases, maintenance};
use jobdock::JobStatus;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::count;
use crate::support::*;

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(3600);

/// Inserts `n` jobs and runs them to success through the store, each with a result row.
async fn succeeded_jobs(pool: &PgPool, n: usize) -> Vec<Uuid> {
    let jobs: Vec<_> = (0..n).map(|_| new_job("done")).collect();
    insert(pool, &jobs).await;
    let claimed = claim(pool, "done", n as i64, LEASE).await;
    assert_eq!(claimed.len(), n);
    let completions: Vec<_> = claimed
        .iter()
        .map(|job| completion(lease_of(job), "result"))
        .collect();
    let done = leases::complete_many(pool, &completions)
        .await
        .expect("complete");
    assert_eq!(done.len(), n);
    done
}

/// Pretends jobs finished `age` ago.
async fn backdate(pool: &PgPool, ids: &[Uuid], age: Duration) {
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - make_interval(secs => $2) WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(age.as_secs_f64())
    .execute(pool)
    .await
    .expect("backdate");
}

#[tokio::test]
async fn pruning_deletes_only_finished_jobs_past_retention_with_their_results_in_bounded_batches() {
    let db = Db::new().await;
    let pool = &db.pool;
    let two_hours = Duration::from_secs(7200);

    let old_succeeded = succeeded_jobs(pool, 25).await;
    backdate(pool, &old_succeeded, two_hours).await;
    let recent_succeeded = succeeded_jobs(pool, 5).await;
    // Finished just inside the retention: kept.
    backdate(pool, &recent_succeeded, RETENTION - Duration::from_secs(60)).await;

    let old_failed = insert_one(pool, new_job("flop")).await;
    let lease = lease_of(&claim_one(pool, "flop", LEASE).await);
    leases::fail_attempt(
        pool,
        lease,
        &json!({"detail": "no"}),
        &serde_json::json!({"title": "cancelled"}),
        false,
        Duration::ZERO,
    )
    .await
    .expect("fail");
    let old_cancelled = insert_one(pool, new_job("idle")).await;
    assert!(matches!(
        jobs::cancel(pool, old_cancelled, None)
            .await
            .expect("cancel"),
        Cancelled::Done(_)
    ));
    backdate(pool, &[old_failed, old_cancelled], two_hours).await;

    // Unfinished jobs, created long ago: never pruned, however old.
    let queued: Vec<_> = (0..5).map(|_| new_job("idle")).collect();
    insert(pool, &queued).await;
    let running: Vec<_> = (0..5).map(|_| new_job("busy")).collect();
    insert(pool, &running).await;
    assert_eq!(claim(pool, "busy", 5, LEASE).await.len(), 5);
    sqlx::query(
        "UPDATE jobs SET created_at = now() - interval '30 days', run_at = now() - interval '30 days' \
         WHERE status IN ('queued', 'running')",
    )
    .execute(pool)
    .await
    .expect("age unfinished jobs");

    let old_total = 27;
    let mut batches = Vec::new();
    loop {
        let deleted = maintenance::prune_finished(pool, RETENTION, 10)
            .await
            .expect("prune");
        assert!(
            deleted <= 10,
            "a batch deleted {deleted} rows, over the limit"
        );
        if deleted == 0 {
            break;
        }
        batches.push(deleted);
        assert!(batches.len() <= 3, "pruning does not converge: {batches:?}");
    }
    assert_eq!(batches, vec![10, 10, 7]);
    assert_eq!(batches.iter().sum::<u64>(), old_total);

    let remaining: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_all(pool)
        .await
        .expect("ids")
        .into_iter()
        .collect();
    for id in old_succeeded.iter().chain([&old_failed, &old_cancelled]) {
        assert!(!remaining.contains(id), "old job {id} survived pruning");
    }
    for id in &recent_succeeded {
        assert!(remaining.contains(id), "recent job {id} was pruned");
    }
    assert_eq!(remaining.len(), 5 + 5 + 5);
    assert_eq!(
        count(pool, "SELECT count(*) FROM jobs WHERE status = 'queued'").await,
        5
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM jobs WHERE status = 'running'").await,
        5
    );
    // Results went with their jobs; the recent ones' stayed.
    assert_eq!(count(pool, "SELECT count(*) FROM results").await, 5);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.status = 'succeeded'"
        )
        .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prunes_delete_each_old_job_once_in_total() {
    let db = Db::new().await;
    let pool = &db.pool;
    let total = 600;
    let ids = succeeded_jobs(pool, total).await;
    backdate(pool, &ids, Duration::from_secs(7200)).await;

    let pruners: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut deleted = 0;
                let mut batches = 0;
                loop {
                    let n = maintenance::prune_finished(&pool, RETENTION, 25)
                        .await
                        .expect("prune");
                    assert!(n <= 25, "a batch deleted {n} rows, over the limit");
                    if n == 0 {
                        return (deleted, batches);
                    }
                    deleted += n;
                    batches += 1;
                }
            })
        })
        .collect();
    let mut total_deleted = 0;
    let mut split = Vec::new();
    for pruner in pruners {
        let (deleted, batches) = pruner.await.expect("pruner");
        total_deleted += deleted;
        split.push((deleted, batches));
    }
    assert_eq!(
        total_deleted, total as u64,
        "deletions per pruner (rows, batches): {split:?}"
    );
    assert_eq!(count(pool, "SELECT count(*) FROM jobs").await, 0);
    assert_eq!(count(pool, "SELECT count(*) FROM results").await, 0);
}

#[tokio::test]
async fn rescue_requeues_fails_or_cancels_expired_jobs_by_what_is_left_of_them() {
    let db = Db::new().await;
    let pool = &db.pool;
    let retry = insert_one(
        pool,
        NewJob {
            max_attempts: 3,
            ..new_job("a")
        },
    )
    .await;
    let spent = insert_one(
        pool,
        NewJob {
            max_attempts: 1,
            ..new_job("b")
        },
    )
    .await;
    let cancel = insert_one(
        pool,
        NewJob {
            max_attempts: 3,
            ..new_job("c")
        },
    )
    .await;
    let alive = insert_one(pool, new_job("d")).await;
    for kind in ["a", "b", "c", "d"] {
        claim_one(pool, kind, LEASE).await;
    }
    assert!(matches!(
        jobs::cancel(pool, cancel, None).await.expect("cancel"),
        Cancelled::Requested(_)
    ));
    for id in [retry, spent, cancel] {
        expire_lease(pool, id).await;
    }

    // Bounded: at most `limit` per call.
    let first = maintenance::rescue_expired(pool, 2).await.expect("rescue");
    assert_eq!(first.len(), 2);
    let second = maintenance::rescue_expired(pool, 10).await.expect("rescue");
    assert_eq!(second.len(), 1);
    assert!(maintenance::rescue_expired(pool, 10)
        .await
        .expect("rescue")
        .is_empty());
    let moved: Vec<(Uuid, JobStatus)> = first
        .iter()
        .chain(&second)
        .map(|r| (r.id, r.status))
        .collect();
    for expected in [
        (retry, JobStatus::Queued),
        (spent, JobStatus::Failed),
        (cancel, JobStatus::Cancelled),
    ] {
        assert!(moved.contains(&expected), "{expected:?} not in {moved:?}");
    }

    let now = db_now(pool).await;
    let job = get(pool, retry).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempt, 1, "the lost attempt counts");
    assert!(job.run_at <= now);
    assert_eq!(job.finished_at, None);
    let error = job.error.expect("error");
    assert_eq!(error["type"], json!("urn:jobdock:problem:lease-expired"));
    assert_eq!(error["retryable"], json!(true));
    assert_eq!(lease_row(pool, retry).await.lease_token, None);

    let job = get(pool, spent).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.finished_at.is_some());
    let error = job.error.expect("error");
    assert_eq!(error["type"], json!("urn:jobdock:problem:lease-expired"));
    assert_eq!(error["retryable"], json!(false));

    let job = get(pool, cancel).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at.is_some());

    // The job whose lease is alive was left alone.
    let job = get(pool, alive).await;
    assert_eq!(job.status, JobStatus::Running);
    assert!(lease_row(pool, alive).await.lease_token.is_some());
}

/// Autovacuum's own ANALYZE would make a statistics test depend on when it wakes.
async fn autovacuum_off(pool: &PgPool) {
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .expect("turn autovacuum off for this table");
}

/// Inserts `n` queued `echo` jobs, 500 per statement.
async fn insert_echo_jobs(pool: &PgPool, n: usize) {
    for start in (0..n).step_by(500) {
        let count = (n - start).min(500);
        insert(
            pool,
            &(0..count).map(|_| new_job("echo")).collect::<Vec<_>>(),
        )
        .await;
    }
}

async fn planner_pages(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT relpages FROM pg_class WHERE oid = 'jobs'::regclass")
        .fetch_one(pool)
        .await
        .expect("read relpages")
}

#[tokio::test]
async fn statistics_are_refreshed_once_the_jobs_table_has_grown_and_not_again_until_it_doubles() {
    let db = Db::new().await;
    let pool = &db.pool;
    autovacuum_off(pool).await;
    insert_echo_jobs(pool, 10).await;
    assert!(!maintenance::analyze_if_grown(pool).await.expect("check"));
    assert_eq!(planner_pages(pool).await, 0, "a small table is left alone");

    insert_echo_jobs(pool, 3000).await;
    assert!(maintenance::analyze_if_grown(pool).await.expect("analyze"));
    let measured = planner_pages(pool).await;
    assert!(measured >= 16, "ANALYZE recorded {measured} pages");

    insert_echo_jobs(pool, 500).await;
    assert!(
        !maintenance::analyze_if_grown(pool).await.expect("check"),
        "the table has not doubled since it was measured"
    );
    assert_eq!(planner_pages(pool).await, measured);
}

#[tokio::test]
async fn a_role_that_does_not_own_jobs_leaves_statistics_to_autovacuum() {
    let db = Db::new().await;
    let pool = &db.pool;
    autovacuum_off(pool).await;
    insert_echo_jobs(pool, 3000).await;
    let role = format!("jobdock_not_owner_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(pool)
        .await
        .expect("create a role that owns nothing");
    let options: sqlx::postgres::PgConnectOptions = db.url().parse().expect("test database url");
    let other = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.username(&role))
        .await
        .expect("connect as the other role");
    let refreshed = maintenance::analyze_if_grown(&other).await;
    other.close().await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(pool)
        .await
        .expect("drop the role");
    assert!(!refreshed.expect("the check itself works for any role"));
    assert_eq!(planner_pages(pool).await, 0, "nothing was analyzed");
}

/// Leaves `n` dead row versions in `jobs` and waits until the statistics count them. Whatever the
/// server's setting, autovacuum leaves the table alone first: it is jobdock's to keep.
async fn dead_jobs(pool: &PgPool, n: usize) {
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .unwrap();
    for _ in 0..n / 1000 {
        let jobs: Vec<_> = (0..1000).map(|_| new_job("dead")).collect();
        insert(pool, &jobs).await;
    }
    sqlx::query("DELETE FROM jobs").execute(pool).await.unwrap();
    let counted = crate::common::eventually(Duration::from_secs(10), || async {
        count(
            pool,
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .await
            >= n as i64
    })
    .await;
    assert!(counted, "the statistics count the dead rows");
}

#[tokio::test]
async fn jobs_full_of_dead_rows_are_vacuumed_where_autovacuum_does_not() {
    let db = Db::new().await;
    let pool = &db.pool;
    assert!(jobdock::store::vacuum::due(pool, Default::default())
        .await
        .unwrap()
        .is_empty());
    dead_jobs(pool, 20_000).await;
    let due = jobdock::store::vacuum::due(pool, Default::default())
        .await
        .unwrap();
    assert_eq!(due, ["jobs"]);
    jobdock::maintenance::vacuum_if_due(pool).await;
    assert_eq!(
        count(
            pool,
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'"
        )
        .await,
        1
    );
    let cleaned = crate::common::eventually(Duration::from_secs(10), || async {
        count(
            pool,
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .await
            < 1000
    })
    .await;
    assert!(cleaned, "VACUUM removed the dead rows");
}

#[tokio::test]
async fn a_role_that_does_not_own_the_tables_leaves_vacuum_alone() {
    let db = Db::new().await;
    let pool = &db.pool;
    dead_jobs(pool, 20_000).await;
    let role = format!("jobdock_guest_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .execute(pool)
    .await
    .unwrap();
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(None).unwrap();
    let guest = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url.as_str())
        .await
        .unwrap();
    let due = jobdock::store::vacuum::due(&guest, Default::default())
        .await
        .unwrap();
    guest.close().await;
    sqlx::query(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(pool)
        .await
        .unwrap();
    assert!(due.is_empty(), "a role that cannot VACUUM does not try");
    // The owner sees the same table as due.
    assert_eq!(
        jobdock::store::vacuum::due(pool, Default::default())
            .await
            .unwrap(),
        ["jobs"]
    );
}
