//! Completion webhooks (DESIGN §12) delivered to a real receiver started by the test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, EndpointExt, Request, Response, Route};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::common::*;
use jobdock::webhooks::{Secret, WebhookSettings};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Statuses to answer, in order; 200 once they run out.
    answers: Mutex<VecDeque<u16>>,
}

#[handler]
async fn hook(request: &Request, body: Vec<u8>, receiver: Data<&Arc<Receiver>>) -> Response {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    let status = receiver.answers.lock().unwrap().pop_front().unwrap_or(200);
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .finish()
}

/// A receiver on a real socket; its base URL.
async fn start_receiver(answers: &[u16]) -> (Arc<Receiver>, String) {
    start_receiver_on(free_address().await, answers).await
}

/// An address nothing listens on (yet).
async fn free_address() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn start_receiver_on(
    address: std::net::SocketAddr,
    answers: &[u16],
) -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    receiver.answers.lock().unwrap().extend(answers);
    let app = Route::new().at("/hooks/*", hook).data(receiver.clone());
    tokio::spawn(poem::Server::new(poem::listener::TcpListener::bind(address)).run(app));
    let base = format!("http://{address}");
    let ready = eventually(Duration::from_secs(5), || async {
        reqwest::get(format!("{base}/")).await.is_ok()
    })
    .await;
    assert!(ready, "receiver listening");
    (receiver, base)
}

fn webhooks(allow: &[&str]) -> WebhookSettings {
    WebhookSettings {
        secret: Some(Secret::parse(SECRET).unwrap()),
        allow: allow.iter().map(|p| (*p).to_owned()).collect(),
    }
}

async fn app_with_webhooks(allow: &[&str]) -> TestApp {
    let settings = webhooks(allow);
    spawn_app_with(move |s| s.webhooks = settings).await
}

/// The signature a Standard Webhooks receiver expects, computed here independently of jobdock.
fn expected_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn received(receiver: &Receiver, at_least: usize) -> Vec<Received> {
    let arrived = eventually(Duration::from_secs(20), || async {
        receiver.received.lock().unwrap().len() >= at_least
    })
    .await;
    let all = receiver.received.lock().unwrap().clone();
    assert!(arrived, "expected {at_least} deliveries, got {}", all.len());
    all
}

