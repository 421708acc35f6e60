//! The reference external worker (`examples/workers/worker.py`, Python with the standard library only)
//! against the real binary serving `examples/jobdock.toml`: a job goes submit → the worker claims,
//! heartbeats and completes it → the client gets 302 → the result; and a cancel reaches it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, eventually, TestDatabase};
use crate::support::{submit, Jobdock};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jobdock.toml");
const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workers/worker.py");

struct PythonWorker(Child);

impl PythonWorker {
    fn start(server: &str) -> PythonWorker {
        let child = Command::new("python3")
            .arg(WORKER)
            .args([
                "--server",
                server,
                "--kinds",
                "textstats",
                "--lease-secs",
                "5",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the reference worker (install Python 3 to run this test)");
        PythonWorker(child)
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `jobdock serve` of the example configuration, API only, and the reference worker claiming from it.
async fn server_and_worker() -> (TestDatabase, Jobdock, PythonWorker) {
    let database = TestDatabase::create().await;
    let server = Jobdock::serve(
        "api",
        &database.url,
        &["--config", CONFIG, "--workers", "0"],
    )
    .await;
    let worker = PythonWorker::start(server.address.as_deref().unwrap());
    (database, server, worker)
}

#[tokio::test]
async fn the_reference_python_worker_runs_a_job_to_its_result() {
    let (_database, server, _worker) = server_and_worker().await;
    let http = client();
    let text = "one two three\nfour";
    let id = submit(
        &http,
        &server,
        &json!({"kind": "textstats", "payload": {"text": text, "delay_ms": 2000}}),
    )
    .await;
    // The worker heartbeats progress while it works.
    let monitor_url = server.url(&format!("/v1/jobs/{id}?redirect=false"));
    let progressed = eventually(Duration::from_secs(30), || async {
        let monitor: Value = http
            .get(&monitor_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        monitor["progress"]["percent"]
            .as_i64()
            .is_some_and(|p| p > 0)
            || monitor["status"] == "succeeded"
    })
    .await;
    assert!(
        progressed,
        "no progress was reported\n{}",
        server.log_text()
    );
    let succeeded = eventually(Duration::from_secs(30), || async {
        http.get(server.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .is_ok_and(|r| r.status() == 302)
    })
    .await;
    assert!(succeeded, "the job never succeeded\n{}", server.log_text());
    let result = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(result.headers()["content-type"], "application/json");
    let result: Value = result.json().await.unwrap();
    assert_eq!(result["words"], 4);
    assert_eq!(result["lines"], 2);
}

#[tokio::test]
async fn a_cancel_reaches_the_reference_worker_and_the_job_ends_cancelled() {
    let (_database, server, _worker) = server_and_worker().await;
    let http = client();
    let id = submit(
        &http,
        &server,
        &json!({"kind": "textstats", "payload": {"text": "slow", "delay_ms": 60000}}),
    )
    .await;
    let monitor_url = server.url(&format!("/v1/jobs/{id}?redirect=false"));
    let running = eventually(Duration::from_secs(30), || async {
        status_of(&http, &monitor_url).await == "running"
    })
    .await;
    assert!(running, "the worker never claimed the job");
    let cancel = http
        .post(server.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let cancelled = eventually(Duration::from_secs(20), || async {
        status_of(&http, &monitor_url).await == "cancelled"
    })
    .await;
    assert!(
        cancelled,
        "the job did not end cancelled\n{}",
        server.log_text()
    );
}

async fn status_of(http: &reqwest::Client, monitor_url: &str) -> String {
    let monitor: Value = http
        .get(monitor_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    monitor["status"].as_str().unwrap_or_default().to_owned()
}
