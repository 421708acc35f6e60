//! Kinds declared in a configuration file (DESIGN §7): payloads checked against their JSON Schema, their
//! defaults applied, and `GET /v1/kinds` describing them.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

pub const THUMBNAIL: &str = r#"
[kinds.thumbnail]
handler = "external"
queue = "images"
max_attempts = 5
timeout_secs = 600
payload_schema = { type = "object", required = ["url"], properties = { url = { type = "string", format = "uri" }, width = { type = "integer", minimum = 1 } } }
"#;

/// A server that accepts the kinds declared in `toml`.
pub async fn app_with_config(toml: &str) -> TestApp {
    let file = jobdock::config::file::parse(Path::new("jobdock.toml"), toml).expect("valid config");
    spawn_app_with(move |settings| settings.kinds = file.kinds).await
}

#[tokio::test]
async fn a_payload_that_breaks_the_schema_is_400_with_every_error_and_stores_nothing() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app
        .post_job(json!({"kind": "thumbnail", "payload": {"url": "not a uri", "width": 0}}))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    let errors = problem["errors"].as_array().expect("errors");
    let pointers: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(pointers.contains(&"/url"), "{problem}");
    assert!(pointers.contains(&"/width"), "{problem}");
    assert!(errors.iter().all(|e| e["message"].is_string()), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("thumbnail") && detail.contains("/url"),
        "{detail}"
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_missing_required_field_is_reported_at_the_payloads_root() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app.post_job(json!({"kind": "thumbnail"})).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("url"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_batch_with_a_payload_that_breaks_the_schema_names_it_and_stores_nothing() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app
        .client
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": [
            {"kind": "thumbnail", "payload": {"url": "https://example.com/a.png"}},
            {"kind": "thumbnail", "payload": {"url": 7}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["index"], 1, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/url", "{problem}");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_configured_kinds_defaults_fill_what_a_submission_leaves_out() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app
        .post_job(json!({"kind": "thumbnail", "payload": {"url": "https://example.com/a.png"}}))
        .await;
    assert_eq!(response.status(), 202);
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["queue"], "images");
    assert_eq!(monitor["max_attempts"], 5);
    assert_eq!(monitor["timeout_secs"], 600);
    // What the submission says wins.
    let response = app
        .post_job(
            json!({"kind": "thumbnail", "payload": {"url": "https://example.com/b.png"},
                         "queue": "urgent", "max_attempts": 1, "timeout_secs": 9}),
        )
        .await;
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(
        (
            &monitor["queue"],
            &monitor["max_attempts"],
            &monitor["timeout_secs"]
        ),
        (&json!("urgent"), &json!(1), &json!(9))
    );
}

#[tokio::test]
async fn the_kinds_endpoint_lists_built_in_and_configured_kinds() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app.client.get(app.url("/v1/kinds")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.unwrap();
    let names: Vec<&str> = list["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "fail", "sleep", "thumbnail"]);
    let echo = &list["kinds"][0];
    assert_eq!(echo["handler"], "builtin");
    assert_eq!(echo["queue"], "default");
    assert_eq!(echo["payload_schema"], Value::Null);

    let response = app
        .client
        .get(app.url("/v1/kinds/thumbnail"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind: Value = response.json().await.unwrap();
    assert_eq!(kind["handler"], "external");
    assert_eq!(kind["queue"], "images");
    assert_eq!(kind["max_attempts"], 5);
    assert_eq!(kind["timeout_secs"], 600);
    assert_eq!(kind["payload_schema"]["required"], json!(["url"]));
}

#[tokio::test]
async fn an_unknown_kind_is_404_as_problem_details() {
    let app = app_with_config(THUMBNAIL).await;
    let response = app
        .client
        .get(app.url("/v1/kinds/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("nope"));
}
