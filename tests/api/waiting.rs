//! Waiting without polling blindly (DESIGN §12): `Prefer: wait`, the long poll and the event stream.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

async fn submit_preferring(app: &TestApp, body: Value, prefer: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/jobs"))
        .header("Prefer", prefer)
        .json(&body)
        .send()
        .await
        .expect("POST /v1/jobs")
}

async fn long_poll(app: &TestApp, id: Uuid, wait: u32, etag: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}?wait={wait}")));
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    request.send().await.expect("long poll")
}

fn etag_of(response: &reqwest::Response) -> String {
    response.headers()["etag"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn prefer_wait_on_a_job_that_succeeds_in_time_is_303_to_the_result() {
    let app = spawn_app().await;
    let response = submit_preferring(
        &app,
        json!({"kind": "echo", "payload": {"n": 1}}),
        "wait=10",
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    assert_eq!(response.headers()["vary"], "Prefer");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("/result"), "{location}");
    let result = app.client.get(app.url(&location)).send().await.unwrap();
    assert_eq!(result.status(), 200);
    assert_eq!(result.json::<Value>().await.unwrap(), json!({"n": 1}));
}

#[tokio::test]
async fn prefer_wait_on_a_job_that_fails_in_time_is_200_with_the_monitor() {
    let app = spawn_app().await;
    let response = submit_preferring(
        &app,
        json!({"kind": "fail", "payload": {"message": "no"}, "max_attempts": 1}),
        "respond-async, wait=10",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    assert_eq!(response.headers()["vary"], "Prefer");
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["status"], "failed");
    assert!(monitor["error"].is_object());
}

#[tokio::test]
async fn prefer_wait_shorter_than_the_job_is_the_usual_202_after_the_wait() {
    let app = spawn_app().await;
    let started = Instant::now();
    let response = submit_preferring(
        &app,
        json!({"kind": "sleep", "payload": {"ms": 20000}}),
        "wait=1",
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "wait=1");
    assert_eq!(response.headers()["vary"], "Prefer");
    assert!(response.headers().contains_key("location"));
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
}

#[tokio::test]
async fn prefer_wait_over_sixty_seconds_is_applied_as_sixty() {
    let app = spawn_app().await;
    let response = submit_preferring(&app, json!({"kind": "echo"}), "wait=3600").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["preference-applied"], "wait=60");
}

#[tokio::test]
async fn a_submit_without_prefer_answers_at_once_without_preference_applied() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let response = app.post_job(json!({"kind": "echo"})).await;
    assert_eq!(response.status(), 202);
    assert!(!response.headers().contains_key("preference-applied"));
}

#[tokio::test]
async fn a_long_poll_returns_when_the_job_changes() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let first = app.get_job(id).await;
    let tag = etag_of(&first);
    let poll = tokio::spawn({
        let client = app.client.clone();
        let url = app.url(&format!("/v1/jobs/{id}?wait=30"));
        let tag = tag.clone();
        async move {
            let started = Instant::now();
            let response = client
                .get(url)
                .header("If-None-Match", tag)
                .send()
                .await
                .unwrap();
            (response, started.elapsed())
        }
    });
    // The poll is waiting once it has marked the job watched.
    let watching = eventually(Duration::from_secs(10), || async {
        count(
            &app.pool,
            &format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND watched"),
        )
        .await
            == 1
    })
    .await;
    assert!(watching, "the long poll marks the job watched");
    assert!(!poll.is_finished(), "nothing changed yet: the poll waits");
    assert_eq!(app.cancel(id).await.status(), 200);
    let (response, waited) = poll.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(etag_of(&response), tag);
    let monitor: Value = response.json().await.unwrap();
    assert_eq!(monitor["status"], "cancelled");
    assert!(
        waited < Duration::from_secs(4),
        "woken by the change, not a re-check: {waited:?}"
    );
}

#[tokio::test]
async fn a_long_poll_with_a_stale_etag_answers_at_once() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let started = Instant::now();
    let response = long_poll(&app, id, 30, Some("\"not-the-current-tag\"")).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "queued");
}

