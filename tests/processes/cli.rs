//! The command-line client against a live server, as a script sees it: stdout, stderr (not a terminal:
//! plain lines, no progress bar) and exit codes.

use std::process::Output;

use crate::common::TestDatabase;
use crate::support::Jobdock;

/// Runs `jobdock ARGS` against `server`, with `key` as JOBDOCK_API_KEY when given.
async fn cli(server: &Jobdock, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobdock"));
    command
        .args(args)
        .env("JOBDOCK_URL", server.address.as_deref().unwrap())
        .env_remove("JOBDOCK_API_KEY")
        .stdin(std::process::Stdio::null());
    if let Some(key) = key {
        command.env("JOBDOCK_API_KEY", key);
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the client finished")
        .expect("the client ran")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn submit_wait_prints_the_result_on_stdout_and_progress_as_plain_lines() {
    let database = TestDatabase::create().await;
    let server = Jobdock::serve("cli", &database.url, &[]).await;

    let out = cli(
        &server,
        None,
        &["submit", "sleep", r#"{"ms": 1200}"#, "--wait"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), r#"{"slept_ms":1200}"#);
    let stderr = text(&out.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("running")), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes off a terminal: {stderr:?}"
    );

    let out = cli(
        &server,
        None,
        &["submit", "fail", r#"{"retryable": false}"#, "--wait"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // Without --wait: the id, then status, result (to a file), the table and cancel.
    let out = cli(&server, None, &["submit", "echo", r#"{"hello": "cli"}"#]).await;
    assert_eq!(out.status.code(), Some(0));
    let id = text(&out.stdout).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let status = cli(&server, None, &["status", &id]).await;
    assert_eq!(status.status.code(), Some(0));
    let monitor: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(monitor["id"], id.as_str());
    let file = std::env::temp_dir().join(format!("jobdock-cli-{id}.json"));
    let mut written = false;
    for _ in 0..50 {
        let out = cli(
            &server,
            None,
            &["result", &id, "-o", file.to_str().unwrap()],
        )
        .await;
        if out.status.code() == Some(0) {
            written = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(written, "the echo job's result never came");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        r#"{"hello":"cli"}"#
    );
    let _ = std::fs::remove_file(&file);
    let jobs = text(&cli(&server, None, &["jobs", "--kind", "echo"]).await.stdout);
    let mut lines = jobs.lines();
    assert!(lines.next().unwrap().starts_with("ID  "), "{jobs}");
    assert!(lines.any(|line| line.starts_with(&id)), "{jobs}");
    let queued = cli(&server, None, &["submit", "sleep", r#"{"ms": 60000}"#]).await;
    let queued = text(&queued.stdout).trim().to_owned();
    let out = cli(&server, None, &["cancel", &queued]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn client_errors_have_their_own_exit_codes() {
    let database = TestDatabase::create().await;
    let server = Jobdock::serve("cli-errors", &database.url, &[]).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        cli(&server, None, &["status", &unknown])
            .await
            .status
            .code(),
        Some(3)
    );
    let out = cli(&server, None, &["submit", "no-such-kind"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no-such-kind"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        cli(&server, None, &["submit", "echo", "not json"])
            .await
            .status
            .code(),
        Some(2)
    );
    // With keys on: no key is 4, a key works.
    let pool = crate::support::test_pool(&database.url).await;
    let key = jobdock::keys::run(
        &pool,
        jobdock::config::KeysAction::Create {
            tenant: "acme".into(),
            name: "cli".into(),
            scopes: "submit,read".into(),
        },
    )
    .await
    .unwrap();
    let key = key.trim();
    let denied = crate::common::eventually(std::time::Duration::from_secs(3), || async {
        cli(&server, None, &["jobs"]).await.status.code() == Some(4)
    })
    .await;
    assert!(denied);
    assert_eq!(
        cli(&server, Some(key), &["jobs"]).await.status.code(),
        Some(0)
    );
    // Nothing listening: 5.
    let mut gone = server;
    gone.kill();
    assert_eq!(cli(&gone, None, &["jobs"]).await.status.code(), Some(5));
}
