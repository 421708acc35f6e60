//! The API's schemas: what clients send and what they get back.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use uuid::Uuid;

use crate::api::json_body::{rfc3339, rfc3339_or_null};
use crate::job::{Job, JobStatus};

/// A job to run.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SubmitJob", deny_unknown_fields)]
pub struct SubmitJob {
    /// What the job does: a kind this server knows (built in: `echo`, `sleep`, `fail`). An unknown kind is
    /// answered 400.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub kind: String,
    /// The kind's input; `{}` when left out. `echo` takes anything; `sleep` takes `{"ms": N}`; `fail` takes
    /// `{"message": "...", "retryable": bool}`; a configured kind, what its `payload_schema` allows
    /// (`GET /v1/kinds/{kind}`).
    pub payload: Option<Value>,
    /// The queue the job belongs to, for grouping and filtering. When left out: the kind's queue, else
    /// `default`.
    #[oai(nullable, validator(min_length = 1, max_length = 255))]
    pub queue: Option<String>,
    /// Higher runs first among due jobs; 0 when left out.
    #[oai(
        nullable,
        validator(minimum(value = "-1000000"), maximum(value = "1000000"))
    )]
    pub priority: Option<i32>,
    /// Do not start before this time (RFC 3339); now when left out.
    #[oai(nullable)]
    pub run_at: Option<DateTime<Utc>>,
    /// How many attempts a job gets before it ends `failed` (retryable failures, timeouts, crashed
    /// workers all use one). When left out: the kind's default, else 3.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "100")))]
    pub max_attempts: Option<i32>,
    /// How long one attempt may run before it is stopped and counted as failed (retryable). When left out:
    /// the kind's default, else 300.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "604800")))]
    pub timeout_secs: Option<i32>,
    /// Where to POST the job's final monitor when it ends (a completion webhook, signed per Standard
    /// Webhooks). Accepted only when it matches the server's `[webhooks] allow` list, and never for a
    /// loopback, private or link-local address unless a pattern names that host.
    #[oai(nullable, validator(min_length = 1, max_length = 2048))]
    pub callback_url: Option<String>,
}

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "JobStatus", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobStatusName {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<JobStatus> for JobStatusName {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => JobStatusName::Queued,
            JobStatus::Running => JobStatusName::Running,
            JobStatus::Succeeded => JobStatusName::Succeeded,
            JobStatus::Failed => JobStatusName::Failed,
            JobStatus::Cancelled => JobStatusName::Cancelled,
        }
    }
}

