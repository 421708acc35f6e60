//! Baselines measured with pgbench on the same server, in the same run.

use std::process::Command;

use anyhow::{bail, Context};

/// What pgbench reported.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub tps: f64,
    pub latency_ms: f64,
}

/// Runs `pgbench` with a custom script against `url`.
pub fn run(url: &str, script: &str, clients: usize, limit: Limit) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!("jobdock-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("script.sql");
    std::fs::write(&file, script)?;
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j"])
        .arg(clients.min(2).to_string())
        .arg("-f")
        .arg(&file);
    match limit {
        Limit::Seconds(secs) => command.args(["-T", &secs.to_string()]),
        Limit::Transactions(count) => command.args(["-t", &count.to_string()]),
    };
    command.arg(url);
    let output = command
        .output()
        .context("running pgbench (install PostgreSQL's client tools: it comes with them)")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let figure = |prefix: &str| {
        stdout.lines().find_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    Ok(Figures {
        tps: figure("tps = ").with_context(|| format!("no tps in pgbench output: {stdout}"))?,
        latency_ms: figure("latency average = ").unwrap_or(0.0),
    })
}

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Seconds(u64),
    Transactions(u64),
}

/// A single-row insert into `jobs`, as a submit does.
pub const INSERT: &str = "INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), 'echo');\n";

/// 1,000 jobs in one INSERT, one transaction: the baseline of `submit-batch` (multiply tps by 1,000).
pub const INSERT_BATCH: &str =
    "INSERT INTO jobs (id, kind) SELECT gen_random_uuid(), 'echo' FROM generate_series(1, 1000);\n";

/// The SQL work of a drain, in batches of 500: claim to `running` in one statement; then mark `succeeded`
/// and insert the `results` rows in a second. Each client fences its own claims by worker id.
pub const DRAIN_CEILING: &str = "\
WITH next AS (SELECT id FROM jobs WHERE tenant = 'default' AND status = 'queued' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 500 FOR UPDATE SKIP LOCKED) UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, lease_token = gen_random_uuid(), lease_expires_at = now() + interval '30 seconds', worker_id = 'pgbench-' || :client_id, started_at = now(), updated_at = now() FROM next WHERE j.id = next.id;
WITH done AS (UPDATE jobs SET status = 'succeeded', finished_at = now(), updated_at = now(), lease_token = NULL, lease_expires_at = NULL WHERE status = 'running' AND worker_id = 'pgbench-' || :client_id RETURNING id) INSERT INTO results (job_id, content_type, body) SELECT id, 'application/json', '\\x7b7d' FROM done;
";

/// The design's ceiling: a minimal queue table (id, status, payload, the worker holding it) with one partial
/// index per status it passes through, and a results table. See [`DRAIN_CEILING_DESIGN`].
pub const MINIMAL_SCHEMA: &str = "\
CREATE TABLE mini_jobs (id uuid PRIMARY KEY, status text NOT NULL, payload jsonb NOT NULL DEFAULT '{}', worker text);
CREATE INDEX mini_jobs_queued ON mini_jobs (id) WHERE status = 'queued';
CREATE INDEX mini_jobs_running ON mini_jobs (worker) WHERE status = 'running';
CREATE INDEX mini_jobs_succeeded ON mini_jobs (id) WHERE status = 'succeeded';
CREATE TABLE mini_results (job_id uuid PRIMARY KEY REFERENCES mini_jobs ON DELETE CASCADE, body bytea NOT NULL);
";

/// [`DRAIN_CEILING`]'s work on [`MINIMAL_SCHEMA`]: claim 500 in one statement, then mark them succeeded
/// and store their results in a second.
pub const DRAIN_CEILING_DESIGN: &str = "\
WITH next AS (SELECT id FROM mini_jobs WHERE status = 'queued' ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED) UPDATE mini_jobs j SET status = 'running', worker = 'pgbench-' || :client_id FROM next WHERE j.id = next.id;
WITH done AS (UPDATE mini_jobs SET status = 'succeeded', worker = NULL WHERE status = 'running' AND worker = 'pgbench-' || :client_id RETURNING id) INSERT INTO mini_results (job_id, body) SELECT id, '\\x7b7d' FROM done;
";

/// One job's lifecycle in two commits: insert it; then claim one job and complete it with its result.
pub const LIFECYCLE: &str = "\
INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), 'echo');
WITH next AS (SELECT id FROM jobs WHERE tenant = 'default' AND status = 'queued' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED), done AS (UPDATE jobs j SET status = 'succeeded', attempt = 1, started_at = now(), finished_at = now(), updated_at = now() FROM next WHERE j.id = next.id RETURNING j.id) INSERT INTO results (job_id, content_type, body) SELECT id, 'application/json', '\\x7b7d' FROM done;
";

/// A primary-key lookup of one job, as the status monitor does.
pub fn status(id: uuid::Uuid) -> String {
    format!("SELECT * FROM jobs WHERE id = '{id}';\n")
}
