use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn cancelling_a_queued_job_is_immediate_and_final() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "echo", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    let response = app.cancel(id).await;
    assert_eq!(response.status(), 200);
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["status"], "cancelled");
    assert!(monitor["error"].is_object());
    assert!(monitor["finished_at"].is_string());

    // Cancelling again is still 200, and nothing changes.
    let again = app.cancel(id).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["updated_at"], monitor["updated_at"]);

    let status = app.get_job(id).await;
    assert_eq!(status.status(), 200);
    assert_eq!(status.json::<Value>().await.unwrap()["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_running_job_asks_it_to_stop_and_it_ends_cancelled() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 60000}}))
        .await;
    app.wait_for_status(id, "running").await;
    let response = app.cancel(id).await;
    assert_eq!(response.status(), 202);
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["cancel_requested"], true);
    let ended = app.wait_for_status(id, "cancelled").await;
    assert_eq!(ended["attempt"], 1);
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM results").await,
        0,
        "a cancelled job has no result"
    );
}

#[tokio::test]
async fn cancelling_a_finished_job_is_409() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(id, "succeeded").await;
    let response = app.cancel(id).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["job_status"],
        "succeeded"
    );
    assert_eq!(
        app.monitor(id).await["status"],
        "succeeded",
        "a terminal state never changes"
    );
}

#[tokio::test]
async fn cancelling_an_unknown_job_is_404() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    let response = app.cancel(id).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn deleting_a_finished_job_removes_it_and_its_result() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(id, "succeeded").await;
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 1);
    let response = app.delete_job(id).await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.get_job(id).await.status(), 404);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 0);
    let again = app.delete_job(id).await;
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn deleting_a_queued_job_is_409_and_keeps_it() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let response = app.delete_job(id).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["job_status"],
        "queued"
    );
    assert_eq!(app.get_job(id).await.status(), 200);
}

#[tokio::test]
async fn finished_jobs_and_their_results_are_pruned_after_the_retention() {
    let app = spawn_app_with(|s| s.retention = std::time::Duration::from_secs(1)).await;
    let finished = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(finished, "succeeded").await;
    let waiting = app
        .submit(json!({"kind": "echo", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    let pruned = eventually(std::time::Duration::from_secs(15), || async {
        app.get_job(finished).await.status() == 404
    })
    .await;
    assert!(
        pruned,
        "a job finished longer ago than the retention is pruned"
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 0);
    assert_eq!(
        app.get_job(waiting).await.status(),
        200,
        "unfinished jobs are never pruned"
    );
}

#[tokio::test]
async fn a_cross_origin_form_cannot_cancel_or_delete_a_job() {
    // What an HTML form on another site can send without a CORS preflight.
    let app = spawn_app_with(|settings| settings.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let cancel = app
            .client
            .post(app.url(&format!("/v1/jobs/{id}/cancel")))
            .header("content-type", content_type)
            .body("a=1")
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 415, "{content_type}");
        let delete = app
            .client
            .delete(app.url(&format!("/v1/jobs/{id}")))
            .header("content-type", content_type)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 415, "{content_type}");
    }
    assert_eq!(app.monitor(id).await["status"], "queued", "nothing changed");
    // Without a body, or with JSON, cancelling works.
    let cancel = app
        .client
        .post(app.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
}