async fn callback_of(app: &TestApp, id: Uuid, state: &str) -> Value {
    let last = Mutex::new(Value::Null);
    let reached = eventually(Duration::from_secs(10), || async {
        let callback = app.monitor(id).await["callback"].clone();
        let done = callback["state"] == state;
        *last.lock().unwrap() = callback;
        done
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(reached, "callback never reached `{state}`: {last}");
    last
}

#[tokio::test]
async fn a_finished_job_posts_its_final_monitor_signed_per_standard_webhooks() {
    let (receiver, base) = start_receiver(&[]).await;
    let app = app_with_webhooks(&[&format!("{base}/hooks/*")]).await;
    let callback = format!("{base}/hooks/done?token=abc");
    let id = app
        .submit(json!({"kind": "echo", "payload": {"n": 1}, "callback_url": callback}))
        .await;
    let seen = received(&receiver, 1).await;
    let delivery = &seen[0];
    assert!(delivery.id.starts_with("msg_"), "{}", delivery.id);
    let sent_at: i64 = delivery.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    assert_eq!(
        delivery.signature,
        expected_signature(&delivery.id, &delivery.timestamp, &delivery.body)
    );
    let monitor: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(monitor["id"], id.to_string());
    assert_eq!(monitor["status"], "succeeded");
    assert!(
        monitor.get("callback_url").is_none(),
        "the URL is never shown"
    );
    let state = callback_of(&app, id, "delivered").await;
    assert_eq!(state["attempts"], 1);
    assert_eq!(state["last_status"], 200);
}

#[tokio::test]
async fn a_job_still_running_shows_its_callback_waiting() {
    let (_receiver, base) = start_receiver(&[]).await;
    let app = app_with_webhooks(&[&format!("{base}/hooks/*")]).await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 20000},
                       "callback_url": format!("{base}/hooks/x")}))
        .await;
    let callback = app.monitor(id).await["callback"].clone();
    assert_eq!(callback["state"], "waiting");
    assert_eq!(callback["attempts"], 0);
    let plain = app.submit(json!({"kind": "echo"})).await;
    assert!(app.monitor(plain).await.get("callback").is_none());
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_the_same_webhook_id() {
    let (receiver, base) = start_receiver(&[500]).await;
    let app = app_with_webhooks(&[&format!("{base}/hooks/*")]).await;
    let id = app
        .submit(
            json!({"kind": "fail", "payload": {"message": "no"}, "max_attempts": 1,
                       "callback_url": format!("{base}/hooks/x")}),
        )
        .await;
    let first = received(&receiver, 1).await;
    let answered_500 = eventually(Duration::from_secs(10), || async {
        let callback = app.monitor(id).await["callback"].clone();
        callback["state"] == "pending" && callback["last_status"] == 500
    })
    .await;
    assert!(
        answered_500,
        "the 500 is recorded and the delivery stays pending"
    );
    let both = received(&receiver, 2).await;
    assert_eq!(
        both[0].id, both[1].id,
        "the same webhook-id on every attempt"
    );
    assert_eq!(both[0].body, both[1].body, "the same body on every attempt");
    assert_eq!(first[0].id, both[1].id);
    let monitor: Value = serde_json::from_slice(&both[1].body).unwrap();
    assert_eq!(monitor["status"], "failed");
    let delivered = callback_of(&app, id, "delivered").await;
    assert_eq!(delivered["attempts"], 2);
}

#[tokio::test]
async fn a_410_stops_the_deliveries() {
    let (receiver, base) = start_receiver(&[410]).await;
    let app = app_with_webhooks(&[&format!("{base}/hooks/*")]).await;
    let id = app
        .submit(json!({"kind": "echo", "callback_url": format!("{base}/hooks/x")}))
        .await;
    received(&receiver, 1).await;
    let stopped = callback_of(&app, id, "stopped").await;
    assert_eq!(stopped["last_status"], 410);
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM deliveries WHERE state = 'pending'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_callback_outside_the_allow_list_is_400_and_stores_nothing() {
    let app = app_with_webhooks(&["https://hooks.example.com/*"]).await;
    for url in [
        "https://evil.example.net/x",
        "https://hooks.example.com.evil.net/x",
        "http://hooks.example.com/x",
        "not a url",
        "ftp://hooks.example.com/x",
    ] {
        let response = app
            .post_job(json!({"kind": "echo", "callback_url": url}))
            .await;
        assert_eq!(response.status(), 400, "{url}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("callback_url"),
            "{problem}"
        );
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_callback_to_an_internal_address_is_400_even_when_a_star_admits_it() {
    let app = app_with_webhooks(&["http://*", "https://*"]).await;
    for url in [
        "http://127.0.0.1:9000/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://localhost:9000/x",
        "https://192.168.1.1/x",
    ] {
        let response = app
            .post_job(json!({"kind": "echo", "callback_url": url}))
            .await;
        assert_eq!(response.status(), 400, "{url}");
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_callback_in_a_batch_is_checked_too() {
    let app = app_with_webhooks(&["https://hooks.example.com/*"]).await;
    let response = app
        .post_batch(json!({"jobs": [
            {"kind": "echo"},
            {"kind": "echo", "callback_url": "http://10.0.0.1/x"}
        ]}))
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["index"], 1);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn without_webhooks_configured_a_callback_is_400() {
    let app = spawn_app().await;
    let response = app
        .post_job(json!({"kind": "echo", "callback_url": "https://hooks.example.com/x"}))
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("[webhooks]"));
}

#[tokio::test]
async fn a_name_that_resolves_to_an_internal_address_is_refused_at_delivery() {
    let (receiver, base) = start_receiver(&[]).await;
    let app = app_with_webhooks(&["http://*"]).await;
    // Stored as if DNS had said "public" at submit and changed its answer since (rebinding).
    let port = base.rsplit(':').next().unwrap();
    let job = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 60000}}))
        .await;
    sqlx::query("UPDATE jobs SET callback_url = $2 WHERE id = $1")
        .bind(job)
        .bind(format!("http://localhost:{port}/hooks/x"))
        .execute(&app.pool)
        .await
        .unwrap();
    // 202 while it runs (200 if a slow machine let its lease lapse and it was queued again): either way
    // it ends cancelled, which queues the delivery.
    assert!([200, 202].contains(&app.cancel(job).await.status().as_u16()));
    let refused = eventually(Duration::from_secs(20), || async {
        count(
            &app.pool,
            "SELECT count(*) FROM deliveries WHERE attempts >= 1 AND last_error LIKE '%loopback%'",
        )
        .await
            == 1
    })
    .await;
    assert!(refused, "the delivery is refused after DNS");
    assert!(receiver.received.lock().unwrap().is_empty());
}

