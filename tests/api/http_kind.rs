//! The `http` kind (DESIGN §9) against a real upstream HTTP server started by the test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, EndpointExt, Request, Response, Route};
use serde_json::{json, Value};

use crate::common::*;
use crate::configured::app_with_config;

#[derive(Default)]
struct Seen {
    busy_calls: AtomicUsize,
    air_calls: AtomicUsize,
    status_polls: AtomicUsize,
    idempotency_keys: Mutex<Vec<String>>,
}

#[handler]
fn echo(
    Path(name): Path<String>,
    request: &Request,
    body: String,
    seen: Data<&Arc<Seen>>,
) -> Response {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    seen.idempotency_keys
        .lock()
        .unwrap()
        .push(header("idempotency-key"));
    Response::builder()
        .content_type("application/json")
        .header("ETag", "\"v1\"")
        .header("X-Report-Id", "42")
        .header("X-Internal", "not kept")
        .status(StatusCode::CREATED)
        .body(
            json!({"name": name, "body": body, "idempotency_key": header("idempotency-key"),
                   "job": header("jobdock-job-id"), "attempt": header("jobdock-attempt"),
                   "authorization": header("authorization")})
            .to_string(),
        )
}

#[handler]
fn busy(request: &Request, seen: Data<&Arc<Seen>>) -> Response {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.idempotency_keys.lock().unwrap().push(key);
    if seen.busy_calls.fetch_add(1, Ordering::SeqCst) == 0 {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("Retry-After", "1")
            .body("busy")
    } else {
        Response::builder().content_type("text/plain").body("done")
    }
}

#[handler]
fn air(seen: Data<&Arc<Seen>>) -> Response {
    if seen.air_calls.fetch_add(1, Ordering::SeqCst) == 0 {
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("Retry-After", "2")
            .finish()
    } else {
        Response::builder().body("breathing")
    }
}

#[handler]
fn refuse() -> Response {
    Response::builder()
        .status(StatusCode::UNPROCESSABLE_ENTITY)
        .body("x".repeat(10_000))
}

#[handler]
fn redirect() -> Response {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header("Location", "/elsewhere")
        .finish()
}

#[handler]
fn start_async() -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("Location", "/async/status")
        .header("Retry-After", "0")
        .finish()
}

#[handler]
fn async_status(seen: Data<&Arc<Seen>>) -> Response {
    if seen.status_polls.fetch_add(1, Ordering::SeqCst) < 2 {
        Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("Retry-After", "0")
            .finish()
    } else {
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header("Location", "/async/result")
            .finish()
    }
}

#[handler]
fn async_result() -> Response {
    Response::builder()
        .content_type("application/json")
        .body(r#"{"report":"ready"}"#)
}

#[handler]
fn cross_origin() -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("Location", "http://example.com/steal")
        .finish()
}

#[handler]
async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Response::builder().finish()
}

#[handler]
fn huge() -> Response {
    Response::builder().body(vec![b'x'; 17 * 1024 * 1024])
}

/// A real HTTP server on a free port; returns its address and what it saw.
async fn upstream() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let routes = Route::new()
        .at("/echo/:name", poem::post(echo))
        .at("/busy", poem::post(busy))
        .at("/air", poem::post(air))
        .at("/refuse", poem::post(refuse))
        .at("/redirect", poem::post(redirect))
        .at("/async", poem::post(start_async))
        .at("/async/status", poem::get(async_status))
        .at("/async/result", poem::get(async_result))
        .at("/cross", poem::post(cross_origin))
        .at("/hang", poem::post(hang))
        .at("/huge", poem::post(huge))
        .data(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    tokio::spawn(
        poem::Server::new(poem::listener::TcpListener::bind(addr.to_string())).run(routes),
    );
    let http = client();
    let url = format!("http://{addr}/async/result");
    assert!(
        eventually(Duration::from_secs(5), || async {
            http.get(&url).send().await.is_ok()
        })
        .await,
        "the upstream did not start"
    );
    (format!("http://{addr}"), seen)
}

