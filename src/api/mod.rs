//! The HTTP API: the OpenAPI service, its document, Swagger UI, and the middleware every request passes.
//!
//! - [`jobs`]: the job operations (submit, status monitor, result, cancel, delete, list, batch).
//! - [`worker`]: the external-worker protocol (claim, heartbeat, complete, fail).
//! - [`kinds`]: the kinds this deployment accepts (`GET /v1/kinds`).
//! - [`auth`]: API keys: who the caller is and what it may do.
//! - [`connections`]: header and idle timeouts, the connection cap, problem details for what hyper refuses.
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`problem`]: the problem-details error shape, used by every error answer.
//! - [`wording`]: poem-openapi's messages in the API's own words.
//! - [`document`]: the OpenAPI document as served and committed.
//! - [`middleware`]: what every request passes (body limit, errors outside operations, caching).

pub mod auth;
pub mod connections;
pub mod document;
pub mod health;
pub mod jobs;
pub mod json_body;
pub mod kinds;
mod middleware;
pub mod problem;
pub mod watch;
pub mod wording;
pub mod worker;

pub use document::{document, Document};

use poem::web::Html;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::kinds::Registry;
use crate::worker::signals::Signals;
use middleware::{middleware, AllowedMethods};

/// What the operations need: the database, the kinds this server accepts, group commit, the hints that
/// wake long polls, and the settings that shape answers.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub registry: Registry,
    pub groups: jobs::grouping::SubmitGroups,
    pub completions: worker::completions::CompleteGroups,
    pub signals: Signals,
    /// Cancelled at shutdown: long polls end at once instead of holding the shutdown up.
    pub shutdown: CancellationToken,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub max_result_bytes: usize,
    /// Origins browsers may call the API from; empty: no CORS.
    pub cors_origins: Vec<String>,
    /// API keys; disabled unless set with [`ApiState::with_auth`].
    pub auth: auth::Auth,
    /// The open connections, so the middleware can mark requests in flight on them.
    pub connections: connections::Connections,
    /// `[tenants.NAME] max_running`, which external workers' claims honour too.
    pub caps: std::sync::Arc<crate::store::leases::TenantCaps>,
    /// Requests waiting for a job to change (long polls, `Prefer: wait`, event streams).
    pub watchers: watch::Watchers,
    /// Kinds' recent run times, for forecasts.
    pub paces: jobs::forecast::Paces,
    /// `[webhooks]`: which callback URLs submissions may carry.
    pub webhooks: std::sync::Arc<crate::webhooks::WebhookSettings>,
    /// Group reads for the status monitor.
    pub reads: jobs::reads::ReadGroups,
    /// Tells workers about submitted jobs once they have committed.
    pub announcer: jobs::announce::Announcer,
}

impl ApiState {
    /// State with the default settings and no long-poll hints (polling only). Must be called inside a
    /// tokio runtime: it starts the group-commit tasks.
    pub fn new(pool: PgPool, registry: Registry) -> ApiState {
        let defaults = Settings::default();
        // Kept connections for the grouped statements of requests (submissions, status reads): half the
        // pool, so the rest stays free for claims and everything else.
        let lanes = crate::store::lanes::Lanes::new(
            pool.clone(),
            usize::try_from(pool.options().get_max_connections() / 2).unwrap_or(1),
        );
        let announcer = jobs::announce::Announcer::start(pool.clone());
        ApiState {
            groups: jobs::grouping::SubmitGroups::start(
                pool.clone(),
                lanes.clone(),
                announcer.clone(),
            ),
            announcer,
            completions: worker::completions::CompleteGroups::start(pool.clone()),
            reads: jobs::reads::ReadGroups::start(lanes),
            pool,
            registry,
            signals: Signals::none(),
            shutdown: CancellationToken::new(),
            lease: defaults.lease,
            poll_interval: defaults.poll_interval,
            retry_base: defaults.retry_base,
            max_result_bytes: defaults.max_result_bytes,
            cors_origins: Vec::new(),
            auth: auth::Auth::disabled(),
            caps: Default::default(),
            connections: Default::default(),
            watchers: Default::default(),
            paces: Default::default(),
            webhooks: Default::default(),
        }
    }

    /// Hands submitted jobs straight to `intake`'s workers while they are idle, and wakes them directly when
    /// jobs are queued.
    pub fn with_intake(mut self, intake: crate::worker::intake::Intake) -> ApiState {
        self.announcer = self.announcer.with_local(intake.clone());
        self.groups = self.groups.with_intake(intake, self.announcer.clone());
        self
    }

    /// Asks callers for API keys as `auth` says.
    pub fn with_auth(mut self, auth: auth::Auth) -> ApiState {
        self.auth = auth;
        self
    }

