//! External workers over HTTP (DESIGN §8): claim (a long poll woken by NOTIFY), heartbeat, complete, fail,
//! every write fenced by the lease token.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;
use crate::configured::app_with_config;

const CONFIG: &str = r#"
[kinds.thumbnail]
handler = "external"
queue = "images"
payload_schema = { type = "object", required = ["url"] }

[kinds.quick]
handler = "external"
timeout_secs = 2
"#;

async fn app() -> TestApp {
    app_with_config(CONFIG).await
}

impl TestApp {
    pub async fn worker_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST worker endpoint")
    }

    /// Claims with `body` (merged into a claim of `thumbnail` that does not wait); returns the jobs.
    pub async fn claim(&self, body: Value) -> Vec<Value> {
        let mut request = json!({"worker_id": "test", "kinds": ["thumbnail"], "wait_secs": 0});
        for (key, value) in body.as_object().expect("object") {
            request[key] = value.clone();
        }
        let response = self.worker_post("/v1/worker/claim", request).await;
        assert_eq!(response.status(), 200, "claim");
        let answer: Value = response.json().await.expect("claim json");
        answer["jobs"].as_array().expect("jobs").clone()
    }

    pub async fn complete_job(
        &self,
        id: &str,
        token: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/worker/jobs/{id}/complete")))
            .header("Lease-Token", token)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .expect("POST complete")
    }
}

/// Submits `n` thumbnail jobs in one batch.
async fn submit_thumbnails(app: &TestApp, n: usize) {
    let jobs: Vec<Value> = (0..n)
        .map(|n| thumbnail(&format!("https://example.com/{n}.png")))
        .collect();
    let response = app
        .client
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

fn thumbnail(url: &str) -> Value {
    json!({"kind": "thumbnail", "payload": {"url": url}})
}

#[tokio::test]
async fn a_worker_claims_heartbeats_and_completes_and_the_client_gets_302_then_the_result() {
    let app = app().await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let jobs = app.claim(json!({"max_jobs": 10})).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["id"], id.to_string());
    assert_eq!(job["kind"], "thumbnail");
    assert_eq!(job["queue"], "images");
    assert_eq!(job["payload"], json!({"url": "https://example.com/a.png"}));
    assert_eq!(job["attempt"], 1);
    let token = job["lease_token"].as_str().unwrap();
    assert_eq!(app.monitor(id).await["status"], "running");

    let beat = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": token, "progress": {"percent": 40, "message": "resizing"}}),
        )
        .await;
    assert_eq!(beat.status(), 200);
    let beat: Value = beat.json().await.unwrap();
    assert_eq!(beat["cancel_requested"], false);
    assert!(beat["lease_expires_at"].is_string());
    assert_eq!(
        app.monitor(id).await["progress"],
        json!({"percent": 40, "message": "resizing"})
    );

    let done = app
        .complete_job(&id.to_string(), token, "a thumbnail")
        .await;
    assert_eq!(done.status(), 204);
    // The answer was lost; the worker says it again.
    let again = app
        .complete_job(&id.to_string(), token, "a thumbnail")
        .await;
    assert_eq!(again.status(), 204);

    let monitor = app.get_job(id).await;
    assert_eq!(monitor.status(), 302);
    let result = app.get_result(id).await;
    assert_eq!(result.status(), 200);
    assert_eq!(
        result.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(result.text().await.unwrap(), "a thumbnail");
}

#[tokio::test]
async fn a_result_without_content_type_is_stored_as_octet_stream() {
    let app = app().await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let jobs = app.claim(json!({})).await;
    let token = jobs[0]["lease_token"].as_str().unwrap();
    let done = app
        .client
        .post(app.url(&format!("/v1/worker/jobs/{id}/complete")))
        .header("Lease-Token", token)
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 204);
    let result = app.get_result(id).await;
    assert_eq!(result.headers()["content-type"], "application/octet-stream");
    assert_eq!(result.bytes().await.unwrap().as_ref(), [0u8, 159, 146, 150]);
}

