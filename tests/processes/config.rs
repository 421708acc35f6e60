//! The configuration file as the binary reads it (DESIGN §7): `check-config`, exit code 2 with one line
//! naming file, line and key, and `[server]` values that flags override.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::{client, eventually, free_port, TestDatabase};

fn temp_config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("jobdock-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).expect("write config");
    path
}

async fn run(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(args)
        .env_remove("JOBDOCK_CONFIG")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start jobdock");
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("jobdock finished in time")
        .expect("jobdock output")
}

#[tokio::test]
async fn check_config_accepts_a_valid_file_and_names_its_kinds() {
    let path = temp_config("[kinds.thumbnail]\nhandler = \"external\"\n");
    let output = run(&["check-config", path.to_str().unwrap()]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("thumbnail (external)"), "{stdout}");
}

#[tokio::test]
async fn check_config_and_serve_refuse_a_bad_file_with_exit_2_and_one_line_naming_file_line_and_key(
) {
    let path = temp_config(
        "[kinds.thumbnail]\nhandler = \"external\"\npayload_schema = { type = \"banana\" }\n",
    );
    let file = path.to_str().unwrap();
    let checked = run(&["check-config", file]).await;
    let serve = run(&[
        "serve",
        "--config",
        file,
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        "postgres://127.0.0.1:1/never",
    ])
    .await;
    for output in [checked, serve] {
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains(&format!("{file}:3: kinds.thumbnail.payload_schema:")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_missing_config_file_given_by_flag_is_an_error() {
    let output = run(&["check-config", "/nonexistent/jobdock.toml"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/jobdock.toml"));
}

#[tokio::test]
async fn server_values_in_the_file_apply_and_a_flag_wins_over_them() {
    let database = TestDatabase::create().await;
    let from_file = free_port();
    let path = temp_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{from_file}\"\ndatabase_url = \"{}\"\nworkers = 0\n\n\
         [kinds.thumbnail]\nhandler = \"external\"\n",
        database.url
    ));
    // The file's listen address and database are used.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start jobdock");
    let http = client();
    let kinds = format!("http://127.0.0.1:{from_file}/v1/kinds/thumbnail");
    let up = eventually(Duration::from_secs(30), || async {
        http.get(&kinds)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the server did not listen where the file said");
    // A flag wins over the file.
    let from_flag = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{from_flag}")])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start jobdock");
    let healthz = format!("http://127.0.0.1:{from_flag}/healthz");
    let up = eventually(Duration::from_secs(30), || async {
        http.get(&healthz)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the --listen flag did not win over the file");
}
