//! What every request passes: the body limit, problem details for errors raised outside the operations
//! (unknown route, wrong method), and `Cache-Control: no-store` on the API's answers.

use poem::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response};
use serde_json::{json, Value};

use super::auth::{required_scope, Auth};
use super::connections::BODY_STALL_TIMEOUT;
use super::problem::{self, Problem, PROBLEM_JSON};

/// Every request passes here. Answers 413 for a body over the limit: at once when `Content-Length` says
/// so, else by reading the body with the limit (chunked uploads). Renders errors from outside the
/// operations (unknown route, wrong method) as problem details, with `Allow` on a 405. Marks every API
/// answer `Cache-Control: no-store`: job state changes under the client's feet.
pub(super) async fn middleware<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    request: Request,
    limits: BodyLimits,
    methods: std::sync::Arc<AllowedMethods>,
    auth: Auth,
) -> poem::Result<Response> {
    use tracing::Instrument;
    // The caller's request id when it is a sensible one, else a new one: echoed, and on every log line
    // written while the request is handled.
    let id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", id = %id);
    let mut response = handle(endpoint, request, limits, methods.clone(), auth)
        .instrument(span.clone())
        .await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    crate::metrics::http_request(
        methods.route_of(&path),
        response.status().as_u16(),
        started.elapsed(),
    );
    span.in_scope(|| {
        tracing::info!(
            target: "jobdock::access",
            %method,
            path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    Ok(response)
}

const X_REQUEST_ID: &str = "x-request-id";

async fn handle<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
    limits: BodyLimits,
    methods: std::sync::Arc<AllowedMethods>,
    auth: Auth,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    // Who is calling, before anything else is looked at: a caller without a valid key learns nothing.
    let denied = match required_scope(request.method(), &path) {
        None => None,
        Some(scope) => match auth.authorize(request.headers(), scope) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                None
            }
            Err(problem) => Some(*problem),
        },
    };
    let max = limits.for_path(&path);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut response = if let Some(problem) = denied {
        denied_response(problem)
    } else {
        match declared {
        _ if changes_state_with_a_foreign_body(&request, &path) => problem_response(Problem::new(
            poem::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "requests that change a job carry no body or an `application/json` one; nothing was changed",
        )),
        Some(length) if length > max as u64 => problem_response(Problem::payload_too_large(max)),
        _ => match read_body_within(&mut request, max).await {
            Err(too_large) => too_large,
            Ok(()) => match endpoint.call(request).await {
                Ok(response) => response.into_response(),
                Err(err) if err.is::<poem::error::ParsePathError>() => {
                    // A path segment that does not decode (`%ff`) names nothing that exists: the same 404
                    // as any other malformed id.
                    problem_response(
                        if path.starts_with("/v1/jobs/") || path.starts_with("/v1/worker/jobs/") {
                            Problem::job_not_found()
                        } else {
                            Problem::not_found("no such resource")
                        },
                    )
                }
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
        }
    };
    if path.starts_with("/v1/") && !response.headers().contains_key(CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // A result is served in the content type its job gave it: browsers must not guess another, and no
    // page of jobdock's but Swagger UI has any business inside a frame.
    let headers = response.headers_mut();
    headers.insert(
        poem::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !path.starts_with("/docs") {
        headers.insert(
            poem::http::header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        );
    }
    Ok(response)
}

/// 401 (with the `WWW-Authenticate` challenge) or 403.
fn denied_response(problem: Problem) -> Response {
    let unauthorized = problem.status_code() == poem::http::StatusCode::UNAUTHORIZED;
    let mut response = problem_response(problem);
    if unauthorized {
        response.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"jobdock\""),
        );
    }
    response
}

/// A state-changing request whose body is not JSON: what a cross-origin HTML form can send without a
/// CORS preflight (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`). Refused before
/// any operation runs, so a page on another site cannot cancel or delete a job. A worker's result upload
/// (`.../complete`) carries any content type by design.
fn changes_state_with_a_foreign_body(request: &Request, path: &str) -> bool {
    use poem::http::Method;
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) || !path.starts_with("/v1/")
        || (path.starts_with("/v1/worker/jobs/") && path.ends_with("/complete"))
    {
        return false;
    }
    match request.headers().get(CONTENT_TYPE) {
        None => false,
        Some(value) => {
            let essence = value
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence != "application/json" && !essence.ends_with("+json")
        }
    }
}

/// The largest body a request may carry: results uploaded by external workers have a limit of their own.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub body: usize,
    pub result: usize,
}

