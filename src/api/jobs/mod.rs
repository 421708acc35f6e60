//! The jobs API: submit, follow, fetch the result, cancel, delete, list.
//!
//! - [`submit`]: validation of submissions against the kinds, idempotency fingerprints.
//! - [`grouping`]: group commit, so concurrent submissions share one INSERT.
//! - [`responses`]: what each operation answers.
//! - [`types`]: request and response schemas.
//! - [`forecast`]: `Retry-After`, `queue_position` and `estimated_finish_at`.
//! - [`monitor`]: the status monitor's answer (`Retry-After`, `ETag`, 302/200/304).
//! - [`waiting`]: long polls, `Prefer: wait` and event streams.

pub mod announce;
pub mod forecast;
pub mod grouping;
mod monitor;
pub mod reads;
pub mod responses;
pub mod submit;
pub mod types;
pub mod waiting;

use crate::api::json_body::JsonBody;
use futures_util::StreamExt;
use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use uuid::Uuid;

use super::problem::Problem;
use super::{caller, ApiState, ApiTags};
use crate::job::{Idempotency, Job, JobStatus};
use crate::store::jobs::{BatchInserted, Cancelled, Deleted, Inserted};
use crate::store::{self, results::ResultLookup};
use monitor::etag;
use responses::*;
use submit::{batch_idempotency, fingerprint, parse_submission, validate_submission, Rejection};
use types::*;

const DEFAULT_LIST_LIMIT: u32 = 100;

pub struct JobsApi {
    pub state: ApiState,
}

fn default_true() -> bool {
    true
}

fn default_list_limit() -> u32 {
    DEFAULT_LIST_LIMIT
}

/// A header that is not text (non-ASCII bytes) reaches an operation as no header at all: refuse it rather
/// than store a duplicate the client meant to prevent.
fn unreadable_key(request: &Request, key: &Header<Option<String>>) -> Option<Problem> {
    (key.0.is_none() && request.headers().contains_key("idempotency-key")).then(|| {
        Problem::bad_request(
            "Idempotency-Key must be printable ASCII (up to 255 characters); encode other characters, \
             e.g. as a UUID or base64",
        )
    })
}