impl From<JobStatusName> for JobStatus {
    fn from(status: JobStatusName) -> Self {
        match status {
            JobStatusName::Queued => JobStatus::Queued,
            JobStatusName::Running => JobStatus::Running,
            JobStatusName::Succeeded => JobStatus::Succeeded,
            JobStatusName::Failed => JobStatus::Failed,
            JobStatusName::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// The status monitor: everything a client needs to follow a job.
// Serialize must match ToJSON (see `crate::api::json_body`); a test compares them.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "JobMonitor")]
pub struct JobMonitor {
    /// The job's id (UUIDv7).
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub status: JobStatusName,
    /// Attempts started so far (0 until a worker first claims the job).
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i32,
    pub timeout_secs: i32,
    /// The latest progress the job reported, e.g. `{"percent": 40, "message": "..."}`; null until it
    /// reports any.
    #[oai(nullable)]
    pub progress: Option<Value>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// When the latest attempt started.
    #[oai(nullable)]
    #[serde(serialize_with = "rfc3339_or_null")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a final status.
    #[oai(nullable)]
    #[serde(serialize_with = "rfc3339_or_null")]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the job is (or was) due to run.
    #[serde(serialize_with = "rfc3339")]
    pub run_at: DateTime<Utc>,
    /// True once someone asked to cancel the job.
    pub cancel_requested: bool,
    /// The latest attempt's error, as a problem-details object (`type`, `title`, `detail`, `attempt`); set
    /// for `failed` and `cancelled` jobs and for jobs waiting to retry, otherwise null.
    #[oai(nullable)]
    pub error: Option<Value>,
    /// Where the result is, once the job has succeeded; otherwise null.
    #[oai(nullable)]
    pub result_url: Option<String>,
    /// While queued: how many queued jobs of its queue the workers take before it (counted up to 10,000).
    #[oai(nullable)]
    pub queue_position: Option<i64>,
    /// While queued or running: when the job will likely finish, from its kind's recent run times, its
    /// progress and the jobs ahead of it; null while there is nothing to tell it from.
    #[oai(nullable)]
    #[serde(serialize_with = "rfc3339_or_null")]
    pub estimated_finish_at: Option<DateTime<Utc>>,
    /// Only for a job submitted with `callback_url`: how its completion webhook is going.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackState>,
}

/// The completion webhook of a job.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "CallbackState")]
pub struct CallbackState {
    /// `waiting` (the job has not ended), `pending` (being delivered or retried), `delivered` (a 2xx),
    /// `stopped` (the receiver answered 410) or `failed` (24 h of retries spent).
    pub state: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The HTTP status of the last attempt; null before the first or when it got no answer.
    #[oai(nullable)]
    pub last_status: Option<i32>,
}

impl JobMonitor {
    /// The monitor with `forecast`'s queue position and estimated finish.
    pub fn with_forecast(mut self, forecast: &super::forecast::Forecast) -> JobMonitor {
        self.queue_position = forecast.queue_position;
        self.estimated_finish_at = forecast.estimated_finish_at;
        self
    }
}

impl From<Job> for JobMonitor {
    fn from(job: Job) -> Self {
        let result_url = (job.status == JobStatus::Succeeded).then(|| result_path(job.id));
        JobMonitor {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            status: job.status.into(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            priority: job.priority,
            timeout_secs: job.timeout_secs,
            progress: job.progress,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            run_at: job.run_at,
            cancel_requested: job.cancel_requested,
            error: job.error,
            result_url,
            queue_position: None,
            estimated_finish_at: None,
            callback: None,
        }
    }
}

pub fn monitor_path(id: Uuid) -> String {
    format!("/v1/jobs/{id}")
}

pub fn result_path(id: Uuid) -> String {
    format!("/v1/jobs/{id}/result")
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "JobList")]
pub struct JobList {
    pub jobs: Vec<JobMonitor>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// Jobs to submit together: all are stored, or none.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SubmitBatch", deny_unknown_fields)]
pub struct SubmitBatch {
    /// 1 to 1,000 jobs, each as in `POST /v1/jobs`.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub jobs: Vec<RawSubmitJob>,
}

/// A submitted job as it arrived: documented as [`SubmitJob`], parsed by
/// [`super::submit::parse_submission`] so that errors name the field (and, in a batch, the position).
#[derive(Debug, Clone)]
pub struct RawSubmitJob(pub Value);

impl Type for RawSubmitJob {
    const IS_REQUIRED: bool = true;
    type RawValueType = Value;
    type RawElementValueType = Value;

    fn name() -> Cow<'static, str> {
        SubmitJob::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        SubmitJob::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SubmitJob::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Value> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for RawSubmitJob {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(RawSubmitJob(value.unwrap_or(Value::Null)))
    }
}

impl ToJSON for RawSubmitJob {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// The jobs a batch stored, in the order they were sent.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "BatchAccepted")]
pub struct BatchAccepted {
    pub jobs: Vec<JobMonitor>,
}

/// A stored result, served with the content type the job gave it.
#[derive(Debug, Clone)]
pub struct ResultBody {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Stored with the result (e.g. an `http` kind's kept upstream headers and `Upstream-Status`).
    pub headers: Vec<(String, String)>,
}

impl Payload for ResultBody {
    const CONTENT_TYPE: &'static str = "*/*";

    /// Any body at all: JSON for the built-in kinds, whatever an embedded kind stores.
    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::ANY))
    }
}

impl IntoResponse for ResultBody {
    fn into_response(self) -> Response {
        let mut response = Response::builder()
            .content_type(self.content_type)
            .body(self.body);
        for (name, value) in self.headers {
            // Checked when stored; a row edited by hand is served without what does not fit.
            if let (Ok(name), Ok(value)) = (
                poem::http::HeaderName::from_bytes(name.as_bytes()),
                poem::http::HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// Server-Sent Events whose every event carries a [`JobMonitor`] as its data. Documented as
/// `text/event-stream` with the monitor's schema (poem-openapi's own event stream says "array", which
/// tools that check each event's data against the schema reject).
pub struct StatusEvents(pub Response);

impl Payload for StatusEvents {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        <JobMonitor as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <JobMonitor as Type>::register(registry);
    }
}

impl IntoResponse for StatusEvents {
    fn into_response(self) -> Response {
        self.0
    }
}

#[cfg(test)]
mod serialization_tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn monitor(status: JobStatusName, filled: bool) -> JobMonitor {
        let at = Utc
            .timestamp_opt(1_796_406_602, 745_426_000)
            .single()
            .unwrap();
        let whole_second = Utc.timestamp_opt(1_796_406_603, 0).single().unwrap();
        JobMonitor {
            id: Uuid::now_v7(),
            kind: "resize \"quoted\" \u{e9}".to_owned(),
            queue: "default".to_owned(),
            status,
            attempt: 2,
            max_attempts: 3,
            priority: -5,
            timeout_secs: 30,
            progress: filled.then(|| json!({"percent": 40, "z": 1, "a": [1.5, null, "x"]})),
            created_at: at,
            updated_at: whole_second,
            started_at: filled.then_some(at),
            finished_at: filled.then_some(whole_second),
            run_at: at,
            cancel_requested: filled,
            error: filled.then(|| json!({"title": "boom", "attempt": 2})),
            result_url: filled.then(|| "/v1/jobs/x/result".to_owned()),
            queue_position: filled.then_some(7),
            estimated_finish_at: filled.then_some(at),
            callback: filled.then(|| CallbackState {
                state: "pending".to_owned(),
                attempts: 1,
                last_status: None,
            }),
        }
    }

    #[test]
    fn a_monitor_serializes_with_serde_exactly_as_poem_openapi_writes_it() {
        for status in [
            JobStatusName::Queued,
            JobStatusName::Running,
            JobStatusName::Succeeded,
            JobStatusName::Failed,
            JobStatusName::Cancelled,
        ] {
            for filled in [false, true] {
                let monitor = monitor(status, filled);
                let ours = serde_json::to_string(&monitor).unwrap();
                let theirs = serde_json::to_string(&monitor.to_json().unwrap()).unwrap();
                assert_eq!(ours, theirs, "{status:?}, filled: {filled}");
            }
        }
    }

    #[test]
    fn a_batch_serializes_with_serde_exactly_as_poem_openapi_writes_it() {
        let batch = BatchAccepted {
            jobs: vec![
                monitor(JobStatusName::Queued, false),
                monitor(JobStatusName::Failed, true),
            ],
        };
        let ours = serde_json::to_string(&batch).unwrap();
        let theirs = serde_json::to_string(&batch.to_json().unwrap()).unwrap();
        assert_eq!(ours, theirs);
    }
}
