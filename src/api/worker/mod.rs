//! The external-worker protocol (DESIGN §8): programs in any language claim jobs of `external` kinds over
//! HTTP, keep their leases with heartbeats, and report the outcome. Every write is fenced by the lease
//! token, as in the in-process runtime: a worker whose lease was lost (rescued, timed out, or the job
//! ended) changes nothing and is told 409 `lease-lost`.
//!
//! - [`types`]: the request and answer schemas.
//! - [`completions`]: group commit, so concurrent `complete` calls share one statement.
//! - [`responses`]: what each operation answers.

pub mod completions;
pub mod responses;
pub mod types;

use std::time::Duration;

use poem::Request;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::problem::Problem;
use super::{caller, ApiState, ApiTags};
use crate::attempt::{self, Failure};
use crate::store::external::{self, Completed, ExternalClaim, LeaseState};
use crate::store::leases::Lease;
use responses::*;
use types::*;

/// `wait_secs` when a claim leaves it out.
const DEFAULT_WAIT_SECS: u32 = 20;

pub struct WorkerApi {
    pub state: ApiState,
}

fn lease_lost(detail: &str) -> Problem {
    Problem::conflict("lease-lost", "The lease is no longer held", detail)
}

const LEASE_LOST_DETAIL: &str =
    "this lease token no longer holds the job: its lease ran out and it was \
     rescued, its attempt timed out, or it already ended; stop working on it";

