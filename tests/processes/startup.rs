//! The binary's other entry points: a clear one-line error without PostgreSQL, `migrate` on a database that
//! does not exist yet, and `openapi`.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::{base_database_url, TestDatabase};

/// Runs the binary to completion, failing when it takes longer than `bound`.
async fn run_jobdock(args: &[&str], bound: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start jobdock");
    let output = tokio::time::timeout(bound, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("jobdock {args:?} did not finish within {bound:?}"))
        .expect("jobdock output");
    (output, started.elapsed())
}

#[tokio::test]
async fn serve_without_postgres_exits_quickly_with_one_clear_line() {
    let (output, took) = run_jobdock(
        &[
            "serve",
            "--database-url",
            "postgres://127.0.0.1:1/x",
            "--listen",
            "127.0.0.1:0",
        ],
        Duration::from_secs(15),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "should fail, got {}",
        output.status
    );
    assert!(took < Duration::from_secs(10), "took {took:?} to give up");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    let line = lines[0];
    assert!(
        line.contains("PostgreSQL"),
        "should name PostgreSQL: {line}"
    );
    assert!(
        line.contains("127.0.0.1:1"),
        "should say where it looked: {line}"
    );
    assert!(
        line.contains("DATABASE_URL") || line.contains("--database-url"),
        "should say what to do: {line}"
    );
    assert!(!line.contains("panicked"), "{line}");
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_exits_0() {
    let base = base_database_url();
    let name = format!("jobdock_test_{}", Uuid::new_v4().simple());
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("JOBDOCK_TEST_DATABASE_URL must name a database"),
    };
    // Dropped (with the database `migrate` creates) at the end of the test.
    let _database = TestDatabase {
        name: name.clone(),
        url: url.clone(),
    };
    let (output, _) = run_jobdock(
        &["migrate", "--database-url", &url],
        Duration::from_secs(30),
    )
    .await;
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("migrate should have created the database");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('jobs', 'results')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("tables");
    assert_eq!(tables, 2);
    let _ = conn.close().await;
    // Running it again is a no-op that still succeeds.
    let (again, _) = run_jobdock(
        &["migrate", "--database-url", &url],
        Duration::from_secs(30),
    )
    .await;
    assert!(again.status.success());
}

#[tokio::test]
async fn openapi_prints_the_yaml_document() {
    let (output, _) = run_jobdock(&["openapi"], Duration::from_secs(15)).await;
    assert!(output.status.success());
    let yaml = String::from_utf8_lossy(&output.stdout);
    assert!(
        yaml.starts_with("openapi:"),
        "{}",
        &yaml[..yaml.len().min(200)]
    );
    assert!(yaml.contains("/v1/jobs"));
}

#[tokio::test]
async fn each_request_gets_one_access_log_line_with_its_id_and_no_colours_off_a_terminal() {
    let database = TestDatabase::create().await;
    let server = crate::support::Jobdock::serve("api", &database.url, &["--workers", "0"]).await;
    let http = crate::common::client();
    let response = http
        .get(server.url("/v1/jobs?limit=1"))
        .header("X-Request-Id", "access-log-probe-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logged = crate::common::eventually(Duration::from_secs(10), || async {
        server.log_text().contains("access-log-probe-7")
    })
    .await;
    let log = server.log_text();
    assert!(logged, "no access log line:\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("access-log-probe-7"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("status=200") && lines[0].contains("/v1/jobs"),
        "{}",
        lines[0]
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log that is not a terminal:\n{log}"
    );
}