impl BodyLimits {
    fn for_path(&self, path: &str) -> usize {
        if path.starts_with("/v1/worker/jobs/") && path.ends_with("/complete") {
            // The operation answers a result over its own limit with a 413 of its own.
            self.body.max(self.result)
        } else {
            self.body
        }
    }
}

/// Reads the body into memory, within the limit and without stalling: `Err` is the answer, 413 when it
/// is too large (also for a chunked body, which has no `Content-Length` to refuse it by), 408 when
/// nothing arrives for [`BODY_STALL_TIMEOUT`] (a client that sends half a body does not hold a request
/// and its connection forever).
async fn read_body_within(request: &mut Request, max: usize) -> Result<(), Response> {
    use futures_util::StreamExt;
    let body = request.take_body();
    if body.is_empty() {
        return Ok(());
    }
    let mut chunks = body.into_bytes_stream();
    // A body that arrives in one chunk (the usual case) is kept as it came, not copied.
    let mut first: Option<bytes::Bytes> = None;
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout(BODY_STALL_TIMEOUT, chunks.next()).await {
            Err(_) => {
                return Err(problem_response(Problem::new(
                    poem::http::StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "The request body stalled",
                    format!(
                        "no part of the request body arrived for {} s; nothing was changed",
                        BODY_STALL_TIMEOUT.as_secs()
                    ),
                )))
            }
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => {
                let held = first.as_ref().map_or(0, |first| first.len()) + bytes.len();
                if held + chunk.len() > max {
                    return Err(problem_response(Problem::payload_too_large(max)));
                }
                match first.take() {
                    None if bytes.is_empty() => first = Some(chunk),
                    earlier => {
                        if let Some(earlier) = earlier {
                            bytes.extend_from_slice(&earlier);
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                }
            }
            Ok(Some(Err(err))) => {
                return Err(problem_response(Problem::bad_request(format!(
                    "the request body could not be read: {err}"
                ))))
            }
        }
    }
    match first {
        Some(only) => request.set_body(only),
        None => request.set_body(bytes),
    }
    Ok(())
}

/// The methods each documented path allows, for the `Allow` header of a 405.
pub(super) struct AllowedMethods {
    paths: Vec<DocumentedPath>,
}

struct DocumentedPath {
    segments: Vec<String>,
    /// The path as documented (`/v1/jobs/{id}`): the metric label.
    route: String,
    allow: HeaderValue,
    /// How many segments are parameters: the path with fewer is the better match.
    parameters: usize,
}

impl AllowedMethods {
    pub(super) fn of(document_json: &str) -> AllowedMethods {
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
                let segments: Vec<String> = segments(path).map(str::to_owned).collect();
                paths.push(DocumentedPath {
                    route: format!("/{}", segments.join("/")),
                    parameters: segments.iter().filter(|s| is_parameter(s)).count(),
                    segments,
                    allow,
                });
            }
        }
        AllowedMethods { paths }
    }

    /// The documented path a request path matches (`/v1/jobs/{id}`), or `other`: a metric label that
    /// cannot grow with the ids in URLs.
    pub(super) fn route_of(&self, path: &str) -> &str {
        self.matching(path)
            .map_or("other", |documented| documented.route.as_str())
    }

    /// The `Allow` value for a request path: template segments (`{id}`) match any one segment.
    fn for_path(&self, path: &str) -> Option<HeaderValue> {
        self.matching(path)
            .map(|documented| documented.allow.clone())
    }

    fn matching(&self, path: &str) -> Option<&DocumentedPath> {
        let wanted = segments(path).count();
        self.paths
            .iter()
            .filter(|documented| {
                documented.segments.len() == wanted
                    && documented
                        .segments
                        .iter()
                        .zip(segments(path))
                        .all(|(t, w)| is_parameter(t) || t == w)
            })
            // `/v1/jobs/batch` is a better match for itself than `/v1/jobs/{id}`.
            .min_by_key(|documented| documented.parameters)
    }
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{')
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/')
}

pub(super) fn problem_response(problem: Problem) -> Response {
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
