//! Test harness shared by the integration test binaries: a fresh database per test, the real server on a
//! real socket, and helpers that await conditions instead of sleeping.
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobdock::{Application, Registry, Settings};
use reqwest::redirect::Policy;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The server all test databases live on. Override with `JOBDOCK_TEST_DATABASE_URL` (any database on the
/// server; the tests create their own next to it).
pub fn base_database_url() -> String {
    std::env::var("JOBDOCK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://localhost/postgres".to_owned())
}

/// A uniquely named, empty database that is dropped when this value is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let base = base_database_url();
        let name = format!("jobdock_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base)
            .await
            .unwrap_or_else(|err| panic!("tests need PostgreSQL at {base}: {err}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("JOBDOCK_TEST_DATABASE_URL must name a database"),
        };
        TestDatabase { name, url }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let base = base_database_url();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut admin) = PgConnection::connect(&base).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Settings for a test server: a fresh database, port 0, quick leases and retries.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: database_url.to_owned(),
        listen: "127.0.0.1:0".parse().expect("address"),
        workers: 8,
        lease: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        retry_base: Duration::from_millis(50),
        db_max_connections: 6,
        ..Settings::default()
    }
}

/// The real server, in-process, on a real socket, with its own database.
pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last, so the server and pool are gone before the database is dropped.
    pub database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_registry(Registry::builtin(), configure).await
}

pub async fn spawn_app_with_registry(
    registry: Registry,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let database = TestDatabase::create().await;
    let mut settings = test_settings(&database.url);
    configure(&mut settings);
    let app = Application::build(settings, registry)
        .await
        .expect("build app");
    let address = format!("http://{}", app.local_addr());
    let pool = database.pool().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        pool,
        client: client(),
        stop: Some(stop),
        server: Some(server),
        database,
    }
}

/// An HTTP client that does not follow redirects, so tests see the 302 itself.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_job(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    /// `POST /v1/jobs/batch` with `body` (`{"jobs": [...]}`).
    pub async fn post_batch(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/jobs/batch"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/jobs/batch")
    }

    /// Submits a job that must be accepted; returns its id.
    pub async fn submit(&self, body: Value) -> Uuid {
        let response = self.post_job(body).await;
        assert_eq!(response.status(), 202, "submit should be accepted");
        let monitor: Value = response.json().await.expect("monitor json");
        monitor["id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn get_job(&self, id: Uuid) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .expect("GET monitor")
    }

    pub async fn get_result(&self, id: Uuid) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/jobs/{id}/result")))
            .send()
            .await
            .expect("GET result")
    }

    pub async fn cancel(&self, id: Uuid) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/jobs/{id}/cancel")))
            .send()
            .await
            .expect("POST cancel")
    }

    pub async fn delete_job(&self, id: Uuid) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .expect("DELETE job")
    }

    /// The monitor body, whatever the status code.
    pub async fn monitor(&self, id: Uuid) -> Value {
        self.client
            .get(self.url(&format!("/v1/jobs/{id}?redirect=false")))
            .send()
            .await
            .expect("GET monitor")
            .json()
            .await
            .expect("monitor json")
    }

    /// Waits until the job's status is `status`; panics after 20 s with the last monitor seen.
    pub async fn wait_for_status(&self, id: Uuid, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let monitor = self.monitor(id).await;
            if monitor["status"] == status {
                return monitor;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never reached `{status}`; last seen: {monitor}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    /// Stops the server gracefully and waits for it, keeping the database and pool for inspection.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count query")
}

/// A free TCP port on loopback (bound and released: a tiny race, acceptable in tests).
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// A `jobdock serve` process of the real binary.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

impl ServerProcess {
    pub async fn start(database_url: &str, extra_args: &[&str]) -> ServerProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_jobdock"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra_args)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start jobdock serve");
        let process = ServerProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let client = client();
        let healthz = format!("{}/healthz", process.address);
        let up = eventually(Duration::from_secs(30), || async {
            client
                .get(&healthz)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await;
        assert!(up, "jobdock serve did not come up at {}", process.address);
        process
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait for jobdock")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