#[tokio::test]
async fn a_long_poll_returns_early_when_a_job_arrives_and_empty_after_wait_secs() {
    let app = app().await;
    // Nothing due: the claim waits its whole wait_secs, then answers [].
    let started = Instant::now();
    let jobs = app.claim(json!({"wait_secs": 1})).await;
    assert!(jobs.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A job submitted while a claim waits ends the wait at once (NOTIFY), long before wait_secs.
    let waiting = {
        let client = app.client.clone();
        let url = app.url("/v1/worker/claim");
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .post(url)
                .json(&json!({"worker_id": "w", "kinds": ["thumbnail"], "wait_secs": 30}))
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    // Give the claim time to start waiting (it does not matter if it has not: it then finds the job).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = app.submit(thumbnail("https://example.com/b.png")).await;
    let (took, body) = waiting.await.unwrap();
    assert_eq!(body["jobs"][0]["id"], id.to_string(), "{body}");
    assert!(took < Duration::from_secs(5), "the long poll took {took:?}");
}

#[tokio::test]
async fn two_workers_never_get_the_same_job() {
    let app = app().await;
    submit_thumbnails(&app, 40).await;
    let claims: Vec<_> = (0..8)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/v1/worker/claim");
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let body: Value = client
                        .post(&url)
                        .json(
                            &json!({"worker_id": format!("w{n}"), "kinds": ["thumbnail"],
                                      "max_jobs": 3, "wait_secs": 0}),
                        )
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let jobs = body["jobs"].as_array().unwrap().clone();
                    if jobs.is_empty() {
                        return ids;
                    }
                    ids.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claim in claims {
        all.extend(claim.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "every job claimed once");
    assert_eq!(unique.len(), 40, "no job claimed twice");
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_the_job_and_its_late_complete_is_409_and_changes_nothing(
) {
    let app = spawn_app_with({
        let file = jobdock::config::file::parse(std::path::Path::new("t.toml"), CONFIG).unwrap();
        move |settings| {
            settings.kinds = file.kinds;
            settings.lease = Duration::from_millis(400);
        }
    })
    .await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    // The shortest lease a claim may ask for is 5 s; shorten it in the database to spare the test 5 s.
    let first = app.claim(json!({"lease_secs": 5})).await;
    let stale = first[0]["lease_token"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    // The rescuer requeues it and another worker claims it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let jobs = app.claim(json!({"wait_secs": 1})).await;
        if !jobs.is_empty() {
            break jobs;
        }
        assert!(Instant::now() < deadline, "the job was never rescued");
    };
    assert_eq!(second[0]["attempt"], 2);
    let fresh = second[0]["lease_token"].as_str().unwrap().to_owned();

    let late = app.complete_job(&id.to_string(), &stale, "stale").await;
    assert_eq!(late.status(), 409);
    let problem: Value = late.json().await.unwrap();
    assert_eq!(problem["type"], "urn:jobdock:problem:lease-lost");
    let beat = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": stale}),
        )
        .await;
    assert_eq!(beat.status(), 409);
    let fail = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": stale, "error": {"title": "late"}}),
        )
        .await;
    assert_eq!(fail.status(), 409);
    assert_eq!(app.monitor(id).await["status"], "running");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 0);

    assert_eq!(
        app.complete_job(&id.to_string(), &fresh, "fresh")
            .await
            .status(),
        204
    );
    assert_eq!(app.get_result(id).await.text().await.unwrap(), "fresh");
    // The stale worker retrying now is still refused, and the result stays.
    assert_eq!(
        app.complete_job(&id.to_string(), &stale, "stale")
            .await
            .status(),
        409
    );
    assert_eq!(app.get_result(id).await.text().await.unwrap(), "fresh");
}

#[tokio::test]
async fn cancel_reaches_a_running_external_job_through_its_heartbeat_and_fail_ends_it_cancelled() {
    let app = app().await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let jobs = app.claim(json!({})).await;
    let token = jobs[0]["lease_token"].as_str().unwrap();
    assert_eq!(app.cancel(id).await.status(), 202);
    let beat: Value = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": token}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beat["cancel_requested"], true);
    let fail = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "error": {"title": "Stopped on request"}}),
        )
        .await;
    assert_eq!(fail.status(), 204);
    let monitor = app.monitor(id).await;
    assert_eq!(monitor["status"], "cancelled");
    assert_eq!(
        monitor["error"]["type"],
        "urn:jobdock:problem:job-cancelled"
    );
}

