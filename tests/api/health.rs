use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn healthz_and_readyz_are_200_on_a_migrated_database() {
    let app = spawn_app().await;
    let live = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_details() {
    let app = spawn_app().await;
    let missing = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let wrong_method = app.client.put(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(wrong_method.headers()["cache-control"], "no-store");
    let on_a_job = app
        .client
        .patch(app.url(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(on_a_job.status(), 405);
    assert_eq!(on_a_job.headers()["allow"], "DELETE, GET, HEAD");
    let on_batch = app
        .client
        .get(app.url("/v1/jobs/batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_batch.status(), 405);
    assert_eq!(on_batch.headers()["allow"], "POST");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/v1/jobs",
        "/v1/jobs/not-a-job",
        "/openapi.json",
        "/nowhere",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
    }
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.headers()["x-content-type-options"], "nosniff");
    assert!(docs.headers().get("x-frame-options").is_none());
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_and_exposes_the_polling_headers() {
    let app = spawn_app_with(|settings| {
        settings.cors_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/jobs"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let submit = app
        .client
        .post(app.url("/v1/jobs"))
        .header("Origin", "https://app.example.com")
        .json(&serde_json::json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submit.status(), 202);
    let exposed = submit.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["location", "retry-after", "etag", "preference-applied"] {
        assert!(exposed.contains(header), "{exposed}");
    }
    // Another origin is not let in.
    let other = app
        .client
        .get(app.url("/v1/jobs"))
        .header("Origin", "https://evil.example.net")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_configured_origins_there_is_no_cors() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v1/jobs"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn every_answer_carries_a_request_id_the_callers_own_when_it_sent_a_sensible_one() {
    let app = spawn_app().await;
    let given = app
        .client
        .get(app.url("/v1/jobs"))
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-42");
    let made = app.client.get(app.url("/nowhere")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let other = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(other.headers()["x-request-id"].to_str().unwrap(), id);
}
