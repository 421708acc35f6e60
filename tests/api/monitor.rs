use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn a_queued_job_is_200_with_retry_after_and_no_store() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let response = app.get_job(id).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["status"], "queued");
    assert_eq!(monitor["attempt"], 0);
    assert_eq!(monitor["error"], Value::Null);
    assert_eq!(monitor["result_url"], Value::Null);
}

#[tokio::test]
async fn a_running_job_is_200_with_retry_after_and_progress() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 20000}}))
        .await;
    app.wait_for_status(id, "running").await;
    let reported = eventually(std::time::Duration::from_secs(10), || async {
        app.monitor(id).await["progress"]["percent"].is_number()
    })
    .await;
    assert!(reported, "sleep reports progress");
    let response = app.get_job(id).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("retry-after"));
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["attempt"], 1);
    assert!(monitor["started_at"].is_string());
}

#[tokio::test]
async fn a_succeeded_job_redirects_to_its_result_without_retry_after() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "echo", "payload": {"answer": 42}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let response = app.get_job(id).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("/v1/jobs/{id}/result")
    );
    assert!(!response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["cache-control"], "no-store");

    let result = app.get_result(id).await;
    assert_eq!(result.status(), 200);
    assert_eq!(result.headers()["content-type"], "application/json");
    let body: Value = result.json().await.unwrap();
    assert_eq!(body, json!({"answer": 42}));
}

#[tokio::test]
async fn redirect_false_answers_200_with_the_result_url() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 1}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}?redirect=false")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("retry-after"));
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["result_url"], format!("/v1/jobs/{id}/result"));
    assert!(monitor["finished_at"].is_string());
    let result: Value = app.get_result(id).await.json().await.unwrap();
    assert_eq!(result, json!({"slept_ms": 1}));
}

#[tokio::test]
async fn a_following_client_ends_at_the_result() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "echo", "payload": [1, 2, 3]}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let following = reqwest::Client::new();
    let response = following
        .get(app.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!([1, 2, 3]));
}

#[tokio::test]
async fn a_failed_job_is_200_with_its_error_and_no_retry_after() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "fail", "payload": {"message": "boom"}, "max_attempts": 1}))
        .await;
    app.wait_for_status(id, "failed").await;
    let response = app.get_job(id).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("retry-after"));
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["error"]["detail"], "boom");
    assert!(monitor["error"]["type"].is_string() && monitor["error"]["title"].is_string());
    assert_eq!(monitor["result_url"], Value::Null);
}

#[tokio::test]
async fn a_retryable_failure_is_retried_until_attempts_run_out() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "fail", "payload": {"message": "flaky", "retryable": true}, "max_attempts": 3}))
        .await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(monitor["attempt"], 3);
    assert_eq!(monitor["error"]["attempt"], 3);
    assert_eq!(monitor["error"]["detail"], "flaky");
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "fail", "payload": {"retryable": false}, "max_attempts": 5}))
        .await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(monitor["attempt"], 1);
}

#[tokio::test]
async fn an_attempt_past_its_timeout_fails() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 60000}, "timeout_secs": 1, "max_attempts": 1}))
        .await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert!(
        monitor["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{monitor}"
    );
}

#[tokio::test]
async fn an_unknown_job_id_is_404() {
    let app = spawn_app().await;
    for path in [
        format!("/v1/jobs/{}", uuid::Uuid::now_v7()),
        format!("/v1/jobs/{}/result", uuid::Uuid::now_v7()),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn a_malformed_job_id_is_404() {
    let app = spawn_app().await;
    for path in [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/123/result",
        "/v1/jobs/%00",
        "/v1/jobs/%ff",
        "/v1/jobs/%ff/result",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 404);
        assert!(
            !problem["detail"].as_str().unwrap_or("").contains("param"),
            "{problem}"
        );
    }
    let cancel = app
        .client
        .post(app.url("/v1/jobs/nope/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let delete = app
        .client
        .delete(app.url("/v1/jobs/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
}

#[tokio::test]
async fn the_result_of_an_unfinished_job_is_409_with_its_status() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let response = app.get_result(id).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["job_status"], "queued");
}

#[tokio::test]
async fn the_result_of_a_failed_job_is_409() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "fail", "max_attempts": 1})).await;
    app.wait_for_status(id, "failed").await;
    let response = app.get_result(id).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["job_status"], "failed");
}

#[tokio::test]
async fn a_bad_redirect_value_is_400() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}?redirect=maybe")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

async fn get_with_etag(app: &TestApp, id: uuid::Uuid, seen: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/jobs/{id}")))
        .header("If-None-Match", seen)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unchanged_monitor_is_304_with_its_etag_until_the_job_finishes() {
    let app = spawn_app_with(|settings| settings.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let first = app.get_job(id).await;
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let unchanged = get_with_etag(&app, id, &tag).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], tag.as_str());
    assert!(unchanged.headers().contains_key("retry-after"));
    assert!(unchanged.bytes().await.unwrap().is_empty());
    // Weak and listed forms match too; another tag does not.
    assert_eq!(
        get_with_etag(&app, id, &format!("\"x\", W/{tag}"))
            .await
            .status(),
        304
    );
    assert_eq!(get_with_etag(&app, id, "\"other\"").await.status(), 200);
    // Once the job has finished, the old tag gets the final answer, with a new tag.
    assert_eq!(app.cancel(id).await.status(), 200);
    let finished = get_with_etag(&app, id, &tag).await;
    assert_eq!(finished.status(), 200);
    assert_ne!(finished.headers()["etag"], tag.as_str());
    let body: Value = finished.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
}

#[tokio::test]
async fn a_succeeded_job_is_always_its_302_even_to_a_matching_etag() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(id, "succeeded").await;
    let found = app.get_job(id).await;
    assert_eq!(found.status(), 302);
    let tag = found.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(get_with_etag(&app, id, &tag).await.status(), 302);
}
