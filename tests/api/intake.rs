//! The intake: a job submitted to a `serve` process whose workers have room is stored and claimed in one
//! commit (so its `started_at` is its `created_at`: one transaction, one `now()`); a job that must not skip
//! the claim (a capped tenant's, one scheduled later) goes through the queue as usual, and queued jobs are
//! announced to workers elsewhere once they have committed.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::common::*;

/// Whether the job was claimed in the transaction that stored it.
async fn started_in_its_own_commit(app: &TestApp, id: Uuid) -> bool {
    sqlx::query_scalar("SELECT started_at = created_at FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("job row")
}

#[tokio::test]
async fn a_job_submitted_to_idle_workers_starts_in_the_commit_that_stores_it() {
    let app = spawn_app().await;
    // Idle once the workers' first claim has found nothing; submit until a job finds them so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        let response = app
            .post_job(json!({"kind": "echo", "payload": {"n": 1}}))
            .await;
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        // The answer shows the job as it was accepted.
        assert_eq!(body["status"], "queued", "{body}");
        assert_eq!(body["attempt"], 0, "{body}");
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        app.wait_for_status(id, "succeeded").await;
        if started_in_its_own_commit(&app, id).await {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job was ever started in the commit that stored it"
        );
    };
    let response = app.get_result(id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"n": 1})
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn jobs_of_a_capped_tenant_or_scheduled_later_go_through_the_queue() {
    let app = spawn_app_with(|settings| {
        settings
            .tenants
            .push(jobdock::config::file::TenantSettings {
                name: "default".to_owned(),
                max_running: Some(4),
            })
    })
    .await;
    for _ in 0..5 {
        let id = app.submit(json!({"kind": "echo"})).await;
        app.wait_for_status(id, "succeeded").await;
        assert!(
            !started_in_its_own_commit(&app, id).await,
            "a capped tenant's job skipped the claim that counts its running jobs"
        );
    }

    let app = spawn_app().await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let id = app.submit(json!({"kind": "echo", "run_at": soon})).await;
    assert_eq!(app.monitor(id).await["status"], "queued");
    app.wait_for_status(id, "succeeded").await;
    assert!(!started_in_its_own_commit(&app, id).await);
}

/// Idle workers in another process, polling only once a minute: what wakes them is the notification the
/// API sends once a submission has committed.
async fn workers_elsewhere(app: &TestApp) -> jobdock::worker::WorkerPool {
    let mut settings = test_settings(&app.database.url);
    settings.poll_interval = Duration::from_secs(60);
    let config = jobdock::worker::WorkerConfig::from_settings(&settings);
    let workers =
        jobdock::worker::WorkerPool::start(app.pool.clone(), jobdock::Registry::builtin(), config);
    // Started: its listener is connected once it has looked for jobs and found none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    workers
}

#[tokio::test]
async fn jobs_submitted_to_a_server_without_workers_wake_idle_workers_elsewhere_at_once() {
    let app = spawn_app_with(|settings| settings.workers = 0).await;
    let workers = workers_elsewhere(&app).await;
    for body in [
        json!({"kind": "echo"}),
        // The idempotent path and the batch path commit on their own and notify too.
        json!({"kind": "echo", "payload": {"keyed": true}}),
    ] {
        let started = std::time::Instant::now();
        let id = if body["payload"]["keyed"] == true {
            let response = app
                .client
                .post(app.url("/v1/jobs"))
                .header("Idempotency-Key", "wake-once")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let body: serde_json::Value = response.json().await.unwrap();
            body["id"].as_str().unwrap().parse().unwrap()
        } else {
            app.submit(body).await
        };
        app.wait_for_status(id, "succeeded").await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the job waited {:?} for a worker that polls once a minute",
            started.elapsed()
        );
    }
    let started = std::time::Instant::now();
    let response = app
        .post_batch(json!({"jobs": [{"kind": "echo"}, {"kind": "echo"}]}))
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    for job in body["jobs"].as_array().unwrap() {
        let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
        app.wait_for_status(id, "succeeded").await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    workers.shutdown(Duration::from_secs(5)).await;
}
