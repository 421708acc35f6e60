//! The `exec` kind (DESIGN §10): real commands, real process groups.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::configured::app_with_config;

fn pid_file() -> String {
    std::env::temp_dir()
        .join(format!(
            "jobdock-exec-{}.pid",
            uuid::Uuid::new_v4().simple()
        ))
        .display()
        .to_string()
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn stdout_is_the_result_and_the_payload_arrives_on_stdin() {
    let app = app_with_config(
        "[kinds.copy]\nhandler = \"exec\"\ncommand = [\"cat\"]\nresult_content_type = \"application/json\"\n",
    )
    .await;
    let id = app
        .submit(json!({"kind": "copy", "payload": {"words": ["a", "b"]}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    let result = app.get_result(id).await;
    assert_eq!(result.headers()["content-type"], "application/json");
    let body: Value = result.json().await.unwrap();
    assert_eq!(body, json!({"words": ["a", "b"]}));
}

#[tokio::test]
async fn a_payload_field_reaches_the_program_as_one_literal_argument() {
    let marker = std::env::temp_dir().join(format!("pwned-{}", uuid::Uuid::new_v4().simple()));
    let app = app_with_config(
        "[kinds.say]\nhandler = \"exec\"\ncommand = [\"printf\", \"[%s]\", \"{text}\"]\nstdin = \"none\"\nresult_content_type = \"text/plain\"\n",
    )
    .await;
    let hostile = format!(
        "; rm -rf / $(touch {0}) `touch {0}` && echo",
        marker.display()
    );
    let id = app
        .submit(json!({"kind": "say", "payload": {"text": hostile}}))
        .await;
    app.wait_for_status(id, "succeeded").await;
    assert_eq!(
        app.get_result(id).await.text().await.unwrap(),
        format!("[{hostile}]")
    );
    assert!(!marker.exists(), "the payload ran as a command");
    // A field the argv needs is required at submit.
    let response = app.post_job(json!({"kind": "say", "payload": {}})).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_listed_exit_code_retries_and_another_fails_with_the_stderr_tail() {
    let app = app_with_config(
        r#"
[kinds.flaky]
handler = "exec"
command = ["sh", "-c", "echo temporarily unavailable >&2; exit 75"]
retryable_exit_codes = [75]
max_attempts = 2

[kinds.broken]
handler = "exec"
command = ["sh", "-c", "echo bad input >&2; exit 3"]
max_attempts = 3
"#,
    )
    .await;
    let flaky = app.submit(json!({"kind": "flaky"})).await;
    let broken = app.submit(json!({"kind": "broken"})).await;
    let monitor = app.wait_for_status(flaky, "failed").await;
    assert_eq!(monitor["attempt"], 2, "retried once: {monitor}");
    assert_eq!(monitor["error"]["exit_code"], 75);
    let monitor = app.wait_for_status(broken, "failed").await;
    assert_eq!(monitor["attempt"], 1, "not retried: {monitor}");
    assert_eq!(monitor["error"]["exit_code"], 3);
    assert_eq!(monitor["error"]["stderr"], "bad input\n");
}

#[tokio::test]
async fn progress_lines_on_stderr_update_the_monitor() {
    let app = app_with_config(
        r#"
[kinds.steps]
handler = "exec"
command = ["sh", "-c", "echo 'progress: 50 halfway there' >&2; sleep 5; echo done"]
stdin = "none"
"#,
    )
    .await;
    let id = app.submit(json!({"kind": "steps"})).await;
    let seen = eventually(Duration::from_secs(10), || async {
        app.monitor(id).await["progress"] == json!({"percent": 50, "message": "halfway there"})
    })
    .await;
    assert!(seen, "progress never showed: {}", app.monitor(id).await);
    assert_eq!(app.cancel(id).await.status(), 202);
    app.wait_for_status(id, "cancelled").await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let pids = pid_file();
    let app = app_with_config(&format!(
        r#"
[kinds.forks]
handler = "exec"
command = ["sh", "-c", "sleep 300 & echo $! > {pids}; wait"]
stdin = "none"
timeout_secs = 1
max_attempts = 1
"#
    ))
    .await;
    let id = app.submit(json!({"kind": "forks"})).await;
    let monitor = app.wait_for_status(id, "failed").await;
    assert_eq!(
        monitor["error"]["type"],
        "urn:jobdock:problem:job-timed-out"
    );
    let grandchild = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
    let gone = eventually(Duration::from_secs(10), || async { !alive(&grandchild) }).await;
    assert!(gone, "grandchild {grandchild} outlived its job");
}

#[tokio::test]
async fn cancelling_kills_the_whole_process_group_even_one_that_ignores_sigterm() {
    let pids = pid_file();
    let app = app_with_config(&format!(
        r#"
[kinds.stubborn]
handler = "exec"
command = ["sh", "-c", "trap '' TERM; sleep 300 & echo $! > {pids}; while true; do sleep 1; done"]
stdin = "none"
"#
    ))
    .await;
    let id = app.submit(json!({"kind": "stubborn"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&pids).is_ok_and(|p| !p.trim().is_empty())
        })
        .await
    );
    let grandchild = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
    assert_eq!(app.cancel(id).await.status(), 202);
    app.wait_for_status(id, "cancelled").await;
    // The shell ignores SIGTERM: SIGKILL follows 5 s later.
    let gone = eventually(Duration::from_secs(15), || async { !alive(&grandchild) }).await;
    assert!(gone, "grandchild {grandchild} outlived its job");
}

#[tokio::test]
async fn output_limits_json_results_and_a_cleared_environment() {
    std::env::set_var("JOBDOCK_TEST_SECRET_VAR", "leak");
    let app = app_with_config(
        r#"
[kinds.chatty]
handler = "exec"
command = ["sh", "-c", "yes | head -c 5000"]
stdin = "none"
max_output_bytes = 100
max_attempts = 1

[kinds.notjson]
handler = "exec"
command = ["echo", "not json"]
stdin = "none"
result_content_type = "application/json"

[kinds.env]
handler = "exec"
command = ["env"]
stdin = "none"
"#,
    )
    .await;
    let chatty = app.submit(json!({"kind": "chatty"})).await;
    let notjson = app.submit(json!({"kind": "notjson"})).await;
    let env = app.submit(json!({"kind": "env"})).await;
    let monitor = app.wait_for_status(chatty, "failed").await;
    assert!(monitor["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("max_output_bytes"));
    let monitor = app.wait_for_status(notjson, "failed").await;
    assert!(monitor["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    app.wait_for_status(env, "succeeded").await;
    let vars = app.get_result(env).await.text().await.unwrap();
    assert!(vars.contains(&format!("JOBDOCK_JOB_ID={env}")), "{vars}");
    assert!(vars.contains("JOBDOCK_ATTEMPT=1"), "{vars}");
    assert!(vars.contains("PATH="), "{vars}");
    assert!(!vars.contains("JOBDOCK_TEST_SECRET_VAR"), "{vars}");
}

#[test]
fn a_command_that_is_not_found_or_a_key_of_another_handler_is_a_config_error() {
    let parse = |text: &str| jobdock::config::file::parse(Path::new("j.toml"), text);
    let err =
        parse("[kinds.x]\nhandler = \"exec\"\ncommand = [\"no-such-program-xyz\"]\n").unwrap_err();
    assert_eq!(
        (err.line, err.key.as_str()),
        (Some(3), "kinds.x.command"),
        "{err}"
    );
    let err = parse("[kinds.x]\nhandler = \"exec\"\ncommand = [\"cat\"]\nurl = \"http://a/\"\n")
        .unwrap_err();
    assert_eq!(err.key, "kinds.x.url", "{err}");
    let err = parse("[kinds.x]\nhandler = \"http\"\nurl = \"http://a/\"\nheaders = { A = \"${JOBDOCK_SURELY_UNSET_VAR}\" }\n")
        .unwrap_err();
    assert!(err.message.contains("JOBDOCK_SURELY_UNSET_VAR"), "{err}");
    let err = parse("[kinds.x]\nhandler = \"http\"\nurl = \"http://{host}/\"\n").unwrap_err();
    assert_eq!(err.key, "kinds.x.url", "{err}");
}

/// A server running one job of a kind whose command forks a grandchild; returns the server, the job and
/// the grandchild's pid once it has started.
async fn running_fork(
    configure: impl FnOnce(&mut jobdock::Settings) + Send + 'static,
) -> (TestApp, uuid::Uuid, String) {
    let pids = pid_file();
    let text = format!(
        "[kinds.forks]\nhandler = \"exec\"\ncommand = [\"sh\", \"-c\", \"sleep 300 & echo $! > {pids}; wait\"]\nstdin = \"none\"\n"
    );
    let file = jobdock::config::file::parse(Path::new("j.toml"), &text).unwrap();
    let app = spawn_app_with(move |settings| {
        settings.kinds = file.kinds;
        configure(settings);
    })
    .await;
    let id = app.submit(json!({"kind": "forks"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&pids).is_ok_and(|p| !p.trim().is_empty())
        })
        .await
    );
    let grandchild = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
    (app, id, grandchild)
}

#[tokio::test]
async fn shutdown_kills_the_whole_process_group_and_releases_the_job() {
    let (mut app, id, grandchild) =
        running_fork(|settings| settings.shutdown_grace = Duration::from_millis(300)).await;
    app.shut_down().await;
    let gone = eventually(Duration::from_secs(10), || async { !alive(&grandchild) }).await;
    assert!(gone, "grandchild {grandchild} outlived the shutdown");
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued", "released for another replica");
}

#[tokio::test]
async fn a_lost_lease_kills_the_whole_process_group() {
    let (app, id, grandchild) =
        running_fork(|settings| settings.lease = Duration::from_millis(600)).await;
    // Another worker took the job over (as after a rescue): this worker's next heartbeat finds its
    // lease gone and stops the command.
    sqlx::query("UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(10), || async { !alive(&grandchild) }).await;
    assert!(gone, "grandchild {grandchild} outlived the lost lease");
}
