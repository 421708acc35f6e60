//! The HTTP API: the OpenAPI service, its document, Swagger UI, and the middleware every request passes.
//!
//! - [`jobs`]: the job operations (submit, status monitor, result, cancel, delete, list, batch).
//! - [`kinds`]: the kinds this deployment accepts (`GET /v1/kinds`).
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`problem`]: the problem-details error shape, used by every error answer.
//! - [`document`]: the OpenAPI document as served and committed.
//! - [`middleware`]: what every request passes (body limit, errors outside operations, caching).

pub mod document;
pub mod health;
pub mod jobs;
pub mod kinds;
mod middleware;
pub mod problem;

pub use document::{document, Document};

use poem::web::Html;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;

use crate::kinds::Registry;
use middleware::{middleware, AllowedMethods};

/// What the operations need: the database, the kinds this server accepts, and group commit.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub registry: Registry,
    pub groups: jobs::grouping::SubmitGroups,
}

impl ApiState {
    /// Must be called inside a tokio runtime: it starts the group-commit tasks.
    pub fn new(pool: PgPool, registry: Registry) -> ApiState {
        ApiState {
            groups: jobs::grouping::SubmitGroups::start(pool.clone()),
            pool,
            registry,
        }
    }
}

#[derive(Tags)]
pub enum ApiTags {
    /// Submit long-running work, follow it, fetch its result.
    Jobs,
    /// The kinds of job this deployment accepts.
    Kinds,
    /// Liveness and readiness probes.
    Health,
}

const DESCRIPTION: &str = "\
jobdock runs long-running work behind HTTP (the Asynchronous Request-Reply pattern). \
`POST /v1/jobs` stores a job and answers **202 Accepted** at once, with `Location` (the job's status monitor) \
and `Retry-After`. Poll the status monitor: **200** while the job is queued or running, **302** to the \
result once it has succeeded. Then `GET` the result. Every error is `application/problem+json` \
(RFC 9457).";

pub(crate) type Service = OpenApiService<(jobs::JobsApi, kinds::KindsApi, health::HealthApi), ()>;

pub(crate) fn service(state: ApiState) -> Service {
    OpenApiService::new(
        (
            jobs::JobsApi {
                state: state.clone(),
            },
            kinds::KindsApi {
                state: state.clone(),
            },
            health::HealthApi { state },
        ),
        "jobdock",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
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
