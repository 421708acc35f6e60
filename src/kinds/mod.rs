//! Job kinds: the [`Handler`] trait every kind implements, what a running job can see ([`JobContext`]),
//! and the [`Registry`] that maps kind names to handlers.
//!
//! A kind validates its payload before a job is accepted (an invalid one is answered 400 and nothing is
//! stored), then runs on a worker. Built in: [`echo`], [`sleep`] and [`fail`], for trying jobdock out.
//! Configured kinds (declared in `jobdock.toml`) are validated against their [`schema`] and run by
//! external workers over HTTP, by the [`http`] kind (an upstream service) or the [`exec`] kind (a
//! command); the [`Registry`] knows them all.

pub mod echo;
pub mod exec;
pub mod fail;
pub mod http;
mod registry;
pub mod schema;
pub mod sleep;
pub mod template;

pub use registry::{HandlerType, KindSpec, Lookup, Registry, Runner};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use crate::store::leases::{self, Lease};

/// What a kind does. Implement it to give jobdock kinds of your own (see `examples/embed.rs`).
///
/// Execution is at-least-once: a worker that crashes mid-job, or stalls past its lease, has its job run again
/// elsewhere. Make `run` safe to repeat (idempotent side effects), and check [`JobContext::is_cancelled`]
/// or await [`JobContext::cancelled`] so that cancellation, shutdown and lost leases stop it promptly.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The kind's name, as clients write it in `kind`.
    fn kind(&self) -> &str;

    /// Checks a payload before the job is accepted. `Err` carries a message for the client (→ 400).
    fn validate(&self, payload: &Value) -> Result<(), String> {
        let _ = payload;
        Ok(())
    }

    /// Does the work. The payload has passed [`Handler::validate`].
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError>;

    /// The most jobs of this kind one process runs at once (`max_concurrency`); `None`: as many as it has
    /// slots. The worker runtime enforces it before the handler starts, so a job never spends its attempt
    /// timeout waiting for room.
    fn max_concurrency(&self) -> Option<usize> {
        None
    }
}

/// A job's result: stored in `results` and served as-is by `GET /v1/jobs/{id}/result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Response headers served with the result (the `http` kind keeps some of the upstream's, and its
    /// status as `Upstream-Status`). Names must be valid header names; values that cannot be header values
    /// are dropped.
    pub headers: Vec<(String, String)>,
}

impl Output {
    /// A JSON result.
    pub fn json(value: &impl Serialize) -> Result<Output, JobError> {
        let body = serde_json::to_vec(value)
            .map_err(|err| JobError::Permanent(format!("result is not serialisable: {err}")))?;
        Ok(Output {
            content_type: "application/json".to_owned(),
            body,
            headers: Vec::new(),
        })
    }