/// A server that answers every request with bytes that are not HTTP.
async fn garbage_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"SMTP? \x00\x01 not http at all\r\n\r\n")
                .await;
        }
    });
    format!("http://{addr}")
}

fn config(base: &str) -> String {
    std::env::set_var("JOBDOCK_TEST_REPORTS_TOKEN", "s3cret-token");
    format!(
        r#"
[kinds.report]
handler = "http"
url = "{base}/echo/{{customer}}"
headers = {{ Authorization = "Bearer ${{JOBDOCK_TEST_REPORTS_TOKEN}}" }}
keep_headers = ["etag", "x-report-id"]
payload_schema = {{ type = "object", required = ["customer"] }}

[kinds.busy]
handler = "http"
url = "{base}/busy"
max_attempts = 3

[kinds.air]
handler = "http"
url = "{base}/air"

[kinds.refuse]
handler = "http"
url = "{base}/refuse"

[kinds.redirect]
handler = "http"
url = "{base}/redirect"

[kinds.chain]
handler = "http"
url = "{base}/async"
follow_async = true

[kinds.cross]
handler = "http"
url = "{base}/cross"
follow_async = true

[kinds.hang]
handler = "http"
url = "{base}/hang"
timeout_secs = 1
max_attempts = 1

[kinds.huge]
handler = "http"
url = "{base}/huge"
"#
    )
}