#[tokio::test]
async fn a_retryable_failure_requeues_after_retry_after_and_a_permanent_one_fails_with_the_workers_error(
) {
    let app = app().await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let token = app.claim(json!({})).await[0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let fail = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "retry_after_secs": 600,
                   "error": {"title": "Upstream busy", "detail": "503", "upstream": "img"}}),
        )
        .await;
    assert_eq!(fail.status(), 204);
    let monitor = app.monitor(id).await;
    assert_eq!(monitor["status"], "queued");
    assert_eq!(monitor["error"]["title"], "Upstream busy");
    assert_eq!(
        monitor["error"]["upstream"], "img",
        "other members are kept"
    );
    assert_eq!(monitor["error"]["attempt"], 1);
    let delay: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - updated_at)::float8 FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        (599.0..=601.0).contains(&delay),
        "run_at is {delay} s later"
    );

    // Due again at once; the next attempt fails for good.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let jobs = app.claim(json!({})).await;
    assert_eq!(jobs[0]["attempt"], 2);
    assert_eq!(
        app.monitor(id).await["error"],
        Value::Null,
        "the next attempt clears the error"
    );
    let token = jobs[0]["lease_token"].as_str().unwrap();
    let fail = app
        .worker_post(
            &format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "retryable": false, "error": {"title": "Not an image"}}),
        )
        .await;
    assert_eq!(fail.status(), 204);
    let monitor = app.monitor(id).await;
    assert_eq!(monitor["status"], "failed");
    assert_eq!(monitor["error"]["title"], "Not an image");
}