/// 422: the key was used before with a different request.
fn key_reused(what: &str) -> Problem {
    Problem::new(
        poem::http::StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused with a different request",
        format!("this Idempotency-Key was already used with a different {what}; use a new key for new work"),
    )
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submit a job
    ///
    /// Stores the job and answers at once with **202 Accepted**: `Location` is the job's status monitor,
    /// `Retry-After` says when to poll it. The job row is committed before the answer is sent, so an
    /// accepted job is never lost. An invalid request is answered 400 and nothing is stored.
    ///
    /// Send an `Idempotency-Key` to make retries safe: the same key with the same request returns the same
    /// job; with a different request, 422.
    #[oai(path = "/v1/jobs", method = "post", operation_id = "submit_job")]
    async fn submit_job(
        &self,
        request: &Request,
        body: Json<RawSubmitJob>,
        /// Makes the submission safe to retry: up to 255 characters, unique per caller.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
        /// `wait=N` (up to 60): hold the answer up to N seconds for the job to finish. **303** to the result
        /// if it succeeds in time, **200** with the monitor if it fails or is cancelled, else the usual 202.
        #[oai(name = "Prefer")]
        prefer: Header<Option<String>>,
    ) -> SubmitJobResponse {
        if let Some(problem) = unreadable_key(request, &idempotency_key) {
            return problem.into();
        }
        let submit = match parse_submission(body.0 .0) {
            Ok(submit) => submit,
            Err(detail) => return Problem::bad_request(detail).into(),
        };
        let mut job = match validate_submission(&self.state.registry, submit) {
            Ok(job) => job,
            Err(rejection) => return rejection.problem().into(),
        };
        job.tenant = caller(request).tenant;
        if let Err(detail) = self.check_callback(&mut job).await {
            return Problem::bad_request(detail).into();
        }
        let fingerprint = idempotency_key.0.as_ref().map(|_| fingerprint(&job));
        if let (Some(key), Some(fingerprint)) = (idempotency_key.0, fingerprint) {
            if key.contains('\0') {
                return Problem::bad_request("Idempotency-Key must not contain NUL characters")
                    .into();
            }
            job.idempotency = Some(Idempotency {
                // Keys are scoped per tenant: two tenants may use the same key for different work.
                caller: job.tenant.clone(),
                key,
                fingerprint,
            });
        }
        let inserted = if job.idempotency.is_some() {
            let inserted = store::jobs::insert_one(&self.state.pool, &job).await;
            if let Ok(Inserted::Created(job)) = &inserted {
                self.state.announcer.submitted(&job.tenant);
            }
            inserted
        } else {
            // Grouped with concurrent submissions; the group announces its queued jobs, or hands them
            // to this process's idle workers.
            match self.state.groups.insert(job).await {
                Ok(job) => Ok(Inserted::Created(job)),
                Err(err) => return err.problem().into(),
            }
        };
        if let Ok(Inserted::Created(job)) = &inserted {
            crate::metrics::job_submitted(&job.kind);
        }
        match inserted {
            Ok(Inserted::Created(job)) | Ok(Inserted::Existing(job)) => {
                match prefer.0.as_deref().and_then(waiting::preferred_wait) {
                    Some(secs) => self.wait_after_submit(request, job, secs).await,
                    None => {
                        let location = monitor_path(job.id);
                        let retry_after = self.state.paces.retry_after_now(&job);
                        SubmitJobResponse::Accepted(
                            JsonBody(job.into()),
                            location,
                            retry_after,
                            None,
                            None,
                        )
                    }
                }
            }
            Ok(Inserted::KeyConflict) => key_reused("request").into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Submit many jobs
    ///
    /// Up to 1,000 jobs in one request, stored in one transaction: all of them, or none. Every job is
    /// validated first; the first invalid one is named by `index` in the 400 answer.
    #[oai(
        path = "/v1/jobs/batch",
        method = "post",
        operation_id = "submit_jobs_batch"
    )]
    async fn submit_jobs_batch(
        &self,
        request: &Request,
        body: Json<SubmitBatch>,
        /// Makes the batch safe to retry: the same key with the same batch returns the same jobs; with a
        /// different batch, 422. Up to 255 printable ASCII characters, unique per caller.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
    ) -> SubmitBatchResponse {
        if let Some(problem) = unreadable_key(request, &idempotency_key) {
            return problem.into();
        }
        let tenant = caller(request).tenant;
        let mut jobs = Vec::with_capacity(body.0.jobs.len());
        for (index, item) in body.0.jobs.into_iter().enumerate() {
            let parsed = parse_submission(item.0)
                .map_err(Rejection::from)
                .and_then(|submit| validate_submission(&self.state.registry, submit));
            let parsed = match parsed {
                Ok(mut job) => match self.check_callback(&mut job).await {
                    Ok(()) => Ok(job),
                    Err(detail) => Err(Rejection::from(detail)),
                },
                Err(rejection) => Err(rejection),
            };
            match parsed {
                Ok(mut job) => {
                    job.tenant = tenant.clone();
                    jobs.push(job);
                }
                Err(mut rejection) => {
                    rejection.detail = format!("jobs[{index}] is invalid: {}", rejection.detail);
                    let mut problem = rejection.problem();
                    problem.index = u32::try_from(index).ok();
                    return problem.into();
                }
            }
        }
        let stored = match idempotency_key.0 {
            None => {
                let stored = store::jobs::insert_many(&self.state.pool, &jobs).await;
                if let Ok(stored) = &stored {
                    stored
                        .iter()
                        .for_each(|job| crate::metrics::job_submitted(&job.kind));
                    self.state.announcer.submitted(&tenant);
                }
                stored
            }
            Some(key) => {
                let (keys, fingerprint) = batch_idempotency(&key, &jobs);
                // Batches live in a key space of their own: a batch key never answers a single submit.
                let caller = format!("{tenant}#batch");
                match store::jobs::insert_many_keyed(
                    &self.state.pool,
                    &jobs,
                    &caller,
                    &keys,
                    &fingerprint,
                )
                .await
                {
                    Ok(BatchInserted::Created(stored)) => {
                        stored
                            .iter()
                            .for_each(|job| crate::metrics::job_submitted(&job.kind));
                        self.state.announcer.submitted(&tenant);
                        Ok(stored)
                    }
                    Ok(BatchInserted::Existing(stored)) => Ok(stored),
                    Ok(BatchInserted::KeyConflict) => return key_reused("batch").into(),
                    Err(err) => Err(err),
                }
            }
        };
        match stored {
            Ok(stored) => {
                let retry_after = stored
                    .iter()
                    .map(|job| self.state.paces.retry_after_now(job))
                    .min()
                    .unwrap_or(1);
                let jobs = stored.into_iter().map(JobMonitor::from).collect();
                SubmitBatchResponse::Accepted(JsonBody(BatchAccepted { jobs }), retry_after)
            }
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Get a job's status (the status monitor)
    ///
    /// **200** with `Retry-After` while the job is `queued` or `running`. **302** to the result once it has
    /// `succeeded`. **200** with `error` once it has `failed` or been `cancelled`. Clients that cannot
    /// follow redirects pass `redirect=false` to get 200 with `result_url` instead of the 302.
    #[oai(path = "/v1/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get_job(
        &self,
        request: &Request,
        /// The job's id, from the `Location` of the 202.
        id: Path<Uuid>,
        /// `false`: answer a succeeded job with 200 and `result_url` instead of 302.
        #[oai(default = "default_true")]
        redirect: Query<bool>,
        /// The `ETag` of a monitor seen before: while the job is queued or running and its monitor has not
        /// changed, the answer is **304** without a body. A finished job always gets its final answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// Long poll: hold the answer up to this many seconds (at most 60) until the monitor differs from
        /// `If-None-Match` (without it: until the monitor changes) or the job finishes. Answers at once when
        /// it already differs or the job has finished.
        #[oai(validator(minimum(value = "0"), maximum(value = "60")))]
        wait: Query<Option<u32>>,
    ) -> GetJobResponse {
        let tenant = caller(request).visible_tenant().map(str::to_owned);
        let read = match wait.0 {
            Some(secs) if secs > 0 => {
                // Without `If-None-Match`, wait for the next change of the monitor as it is now.
                let seen = if_none_match.0.clone();
                let deadline = waiting::deadline_after(secs);
                let redirect = redirect.0;
                let first = std::sync::OnceLock::new();
                waiting::wait_for(&self.state, id.0, tenant.as_deref(), deadline, |job| {
                    let tag = etag(job, redirect);
                    match &seen {
                        Some(seen) => !monitor::etag_matches(seen, &tag),
                        None => *first.get_or_init(|| tag.clone()) != tag,
                    }
                })
                .await
                .map_err(std::sync::Arc::new)
            }
            _ => self.state.reads.get(id.0, tenant.as_deref()).await,
        };
        let job = match read {
            Ok(Some(job)) => job,
            Ok(None) => return Problem::job_not_found().into(),
            Err(err) => return Problem::from_db(&err).into(),
        };
        let pool = &self.state.pool;
        let extras = async {
            let forecast = self.state.paces.forecast(pool, &job).await?;
            let callback = monitor::callback_state(pool, &job).await?;
            Ok::<_, store::Error>((forecast, callback))
        };
        match extras.await {
            Ok((forecast, callback)) => monitor::answer(
                job,
                forecast,
                callback,
                redirect.0,
                if_none_match.0.as_deref(),
            ),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Follow a job's status as Server-Sent Events
    ///
    /// One `status` event with the monitor now, then one at each change, ending after the event of a
    /// terminal status (`succeeded`, `failed`, `cancelled`). The stream holds no database connection while
    /// it waits.
    #[oai(
        path = "/v1/jobs/:id/events",
        method = "get",
        operation_id = "get_job_events"
    )]
    async fn get_job_events(&self, request: &Request, id: Path<Uuid>) -> JobEventsResponse {
        let tenant = caller(request).visible_tenant().map(str::to_owned);
        let job = match store::jobs::get(&self.state.pool, id.0, tenant.as_deref()).await {
            Ok(Some(job)) => job,
            Ok(None) => return Problem::job_not_found().into(),
            Err(err) => return Problem::from_db(&err).into(),
        };
        let changes = waiting::changes(self.state.clone(), job, tenant, |job| etag(job, false))
            .map(JobMonitor::from)
            .boxed();
        let events = changes.map(|monitor| {
            let data = poem_openapi::types::ToJSON::to_json_string(&monitor);
            poem::web::sse::Event::message(data).event_type("status")
        });
        let stream =
            poem::web::sse::SSE::new(events).keep_alive(std::time::Duration::from_secs(15));
        JobEventsResponse::Events(StatusEvents(poem::IntoResponse::into_response(stream)))
    }

    /// Get a job's result
    ///
    /// The stored result of a succeeded job, with the content type it was stored with. **409** (with
    /// `job_status`) while the job has not succeeded.
    #[oai(
        path = "/v1/jobs/:id/result",
        method = "get",
        operation_id = "get_job_result"
    )]
    async fn get_job_result(&self, request: &Request, id: Path<Uuid>) -> GetJobResultResponse {
        let caller = caller(request);
        match store::results::get(&self.state.pool, id.0, caller.visible_tenant()).await {
            Ok(ResultLookup::Found(result)) => GetJobResultResponse::Ok(ResultBody {
                content_type: result.content_type,
                body: result.body,
                headers: result.headers,
            }),
            Ok(ResultLookup::NotReady(status)) => {
                let detail = if status.is_terminal() {
                    format!("the job ended `{status}`; only a succeeded job has a result")
                } else {
                    format!("the job is `{status}`; poll its status monitor until it succeeds")
                };
                let mut problem =
                    Problem::conflict("job-not-succeeded", "The job has no result", detail);
                problem.job_status = Some(status.to_string());
                problem.into()
            }
            Ok(ResultLookup::NotFound) => Problem::job_not_found().into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Cancel a job
    ///
    /// A queued job is cancelled at once (**200**). A running job is asked to stop (**202**); its handler
    /// sees the request and ends the job `cancelled`. A job that already succeeded or failed cannot be
    /// cancelled (**409**).
    #[oai(
        path = "/v1/jobs/:id/cancel",
        method = "post",
        operation_id = "cancel_job"
    )]
    async fn cancel_job(&self, request: &Request, id: Path<Uuid>) -> CancelJobResponse {
        let caller = caller(request);
        match store::jobs::cancel(&self.state.pool, id.0, caller.visible_tenant()).await {
            Ok(Cancelled::Done(job)) => {
                crate::metrics::job_finished(&job.kind, JobStatus::Cancelled);
                CancelJobResponse::Cancelled(JsonBody(job.into()))
            }
            Ok(Cancelled::Already(job)) => CancelJobResponse::Cancelled(JsonBody(job.into())),
            Ok(Cancelled::Requested(job)) => {
                let location = monitor_path(job.id);
                CancelJobResponse::Requested(JsonBody(job.into()), location)
            }
            Ok(Cancelled::Finished(job)) => {
                let mut problem = Problem::conflict(
                    "job-finished",
                    "The job has already finished",
                    format!(
                        "the job ended `{}`; a finished job cannot be cancelled",
                        job.status
                    ),
                );
                problem.job_status = Some(job.status.to_string());
                problem.into()
            }
            Ok(Cancelled::NotFound) => Problem::job_not_found().into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// Delete a finished job
    ///
    /// Removes a `succeeded`, `failed` or `cancelled` job and its result. A queued or running job is left
    /// alone (**409**): cancel it first.
    #[oai(path = "/v1/jobs/:id", method = "delete", operation_id = "delete_job")]
    async fn delete_job(&self, request: &Request, id: Path<Uuid>) -> DeleteJobResponse {
        let caller = caller(request);
        match store::jobs::delete(&self.state.pool, id.0, caller.visible_tenant()).await {
            Ok(Deleted::Done) => DeleteJobResponse::Deleted,
            Ok(Deleted::NotFinished(status)) => {
                let mut problem = Problem::conflict(
                    "job-not-finished",
                    "The job has not finished",
                    format!("the job is `{status}`; cancel it or wait for it to finish before deleting it"),
                );
                problem.job_status = Some(status.to_string());
                problem.into()
            }
            Ok(Deleted::NotFound) => Problem::job_not_found().into(),
            Err(err) => Problem::from_db(&err).into(),
        }
    }

    /// List jobs
    ///
    /// Jobs newest first, optionally filtered by `status`, `kind` and `queue`. Pages are at most `limit`
    /// long (default 100, at most 500); pass `next_cursor` back as `cursor` for the next page, until it is
    /// absent. A page filtered by `kind` or `queue` (or by tenant, with API keys) looks at no more than the
    /// 10,000 newest jobs below its cursor, so it may hold fewer than `limit` jobs, even none, while
    /// `next_cursor` is set.
    #[oai(path = "/v1/jobs", method = "get", operation_id = "list_jobs")]
    async fn list_jobs(
        &self,
        request: &Request,
        /// Only jobs with this status.
        status: Query<Option<JobStatusName>>,
        /// Only jobs of this kind.
        kind: Query<Option<String>>,
        /// Only jobs in this queue.
        queue: Query<Option<String>>,
        /// Page size.
        #[oai(
            default = "default_list_limit",
            validator(minimum(value = "1"), maximum(value = "500"))
        )]
        limit: Query<u32>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<Uuid>>,
    ) -> ListJobsResponse {
        let before = cursor.0;
        // No stored kind or queue contains NUL (submissions reject it), and PostgreSQL cannot take one as a
        // parameter: such a filter matches nothing.
        let impossible =
            |filter: &Option<String>| filter.as_deref().is_some_and(|f| f.contains('\0'));
        if impossible(&kind.0) || impossible(&queue.0) {
            return ListJobsResponse::Ok(Json(JobList {
                jobs: Vec::new(),
                next_cursor: None,
            }));
        }
        let filter = store::jobs::ListFilter {
            status: status.0.map(JobStatus::from),
            kind: kind.0,
            queue: queue.0,
            tenant: caller(request).visible_tenant().map(str::to_owned),
            before,
            limit: i64::from(limit.0) + 1,
        };
        match store::jobs::list(&self.state.pool, &filter).await {
            Ok(store::jobs::Listed {
                mut jobs,
                window_end,
            }) => {
                let page = limit.0 as usize;
                let next_cursor = if jobs.len() > page {
                    jobs.truncate(page);
                    jobs.last().map(|job| job.id.to_string())
                } else {
                    // The page looked at all it may; older matches may remain below.
                    window_end.map(|end| end.to_string())
                };
                let jobs = jobs.into_iter().map(JobMonitor::from).collect();
                ListJobsResponse::Ok(Json(JobList { jobs, next_cursor }))
            }
            Err(err) if err.code().as_deref() == Some(store::jobs::QUERY_CANCELED) => {
                let mut problem = Problem::unavailable();
                problem.detail = Some(
                    "listing took longer than the server allows (2 s); narrow it with `status`, `kind` \
                     or `queue`, or page with a smaller `limit`"
                        .to_owned(),
                );
                problem.into()
            }
            Err(err) => Problem::from_db(&err).into(),
        }
    }
}

