//! The external-worker protocol's schemas: what a worker sends and gets back.

use chrono::{DateTime, Utc};
use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object};
use serde_json::Value;
use uuid::Uuid;

/// Ask for jobs to run.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ClaimRequest", deny_unknown_fields)]
pub struct ClaimRequest {
    /// Who is asking, for operators (shown nowhere to clients): e.g. `img-1`.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub worker_id: String,
    /// The kinds this worker runs; each must be declared with `handler = "external"`.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub kinds: Vec<String>,
    /// Only jobs in these queues; every queue when left out.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub queues: Option<Vec<String>>,
    /// The most jobs to claim at once (1–500); 1 when left out.
    #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
    pub max_jobs: Option<u32>,
    /// How long to wait for a job when none is due (0–60 s, a long poll); 20 when left out. The answer
    /// comes as soon as at least one job is claimed.
    #[oai(validator(minimum(value = "0"), maximum(value = "60")))]
    pub wait_secs: Option<u32>,
    /// How long the claim holds each job without a heartbeat (5–3600 s); the server's `--lease-secs` when
    /// left out. Never past a job's `timeout_secs`.
    #[oai(validator(minimum(value = "5"), maximum(value = "3600")))]
    pub lease_secs: Option<u32>,
}

/// Jobs claimed, each held by its lease until completed, failed, or the lease runs out.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ClaimedJobs")]
pub struct ClaimedJobs {
    /// Empty when nothing was due within `wait_secs`.
    pub jobs: Vec<WorkerJob>,
}

/// A job to run, with the lease that lets its worker report the outcome.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WorkerJob")]
pub struct WorkerJob {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    /// The job's input, as submitted.
    pub payload: Value,
    /// This attempt, from 1.
    pub attempt: i32,
    pub max_attempts: i32,
    /// How long this attempt may run; after it, the lease cannot be renewed and the attempt ends timed
    /// out.
    pub timeout_secs: i32,
    /// Send it with every heartbeat, `complete` and `fail` of this job.
    pub lease_token: Uuid,
    /// When the lease runs out unless a heartbeat renews it.
    pub lease_expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Keep the lease, and report progress.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HeartbeatRequest", deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: Uuid,
    /// Shown on the job's status monitor.
    pub progress: Option<Progress>,
}

/// How far a job has come.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Progress", deny_unknown_fields)]
pub struct Progress {
    /// 0 to 100.
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub percent: Option<f64>,
    #[oai(validator(max_length = 1000))]
    pub message: Option<String>,
}

/// The lease is renewed.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HeartbeatAnswer")]
pub struct HeartbeatAnswer {
    pub lease_expires_at: DateTime<Utc>,
    /// True once a client asked to cancel the job: stop, and call `fail` (the job ends `cancelled`).
    pub cancel_requested: bool,
}

/// The attempt failed.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FailRequest", deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: Uuid,
    /// A problem-details object: `title` is required; `detail`, `type` and any other members are kept and
    /// shown on the job's monitor as its `error`.
    pub error: Value,
    /// False: the job ends `failed` now. True (the default): it is retried while attempts remain.
    pub retryable: Option<bool>,
    /// Wait this long before the next attempt (0–86400 s) instead of jobdock's backoff.
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub retry_after_secs: Option<u32>,
}

/// A job's result as a worker uploads it: any body, with its own content type (stored and served back
/// as given; `application/octet-stream` when the request has none).
#[derive(Debug, Clone)]
pub struct ResultUpload {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Payload for ResultUpload {
    // Any content type is accepted (see `check_content_type`); the document names the generic one, because
    // client generators cannot send a body typed `*/*` (progenitor refuses the whole document).
    const CONTENT_TYPE: &'static str = "application/octet-stream";

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary")))
    }
}

impl ParsePayload for ResultUpload {
    const IS_REQUIRED: bool = false;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let content_type = request
            .content_type()
            .map(crate::kinds::servable_content_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let body = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        Ok(ResultUpload { content_type, body })
    }
}

// By hand rather than with poem-openapi's macro, which answers a request without `Content-Type` with
// 415: a result may come without one.
impl<'a> ApiExtractor<'a> for ResultUpload {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The result, in any content type."),
            content: vec![MetaMediaType {
                content_type: Self::CONTENT_TYPE,
                schema: Self::schema_ref(),
            }],
            required: Self::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        <Self as ParsePayload>::from_request(request, body).await
    }
}
