use async_trait::async_trait;
use jobdock::{Handler, JobContext, JobError, Output, Registry};
use serde_json::{json, Value};

use crate::common::*;

/// A kind of the embedding program's own, as in examples/embed.rs.
struct Shout;

#[async_trait]
impl Handler for Shout {
    fn kind(&self) -> &str {
        "shout"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        payload["text"]
            .as_str()
            .map(|_| ())
            .ok_or_else(|| "`text` must be a string".to_owned())
    }

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let text = payload["text"].as_str().unwrap_or_default().to_uppercase();
        Ok(Output::bytes("text/plain; charset=utf-8", text))
    }
}

#[tokio::test]
async fn an_embedded_kind_runs_and_keeps_its_own_content_type() {
    let app = spawn_app_with_registry(Registry::builtin().with(Shout), |_| {}).await;
    let id = app
        .submit(json!({"kind": "shout", "payload": {"text": "hello"}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let result = app.get_result(id).await;
    assert_eq!(result.status(), 200);
    assert_eq!(
        result.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(result.text().await.unwrap(), "HELLO");
}

#[tokio::test]
async fn an_embedded_kind_validates_its_payload_before_acceptance() {
    let app = spawn_app_with_registry(Registry::builtin().with(Shout), |_| {}).await;
    let response = app
        .post_job(json!({"kind": "shout", "payload": {"text": 5}}))
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "`text` must be a string");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn workers_only_claim_kinds_they_know() {
    // This server only knows the built-in kinds; a job of another kind, stored by another replica, stays
    // queued instead of being claimed and failed.
    let app = spawn_app().await;
    let foreign = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO jobs (id, kind) VALUES ($1, 'shout')")
        .bind(foreign)
        .execute(&app.pool)
        .await
        .unwrap();
    let echo = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(echo, "succeeded").await;
    assert_eq!(app.monitor(foreign).await["status"], "queued");
    assert_eq!(app.monitor(foreign).await["attempt"], 0);
}

/// A kind whose failures and results carry bytes PostgreSQL or HTTP cannot take as they are.
struct Awkward;

#[async_trait]
impl Handler for Awkward {
    fn kind(&self) -> &str {
        "awkward"
    }

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        if payload["fail"] == true {
            return Err(JobError::Permanent("bad\u{0}byte".to_owned()));
        }
        Ok(Output::bytes("text/plain\r\nX-Injected: 1", "fine"))
    }
}

#[tokio::test]
async fn a_handler_error_with_a_nul_still_fails_the_job() {
    let app = spawn_app_with_registry(Registry::builtin().with(Awkward), |_| {}).await;
    let id = app
        .submit(json!({"kind": "awkward", "payload": {"fail": true}, "max_attempts": 1}))
        .await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(monitor["error"]["detail"], "bad\u{FFFD}byte");
}

#[tokio::test]
async fn a_result_content_type_that_cannot_be_a_header_is_served_as_bytes() {
    let app = spawn_app_with_registry(Registry::builtin().with(Awkward), |_| {}).await;
    let id = app.submit(json!({"kind": "awkward"})).await;
    app.wait_for_status(id, "succeeded").await;
    let result = app.get_result(id).await;
    assert_eq!(result.status(), 200);
    assert_eq!(result.headers()["content-type"], "application/octet-stream");
    assert!(!result.headers().contains_key("x-injected"));
    assert_eq!(result.text().await.unwrap(), "fine");
}
