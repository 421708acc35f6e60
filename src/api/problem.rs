//! RFC 9457 problem details: the one error shape of the API.
//!
//! Handlers build a [`Problem`] with the constructor for the situation; each operation's response enum turns
//! it into its own variant through `impl_problem_responses!`, so every error, from a parse failure to a
//! database outage, leaves as `application/problem+json` with the status it names.

use poem::http::StatusCode;
use poem_openapi::Object;

use crate::store;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying after a 503.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

/// A problem-details object (RFC 9457).
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[oai(rename = "type")]
    pub ty: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person to read.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// For 409 on a result: the job's current status.
    #[oai(skip_serializing_if_is_none)]
    pub job_status: Option<String>,
    /// For a rejected batch: the position (from 0) of the first invalid job.
    #[oai(skip_serializing_if_is_none)]
    pub index: Option<u32>,
    /// For a payload its kind's schema refused: every violation, where and what.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<PayloadError>>,
}

/// One way a payload breaks its kind's schema.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "PayloadError")]
pub struct PayloadError {
    /// Where in the payload, as a JSON Pointer (`""` is the payload itself; a missing required property
    /// is reported at its parent and named in `message`).
    pub pointer: String,
    pub message: String,
}

impl From<crate::kinds::schema::SchemaViolation> for PayloadError {
    fn from(violation: crate::kinds::schema::SchemaViolation) -> Self {
        PayloadError {
            pointer: violation.pointer,
            message: violation.message,
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            ty: format!("urn:jobdock:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            job_status: None,
            index: None,
            errors: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The request is invalid",
            detail,
        )
    }

    pub fn job_not_found() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "job-not-found",
            "No such job",
            "no job has this id (it may never have existed, or it was deleted or pruned)",
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, slug, title, detail)
    }

    pub fn payload_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "The request body is too large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
            "The database is unavailable",
            "jobdock cannot reach PostgreSQL right now; nothing was changed. Retry after the time in Retry-After.",
        )
    }

    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "something unexpected went wrong; it has been logged",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem for an error from poem or poem-openapi before the operation ran: unparsable body or
    /// parameter, wrong content type, unknown route.
    ///
    /// `id_is_path` makes a malformed `{id}` a 404 (no job can have it) rather than a 400.
    pub fn from_extractor_error(err: &poem::Error, id_is_path: bool) -> Problem {
        use poem_openapi::error::{
            ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
        };

        if let Some(param) = err.downcast_ref::<ParseParamError>() {
            if id_is_path && param.name == "id" {
                return Problem::job_not_found();
            }
            return Problem::bad_request(format!(
                "parameter `{}` is invalid: {}",
                param.name,
                super::wording::plain(&param.reason)
            ));
        }
        if let Some(path) = err.downcast_ref::<ParsePathError>() {
            // poem-openapi names path parameters `param0`, ...: never show that. The only path parameter is
            // the job id, and no job has a malformed one.
            if id_is_path {
                return Problem::job_not_found();
            }
            return Problem::bad_request(format!("the path is invalid: {}", path.reason));
        }
        if let Some(payload) = err.downcast_ref::<ParseRequestPayloadError>() {
            return Problem::bad_request(clean_payload_reason(&payload.reason));
        }
        if let Some(content_type) = err.downcast_ref::<ContentTypeError>() {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("{content_type}; send `Content-Type: application/json`"),
            );
        }
        match err.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "The request body is too large",
                err.to_string(),
            ),
            StatusCode::NOT_FOUND => Problem::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this resource does not support the request's method",
            ),
            status if status.is_client_error() => Problem::new(
                status,
                "invalid-request",
                "The request is invalid",
                err.to_string(),
            ),
            _ => {
                tracing::error!(error = %err, "unexpected error before the operation ran");
                Problem::internal()
            }
        }
    }

    /// The problem for a store error: 503 when the database is unreachable, 400 for data it rejected,
    /// else 500.
    pub fn from_db(err: &store::Error) -> Problem {
        match err {
            store::Error::Unavailable(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Problem::unavailable()
            }
            store::Error::Rejected(_) => {
                tracing::info!(error = %err, "the database rejected a value from a request");
                Problem::bad_request(
                    "a value in the request cannot be stored (for example, it contains a NUL character)",
                )
            }
            store::Error::Database(_) | store::Error::Inconsistent(_) => {
                tracing::error!(error = ?err, "database error");
                Problem::internal()
            }
        }
    }
}

/// poem-openapi's messages name internal types and validator syntax; say what a client can act on.
fn clean_payload_reason(reason: &str) -> String {
    let plain = super::wording::plain(reason);
    if plain.is_empty() {
        "the request body is not valid JSON".to_owned()
    } else {
        format!("the request body is invalid: {plain}")
    }
}

/// Implements `From<Problem>` and a bad-request handler for an operation's response enum.
///
/// Each listed status maps to its variant; any other status goes to the 500 variant. The 503 variant also
/// carries `Retry-After`.
macro_rules! impl_problem_responses {
    ($response:ident, id_is_path = $id_is_path:expr, { $($status:literal => $variant:ident),* $(,)? }) => {
        impl From<$crate::api::problem::Problem> for $response {
            fn from(problem: $crate::api::problem::Problem) -> Self {
                use poem_openapi::payload::Json;
                match problem.status {
                    $($status => $response::$variant(Json(problem)),)*
                    503 => $response::Unavailable(
                        Json(problem),
                        $crate::api::problem::UNAVAILABLE_RETRY_AFTER_SECS,
                    ),
                    _ => $response::Internal(Json(problem)),
                }
            }
        }

        impl $response {
            fn bad_request_handler(err: poem::Error) -> Self {
                $crate::api::problem::Problem::from_extractor_error(&err, $id_is_path).into()
            }
        }
    };
}
pub(crate) use impl_problem_responses;

/// Defines an operation's response enum with the variants every operation shares (503 with
/// `Retry-After` when the database is unreachable, 500 for the unexpected), and implements
/// `From<Problem>` and the bad-request handler for it (see `impl_problem_responses!`).
macro_rules! api_response {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($variants:tt)* }
        id_is_path = $id_is_path:expr;
        problems { $($status:literal => $variant:ident),* $(,)? }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($variants)*
            /// The database is unreachable; nothing was changed. Retry after `Retry-After` seconds.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u32),
            /// An unexpected error; it has been logged.
            #[oai(status = 500, content_type = "application/problem+json")]
            Internal(Json<Problem>),
        }
        $crate::api::problem::impl_problem_responses!($name, id_is_path = $id_is_path, {
            $($status => $variant),*
        });
    };
}
pub(crate) use api_response;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_reasons_do_not_leak_type_names() {
        let cleaned =
            clean_payload_reason("failed to parse \"SubmitJob\": field `kind` is required");
        assert_eq!(
            cleaned,
            "the request body is invalid: field `kind` is required"
        );
    }
}