    /// Takes the settings the API answers by.
    pub fn with_settings(mut self, settings: &Settings) -> ApiState {
        self.lease = settings.lease;
        self.poll_interval = settings.poll_interval;
        self.retry_base = settings.retry_base;
        self.max_result_bytes = settings.max_result_bytes;
        self.cors_origins = settings.cors_origins.clone();
        self.caps = std::sync::Arc::new(crate::worker::tenant_caps(settings));
        self.webhooks = std::sync::Arc::new(settings.webhooks.clone());
        self
    }

    /// Wakes long polls with `signals`, and ends them when `shutdown` is cancelled.
    pub fn with_signals(mut self, signals: Signals, shutdown: CancellationToken) -> ApiState {
        self.signals = signals;
        self.watchers = watch::Watchers::start(self.pool.clone(), shutdown.clone());
        self.shutdown = shutdown;
        self
    }
}

#[derive(Tags)]
pub enum ApiTags {
    /// Submit long-running work, follow it, fetch its result.
    Jobs,
    /// The kinds of job this deployment accepts.
    Kinds,
    /// For external workers: claim jobs of `external` kinds, keep their leases, report the outcome.
    Worker,
    /// Liveness and readiness probes.
    Health,
}

const DESCRIPTION: &str = "\
jobdock runs long-running work behind HTTP (the Asynchronous Request-Reply pattern). \
`POST /v1/jobs` stores a job and answers **202 Accepted** at once, with `Location` (the job's status monitor) \
and `Retry-After`. Poll the status monitor: **200** while the job is queued or running, **302** to the \
result once it has succeeded. Then `GET` the result. Every error is `application/problem+json` \
(RFC 9457).";

pub(crate) type Service = OpenApiService<
    (
        jobs::JobsApi,
        kinds::KindsApi,
        worker::WorkerApi,
        health::HealthApi,
    ),
    (),
>;

pub(crate) fn service(state: ApiState) -> Service {
    OpenApiService::new(
        (
            jobs::JobsApi {
                state: state.clone(),
            },
            kinds::KindsApi {
                state: state.clone(),
            },
            worker::WorkerApi {
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
    let cors = cors(&state.cors_origins);
    let limits = middleware::BodyLimits {
        body: max_body_bytes,
        result: state.max_result_bytes,
    };
    let auth = state.auth.clone();
    let connections = state.connections.clone();
    let service = service(state);
    let document = Document::of(&service);
    let docs_html = service
        .swagger_ui_html()
        .replace(&service.spec(), &document.json);
    let methods = std::sync::Arc::new(AllowedMethods::of(&document.json));
    let json = document.json.clone();
    let yaml = document.yaml.clone();
    let routes = Route::new()
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
            middleware(endpoint, request, limits, methods.clone(), auth.clone())
        });
    // CORS outside the routes, so a preflight is answered before routing (which would say 405 to
    // OPTIONS); outermost, the mark that a request is in flight on its connection.
    let routes = match cors {
        Some(cors) => routes.with(cors).boxed(),
        None => routes.boxed(),
    };
    routes.around(move |endpoint, request| {
        let in_flight = connections.request(request.remote_addr());
        async move {
            let mut answer = endpoint.call(request).await?;
            if in_flight.is_some() && is_event_stream(&answer) {
                // The answer goes on after the endpoint returns: the request is in flight until its last
                // event, so the connection is neither idle nor closed to admit others meanwhile.
                let events = futures_util::StreamExt::map(
                    answer.take_body().into_bytes_stream(),
                    move |chunk| {
                        let _in_flight = &in_flight;
                        chunk
                    },
                );
                answer.set_body(poem::Body::from_bytes_stream(events));
            }
            Ok(answer)
        }
    })
}

fn is_event_stream(answer: &Response) -> bool {
    answer
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// Bytes as lower-case hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The caller of a request, as the authentication middleware found it. A request that did not pass it is
/// no one: it sees no tenant's jobs (fail closed).
pub(crate) fn caller(request: &poem::Request) -> crate::tenant::Caller {
    request
        .extensions()
        .get::<crate::tenant::Caller>()
        .cloned()
        .unwrap_or(crate::tenant::Caller {
            tenant: String::new(),
            scopes: crate::tenant::Scopes::default(),
        })
}

/// CORS for the configured origins (`--cors-origins`), exposing the headers a browser client reads.
fn cors(origins: &[String]) -> Option<poem::middleware::Cors> {
    if origins.is_empty() {
        return None;
    }
    Some(
        poem::middleware::Cors::new()
            .allow_origins(origins.iter().map(String::as_str))
            .allow_methods(["GET", "POST", "DELETE"])
            .allow_headers([
                "content-type",
                "authorization",
                "idempotency-key",
                "prefer",
                "if-none-match",
                "lease-token",
                "x-request-id",
            ])
            .expose_headers(["location", "retry-after", "etag", "preference-applied"])
            .max_age(600),
    )
}