impl JobsApi {
    /// Checks the job's `callback_url` against `[webhooks]` and stores it in its normal form.
    async fn check_callback(&self, job: &mut crate::job::NewJob) -> Result<(), String> {
        if let Some(url) = job.callback_url.take() {
            job.callback_url = Some(self.state.webhooks.check(&url).await?);
        }
        Ok(())
    }

    /// `Prefer: wait=N` on a submit: hold the answer until the job finishes or N seconds pass.
    async fn wait_after_submit(&self, request: &Request, job: Job, secs: u32) -> SubmitJobResponse {
        let applied = format!("wait={secs}");
        let vary = "Prefer".to_owned();
        let tenant = caller(request).visible_tenant().map(str::to_owned);
        let deadline = waiting::deadline_after(secs);
        let now =
            match waiting::wait_for(&self.state, job.id, tenant.as_deref(), deadline, |_| false)
                .await
            {
                Ok(Some(now)) => now,
                // Deleted meanwhile, or the database failed while waiting: the job was accepted all the same.
                Ok(None) | Err(_) => job,
            };
        match now.status {
            JobStatus::Succeeded => SubmitJobResponse::Succeeded(
                JsonBody(now.clone().into()),
                result_path(now.id),
                applied,
                vary,
            ),
            JobStatus::Failed | JobStatus::Cancelled => {
                SubmitJobResponse::Finished(JsonBody(now.into()), applied, vary)
            }
            JobStatus::Queued | JobStatus::Running => {
                let location = monitor_path(now.id);
                let forecast = match self.state.paces.forecast(&self.state.pool, &now).await {
                    Ok(forecast) => forecast,
                    Err(_) => forecast::Forecast::none(),
                };
                let retry_after = forecast.retry_after;
                SubmitJobResponse::Accepted(
                    JsonBody(JobMonitor::from(now).with_forecast(&forecast)),
                    location,
                    retry_after,
                    Some(applied),
                    Some(vary),
                )
            }
        }
    }
}
