//! Lanes (kept connections for short statements) and the grouped read they serve: a kept connection is
//! reused as it is, one that failed or sat idle goes back to the pool, and a grouped read answers each
//! caller with its own job as its tenant may see it.

use std::time::Duration;

use jobdock::store::lanes::Lanes;
use jobdock::store::{self, jobs};
use uuid::Uuid;

use crate::common::eventually;
use crate::support::{insert, new_job, Db};

async fn backend_pid(conn: &mut sqlx::PgConnection) -> store::Result<i32> {
    Ok(sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await?)
}

#[tokio::test]
async fn a_settled_lane_is_the_next_reads_connection() {
    let db = Db::new().await;
    let lanes = Lanes::new(db.pool.clone(), 2);
    let mut lane = lanes.get().await.unwrap();
    let first = backend_pid(lane.conn()).await;
    lane.settle(&first);
    assert_eq!(lanes.kept(), 1);
    let mut lane = lanes.get().await.unwrap();
    let second = backend_pid(lane.conn()).await;
    lane.settle(&second);
    assert_eq!(
        first.unwrap(),
        second.unwrap(),
        "the kept connection was not reused"
    );
}

#[tokio::test]
async fn a_lane_whose_statement_failed_or_was_abandoned_goes_back_to_the_pool() {
    let db = Db::new().await;
    let lanes = Lanes::new(db.pool.clone(), 2);
    let mut lane = lanes.get().await.unwrap();
    let failed: store::Result<i32> = sqlx::query_scalar("SELECT 1/0")
        .fetch_one(lane.conn())
        .await
        .map_err(Into::into);
    assert!(failed.is_err());
    lane.settle(&failed);
    assert_eq!(lanes.kept(), 0);
    // Dropped mid-use (an abandoned request): not kept either.
    let lane = lanes.get().await.unwrap();
    drop(lane);
    assert_eq!(lanes.kept(), 0);
}

#[tokio::test]
async fn a_lane_idle_past_its_limit_is_given_back_and_a_fresh_one_used() {
    let db = Db::new().await;
    let idle_for = Duration::from_millis(50);
    let lanes = Lanes::with_idle(db.pool.clone(), 2, idle_for);
    let mut lane = lanes.get().await.unwrap();
    let first = backend_pid(lane.conn()).await;
    lane.settle(&first);
    let first = first.unwrap();
    // Let the kept connection go stale, then end its backend: a lane must not hand it out.
    tokio::time::sleep(idle_for * 2).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut lane = lanes.get().await.unwrap();
    let second = backend_pid(lane.conn()).await;
    lane.settle(&second);
    assert_ne!(second.unwrap(), first);
}

#[tokio::test]
async fn lanes_never_hold_more_connections_than_their_size() {
    let db = Db::new().await;
    let lanes = Lanes::new(db.pool.clone(), 2);
    let a = lanes.get().await.unwrap();
    let b = lanes.get().await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(200), lanes.get()).await;
    assert!(
        third.is_err(),
        "a third lane was handed out while two were in use"
    );
    drop(a);
    let c = tokio::time::timeout(Duration::from_secs(5), lanes.get()).await;
    assert!(c.is_ok(), "a lane freed was not handed out again");
    drop(b);
}

#[tokio::test]
async fn a_grouped_read_answers_each_caller_in_order_as_its_tenant_may_see_it() {
    let db = Db::new().await;
    let mut acme = new_job("echo");
    acme.tenant = "acme".to_owned();
    let mut globex = new_job("echo");
    globex.tenant = "globex".to_owned();
    let rows = insert(&db.pool, &[acme, globex]).await;
    let (a, g) = (rows[0].id, rows[1].id);
    let missing = Uuid::now_v7();
    let asked = [
        (a, None),
        (g, Some("globex".to_owned())),
        (a, Some("globex".to_owned())),
        (missing, None),
        (a, Some("acme".to_owned())),
        (a, None),
    ];
    let answers = jobs::get_each(&db.pool, &asked).await.unwrap();
    let ids: Vec<Option<Uuid>> = answers
        .iter()
        .map(|job| job.as_ref().map(|j| j.id))
        .collect();
    assert_eq!(ids, [Some(a), Some(g), None, None, Some(a), Some(a)]);
}

#[tokio::test]
async fn an_unused_kept_lane_goes_back_to_the_pool_without_anyone_asking() {
    let db = Db::new().await;
    let lanes = Lanes::with_idle(db.pool.clone(), 2, Duration::from_millis(50));
    let mut lane = lanes.get().await.unwrap();
    let read = backend_pid(lane.conn()).await;
    lane.settle(&read);
    assert_eq!(lanes.kept(), 1);
    // Nobody asks for a lane again, and the lanes stay alive: the connection still returns to the pool.
    let returned = eventually(Duration::from_secs(5), || async {
        lanes.kept() == 0 && db.pool.num_idle() >= 1
    })
    .await;
    assert!(returned, "the kept connection never went back to the pool");
}
