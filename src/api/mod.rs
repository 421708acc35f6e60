//! The HTTP API: the OpenAPI service, its document, Swagger UI, and the middleware every request passes.
//!
//! - [`jobs`]: the job operations (submit, status monitor, result, cancel, delete, list, batch).
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`problem`]: the problem-details error shape, used by every error answer.
//! - [`types`]: request and response schemas.
//! - [`submit`]: validation of submissions against the registered kinds, idempotency fingerprints.
//! - [`grouping`]: group commit, so concurrent submissions share one INSERT.

pub mod grouping;
pub mod health;
pub mod jobs;
pub mod problem;
pub mod submit;
pub mod types;

use poem::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use poem::http::HeaderValue;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::kinds::Registry;
use problem::{Problem, PROBLEM_JSON};

/// What the operations need: the database, the kinds this server accepts, and group commit.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub registry: Registry,
    pub groups: grouping::SubmitGroups,
}

impl ApiState {
    /// Must be called inside a tokio runtime: it starts the group-commit tasks.
    pub fn new(pool: PgPool, registry: Registry) -> ApiState {
        ApiState {
            groups: grouping::SubmitGroups::start(pool.clone()),
            pool,
            registry,
        }
    }
}

#[derive(Tags)]
pub enum ApiTags {
    /// Submit long-running work, follow it, fetch its result.
    Jobs,
    /// Liveness and readiness probes.
    Health,
}

const DESCRIPTION: &str = "\
jobdock runs long-running work behind HTTP (the Asynchronous Request-Reply pattern). \
`POST /v1/jobs` stores a job and answers **202 Accepted** at once, with `Location` (the job's status monitor) \
and `Retry-After`. Poll the status monitor: **200** while the job is queued or running, **302** to the \
result once it has succeeded. Then `GET` the result. Every error is `application/problem+json` \
(RFC 9457).";

type Service = OpenApiService<(jobs::JobsApi, health::HealthApi), ()>;

fn service(state: ApiState) -> Service {
    OpenApiService::new(
        (
            jobs::JobsApi {
                state: state.clone(),
            },
            health::HealthApi { state },
        ),
        "jobdock",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The OpenAPI document, as served and as committed in `openapi.yaml`.
#[derive(Debug, Clone)]
pub struct Document {
    pub json: String,
    pub yaml: String,
}

impl Document {
    fn of(service: &Service) -> Document {
        let mut document: Value = serde_json::from_str(&service.spec()).unwrap_or_else(|err| {
            // poem-openapi generated this JSON itself; failing to parse it is a bug caught by the tests.
            panic!("poem-openapi produced an unparsable document: {err}")
        });
        add_links(&mut document);
        canonical_header_names(&mut document);
        Document {
            json: serde_json::to_string_pretty(&document).unwrap_or_default(),
            yaml: serde_yaml::to_string(&document).unwrap_or_default(),
        }
    }
}

/// The document without a database: for `jobdock openapi` and the tests that compare it with
/// `openapi.yaml`. Must be called inside a tokio runtime.
pub fn document() -> Document {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    Document::of(&service(ApiState::new(pool, Registry::empty())))
}

/// OpenAPI links from the 202 of `submit_job` to the operations that take the new job's id, so client
/// generators and API fuzzers can follow a job from submission to result.
fn add_links(document: &mut Value) {
    let Some(accepted) = document.pointer_mut("/paths/~1v1~1jobs/post/responses/202") else {
        return;
    };
    let link = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": { "id": "$response.body#/id" },
            "description": description,
        })
    };
    accepted["links"] = json!({
        "get_job": link("get_job", "Poll the new job's status monitor."),
        "get_job_result": link("get_job_result", "Fetch the new job's result once it has succeeded."),
        "cancel_job": link("cancel_job", "Cancel the new job."),
        "delete_job": link("delete_job", "Delete the new job once it has finished."),
    });
}

/// poem-openapi writes response header names upper-cased (`LOCATION`); HTTP does not care, but people
/// reading the document and generated clients' docs do.
fn canonical_header_names(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| {
            operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
        })
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        if let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) {
            let renamed: serde_json::Map<String, Value> = std::mem::take(headers)
                .into_iter()
                .map(|(name, header)| (canonical_header_name(&name), header))
                .collect();
            *headers = renamed;
        }
    }
}

/// `RETRY-AFTER` → `Retry-After`.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Every route of the server, with its middleware.
pub fn routes(state: ApiState, max_body_bytes: usize) -> impl Endpoint {
    let service = service(state);
    let document = Document::of(&service);
    let docs_html = service
        .swagger_ui_html()
        .replace(&service.spec(), &document.json);
    let json = document.json.clone();
    let yaml = document.yaml.clone();
    Route::new()
        .nest("/", service)
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(json.clone())
            }),
        )
        .at(
            "/openapi.yaml",
            poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/yaml")
                    .body(yaml.clone())
            }),
        )
        .at(
            "/docs",
            poem::endpoint::make_sync(move |_| Html(docs_html.clone())),
        )
        .around(move |endpoint, request| limit_body(endpoint, request, max_body_bytes))
        .catch_all_error(|err: poem::Error| async move {
            problem_response(Problem::from_extractor_error(&err, false))
        })
}

/// Answers 413 for a body over the limit: at once when `Content-Length` says so, else by reading the body
/// with the limit (chunked uploads). Marks every API answer `Cache-Control: no-store`: job state changes
/// under the client's feet.
async fn limit_body<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
    max: usize,
) -> poem::Result<Response> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > max as u64 => {
            return Ok(problem_response(Problem::payload_too_large(max)))
        }
        Some(_) => {}
        None => {
            let body = request.take_body();
            if !body.is_empty() {
                match body.into_bytes_limit(max).await {
                    Ok(bytes) => request.set_body(bytes),
                    Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                        return Ok(problem_response(Problem::payload_too_large(max)))
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
    }
    let api = request.uri().path().starts_with("/v1/");
    let mut response = endpoint.call(request).await?.into_response();
    if api && !response.headers().contains_key(CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

fn problem_response(problem: Problem) -> Response {
    let status = problem.status_code();
    let body = serde_json::to_vec(&json!({
        "type": problem.ty,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }))
    .unwrap_or_default();
    let mut response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, PROBLEM_JSON)
        .body(body);
    if status == poem::http::StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            HeaderValue::from(problem::UNAVAILABLE_RETRY_AFTER_SECS),
        );
    }
    response
}
