//! `/metrics` (DESIGN §13): the named series in the Prometheus text format, admin-only once keys exist.
//!
//! The recorder is global to the test process, so assertions look for series, not exact totals, and the
//! queue-depth test uses a kind no other test has.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

async fn scrape(app: &TestApp, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("GET /metrics")
}

#[tokio::test]
async fn metrics_show_jobs_http_requests_and_the_pool_after_a_job_runs() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "echo", "payload": {"m": 1}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let response = scrape(&app, None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for series in [
        "jobdock_jobs_submitted_total{kind=\"echo\"}",
        "jobdock_jobs_finished_total{kind=\"echo\",status=\"succeeded\"}",
        "jobdock_job_wait_seconds_bucket{kind=\"echo\",le=\"",
        "jobdock_job_run_seconds_count{kind=\"echo\"}",
        "jobdock_http_requests_total{route=\"/v1/jobs\",status=\"202\"}",
        "jobdock_http_requests_total{route=\"/v1/jobs/{id}\",status=\"",
        "jobdock_http_request_duration_seconds_bucket{route=\"/v1/jobs\",le=\"",
        "jobdock_db_pool_connections{state=\"idle\"}",
        "jobdock_db_pool_connections{state=\"in_use\"}",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(
        text.contains("# HELP jobdock_jobs_submitted_total"),
        "{text}"
    );
    // Ids never become labels.
    assert!(!text.contains(&id.to_string()));
}

#[tokio::test]
async fn queue_depth_counts_queued_jobs_by_kind_queue_and_status() {
    let app = crate::configured::app_with_config(
        "[kinds.depthprobe]\nhandler = \"external\"\nqueue = \"probes\"\n",
    )
    .await;
    for _ in 0..3 {
        app.submit(json!({"kind": "depthprobe", "payload": {}}))
            .await;
    }
    let series = "jobdock_queue_depth{kind=\"depthprobe\",queue=\"probes\",status=\"queued\"} 3";
    assert!(
        eventually(Duration::from_secs(15), || async {
            scrape(&app, None)
                .await
                .text()
                .await
                .unwrap()
                .contains(series)
        })
        .await,
        "{series} never appeared"
    );
}

#[tokio::test]
async fn metrics_need_an_admin_key_once_keys_exist() {
    let app = spawn_app().await;
    let create = |scopes: &str| {
        jobdock::keys::run(
            &app.pool,
            jobdock::config::KeysAction::Create {
                tenant: "ops".into(),
                name: "prometheus".into(),
                scopes: scopes.into(),
            },
        )
    };
    let reader = create("read,submit").await.unwrap().trim().to_owned();
    let admin = create("admin").await.unwrap().trim().to_owned();
    assert!(
        eventually(Duration::from_secs(3), || async {
            scrape(&app, None).await.status() == 401
        })
        .await
    );
    assert_eq!(scrape(&app, Some(&reader)).await.status(), 403);
    assert_eq!(scrape(&app, Some(&admin)).await.status(), 200);
}
