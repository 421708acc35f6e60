//! `Retry-After` as a forecast, `queue_position` and `estimated_finish_at` (DESIGN §12).

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

const KINDS: &str = "\
[kinds.slow]\nhandler = \"exec\"\ncommand = [\"sleep\", \"5\"]\n\
[kinds.fast]\nhandler = \"exec\"\ncommand = [\"sleep\", \"0.1\"]\n";

fn retry_after(response: &reqwest::Response) -> u32 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn monitor_and_retry_after(app: &TestApp, id: Uuid) -> (Value, u32) {
    let response = app.get_job(id).await;
    assert_eq!(response.status(), 200);
    let after = retry_after(&response);
    (response.json().await.unwrap(), after)
}

#[tokio::test]
async fn a_job_of_a_slow_kind_is_told_to_come_back_later_than_one_of_a_fast_kind() {
    let file = jobdock::config::file::parse(std::path::Path::new("jobdock.toml"), KINDS).unwrap();
    let app = spawn_app_with(move |s| {
        s.kinds = file.kinds;
        s.workers = 2;
    })
    .await;
    // History: one run of each kind.
    let slow = app.submit(json!({"kind": "slow"})).await;
    let fast = app.submit(json!({"kind": "fast"})).await;
    app.wait_for_status(fast, "succeeded").await;
    app.wait_for_status(slow, "succeeded").await;
    // Both workers busy with slow jobs, so the next two wait in line.
    let busy = [
        app.submit(json!({"kind": "slow"})).await,
        app.submit(json!({"kind": "slow"})).await,
    ];
    for id in busy {
        app.wait_for_status(id, "running").await;
    }
    let slow = app.submit(json!({"kind": "slow"})).await;
    let fast = app.submit(json!({"kind": "fast"})).await;
    // A kind's pace is re-read within a second once its first job has finished.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let seen = loop {
        let slow = monitor_and_retry_after(&app, slow).await;
        let fast = monitor_and_retry_after(&app, fast).await;
        if slow.1 > fast.1 || std::time::Instant::now() > deadline {
            break (slow, fast);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let ((slow_monitor, slow_after), (fast_monitor, fast_after)) = seen;
    assert_eq!(slow_monitor["status"], "queued");
    assert_eq!(fast_monitor["status"], "queued");
    assert!(
        slow_after > fast_after,
        "slow kind told {slow_after} s, fast kind {fast_after} s"
    );
    assert!((4..=60).contains(&slow_after), "{slow_after}");
    assert_eq!(slow_monitor["queue_position"], 0);
    assert_eq!(
        fast_monitor["queue_position"], 1,
        "the slow job is ahead of it"
    );
    for monitor in [&slow_monitor, &fast_monitor] {
        let estimate: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(monitor["estimated_finish_at"].clone()).unwrap();
        assert!(estimate > chrono::Utc::now());
    }
    // Running, the slow job is still told to come back in seconds, not at once.
    let running = app.wait_for_status(busy[0], "running").await;
    assert!(running["estimated_finish_at"].is_string());
    assert_eq!(running["queue_position"], Value::Null);
}

#[tokio::test]
async fn queue_position_counts_the_jobs_ahead_in_the_same_queue_by_priority_then_age() {
    let app = spawn_app_with(|s| s.workers = 0).await;
    let first = app.submit(json!({"kind": "echo"})).await;
    let second = app.submit(json!({"kind": "echo"})).await;
    let urgent = app.submit(json!({"kind": "echo", "priority": 10})).await;
    let elsewhere = app.submit(json!({"kind": "echo", "queue": "other"})).await;
    assert_eq!(app.monitor(urgent).await["queue_position"], 0);
    assert_eq!(app.monitor(first).await["queue_position"], 1);
    assert_eq!(app.monitor(second).await["queue_position"], 2);
    assert_eq!(app.monitor(elsewhere).await["queue_position"], 0);
    // Without history there is no estimate, and the answer is to look again in a second.
    let response = app.get_job(second).await;
    assert_eq!(retry_after(&response), 1);
    assert_eq!(
        response.json::<Value>().await.unwrap()["estimated_finish_at"],
        Value::Null
    );
}

#[tokio::test]
async fn a_finished_job_has_no_forecast() {
    let app = spawn_app().await;
    let id = app.submit(json!({"kind": "echo"})).await;
    let monitor = app.wait_for_status(id, "succeeded").await;
    assert_eq!(monitor["queue_position"], Value::Null);
    assert_eq!(monitor["estimated_finish_at"], Value::Null);
}
