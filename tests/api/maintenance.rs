//! Maintenance runs on every replica, also on one that runs no in-process workers: external workers'
//! leases need rescuing wherever they were claimed.

use std::time::Duration;

use serde_json::json;

use crate::common::{count, eventually, spawn_app_with};

#[tokio::test]
async fn an_api_only_replica_still_rescues_expired_leases() {
    let app = spawn_app_with(|settings| {
        settings.workers = 0;
        settings.lease = Duration::from_millis(400);
    })
    .await;
    let id = app.submit(json!({"kind": "echo"})).await;
    // A worker elsewhere claimed the job and died: its lease ran out long ago.
    sqlx::query(
        "UPDATE jobs SET status = 'running', attempt = 1, lease_token = gen_random_uuid(), \
         lease_expires_at = now() - interval '1 minute', started_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .expect("fake a dead worker's claim");
    let rescued = eventually(Duration::from_secs(10), || async {
        count(
            &app.pool,
            &format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND status = 'queued'"),
        )
        .await
            == 1
    })
    .await;
    assert!(rescued, "the expired lease was never rescued");
    let monitor = app.monitor(id).await;
    assert_eq!(
        monitor["error"]["type"],
        "urn:jobdock:problem:lease-expired"
    );
}
