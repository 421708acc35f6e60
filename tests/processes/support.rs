//! Helpers for driving the real `jobdock` binary as child processes: start `serve` and `worker`, signal
//! them, keep their logs (printed only when a test fails), and check the queue from the database side.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{client, eventually, free_port};

/// A `jobdock serve` or `jobdock worker` process of the real binary.
///
/// Its connections show up in `pg_stat_activity` with `application_name = jobdock-<label>`, so a test can
/// tell when a killed process's backends are gone (everything it sent has then been committed or rolled
/// back). Its stderr is kept and echoed through the test's captured output, shown when the test fails.
pub struct Jobdock {
    pub label: String,
    pub child: Child,
    /// `http://127.0.0.1:<port>` for `serve`; `None` for `worker`.
    pub address: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Jobdock {
    /// Starts `jobdock serve` on a free port and waits until `/healthz` answers.
    pub async fn serve(label: &str, database_url: &str, args: &[&str]) -> Jobdock {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all = vec!["serve", "--listen", &listen];
        all.extend_from_slice(args);
        let mut process = Jobdock::spawn(label, database_url, &all);
        let address = format!("http://{listen}");
        process.address = Some(address.clone());
        let http = client();
        let healthz = format!("{address}/healthz");
        let up = eventually(Duration::from_secs(30), || async {
            http.get(&healthz)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await;
        assert!(up, "jobdock serve `{label}` did not come up at {address}");
        // Another test's server could hold a port this one failed to bind: make sure ours is the one alive.
        assert!(
            process.child.try_wait().ok().flatten().is_none(),
            "jobdock serve `{label}` exited at start:\n{}",
            process.log_text()
        );
        process
    }

    /// Starts `jobdock worker` (no HTTP). Callers await what they need from the database.
    pub fn worker(label: &str, database_url: &str, args: &[&str]) -> Jobdock {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        Jobdock::spawn(label, database_url, &all)
    }

    fn spawn(label: &str, database_url: &str, args: &[&str]) -> Jobdock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobdock"))
            .args(args)
            .env("DATABASE_URL", with_application_name(database_url, label))
            .env(
                "RUST_LOG",
                std::env::var("JOBDOCK_TEST_CHILD_LOG")
                    .unwrap_or_else(|_| "info,sqlx=warn,poem=warn".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobdock");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            let label = label.to_owned();
            // std propagates the test's output capture to threads it spawns: these lines show on failure.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[{label}] {line}");
                    if let Ok(mut log) = log.lock() {
                        log.push(line);
                    }
                }
            });
        }
        Jobdock {
            label: label.to_owned(),
            child,
            address: None,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `LIKE` pattern matching the `worker_id` this process writes on the jobs it claims
    /// (`<host>:<pid>:<random>`).
    pub fn worker_pattern(&self) -> String {
        format!("%:{}:%", self.pid())
    }

    /// The `application_name` of this process's database connections.
    pub fn application_name(&self) -> String {
        format!("jobdock-{}", self.label)
    }

    pub fn url(&self, path: &str) -> String {
        let address = self
            .address
            .as_deref()
            .unwrap_or_else(|| panic!("`{}` is a worker: it has no HTTP address", self.label));
        format!("{address}{path}")
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `bound` for the process to exit; panics (with its log) when it does not.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{}` did not exit within {bound:?}; its log:\n{}",
                self.label,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits up to `bound` for the exit status.
    pub async fn terminate_within(&mut self, bound: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(bound).await
    }

    /// Everything the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .map(|log| log.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Jobdock {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process.
        self.kill();
    }
}

/// Adds `application_name=jobdock-<label>` to a PostgreSQL URL.
fn with_application_name(url: &str, label: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name=jobdock-{label}")
}

/// A small pool for the test's own queries.
pub async fn test_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .expect("connect to the test database")
}

pub fn sleep_job(ms: u64) -> Value {
    json!({ "kind": "sleep", "payload": { "ms": ms } })
}

/// Submits a job that must be accepted; returns its id.
pub async fn submit(http: &reqwest::Client, server: &Jobdock, body: &Value) -> Uuid {
    match try_submit(http, server, body).await {
        Ok(id) => id,
        Err(err) => panic!("submitting to `{}` failed: {err}", server.label),
    }
}

/// Submits a job; `Ok` only for a 202 with the job's id in the body.
pub async fn try_submit(
    http: &reqwest::Client,
    server: &Jobdock,
    body: &Value,
) -> Result<Uuid, String> {
    let response = http
        .post(server.url("/v1/jobs"))
        .json(body)
        .send()
        .await
        .map_err(|err| format!("no answer: {err}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|err| format!("answer cut short: {err}"))?;
    if status != 202 {
        return Err(format!("{status}: {text}"));
    }
    accepted_id(&text)
}

/// The job id in a 202 body.
pub fn accepted_id(body: &str) -> Result<Uuid, String> {
    let monitor: Value =
        serde_json::from_str(body).map_err(|err| format!("202 body is not JSON: {err}"))?;
    monitor["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("202 body has no job id: {monitor}"))
}

/// How many of `ids` match `condition` (an SQL expression over `jobs`).
pub async fn count_jobs(pool: &PgPool, ids: &[Uuid], condition: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND ({condition})"
    ))
    .bind(ids)
    .fetch_one(pool)
    .await
    .expect("count jobs")
}

/// Running jobs claimed by `process`.
pub async fn running_under(pool: &PgPool, process: &Jobdock) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'running' AND worker_id LIKE $1 ORDER BY id",
    )
    .bind(process.worker_pattern())
    .fetch_all(pool)
    .await
    .expect("running jobs")
}

/// Database backends opened by `process` that are still alive.
pub async fn backends_of(pool: &PgPool, process: &Jobdock) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(process.application_name())
        .fetch_one(pool)
        .await
        .expect("count backends")
}

/// After a SIGKILL: waits until PostgreSQL has noticed, so every statement the dead process had sent is
/// committed or rolled back and the rows it leaves behind are final.
pub async fn await_backends_gone(pool: &PgPool, process: &Jobdock) {
    let gone = eventually(Duration::from_secs(10), || async {
        backends_of(pool, process).await == 0
    })
    .await;
    assert!(
        gone,
        "PostgreSQL still has backends of the dead `{}`",
        process.label
    );
}

/// One line per (status, attempt) with counts, for failure messages.
pub async fn summary(pool: &PgPool, ids: &[Uuid]) -> String {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT status, attempt, count(*) FROM jobs WHERE id = ANY($1) \
         GROUP BY status, attempt ORDER BY status, attempt",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.iter()
        .map(|(status, attempt, n)| format!("{n} {status} (attempt {attempt})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every job in `ids` has succeeded; panics with a summary after `timeout`.
pub async fn await_all_succeeded(pool: &PgPool, ids: &[Uuid], timeout: Duration) {
    let total = i64::try_from(ids.len()).expect("job count");
    let done = eventually(timeout, || async {
        count_jobs(pool, ids, "status = 'succeeded'").await == total
    })
    .await;
    assert!(
        done,
        "not every accepted job succeeded within {timeout:?}: {} (of {total})",
        summary(pool, ids).await
    );
}

/// Every job in `ids` has exactly one results row (and `results.job_id` is the primary key, so none has
/// more), and no job spent more attempts than it was allowed.
pub async fn assert_one_result_each(pool: &PgPool, ids: &[Uuid]) {
    let without: Vec<Uuid> = sqlx::query_scalar(
        "SELECT j.id FROM jobs j WHERE j.id = ANY($1) \
         AND (SELECT count(*) FROM results r WHERE r.job_id = j.id) <> 1",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .expect("results per job");
    assert!(
        without.is_empty(),
        "jobs without exactly one result: {without:?}"
    );
    let stored = count_jobs(pool, ids, "true").await;
    assert_eq!(
        stored,
        i64::try_from(ids.len()).expect("job count"),
        "every accepted job has its row"
    );
    let over = count_jobs(pool, ids, "attempt > max_attempts").await;
    assert_eq!(over, 0, "no job may run more attempts than max_attempts");
}

/// The `attempt` of each job in `ids`.
pub async fn attempts(pool: &PgPool, ids: &[Uuid]) -> Vec<(Uuid, i32)> {
    sqlx::query_as("SELECT id, attempt FROM jobs WHERE id = ANY($1) ORDER BY id")
        .bind(ids)
        .fetch_all(pool)
        .await
        .expect("attempts")
}
