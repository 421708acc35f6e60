//! What each jobs operation answers: one response enum per operation, each variant documented for the
//! API's users (these doc comments are what Swagger UI and generated clients show).

// Response enums are built once per request and moved straight into a response; boxing the monitor would
// only add an allocation.
#![allow(clippy::large_enum_variant)]

use poem_openapi::payload::Json;

use crate::api::json_body::JsonBody;
use poem_openapi::ApiResponse;

use super::types::{BatchAccepted, JobList, JobMonitor, ResultBody, StatusEvents};
use crate::api::problem::{api_response, Problem};

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "SubmitJobResponse::bad_request_handler")]
    pub enum SubmitJobResponse {
        /// The job is stored and will run. `Location` is its status monitor; poll it after `Retry-After`
        /// seconds. A repeat of an earlier request with the same `Idempotency-Key` gets the same job.
        /// With `Prefer: wait=N`: the job did not finish within N seconds.
        #[oai(status = 202)]
        Accepted(
            JsonBody<JobMonitor>,
            #[oai(header = "Location")] String,
            #[oai(header = "Retry-After")] u32,
            #[oai(header = "Preference-Applied")] Option<String>,
            #[oai(header = "Vary")] Option<String>,
        ),
        /// With `Prefer: wait=N`: the job failed or was cancelled within N seconds (see `error`).
        #[oai(status = 200)]
        Finished(
            JsonBody<JobMonitor>,
            #[oai(header = "Preference-Applied")] String,
            #[oai(header = "Vary")] String,
        ),
        /// With `Prefer: wait=N`: the job succeeded within N seconds; its result is at `Location`.
        #[oai(status = 303)]
        Succeeded(
            JsonBody<JobMonitor>,
            #[oai(header = "Location")] String,
            #[oai(header = "Preference-Applied")] String,
            #[oai(header = "Vary")] String,
        ),
        /// The body is not valid JSON, misses `kind`, names an unknown kind, or has a payload the kind rejects.
        /// Nothing was stored.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// The body is larger than the server's limit. Nothing was stored.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
        /// The body is not `application/json`. Nothing was stored.
        #[oai(status = 415, content_type = "application/problem+json")]
        UnsupportedMediaType(Json<Problem>),
        /// The `Idempotency-Key` was used before with a different request. Nothing was stored.
        #[oai(status = 422, content_type = "application/problem+json")]
        Unprocessable(Json<Problem>),
    }
    id_is_path = false;
    problems { 400 => BadRequest, 413 => PayloadTooLarge, 415 => UnsupportedMediaType, 422 => Unprocessable }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "SubmitBatchResponse::bad_request_handler")]
    pub enum SubmitBatchResponse {
        /// Every job is stored; one status monitor per job, in the order sent. A repeat of an earlier batch
        /// with the same `Idempotency-Key` gets the same jobs.
        #[oai(status = 202)]
        Accepted(JsonBody<BatchAccepted>, #[oai(header = "Retry-After")] u32),
        /// A job is invalid (`index` names the first one) or the batch is empty or too long. Nothing was stored.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// The body is larger than the server's limit. Nothing was stored.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
        /// The body is not `application/json`. Nothing was stored.
        #[oai(status = 415, content_type = "application/problem+json")]
        UnsupportedMediaType(Json<Problem>),
        /// The `Idempotency-Key` was used before with a different batch. Nothing was stored.
        #[oai(status = 422, content_type = "application/problem+json")]
        Unprocessable(Json<Problem>),
    }
    id_is_path = false;
    problems { 400 => BadRequest, 413 => PayloadTooLarge, 415 => UnsupportedMediaType, 422 => Unprocessable }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "GetJobResponse::bad_request_handler")]
    pub enum GetJobResponse {
        /// The job has not succeeded: `queued` or `running` (poll again after `Retry-After` seconds), or
        /// finished as `failed` or `cancelled` (see `error`; no `Retry-After`). With `redirect=false`, also a
        /// `succeeded` job, with `result_url`.
        #[oai(status = 200)]
        Ok(
            JsonBody<JobMonitor>,
            #[oai(header = "Retry-After")] Option<u32>,
            #[oai(header = "Cache-Control")] String,
            #[oai(header = "ETag")] String,
        ),
        /// The job has succeeded: its result is at `Location`.
        #[oai(status = 302)]
        Found(
            JsonBody<JobMonitor>,
            #[oai(header = "Location")] String,
            #[oai(header = "Cache-Control")] String,
            #[oai(header = "ETag")] String,
        ),
        /// The monitor is unchanged since the `ETag` sent in `If-None-Match`, and the job is still queued or
        /// running: poll again after `Retry-After` seconds.
        #[oai(status = 304)]
        NotModified(
            #[oai(header = "ETag")] String,
            #[oai(header = "Retry-After")] u32,
            #[oai(header = "Cache-Control")] String,
        ),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
        /// A query parameter is invalid.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
    }
    id_is_path = true;
    problems { 404 => NotFound, 400 => BadRequest }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "JobEventsResponse::bad_request_handler")]
    pub enum JobEventsResponse {
        /// Server-Sent Events: one `status` event with the monitor now and one at each change, ending after
        /// the event of a terminal status. Reconnect for more when the stream ends earlier (it lasts up to an
        /// hour).
        #[oai(status = 200)]
        Events(StatusEvents),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
    }
    id_is_path = true;
    problems { 404 => NotFound }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "GetJobResultResponse::bad_request_handler")]
    pub enum GetJobResultResponse {
        /// The result, with the content type the job stored it with.
        #[oai(status = 200)]
        Ok(ResultBody),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
        /// The job has not succeeded (yet, or ever): `job_status` says where it is.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
    }
    id_is_path = true;
    problems { 404 => NotFound, 409 => Conflict }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "CancelJobResponse::bad_request_handler")]
    pub enum CancelJobResponse {
        /// The job is now `cancelled` (it was queued, or was already cancelled).
        #[oai(status = 200)]
        Cancelled(JsonBody<JobMonitor>),
        /// The job is running and has been asked to stop; poll the status monitor to see it end.
        #[oai(status = 202)]
        Requested(JsonBody<JobMonitor>, #[oai(header = "Location")] String),
        /// The job already succeeded or failed; nothing changed.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
    }
    id_is_path = true;
    problems { 404 => NotFound, 409 => Conflict }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "DeleteJobResponse::bad_request_handler")]
    pub enum DeleteJobResponse {
        /// The job and its result are gone.
        #[oai(status = 204)]
        Deleted,
        /// The job is queued or running; cancel it first, or wait for it to finish.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
    }
    id_is_path = true;
    problems { 404 => NotFound, 409 => Conflict }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "ListJobsResponse::bad_request_handler")]
    pub enum ListJobsResponse {
        /// A page of jobs, newest first. Pass `next_cursor` as `cursor` for the next page.
        #[oai(status = 200)]
        Ok(Json<JobList>),
        /// A filter, `limit` or `cursor` is invalid.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
    }
    id_is_path = false;
    problems { 400 => BadRequest }
}