#[OpenApi(tag = "ApiTags::Worker")]
impl WorkerApi {
    /// Claim jobs (external workers)
    ///
    /// Claims up to `max_jobs` due jobs of the given `external` kinds, each under a lease of `lease_secs`.
    /// A long poll: answers as soon as at least one job is claimed, or with no jobs after `wait_secs`.
    /// Keep each lease with heartbeats, then `complete` or `fail` the job with its `lease_token`.
    #[oai(
        path = "/v1/worker/claim",
        method = "post",
        operation_id = "claim_jobs"
    )]
    async fn claim_jobs(&self, http: &Request, body: Json<ClaimRequest>) -> ClaimResponse {
        let caller = caller(http);
        let request = body.0;
        if let Err(detail) = self.check_claim(&request) {
            return Problem::bad_request(detail).into();
        }
        let lease = request
            .lease_secs
            .map(|secs| Duration::from_secs(secs.into()))
            .unwrap_or(self.state.lease);
        let wait = Duration::from_secs(request.wait_secs.unwrap_or(DEFAULT_WAIT_SECS).into());
        let claim = ExternalClaim {
            kinds: &request.kinds,
            queues: request.queues.as_deref(),
            limit: i64::from(request.max_jobs.unwrap_or(1)),
            lease,
            worker_id: &request.worker_id,
            // A `work` key claims only its tenant's jobs; `admin` any tenant's.
            tenant: caller.visible_tenant(),
            caps: &self.state.caps,
        };
        let deadline = Instant::now() + wait;
        let mut signals = self.state.signals.clone();
        loop {
            // Seen before looking: a notification that arrives while the claim runs wakes the next wait.
            signals.mark_seen();
            let claimed = match external::claim(&self.state.pool, &claim).await {
                Ok(claimed) => claimed,
                Err(err) => return Problem::from_db(&err).into(),
            };
            let jobs = self.readable(claimed).await;
            let now = Instant::now();
            if !jobs.is_empty() || now >= deadline {
                return ClaimResponse::Ok(Json(ClaimedJobs { jobs }));
            }
            // Woken by NOTIFY when jobs are submitted or requeued anywhere; the poll interval covers jobs
            // that become due by their `run_at`, and notifications lost while reconnecting.
            let next_look = deadline.min(now + self.state.poll_interval);
            tokio::select! {
                _ = signals.changed() => {}
                _ = tokio::time::sleep_until(next_look) => {}
                _ = self.state.shutdown.cancelled() => {
                    return ClaimResponse::Ok(Json(ClaimedJobs { jobs: Vec::new() }));
                }
            }
        }
    }

    /// Renew a lease (external workers)
    ///
    /// Extends the job's lease by the claim's `lease_secs` (never past its `timeout_secs`) and records
    /// `progress`. `cancel_requested: true` means a client cancelled the job: stop and call `fail`.
    #[oai(
        path = "/v1/worker/jobs/:id/heartbeat",
        method = "post",
        operation_id = "heartbeat_job"
    )]
    async fn heartbeat_job(
        &self,
        http: &Request,
        /// The job's id.
        id: Path<Uuid>,
        body: Json<HeartbeatRequest>,
    ) -> HeartbeatResponse {
        if let Some(problem) = self.foreign(http, id.0).await {
            return problem.into();
        }
        let lease = Lease {
            id: id.0,
            token: body.0.lease_token,
        };
        let progress = body.0.progress.map(|progress| progress_json(&progress));
        match external::heartbeat(&self.state.pool, lease, self.state.lease, progress.as_ref())
            .await
        {
            Ok(Some(renewed)) => HeartbeatResponse::Ok(Json(HeartbeatAnswer {
                lease_expires_at: renewed.lease_expires_at,
                cancel_requested: renewed.cancel_requested,
            })),
            Ok(None) => self.lost_or_unknown(http, id.0).await.into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Complete a job (external workers)
    ///
    /// The body is the job's result, in any content type (`Content-Type` is kept and served back with it).
    /// The job ends `succeeded`. Repeating the same call after a lost answer answers 204 again.
    #[oai(
        path = "/v1/worker/jobs/:id/complete",
        method = "post",
        operation_id = "complete_job"
    )]
    async fn complete_job(
        &self,
        http: &Request,
        /// The job's id.
        id: Path<Uuid>,
        /// The `lease_token` of the claim.
        #[oai(name = "Lease-Token")]
        lease_token: Header<String>,
        body: ResultUpload,
    ) -> CompleteResponse {
        let Ok(token) = lease_token.0.trim().parse::<Uuid>() else {
            return Problem::bad_request(
                "`Lease-Token` must be the `lease_token` of the claim (a UUID)",
            )
            .into();
        };
        if let Some(problem) = self.foreign(http, id.0).await {
            return problem.into();
        }
        if body.body.len() > self.state.max_result_bytes {
            return Problem::new(
                poem::http::StatusCode::PAYLOAD_TOO_LARGE,
                "result-too-large",
                "The result is too large",
                format!(
                    "the result is {} bytes; this server stores results of at most {} bytes \
                     (--max-result-bytes)",
                    body.body.len(),
                    self.state.max_result_bytes
                ),
            )
            .into();
        }
        let upload = external::Upload {
            lease: Lease { id: id.0, token },
            content_type: body.content_type,
            body: body.body,
        };
        match self.state.completions.complete(upload).await {
            Some(Ok(Completed::Done | Completed::AlreadyDone)) => CompleteResponse::Completed,
            Some(Ok(Completed::LeaseLost)) => lease_lost(LEASE_LOST_DETAIL).into(),
            Some(Ok(Completed::NotFound)) => Problem::job_not_found().into(),
            Some(Err(err)) => Problem::from_db(&err).into(),
            None => {
                let mut problem = Problem::unavailable();
                problem.detail = Some("the server is shutting down; the result was not stored. Retry after the time in Retry-After.".to_owned());
                problem.into()
            }
        }
    }

    /// Fail a job's attempt (external workers)
    ///
    /// The attempt failed with `error`. While attempts remain and the failure is `retryable`, the job is
    /// queued again (after `retry_after_secs`, or jobdock's backoff); otherwise it ends `failed`. A job
    /// whose cancellation was requested ends `cancelled`.
    #[oai(
        path = "/v1/worker/jobs/:id/fail",
        method = "post",
        operation_id = "fail_job"
    )]
    async fn fail_job(
        &self,
        http: &Request,
        /// The job's id.
        id: Path<Uuid>,
        body: Json<FailRequest>,
    ) -> FailResponse {
        if let Some(problem) = self.foreign(http, id.0).await {
            return problem.into();
        }
        let request = body.0;
        let error = match worker_error(request.error) {
            Ok(error) => error,
            Err(detail) => return Problem::bad_request(detail).into(),
        };
        let lease = Lease {
            id: id.0,
            token: request.lease_token,
        };
        let attempt = match external::lease_state(&self.state.pool, lease).await {
            Ok(LeaseState::Held { attempt, kind }) => (attempt, kind),
            Ok(LeaseState::Lost) => return lease_lost(LEASE_LOST_DETAIL).into(),
            Ok(LeaseState::NotFound) => return Problem::job_not_found().into(),
            Err(err) => return Problem::from_db(&err).into(),
        };
        let failure = Failure {
            retryable: request.retryable.unwrap_or(true),
            retry_after: request
                .retry_after_secs
                .map(|secs| Duration::from_secs(secs.into())),
        };
        let (attempt, kind) = attempt;
        let error = attempt::from_worker(error, attempt);
        match attempt::fail(
            &self.state.pool,
            lease,
            attempt,
            &error,
            failure,
            self.state.retry_base,
        )
        .await
        {
            Ok(Some(status)) => {
                if status.is_terminal() {
                    crate::metrics::job_finished(&kind, status);
                }
                FailResponse::Failed
            }
            // The lease was lost between the check and the write.
            Ok(None) => lease_lost(LEASE_LOST_DETAIL).into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }
}

