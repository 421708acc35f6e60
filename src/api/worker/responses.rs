//! What each external-worker operation answers.

use poem_openapi::payload::Json;
use poem_openapi::ApiResponse;

use super::types::{ClaimedJobs, HeartbeatAnswer};
use crate::api::problem::{api_response, Problem};

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "ClaimResponse::bad_request_handler")]
    pub enum ClaimResponse {
        /// The jobs claimed (none when nothing was due within `wait_secs`).
        #[oai(status = 200)]
        Ok(Json<ClaimedJobs>),
        /// The body is invalid, or a kind is unknown or not declared `external`.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// The body is larger than the server's limit.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
        /// The body is not `application/json`.
        #[oai(status = 415, content_type = "application/problem+json")]
        UnsupportedMediaType(Json<Problem>),
    }
    id_is_path = false;
    problems { 400 => BadRequest, 413 => PayloadTooLarge, 415 => UnsupportedMediaType }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "HeartbeatResponse::bad_request_handler")]
    pub enum HeartbeatResponse {
        /// The lease is renewed.
        #[oai(status = 200)]
        Ok(Json<HeartbeatAnswer>),
        /// The body is invalid.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
        /// `lease-lost`: the token no longer holds the job (rescued, timed out, or ended). Stop working on it.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
        /// The body is larger than the server's limit.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
        /// The body is not `application/json`.
        #[oai(status = 415, content_type = "application/problem+json")]
        UnsupportedMediaType(Json<Problem>),
    }
    id_is_path = true;
    problems { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 413 => PayloadTooLarge, 415 => UnsupportedMediaType }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "CompleteResponse::bad_request_handler")]
    pub enum CompleteResponse {
        /// The job has succeeded with this result (also when this call repeats one that did).
        #[oai(status = 204)]
        Completed,
        /// `Lease-Token` is missing or not a UUID.
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
        /// `lease-lost`: the token no longer holds the job; the result was not stored.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
        /// The result is larger than `--max-result-bytes`; nothing was stored.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
    }
    id_is_path = true;
    problems { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 413 => PayloadTooLarge }
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "FailResponse::bad_request_handler")]
    pub enum FailResponse {
        /// The attempt has ended: the job is queued for a retry, or `failed`, or `cancelled`.
        #[oai(status = 204)]
        Failed,
        /// The body is invalid (`error.title` is required).
        #[oai(status = 400, content_type = "application/problem+json")]
        BadRequest(Json<Problem>),
        /// No job has this id.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
        /// `lease-lost`: the token no longer holds the job; nothing changed.
        #[oai(status = 409, content_type = "application/problem+json")]
        Conflict(Json<Problem>),
        /// The body is larger than the server's limit.
        #[oai(status = 413, content_type = "application/problem+json")]
        PayloadTooLarge(Json<Problem>),
        /// The body is not `application/json`.
        #[oai(status = 415, content_type = "application/problem+json")]
        UnsupportedMediaType(Json<Problem>),
    }
    id_is_path = true;
    problems { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 413 => PayloadTooLarge, 415 => UnsupportedMediaType }
}