#[tokio::test]
async fn a_2xx_answer_is_the_result_with_its_content_type_kept_headers_and_upstream_status() {
    let (base, seen) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app
        .submit(json!({"kind": "report", "payload": {"customer": "acme/../x y"}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let result = app.get_result(id).await;
    assert_eq!(result.status(), 200);
    assert_eq!(result.headers()["content-type"], "application/json");
    assert_eq!(result.headers()["upstream-status"], "201");
    assert_eq!(result.headers()["etag"], "\"v1\"");
    assert_eq!(result.headers()["x-report-id"], "42");
    assert!(result.headers().get("x-internal").is_none());
    let body: Value = result.json().await.unwrap();
    // The field filled one path segment, `/` and all (percent-encoded, so `/echo/:name` matched it whole,
    // and the upstream decoded it back).
    assert_eq!(body["name"], "acme/../x y");
    assert_eq!(body["body"], r#"{"customer":"acme/../x y"}"#);
    assert_eq!(body["idempotency_key"], id.to_string());
    assert_eq!(body["job"], id.to_string());
    assert_eq!(body["attempt"], "1");
    assert_eq!(body["authorization"], "Bearer s3cret-token");
    assert_eq!(seen.idempotency_keys.lock().unwrap().len(), 1);
    // The secret is nowhere a client can see it.
    let monitor = app.monitor(id).await.to_string();
    let kinds = app
        .client
        .get(app.url("/v1/kinds/report"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!monitor.contains("s3cret") && !kinds.contains("s3cret"));
}

#[tokio::test]
async fn a_payload_missing_a_url_field_is_400_at_submit() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let response = app
        .post_job(json!({"kind": "report", "payload": {"customer": {"nested": 1}}}))
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("customer"),
        "{problem}"
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_503_with_retry_after_retries_after_it_with_the_same_idempotency_key() {
    let (base, seen) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app.submit(json!({"kind": "busy"})).await;
    let monitor = app.wait_for_status(id, "succeeded").await;
    assert_eq!(monitor["attempt"], 2);
    let keys = seen.idempotency_keys.lock().unwrap().clone();
    assert_eq!(keys, vec![id.to_string(), id.to_string()]);
    assert_eq!(app.get_result(id).await.text().await.unwrap(), "done");
}

#[tokio::test]
async fn another_4xx_fails_the_job_with_the_upstream_status_and_a_4_kib_excerpt() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app.submit(json!({"kind": "refuse"})).await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(monitor["attempt"], 1, "not retried");
    assert_eq!(monitor["error"]["upstream_status"], 422);
    assert_eq!(
        monitor["error"]["upstream_body"].as_str().unwrap().len(),
        4096
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_the_job() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app.submit(json!({"kind": "redirect"})).await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(monitor["error"]["upstream_status"], 301);
}

#[tokio::test]
async fn follow_async_polls_a_202_location_chain_to_the_result() {
    let (base, seen) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app.submit(json!({"kind": "chain"})).await;
    app.wait_for_status(id, "succeeded").await;
    assert_eq!(seen.status_polls.load(Ordering::SeqCst), 3);
    let result = app.get_result(id).await;
    assert_eq!(result.headers()["upstream-status"], "200");
    assert_eq!(result.text().await.unwrap(), r#"{"report":"ready"}"#);
}

#[tokio::test]
async fn follow_async_never_leaves_the_upstreams_origin() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app
        .submit(json!({"kind": "cross", "max_attempts": 1}))
        .await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert!(
        monitor["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("another origin"),
        "{monitor}"
    );
}

#[tokio::test]
async fn a_hanging_upstream_hits_the_timeout() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app.submit(json!({"kind": "hang"})).await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(
        monitor["error"]["type"],
        "urn:jobdock:problem:job-timed-out"
    );
}

#[tokio::test]
async fn cancelling_aborts_the_request_in_flight() {
    let (base, _) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let id = app
        .submit(json!({"kind": "hang", "timeout_secs": 600}))
        .await;
    app.wait_for_status(id, "running").await;
    assert_eq!(app.cancel(id).await.status(), 202);
    app.wait_for_status(id, "cancelled").await;
}

#[tokio::test]
async fn a_huge_or_garbage_answer_fails_only_its_own_job_with_a_clear_error() {
    let (base, _) = upstream().await;
    let garbage = garbage_upstream().await;
    let text = format!(
        "{}\n[kinds.garbage]\nhandler = \"http\"\nurl = \"{garbage}/x\"\nmax_attempts = 1\n",
        config(&base)
    );
    let app = app_with_config(&text).await;
    let too_big = app.submit(json!({"kind": "huge"})).await;
    let bad = app.submit(json!({"kind": "garbage"})).await;
    let fine = app
        .submit(json!({"kind": "report", "payload": {"customer": "a"}}))
        .await;
    let monitor = app.wait_for_status(too_big, "failed").await;
    assert!(
        monitor["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{monitor}"
    );
    let monitor = app.wait_for_status(bad, "failed").await;
    assert_eq!(
        monitor["error"]["title"], "The upstream could not be reached",
        "{monitor}"
    );
    app.wait_for_status(fine, "succeeded").await;
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_whole_kind_and_its_waiting_jobs_spend_no_attempt() {
    let (base, seen) = upstream().await;
    let app = app_with_config(&config(&base)).await;
    let first = app.submit(json!({"kind": "air"})).await;
    // The first attempt got 429 + Retry-After: 2, and is queued for a retry.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.monitor(first).await["error"]["upstream_status"] == 429
        })
        .await
    );
    let kind: Value = app
        .client
        .get(app.url("/v1/kinds/air"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paused_until: chrono::DateTime<chrono::Utc> = kind["paused_until"]
        .as_str()
        .expect("paused_until is set")
        .parse()
        .unwrap();
    assert!(paused_until > chrono::Utc::now());
    let second = app.submit(json!({"kind": "air"})).await;
    let first = app.wait_for_status(first, "succeeded").await;
    let second = app.wait_for_status(second, "succeeded").await;
    assert_eq!(second["attempt"], 1, "the waiting job spent no attempt");
    for monitor in [&first, &second] {
        let started: chrono::DateTime<chrono::Utc> =
            monitor["started_at"].as_str().unwrap().parse().unwrap();
        assert!(
            started >= paused_until,
            "{monitor} started during the pause"
        );
    }
    assert_eq!(seen.air_calls.load(Ordering::SeqCst), 3);
    // Other kinds were never paused.
    let report: Value = app
        .client
        .get(app.url("/v1/kinds/report"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["paused_until"], Value::Null);
}
