//! How an attempt ends: the retry policy, the shape of a job's `error`, and the writes that end an attempt
//! without a result (failed, requeued for a retry, cancelled). Shared by the in-process executor and the
//! HTTP worker endpoints, so a job fails the same way whoever runs it.
//!
//! Successes are not here: the in-process runtime batches them in the dispatcher's statement, and the
//! worker endpoints write them one at a time; both through `store::leases`.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::job::JobStatus;
use crate::store::{self, leases::Lease};

/// Retry delays grow as `base * 2^(attempt - 1)`, times a jitter in [0.5, 1.5), up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Exponential backoff with jitter: spreads retries of jobs that failed together.
pub fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let raw = base.saturating_mul(2u32.saturating_pow(exponent));
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    raw.mul_f64(jitter).min(MAX_RETRY_DELAY)
}

/// The problem `type` of an error with this slug.
pub fn problem_type(slug: &str) -> String {
    format!("urn:jobdock:problem:{slug}")
}

/// A problem-details object for a job's `error`.
pub fn problem(slug: &str, title: &str, detail: &str, attempt: i32) -> Value {
    json!({
        "type": problem_type(slug),
        "title": title,
        // jsonb rejects NUL, and a handler's message may hold one.
        "detail": sanitize(detail),
        "attempt": attempt,
    })
}

/// The attempt failed; `detail` says how.
pub fn failed(detail: &str, attempt: i32) -> Value {
    problem("job-failed", "The job failed", detail, attempt)
}

/// The attempt ran past the job's `timeout_secs`.
pub fn timed_out(attempt: i32, timeout_secs: i32) -> Value {
    problem(
        "job-timed-out",
        "The job ran out of time",
        &format!("attempt {attempt} ran longer than timeout_secs ({timeout_secs} s)"),
        attempt,
    )
}

/// The job was cancelled; `detail` says when.
pub fn cancelled(detail: &str, attempt: i32) -> Value {
    problem("job-cancelled", "The job was cancelled", detail, attempt)
}

/// The error of a queued job cancelled before any attempt: no `attempt` member.
pub fn cancelled_before_start() -> Value {
    json!({
        "type": problem_type("job-cancelled"),
        "title": "The job was cancelled",
        "detail": "cancelled before it started",
    })
}

/// What the rescuer writes on a job whose lease expired, as a template the SQL fills per job: `type` and
/// `title` here, `detail` from [`LEASE_EXPIRED_DETAIL`] (a `format()` string taking the attempt and the
/// attempts allowed), plus `attempt` and `retryable`.
pub fn lease_expired() -> Value {
    json!({
        "type": problem_type("lease-expired"),
        "title": "The worker running this job stopped responding",
    })
}

/// See [`lease_expired`].
pub const LEASE_EXPIRED_DETAIL: &str =
    "attempt %s of %s lost its lease (the worker crashed, was killed or stalled)";

/// What the rescuer writes on a job that ran past its `timeout_secs` without its worker ending it (an
/// external worker that kept heartbeating, or stopped): like [`lease_expired`], with [`TIMED_OUT_DETAIL`].
pub fn timed_out_template() -> Value {
    json!({
        "type": problem_type("job-timed-out"),
        "title": "The job ran out of time",
    })
}

/// See [`timed_out_template`]: a `format()` string taking the attempt and `timeout_secs`.
pub const TIMED_OUT_DETAIL: &str = "attempt %s ran longer than timeout_secs (%s s)";

/// A worker's own error object (external workers send one), made safe to store: NUL characters replaced,
/// `type` defaulted, `attempt` set by jobdock.
pub fn from_worker(mut error: Map<String, Value>, attempt: i32) -> Value {
    error
        .entry("type")
        .or_insert_with(|| Value::from(problem_type("job-failed")));
    error.insert("attempt".to_owned(), Value::from(attempt));
    sanitize_value(Value::Object(error))
}

fn sanitize(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Replaces NUL in every string and key: `jsonb` cannot store it.
fn sanitize_value(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(sanitize(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize_value).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (sanitize(&key), sanitize_value(value)))
                .collect(),
        ),
        other => other,
    }
}

/// How a failed attempt should be retried.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// False: the job ends `failed` whatever attempts remain.
    pub retryable: bool,
    /// The wait before the next attempt (a worker's `retry_after_secs`, taken as given); `None` uses the
    /// backoff of [`retry_delay`].
    pub retry_after: Option<Duration>,
}

/// Ends an attempt that failed: back to `queued` after the retry delay while attempts remain and the
/// failure is retryable, `cancelled` when the job was asked to stop, else `failed`. `error` stays on the
/// job either way, so its monitor shows what went wrong.
///
/// Returns where the job went, or `None` when the lease was no longer held (nothing changed).
pub async fn fail(
    pool: &PgPool,
    lease: Lease,
    attempt: i32,
    error: &Value,
    failure: Failure,
    retry_base: Duration,
) -> store::Result<Option<JobStatus>> {
    let delay = failure
        .retry_after
        .unwrap_or_else(|| retry_delay(retry_base, attempt));
    let cancelled = cancelled("cancelled while running", attempt);
    let moved =
        store::leases::fail_attempt(pool, lease, error, &cancelled, failure.retryable, delay)
            .await?;
    if moved == Some(JobStatus::Queued) {
        tracing::info!(job = %lease.id, attempt, retry_in = ?delay, "attempt failed; retrying");
    }
    Ok(moved)
}

/// Ends a running job `cancelled`: its handler stopped because it was asked to. Returns false when the
/// lease was no longer held.
pub async fn cancel(pool: &PgPool, lease: Lease, attempt: i32) -> store::Result<bool> {
    let error = cancelled("cancelled while running", attempt);
    store::leases::cancel_running(pool, lease, &error).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_are_capped() {
        let base = Duration::from_secs(1);
        for attempt in 1..=5 {
            let nominal = base * 2u32.pow(attempt as u32 - 1);
            let delay = retry_delay(base, attempt);
            assert!(
                delay >= nominal.mul_f64(0.5) && delay < nominal.mul_f64(1.5),
                "{delay:?}"
            );
        }
        assert!(retry_delay(base, 60) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn a_workers_error_keeps_its_members_and_loses_its_nul_characters() {
        let mut error = Map::new();
        error.insert("title".into(), Value::from("bad\0input"));
        error.insert("code".into(), Value::from(7));
        let stored = from_worker(error, 2);
        assert_eq!(stored["title"], "bad\u{FFFD}input");
        assert_eq!(stored["code"], 7);
        assert_eq!(stored["attempt"], 2);
        assert_eq!(stored["type"], "urn:jobdock:problem:job-failed");
    }
}