    /// A result with any content type.
    pub fn bytes(content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Output {
        Output {
            content_type: content_type.into(),
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// The content type a result is stored and served with: the one given when it can be a header value,
/// else `application/octet-stream` (a NUL or newline in it would break both the column and the header).
pub fn servable_content_type(content_type: impl AsRef<str> + Into<String>) -> String {
    // `HeaderValue::from_str`'s rule, without building (and allocating) the value on every result.
    let servable = {
        let text = content_type.as_ref();
        text.bytes().all(|b| (b >= 32 && b != 127) || b == b'\t') && !text.trim().is_empty()
    };
    if servable {
        content_type.into()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// The headers a result is stored and served with, as a JSON array of `[name, value]` pairs: those that
/// can be a response header; `None` when there are none.
pub fn servable_headers(headers: &[(String, String)]) -> Option<Value> {
    let kept: Vec<Value> = headers
        .iter()
        .filter(|(name, value)| {
            poem::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && poem::http::HeaderValue::from_str(value).is_ok()
        })
        .map(|(name, value)| serde_json::json!([name, value]))
        .collect();
    (!kept.is_empty()).then_some(Value::Array(kept))
}

/// Why an attempt did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a timeout, an unavailable dependency): retried with backoff while attempts
    /// remain.
    #[error("{0}")]
    Retryable(String),
    /// Will fail again however often it is tried: the job ends `failed`.
    #[error("{0}")]
    Permanent(String),
    /// The handler stopped because [`JobContext`] said so.
    #[error("stopped on request")]
    Cancelled,
    /// A failure with more to say than a message: members for the job's `error` (e.g. the `http` kind's
    /// `upstream_status`), and when to try again.
    #[error("{}", .0.detail)]
    Detailed(Box<Failure>),
}

/// What [`JobError::Detailed`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The problem's `title`.
    pub title: String,
    pub detail: String,
    pub retryable: bool,
    /// When to try again, overriding the backoff (an upstream's `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// More members for the job's `error`.
    pub members: serde_json::Map<String, Value>,
}

/// What a running job can see and do: who it is, report progress, learn that it should stop.
#[derive(Clone)]
pub struct JobContext {
    kind: String,
    /// This process's paused kinds, so a pause holds here at once.
    pauses: Option<crate::worker::pauses::Pauses>,
    id: Uuid,
    attempt: i32,
    max_attempts: i32,
    lease: Lease,
    pool: PgPool,
    stop: CancellationToken,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("stopping", &self.stop.is_cancelled())
            .finish()
    }
}

impl JobContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kind: String,
        id: Uuid,
        attempt: i32,
        max_attempts: i32,
        lease: Lease,
        pool: PgPool,
        stop: CancellationToken,
    ) -> Self {
        JobContext {
            kind,
            pauses: None,
            id,
            attempt,
            max_attempts,
            lease,
            pool,
            stop,
        }
    }

    /// Makes [`JobContext::pause_kind`] take effect in this process at once.
    pub(crate) fn with_pauses(mut self, pauses: crate::worker::pauses::Pauses) -> Self {
        self.pauses = Some(pauses);
        self
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Pauses the job's whole kind for `length`: until then no replica claims its jobs (they wait without
    /// spending attempts). For back-pressure from a dependency that asked for air, e.g. an upstream's 429
    /// or 503 with `Retry-After`. Advisory: a failed write is logged, not returned.
    pub async fn pause_kind(&self, length: Duration) {
        match crate::store::kind_pauses::pause(&self.pool, &self.kind, length).await {
            Ok(until) => {
                if let Some(pauses) = &self.pauses {
                    pauses.record(&self.kind, until);
                }
                tracing::info!(kind = %self.kind, %until, "kind paused by back-pressure")
            }
            Err(err) => tracing::warn!(kind = %self.kind, error = %err, "pausing the kind failed"),
        }
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    pub fn max_attempts(&self) -> i32 {
        self.max_attempts
    }

    /// True once the job should stop: it was cancelled, the worker is shutting down, or the lease was lost.
    pub fn is_cancelled(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when the job should stop (see [`JobContext::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.stop.cancelled().await
    }

    /// Reports progress, shown on the status monitor as `progress`. `percent` is clamped to 0–100.
    ///
    /// Progress is advisory: a failed write is logged, not returned.
    pub async fn progress(&self, percent: Option<f64>, message: Option<&str>) {
        // Whole percentages read better as integers (40, not 40.0).
        let percent = percent.map(|p| p.clamp(0.0, 100.0)).map(|p| {
            if p.fract() == 0.0 {
                serde_json::json!(p as i64)
            } else {
                serde_json::json!(p)
            }
        });
        let progress = serde_json::json!({
            "percent": percent,
            "message": message,
        });
        match leases::set_progress(&self.pool, self.lease, &progress).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(job = %self.id, "progress not recorded: lease no longer held")
            }
            Err(err) => tracing::warn!(job = %self.id, error = %err, "progress not recorded"),
        }
    }
}

/// Parses a payload into `T`, with a message that names the kind, for [`Handler::validate`].
pub fn parse_payload<T: serde::de::DeserializeOwned>(
    kind: &str,
    payload: &Value,
) -> Result<T, String> {
    T::deserialize(payload).map_err(|err| {
        // serde names the Rust type it wanted ("expected struct SleepPayload"): say what a client sends.
        let message = err.to_string();
        let message = match message.find("expected struct ") {
            Some(at) => format!("{}expected a JSON object", &message[..at]),
            None => message,
        };
        format!("invalid payload for kind `{kind}`: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::servable_content_type;

    #[test]
    fn a_content_type_is_kept_exactly_when_it_can_be_a_header_value() {
        for text in [
            "application/json",
            "text/plain; charset=utf-8",
            "a\tb",
            "caf\u{e9}/x",
            "bad\nline",
            "nul\0",
            "del\u{7f}",
            "",
            "   ",
        ] {
            let header_ok =
                poem::http::HeaderValue::from_str(text).is_ok() && !text.trim().is_empty();
            let expected = if header_ok {
                text
            } else {
                "application/octet-stream"
            };
            assert_eq!(servable_content_type(text), expected, "for {text:?}");
            assert_eq!(
                servable_content_type(text.to_owned()),
                expected,
                "for {text:?}"
            );
        }
    }
}
