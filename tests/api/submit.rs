use serde_json::{json, Value};

use crate::common::*;

async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    assert!(
        problem["type"].is_string() && problem["title"].is_string(),
        "{problem}"
    );
    problem
}

#[tokio::test]
async fn submitting_a_job_answers_202_with_location_and_retry_after() {
    let app = spawn_app().await;
    let response = app
        .post_job(json!({"kind": "echo", "payload": {"hello": "world"}}))
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let retry_after: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", monitor["id"].as_str().unwrap())
    );
    assert_eq!(monitor["status"], "queued");
    assert_eq!(monitor["kind"], "echo");
    assert_eq!(monitor["queue"], "default");
    assert_eq!(monitor["max_attempts"], 3);
}

#[tokio::test]
async fn an_accepted_job_is_committed_before_the_answer() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = $1 AND status = 'queued'")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
    let payload: Value = sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payload, json!({}), "payload defaults to {{}}");
}

#[tokio::test]
async fn submitted_fields_are_stored_as_given() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let response = app
        .post_job(
            json!({"kind": "sleep", "payload": {"ms": 10}, "queue": "reports", "priority": 5,
                         "run_at": "2099-01-01T00:00:00Z", "max_attempts": 7, "timeout_secs": 60}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let retry_after: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after > 1,
        "a job due in the future is worth polling later"
    );
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["queue"], "reports");
    assert_eq!(monitor["priority"], 5);
    assert_eq!(monitor["max_attempts"], 7);
    assert_eq!(monitor["timeout_secs"], 60);
    assert!(monitor["run_at"]
        .as_str()
        .unwrap()
        .starts_with("2099-01-01T00:00:00"));
}

async fn assert_rejected_and_nothing_stored(
    app: &TestApp,
    request: reqwest::RequestBuilder,
    status: u16,
) -> Value {
    let problem = assert_problem(request.send().await.unwrap(), status).await;
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM jobs").await,
        0,
        "nothing may be stored"
    );
    problem
}

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{\"kind\": ");
    assert_rejected_and_nothing_stored(&app, request, 400).await;
}

#[tokio::test]
async fn a_missing_kind_is_400_saying_so() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"payload": {}}));
    let problem = assert_rejected_and_nothing_stored(&app, request, 400).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("kind"), "{detail}");
    assert!(
        !detail.contains("SubmitJob"),
        "internal names must not leak: {detail}"
    );
}

#[tokio::test]
async fn an_unknown_kind_is_400_naming_it() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"kind": "teleport"}));
    let problem = assert_rejected_and_nothing_stored(&app, request, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("teleport"));
}

#[tokio::test]
async fn a_payload_the_kind_rejects_is_400_with_the_reason() {
    let app = spawn_app().await;
    for payload in [
        json!({"ms": "soon"}),
        json!({}),
        json!({"ms": 5, "extra": 1}),
        json!({"ms": -1}),
    ] {
        let request = app
            .client
            .post(app.url("/v1/jobs"))
            .json(&json!({"kind": "sleep", "payload": payload}));
        let problem = assert_rejected_and_nothing_stored(&app, request, 400).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("sleep"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn out_of_range_fields_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({"kind": "echo", "max_attempts": 0}),
        json!({"kind": "echo", "timeout_secs": 0}),
        json!({"kind": "echo", "priority": "high"}),
        json!({"kind": "echo", "run_at": "tomorrow"}),
        json!({"kind": "echo", "queue": ""}),
        json!({"kind": "echo", "colour": "blue"}),
        json!({"kind": ""}),
        json!(["not", "an", "object"]),
    ] {
        let request = app.client.post(app.url("/v1/jobs")).json(&body);
        assert_rejected_and_nothing_stored(&app, request, 400).await;
    }
}

#[tokio::test]
async fn nul_characters_are_400_not_500() {
    let app = spawn_app().await;
    for body in [
        json!({"kind": "echo", "payload": {"text": "a\u{0}b"}}),
        json!({"kind": "echo", "payload": {"a\u{0}": 1}}),
        json!({"kind": "echo", "queue": "q\u{0}"}),
        json!({"kind": "ec\u{0}ho"}),
    ] {
        let request = app.client.post(app.url("/v1/jobs")).json(&body);
        assert_rejected_and_nothing_stored(&app, request, 400).await;
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let big = json!({"kind": "echo", "payload": {"blob": "x".repeat(2048)}});
    let request = app.client.post(app.url("/v1/jobs")).json(&big);
    assert_rejected_and_nothing_stored(&app, request, 413).await;

    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(big.to_string().into_bytes())];
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    assert_rejected_and_nothing_stored(&app, request, 413).await;

    // A small chunked body is fine.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(br#"{"kind":"echo"}"#.to_vec())];
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", "text/plain")
        .body("kind=echo");
    assert_rejected_and_nothing_stored(&app, request, 415).await;
}

#[tokio::test]
async fn the_same_idempotency_key_and_request_return_the_same_job() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let send = || {
        app.client
            .post(app.url("/v1/jobs"))
            .header("Idempotency-Key", "order-42")
            .json(&json!({"kind": "echo", "payload": {"a": 1, "b": 2}}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(
        second.headers()["location"],
        format!("/v1/jobs/{}", first["id"].as_str().unwrap())
    );
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 1);

    // Key order in the payload does not make it a different request.
    let reordered = app
        .client
        .post(app.url("/v1/jobs"))
        .header("Idempotency-Key", "order-42")
        .header("content-type", "application/json")
        .body(r#"{"payload": {"b": 2, "a": 1}, "kind": "echo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reordered.status(), 202);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_a_different_request_is_422() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let send = |payload: Value| {
        app.client
            .post(app.url("/v1/jobs"))
            .header("Idempotency-Key", "order-43")
            .json(&json!({"kind": "echo", "payload": payload}))
            .send()
    };
    assert_eq!(send(json!({"n": 1})).await.unwrap().status(), 202);
    assert_problem(send(json!({"n": 2})).await.unwrap(), 422).await;
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn an_idempotency_key_over_255_characters_is_400() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .header("Idempotency-Key", "k".repeat(256))
        .json(&json!({"kind": "echo"}));
    assert_rejected_and_nothing_stored(&app, request, 400).await;
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_400_not_silently_ignored() {
    let app = spawn_app().await;
    let key = reqwest::header::HeaderValue::from_bytes("clé-ünïcode".as_bytes()).unwrap();
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .header("Idempotency-Key", key)
        .json(&json!({"kind": "echo"}));
    assert_rejected_and_nothing_stored(&app, request, 400).await;
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after_and_no_hang() {
    // A server whose database is a closed port: every query fails to connect.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("postgres://127.0.0.1:1/nothing")
        .unwrap();
    let routes = jobdock::api::routes(
        jobdock::api::ApiState::new(pool, jobdock::Registry::builtin()),
        1024 * 1024,
    );
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .copied()
        .unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(routes));
    let client = client();
    let started = std::time::Instant::now();
    let response = client
        .post(format!("http://{addr}/v1/jobs"))
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "must not hang"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503).await;

    let status = client
        .get(format!("http://{addr}/v1/jobs/{}", uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 503);
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn payload_errors_speak_json_not_rust() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"kind": "sleep", "payload": "soon"}));
    let problem = assert_rejected_and_nothing_stored(&app, request, 400).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("expected a JSON object"), "{detail}");
    assert!(!detail.contains("struct"), "{detail}");
}