#[tokio::test]
async fn a_long_poll_on_an_unchanged_job_is_304_after_the_wait() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let tag = etag_of(&app.get_job(id).await);
    let started = Instant::now();
    let response = long_poll(&app, id, 1, Some(&tag)).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 304);
    assert_eq!(etag_of(&response), tag);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
}

#[tokio::test]
async fn a_long_poll_on_a_finished_job_answers_at_once_with_its_final_answer() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(id, "succeeded").await;
    let started = Instant::now();
    let response = long_poll(&app, id, 30, None).await;
    assert_eq!(response.status(), 302);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_long_poll_of_more_than_sixty_seconds_is_400() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let response = long_poll(&app, id, 61, None).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn a_long_poll_of_an_unknown_job_is_404() {
    let app = spawn_app().await;
    let response = long_poll(&app, Uuid::now_v7(), 5, None).await;
    assert_eq!(response.status(), 404);
}

/// Parses `event:`/`data:` pairs from a finished SSE body.
fn status_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|block| block.lines().any(|line| line == "event: status"))
        .map(|block| {
            let data = block
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .expect("data line");
            serde_json::from_str(data).expect("monitor json")
        })
        .collect()
}

#[tokio::test]
async fn the_event_stream_sends_each_change_and_ends_after_the_terminal_one() {
    let app = spawn_app().await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 1200}}))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = response.text().await.expect("the stream ends");
    let events = status_events(&body);
    assert!(events.len() >= 2, "at least the first and the last: {body}");
    assert_eq!(events.last().unwrap()["status"], "succeeded");
    assert!(events[..events.len() - 1]
        .iter()
        .all(|event| event["status"] != "succeeded"));
    let percents: Vec<i64> = events
        .iter()
        .filter_map(|event| event["progress"]["percent"].as_i64())
        .collect();
    assert!(
        percents.windows(2).all(|pair| pair[0] <= pair[1]),
        "{percents:?}"
    );
    assert!(events.iter().all(|event| event["id"] == id.to_string()));
}

#[tokio::test]
async fn the_event_stream_of_a_finished_job_is_one_event() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    app.wait_for_status(id, "succeeded").await;
    let body = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = status_events(&body);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["status"], "succeeded");
}

#[tokio::test]
async fn the_event_stream_of_an_unknown_job_is_404() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{}/events", Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn five_hundred_long_polls_wait_together_on_the_default_pool_of_ten() {
    let app = spawn_app_with(|s| {
        s.workers = 0;
        s.db_max_connections = 10;
    })
    .await;
    let jobs: Vec<Value> = (0..500)
        .map(|n| json!({"kind": "echo", "payload": {"n": n}}))
        .collect();
    let response = app.post_batch(json!({"jobs": jobs})).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let ids: Vec<String> = accepted["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let polls: Vec<_> = ids
        .iter()
        .map(|id| {
            let request = client.get(app.url(&format!("/v1/jobs/{id}?wait=50")));
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    let all_waiting = eventually(Duration::from_secs(30), || async {
        count(&app.pool, "SELECT count(*) FROM jobs WHERE watched").await == 500
    })
    .await;
    assert!(all_waiting, "every long poll reached its wait");
    // While 500 requests wait, the pool is free: other requests are served at once.
    let started = Instant::now();
    let other = app.post_job(json!({"kind": "echo"})).await;
    assert_eq!(other.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let backends = count(
        &app.pool,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
            app.database.name
        ),
    )
    .await;
    // The server's pool of 10 and its two listening connections; the rest are this test's own.
    let server_connections = backends - i64::from(app.pool.size());
    assert!(
        server_connections <= 12,
        "{server_connections} server connections"
    );
    // One statement finishes all 500: each waiter is woken by its job's notification.
    let finished = Instant::now();
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now() \
         WHERE status = 'queued'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for poll in polls {
        let response = poll.await.unwrap().expect("long poll answered");
        assert_eq!(response.status(), 200);
        let monitor: Value = response.json().await.unwrap();
        statuses.push(monitor["status"].as_str().unwrap().to_owned());
    }
    assert!(statuses.iter().all(|status| status == "cancelled"));
    assert!(
        finished.elapsed() < Duration::from_secs(4),
        "all 500 answered {:?} after the change",
        finished.elapsed()
    );
}