impl WorkerApi {
    /// Every kind must be declared `external`, and names must be storable.
    fn check_claim(&self, request: &ClaimRequest) -> Result<(), String> {
        if request.worker_id.contains('\0') {
            return Err("`worker_id` must not contain NUL characters".to_owned());
        }
        for kind in &request.kinds {
            if self.state.registry.is_external(kind) {
                continue;
            }
            let shown = kind.replace('\0', "\u{FFFD}");
            return Err(match self.state.registry.lookup(kind) {
                Some(_) => format!(
                    "kind `{shown}` is not declared `external`: jobdock runs its jobs itself, so workers \
                     cannot claim them"
                ),
                None => format!(
                    "unknown kind `{shown}`; declare it in jobdock.toml with handler = \"external\""
                ),
            });
        }
        if let Some(queues) = &request.queues {
            if queues
                .iter()
                .any(|queue| queue.is_empty() || queue.len() > 255 || queue.contains('\0'))
            {
                return Err("each of `queues` must be 1 to 255 characters, without NUL".to_owned());
            }
        }
        Ok(())
    }

    /// The claimed jobs whose payload can be read back. One that cannot (written by hand, or by an older
    /// version) fails its own attempt for good instead of every claim that returns it.
    async fn readable(&self, claimed: Vec<external::ExternalJob>) -> Vec<WorkerJob> {
        let mut jobs = Vec::with_capacity(claimed.len());
        for job in claimed {
            let waited = (chrono::Utc::now() - job.created_at)
                .to_std()
                .unwrap_or_default();
            crate::metrics::job_started(&job.kind, waited);
            match serde_json::from_str::<Value>(&job.payload) {
                Ok(payload) => jobs.push(WorkerJob {
                    id: job.id,
                    kind: job.kind,
                    queue: job.queue,
                    payload,
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    timeout_secs: job.timeout_secs,
                    lease_token: job.lease_token,
                    lease_expires_at: job.lease_expires_at,
                    created_at: job.created_at,
                }),
                Err(err) => {
                    let lease = Lease {
                        id: job.id,
                        token: job.lease_token,
                    };
                    let error = attempt::failed(
                        &format!("its stored payload cannot be read back: {err}"),
                        job.attempt,
                    );
                    let failure = Failure {
                        retryable: false,
                        retry_after: None,
                    };
                    if let Err(err) = attempt::fail(
                        &self.state.pool,
                        lease,
                        job.attempt,
                        &error,
                        failure,
                        self.state.retry_base,
                    )
                    .await
                    {
                        tracing::warn!(job = %job.id, error = %err, "failing an unreadable job failed; it will be rescued");
                    }
                }
            }
        }
        jobs
    }

    /// 404 for another tenant's job, before anything is written: a `work` key touches only its own
    /// tenant's jobs. Callers that see every tenant skip the lookup.
    async fn foreign(&self, http: &Request, id: Uuid) -> Option<Problem> {
        let caller = caller(http);
        let tenant = caller.visible_tenant()?;
        match external::exists(&self.state.pool, id, Some(tenant)).await {
            Ok(true) => None,
            Ok(false) => Some(Problem::job_not_found()),
            Err(err) => Some(Problem::from_db(&err)),
        }
    }

    /// 404 when no job has this id, else 409: the lease is not held.
    async fn lost_or_unknown(&self, http: &Request, id: Uuid) -> Problem {
        let caller = caller(http);
        match external::exists(&self.state.pool, id, caller.visible_tenant()).await {
            Ok(true) => lease_lost(LEASE_LOST_DETAIL),
            Ok(false) => Problem::job_not_found(),
            Err(err) => Problem::from_db(&err),
        }
    }
}

/// Progress as the status monitor shows it (whole percentages as integers, as the in-process runtime
/// writes them).
fn progress_json(progress: &Progress) -> Value {
    let percent = progress.percent.map(|p| {
        if p.fract() == 0.0 {
            json!(p as i64)
        } else {
            json!(p)
        }
    });
    json!({
        "percent": percent,
        "message": progress.message.as_deref().map(|m| m.replace('\0', "\u{FFFD}")),
    })
}

/// A worker's `error`: an object with a non-empty string `title`.
fn worker_error(error: Value) -> Result<serde_json::Map<String, Value>, String> {
    let Value::Object(error) = error else {
        return Err(
            "`error` must be an object with a `title`, e.g. {\"title\": \"Upstream refused\"}"
                .to_owned(),
        );
    };
    match error.get("title") {
        Some(Value::String(title)) if !title.trim().is_empty() => Ok(error),
        _ => Err("`error.title` is required: a short, non-empty string".to_owned()),
    }
}