/// A second server on `url`'s database with webhooks for `allow`; stop it by cancelling the token.
async fn another_replica(
    url: &str,
    allow: &str,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut settings = test_settings(url);
    settings.webhooks = webhooks(&[allow]);
    let app = jobdock::Application::build(settings, jobdock::Registry::builtin())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    (stop, handle)
}

#[tokio::test]
async fn a_delivery_survives_a_restart_and_is_sent_by_the_next_server() {
    let address = free_address().await;
    let base = format!("http://{address}");
    let allow = format!("{base}/hooks/*");
    let mut first = app_with_webhooks(&[&allow]).await;
    let id = first
        .submit(json!({"kind": "echo", "callback_url": format!("{base}/hooks/x")}))
        .await;
    // Nothing listens yet: the first attempt fails and the delivery waits for its retry.
    let failed_once = eventually(Duration::from_secs(20), || async {
        count(
            &first.pool,
            "SELECT count(*) FROM deliveries WHERE state = 'pending' AND attempts = 1 AND last_error IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
    assert!(failed_once, "the first attempt found no receiver");
    first.shut_down().await;
    let (receiver, _) = start_receiver_on(address, &[]).await;
    let second = another_replica(&first.database.url, &allow).await;
    let seen = received(&receiver, 1).await;
    let monitor: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(monitor["id"], id.to_string());
    let delivered = eventually(Duration::from_secs(10), || async {
        count(
            &first.pool,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered' AND attempts = 2",
        )
        .await
            == 1
    })
    .await;
    assert!(delivered);
    second.0.cancel();
    let _ = second.1.await;
}

#[tokio::test]
async fn two_replicas_deliver_each_callback_once() {
    let (receiver, base) = start_receiver(&[]).await;
    let allow = format!("{base}/hooks/*");
    let first = app_with_webhooks(&[&allow]).await;
    let second = another_replica(&first.database.url, &allow).await;
    let jobs: Vec<Value> = (0..30)
        .map(|n| json!({"kind": "echo", "payload": {"n": n}, "callback_url": format!("{base}/hooks/{n}")}))
        .collect();
    let response = first.post_batch(json!({"jobs": jobs})).await;
    assert_eq!(response.status(), 202);
    received(&receiver, 30).await;
    let all_delivered = eventually(Duration::from_secs(10), || async {
        count(
            &first.pool,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
        )
        .await
            == 30
    })
    .await;
    assert!(all_delivered);
    let seen = receiver.received.lock().unwrap().clone();
    let mut ids: Vec<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(seen.len(), 30, "no delivery sent twice");
    assert_eq!(ids.len(), 30);
    second.0.cancel();
    let _ = second.1.await;
}