#[tokio::test]
async fn numbers_postgres_cannot_give_back_are_400_and_the_rest_round_trip() {
    let app = spawn_app().await;
    for number in [
        json!(1.7976931348623155e308),
        json!(-1.7976931348623155e308),
        json!(5e-324),
    ] {
        let request = app
            .client
            .post(app.url("/v1/jobs"))
            .json(&json!({"kind": "echo", "payload": {"x": number}}));
        let problem = assert_rejected_and_nothing_stored(&app, request, 400).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("number"),
            "{problem}"
        );
    }
    for number in [
        json!(1e300),
        json!(-1e300),
        json!(1e-300),
        json!(0.5),
        json!(123456789012345678901234567890.0),
    ] {
        let id = app
            .submit(json!({"kind": "echo", "payload": {"x": number}}))
            .await;
        app.wait_for_status(id, "succeeded").await;
        let result: Value = app.get_result(id).await.json().await.unwrap();
        let back = result["x"].as_f64().unwrap();
        let sent = number.as_f64().unwrap();
        assert!(
            (back - sent).abs() <= sent.abs() * 1e-15,
            "{sent} came back as {back}"
        );
    }
}

#[tokio::test]
async fn a_stored_payload_that_cannot_be_read_back_fails_only_its_own_job() {
    let app = spawn_app().await;
    // As if written by an older version or by hand: jsonb accepts it, serde_json cannot parse it back.
    let poisoned = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, max_attempts) VALUES ($1, 'echo', '1e400', 1)",
    )
    .bind(poisoned)
    .execute(&app.pool)
    .await
    .unwrap();
    let monitor = app.wait_for_status(poisoned, "failed").await;
    assert!(
        monitor["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("payload"),
        "{monitor}"
    );
    let healthy = app
        .submit(json!({"kind": "echo", "payload": {"ok": true}}))
        .await;
    app.wait_for_status(healthy, "succeeded").await;
    let list = app.client.get(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(list.status(), 200, "listing never decodes payloads");
}

#[tokio::test]
async fn validation_errors_are_said_in_the_apis_words_not_the_frameworks() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"kind": "echo", "max_attempts": 0}),
            "`max_attempts` must be at least 1",
        ),
        (
            json!({"kind": "echo", "queue": ""}),
            "`queue` must be at least 1 character long",
        ),
        (
            json!({"kind": "echo", "priority": "high"}),
            "expected an integer",
        ),
    ];
    for (body, expected) in cases {
        let response = app.post_job(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{body}: {detail}");
        for leak in [
            "SubmitJob",
            "int32",
            "exclusive",
            "minLength",
            "verification failed",
        ] {
            assert!(!detail.contains(leak), "{body}: {detail}");
        }
    }
    let list = app
        .client
        .get(app.url("/v1/jobs?limit=0"))
        .send()
        .await
        .unwrap();
    let problem: Value = list.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "parameter `limit` is invalid: must be at least 1"
    );
}
