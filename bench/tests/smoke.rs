//! The load generator runs every scenario end to end at a tiny size. Figures are not checked (performance
//! is measured, not asserted); the shape of the output is.

use std::process::Command;

use serde_json::Value;

fn run_scenario(args: &[&str]) -> Value {
    let base = std::env::var("JOBDOCK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://localhost/postgres".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_jobdock-bench"))
        .args(args)
        .args(["--runs", "1", "--database-url", &base])
        .output()
        .expect("run jobdock-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "jobdock-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line on stdout");
    let report: Value = serde_json::from_str(line).expect("the last line is JSON");
    assert_eq!(report["runs"], 1);
    assert!(
        report["median"].as_object().is_some_and(|m| !m.is_empty()),
        "{report}"
    );
    report
}

#[test]
fn the_submit_scenarios_run() {
    let submit = run_scenario(&["submit", "--concurrency", "2", "--seconds", "1"]);
    assert!(submit["median"]["accepted_per_sec"].as_f64().unwrap() > 0.0);
    assert!(submit["median"]["pgbench_insert_tps"].as_f64().unwrap() > 0.0);
    let batch = run_scenario(&["submit-batch", "--concurrency", "1", "--seconds", "1"]);
    assert!(batch["median"]["jobs_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_drain_scenario_runs() {
    let drain = run_scenario(&["drain", "--jobs", "300", "--workers", "50"]);
    assert!(drain["median"]["jobs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        drain["median"]["sql_ceiling_jobs_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn the_e2e_and_status_scenarios_run() {
    let e2e = run_scenario(&["e2e", "--concurrency", "2", "--seconds", "1"]);
    assert!(e2e["median"]["completed_per_sec"].as_f64().unwrap() > 0.0);
    let status = run_scenario(&["status", "--concurrency", "2", "--seconds", "1"]);
    assert!(status["median"]["requests_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_pickup_and_aged_scenarios_run() {
    let pickup = run_scenario(&["pickup", "--probes", "5"]);
    assert!(pickup["median"]["pickup_p50_ms"].as_f64().unwrap() > 0.0);
    let aged = run_scenario(&[
        "aged",
        "--finished",
        "1000",
        "--jobs",
        "200",
        "--probes",
        "5",
    ]);
    assert!(aged["median"]["aged_drain_jobs_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_external_scenario_runs() {
    let external = run_scenario(&[
        "external",
        "--jobs",
        "300",
        "--http-workers",
        "2",
        "--max-jobs",
        "50",
        "--workers",
        "50",
    ]);
    assert!(external["median"]["jobs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        external["median"]["in_process_drain_jobs_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn the_http_scenario_runs() {
    let http = run_scenario(&["http", "--jobs", "100", "--workers", "20"]);
    assert!(http["median"]["jobs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(http["median"]["echo_drain_jobs_per_sec"].as_f64().unwrap() > 0.0);
}
