use std::collections::HashSet;

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn a_batch_stores_every_job_and_answers_one_monitor_each() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let jobs: Vec<Value> = (0..50)
        .map(|n| json!({"kind": "echo", "payload": {"n": n}}))
        .collect();
    let response = app
        .client
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    let monitors = body["jobs"].as_array().unwrap();
    assert_eq!(monitors.len(), 50);
    assert!(monitors.iter().all(|m| m["status"] == "queued"));
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 50);
}

#[tokio::test]
async fn a_batch_with_an_invalid_job_names_it_and_stores_none() {
    let app = spawn_app().await;
    let cases = [
        (
            json!([{"kind": "echo"}, {"kind": "echo"}, {"kind": "nope"}]),
            2,
        ),
        (json!([{"kind": "echo"}, {"payload": {}}]), 1),
        (json!([{"kind": "sleep", "payload": {"ms": "x"}}]), 0),
        (
            json!([{"kind": "echo"}, {"kind": "echo", "payload": "\u{0}"}]),
            1,
        ),
    ];
    for (jobs, index) in cases {
        let response = app
            .client
            .post(app.url("/v1/jobs/batch"))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["index"], index, "{problem}");
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("jobs[{index}]")));
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_batch_must_hold_1_to_1000_jobs() {
    let app = spawn_app().await;
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"kind": "echo"})).collect();
    for jobs in [json!([]), json!(too_many)] {
        let response = app
            .client
            .post(app.url("/v1/jobs/batch"))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let exactly: Vec<Value> = (0..1000).map(|_| json!({"kind": "echo"})).collect();
    let response = app
        .client
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": exactly}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listing_filters_by_status_kind_and_queue() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let echo = app.submit(json!({"kind": "echo", "queue": "a"})).await;
    let sleep = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 1}, "queue": "b"}))
        .await;
    let cancelled = app.submit(json!({"kind": "echo", "queue": "b"})).await;
    app.cancel(cancelled).await;

    assert_eq!(ids(&list(&app, "").await).len(), 3);
    assert_eq!(
        ids(&list(&app, "?kind=sleep").await),
        vec![sleep.to_string()]
    );
    assert_eq!(ids(&list(&app, "?queue=a").await), vec![echo.to_string()]);
    assert_eq!(
        ids(&list(&app, "?status=cancelled").await),
        vec![cancelled.to_string()]
    );
    assert_eq!(
        ids(&list(&app, "?status=queued&queue=b").await),
        vec![sleep.to_string()]
    );
    assert!(ids(&list(&app, "?kind=nothing").await).is_empty());
}

#[tokio::test]
async fn listing_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let jobs: Vec<Value> = (0..25)
        .map(|n| json!({"kind": "echo", "payload": {"n": n}}))
        .collect();
    app.client
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut query = "?limit=10".to_owned();
    loop {
        let page = list(&app, &query).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 10);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
}

#[tokio::test]
async fn listing_rejects_bad_parameters_with_400() {
    let app = spawn_app().await;
    for query in [
        "?limit=501",
        "?limit=0",
        "?limit=x",
        "?status=done",
        "?cursor=garbage",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/jobs{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn a_filter_no_job_can_match_is_an_empty_page_not_an_error() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    app.submit(json!({"kind": "echo"})).await;
    for query in ["?kind=ec%00ho", "?queue=a%00b"] {
        let page = list(&app, query).await;
        assert!(ids(&page).is_empty(), "{query}");
    }
}

async fn post_batch(app: &TestApp, key: &str, jobs: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/jobs/batch"))
        .header("Idempotency-Key", key)
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_retried_with_its_idempotency_key_returns_the_same_jobs_and_stores_no_duplicates() {
    let app = spawn_app().await;
    let jobs =
        json!([{"kind": "echo", "payload": {"n": 1}}, {"kind": "echo", "payload": {"n": 2}}]);
    let first = post_batch(&app, "batch-key-1", jobs.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // The same batch again (its answer was lost, say), twice at once.
    let (again, concurrent) = tokio::join!(
        post_batch(&app, "batch-key-1", jobs.clone()),
        post_batch(&app, "batch-key-1", jobs.clone())
    );
    for response in [again, concurrent] {
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        let ids = |body: &Value| {
            body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["id"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&body), ids(&first));
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 2);
    // The same key with a different batch is 422 and stores nothing.
    let other = post_batch(
        &app,
        "batch-key-1",
        json!([{"kind": "echo", "payload": {"n": 3}}]),
    )
    .await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 2);
    // A batch key never answers a single submission, nor the other way round.
    let single = app
        .client
        .post(app.url("/v1/jobs"))
        .header("Idempotency-Key", "batch-key-1")
        .json(&json!({"kind": "echo", "payload": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 202);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 3);
}

#[tokio::test]
async fn a_filtered_page_reads_a_bounded_window_and_says_where_to_go_on() {
    let app = spawn_app_with(|settings| settings.workers = 0).await;
    // 25,000 jobs, one `rare` in every 1,000, the newest 5,000 without any.
    sqlx::query(
        "INSERT INTO jobs (id, kind, queue) \
         SELECT (lpad(to_hex(n), 8, '0') || '-0000-7000-8000-000000000000')::uuid, \
                CASE WHEN n % 1000 = 0 AND n <= 20000 THEN 'rare' ELSE 'echo' END, \
                CASE WHEN n % 1000 = 0 AND n <= 20000 THEN 'slow' ELSE 'default' END \
         FROM generate_series(1, 25000) AS n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for filter in ["kind=rare", "queue=slow"] {
        let mut found = 0;
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(cursor) => format!("/v1/jobs?{filter}&limit=500&cursor={cursor}"),
                None => format!("/v1/jobs?{filter}&limit=500"),
            };
            let page: Value = app
                .client
                .get(app.url(&url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            found += page["jobs"].as_array().unwrap().len();
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(pages < 10, "{filter}: too many pages");
        }
        // Every match is found; the first page (the newest 10,000 jobs) holds only half of them.
        assert_eq!(found, 20, "{filter}");
        assert_eq!(pages, 3, "{filter}");
    }
}
