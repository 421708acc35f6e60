//! The HTTP API: the OpenAPI service, its document, Swagger UI, and the middleware every request passes.
//!
//! - [`jobs`]: the job operations (submit, status monitor, result, cancel, delete, list, batch).
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`problem`]: the problem-details error shape, used by every error answer.
//! - [`responses`]: what each jobs operation answers.
//! - [`types`]: request and response schemas.
//! - [`submit`]: validation of submissions against the registered kinds, idempotency fingerprints.
//! - [`grouping`]: group commit, so concurrent submissions share one INSERT.

pub mod grouping;
pub mod health;
pub mod jobs;
pub mod problem;
pub mod responses;
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
        close_request_schemas(&mut document);
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

/// Says in the schema what the handlers enforce: `deny_unknown_fields` rejects unknown fields, and `kind`
/// and `queue` may not contain NUL, so clients and fuzzers know both are errors. (The NUL rule is checked
/// by hand in `submit::parse_submission`: poem-openapi's `pattern` validator compiles its regex on every
/// request, which cost a batch submission most of its CPU.)
fn close_request_schemas(document: &mut Value) {
    for name in ["SubmitJob", "SubmitBatch"] {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    }
    for field in ["kind", "queue"] {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/SubmitJob/properties/{field}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("pattern".to_owned(), Value::from("^[^\\x00]*$"));
        }
    }
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
    let methods = std::sync::Arc::new(AllowedMethods::of(&document.json));
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
        .around(move |endpoint, request| {
            middleware(endpoint, request, max_body_bytes, methods.clone())
        })
}

/// Every request passes here. Answers 413 for a body over the limit: at once when `Content-Length` says
/// so, else by reading the body with the limit (chunked uploads). Renders errors from outside the
/// operations (unknown route, wrong method) as problem details, with `Allow` on a 405. Marks every API
/// answer `Cache-Control: no-store`: job state changes under the client's feet.
async fn middleware<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
    max: usize,
    methods: std::sync::Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut response = match declared {
        Some(length) if length > max as u64 => problem_response(Problem::payload_too_large(max)),
        _ => match read_body_within(&mut request, max, declared.is_some()).await {
            Err(too_large) => too_large,
            Ok(()) => match endpoint.call(request).await {
                Ok(response) => response.into_response(),
                Err(err) => {
                    let mut response = problem_response(Problem::from_extractor_error(&err, false));
                    if err.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
                        if let Some(allow) = methods.for_path(&path) {
                            response
                                .headers_mut()
                                .insert(poem::http::header::ALLOW, allow);
                        }
                    }
                    response
                }
            },
        },
    };
    if path.starts_with("/v1/") && !response.headers().contains_key(CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// Reads a body without `Content-Length` (chunked) into memory with the limit; `Err` is the 413 answer.
async fn read_body_within(
    request: &mut Request,
    max: usize,
    has_length: bool,
) -> Result<(), Response> {
    if has_length {
        return Ok(());
    }
    let body = request.take_body();
    if body.is_empty() {
        return Ok(());
    }
    match body.into_bytes_limit(max).await {
        Ok(bytes) => {
            request.set_body(bytes);
            Ok(())
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            Err(problem_response(Problem::payload_too_large(max)))
        }
        Err(err) => Err(problem_response(Problem::bad_request(format!(
            "the request body could not be read: {err}"
        )))),
    }
}

/// The methods each documented path allows, for the `Allow` header of a 405.
struct AllowedMethods {
    paths: Vec<(Vec<String>, HeaderValue)>,
}

impl AllowedMethods {
    fn of(document_json: &str) -> AllowedMethods {
        let document: Value = serde_json::from_str(document_json).unwrap_or(Value::Null);
        let mut paths = Vec::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            let mut methods: Vec<String> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(method, _)| method.to_ascii_uppercase())
                .collect();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".to_owned());
            }
            methods.sort();
            if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
                paths.push((segments(path), allow));
            }
        }
        AllowedMethods { paths }
    }

    /// The `Allow` value for a request path: template segments (`{id}`) match any one segment.
    fn for_path(&self, path: &str) -> Option<HeaderValue> {
        let wanted = segments(path);
        let is_parameter = |segment: &String| segment.starts_with('{');
        self.paths
            .iter()
            .filter(|(template, _)| {
                template.len() == wanted.len()
                    && template
                        .iter()
                        .zip(&wanted)
                        .all(|(t, w)| is_parameter(t) || t == w)
            })
            // `/v1/jobs/batch` is a better match for itself than `/v1/jobs/{id}`.
            .min_by_key(|(template, _)| template.iter().filter(|t| is_parameter(t)).count())
            .map(|(_, allow)| allow.clone())
    }
}

fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect()
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