#[tokio::test]
async fn an_external_job_cannot_outlive_its_timeout() {
    let app = spawn_app_with({
        let file = jobdock::config::file::parse(std::path::Path::new("t.toml"), CONFIG).unwrap();
        move |settings| {
            settings.kinds = file.kinds;
            settings.lease = Duration::from_millis(600);
        }
    })
    .await;
    let id = app
        .submit(json!({"kind": "quick", "max_attempts": 1}))
        .await;
    let jobs = app
        .claim(json!({"kinds": ["quick"], "lease_secs": 60}))
        .await;
    let token = jobs[0]["lease_token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> = jobs[0]["lease_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expires < chrono::Utc::now() + chrono::Duration::seconds(3),
        "the lease is capped by timeout_secs (2 s), not lease_secs (60 s): {expires}"
    );
    // Heartbeats keep the worker busy, but the attempt still ends at its timeout.
    let monitor = loop {
        let beat = app
            .worker_post(
                &format!("/v1/worker/jobs/{id}/heartbeat"),
                json!({"lease_token": token}),
            )
            .await;
        let monitor = app.monitor(id).await;
        if beat.status() == 409 && monitor["status"] == "failed" {
            break monitor;
        }
        assert!(
            beat.status() == 200 || beat.status() == 409,
            "{}",
            beat.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        monitor["error"]["type"],
        "urn:jobdock:problem:job-timed-out"
    );
    assert_eq!(
        app.complete_job(&id.to_string(), &token, "late")
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn a_kind_that_is_not_external_cannot_be_claimed() {
    let app = app().await;
    for kinds in [json!(["echo"]), json!(["thumbnail", "nope"])] {
        let response = app
            .worker_post(
                "/v1/worker/claim",
                json!({"worker_id": "w", "kinds": kinds, "wait_secs": 0}),
            )
            .await;
        assert_eq!(response.status(), 400, "{kinds}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains('`'),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn bad_worker_requests_are_4xx_problems_and_change_nothing() {
    let app = app().await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let claim_cases = [
        json!({"kinds": ["thumbnail"]}),
        json!({"worker_id": "w", "kinds": []}),
        json!({"worker_id": "w", "kinds": ["thumbnail"], "max_jobs": 0}),
        json!({"worker_id": "w", "kinds": ["thumbnail"], "max_jobs": 501}),
        json!({"worker_id": "w", "kinds": ["thumbnail"], "wait_secs": 61}),
        json!({"worker_id": "w", "kinds": ["thumbnail"], "lease_secs": 4}),
        json!({"worker_id": "w", "kinds": ["thumbnail"], "surprise": 1}),
        json!({"worker_id": "w\u{0}", "kinds": ["thumbnail"]}),
        json!([1, 2]),
    ];
    for body in claim_cases {
        let response = app.worker_post("/v1/worker/claim", body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
    }
    let not_json = app
        .client
        .post(app.url("/v1/worker/claim"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    assert_eq!(
        app.monitor(id).await["status"],
        "queued",
        "no bad claim took the job"
    );

    let token = app.claim(json!({})).await[0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = Uuid::now_v7();
    let heartbeat_cases = [
        (
            format!("/v1/worker/jobs/{unknown}/heartbeat"),
            json!({"lease_token": token}),
            404,
        ),
        (
            "/v1/worker/jobs/not-a-uuid/heartbeat".to_owned(),
            json!({"lease_token": token}),
            404,
        ),
        (
            format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": Uuid::new_v4()}),
            409,
        ),
        (
            format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": "nope"}),
            400,
        ),
        (format!("/v1/worker/jobs/{id}/heartbeat"), json!({}), 400),
        (
            format!("/v1/worker/jobs/{id}/heartbeat"),
            json!({"lease_token": token, "progress": {"percent": 101}}),
            400,
        ),
        (
            format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token}),
            400,
        ),
        (
            format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "error": "broken"}),
            400,
        ),
        (
            format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "error": {"detail": "no title"}}),
            400,
        ),
        (
            format!("/v1/worker/jobs/{id}/fail"),
            json!({"lease_token": token, "error": {"title": "x"}, "retry_after_secs": -1}),
            400,
        ),
        (
            format!("/v1/worker/jobs/{unknown}/fail"),
            json!({"lease_token": token, "error": {"title": "x"}}),
            404,
        ),
    ];
    for (path, body, status) in heartbeat_cases {
        let response = app.worker_post(&path, body.clone()).await;
        assert_eq!(response.status(), status, "{path} {body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path} {body}"
        );
    }
    // Completing without a token, with a malformed one, or with a result over the limit.
    let no_token = app
        .client
        .post(app.url(&format!("/v1/worker/jobs/{id}/complete")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 400);
    assert_eq!(
        app.complete_job(&id.to_string(), "nope", "x")
            .await
            .status(),
        400
    );
    assert_eq!(
        app.monitor(id).await["status"],
        "running",
        "nothing changed"
    );
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 0);
}

#[tokio::test]
async fn a_result_over_the_limit_is_413_and_not_stored() {
    let file = jobdock::config::file::parse(std::path::Path::new("t.toml"), CONFIG).unwrap();
    let app = spawn_app_with(move |settings| {
        settings.kinds = file.kinds;
        settings.max_result_bytes = 2 * 1024 * 1024;
    })
    .await;
    let id = app.submit(thumbnail("https://example.com/a.png")).await;
    let token = app.claim(json!({})).await[0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let complete = |size: usize| {
        app.client
            .post(app.url(&format!("/v1/worker/jobs/{id}/complete")))
            .header("Lease-Token", token.clone())
            .body(vec![b'x'; size])
            .send()
    };
    // Over the request-body limit (1 MiB) but within the result limit: accepted.
    let too_big = complete(2 * 1024 * 1024 + 1).await.unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 0);
    let fits = complete(1024 * 1024 + 10).await.unwrap();
    assert_eq!(fits.status(), 204);
    assert_eq!(
        app.get_result(id).await.bytes().await.unwrap().len(),
        1024 * 1024 + 10
    );
}

#[tokio::test]
async fn concurrent_completions_each_store_one_result_even_when_one_is_repeated_at_once() {
    let app = app().await;
    submit_thumbnails(&app, 50).await;
    let claimed = app.claim(json!({"max_jobs": 50})).await;
    assert_eq!(claimed.len(), 50);
    // Every job once, and the first one twice more, all at the same time.
    let calls: Vec<(String, String)> = claimed
        .iter()
        .chain(std::iter::repeat_n(&claimed[0], 2))
        .map(|job| {
            (
                job["id"].as_str().unwrap().to_owned(),
                job["lease_token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let answers = futures_util::future::join_all(calls.iter().map(|(id, token)| {
        app.client
            .post(app.url(&format!("/v1/worker/jobs/{id}/complete")))
            .header("Lease-Token", token)
            .header("Content-Type", "application/json")
            .body(format!("{{\"id\": \"{id}\"}}"))
            .send()
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().status(), 204);
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM results").await, 50);
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
        )
        .await,
        50
    );
}
