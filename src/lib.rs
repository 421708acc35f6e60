//! jobdock: a persistent job server. Clients hand it long-running work over HTTP and get **202 Accepted**
//! at once; workers in any number of replicas run the work from a PostgreSQL queue; clients poll a status
//! monitor that redirects to the result (the Asynchronous Request-Reply pattern).
//!
//! A map of the crate:
//! - [`config`]: settings from flags, environment and `jobdock.toml` (kinds, `[server]`), validated once.
//! - [`client`]: the command-line client (`jobdock submit`, `status`, `result`, `jobs`, `cancel`).
//! - [`batch`]: group commit — many callers' items flushed in one statement.
//! - [`app`]: wiring — connect, migrate, serve the API and run workers, shut down gracefully.
//! - [`api`]: the HTTP API (poem-openapi) by resource (jobs, kinds, the external-worker protocol), its
//!   OpenAPI document and Swagger UI.
//! - [`attempt`]: how an attempt ends — retry policy, the `error` shape, failed/cancelled/requeued writes.
//! - [`job`]: the job, its status machine, and a validated request to create one.
//! - [`tenant`]: tenants, scopes and the caller of a request (API keys).
//! - [`keys`]: `jobdock keys create|list|revoke`.
//! - [`kinds`]: the [`Handler`] trait, the [`Registry`] of kinds, payload schemas, the built-in kinds and
//!   the configured `http` and `exec` kinds.
//! - [`worker`]: the runtime — dispatcher (claims and results in one statement), executor, heartbeats, LISTEN/NOTIFY.
//! - [`maintenance`]: rescue of expired leases, pruning, statistics: a service on every replica.
//! - [`webhooks`]: completion callbacks — allow list, address guard, signatures, the delivery loop.
//! - [`metrics`]: the Prometheus series and `/metrics`.
//! - [`store`]: all SQL.
//!
//! To embed jobdock with kinds of your own, implement [`Handler`], add it to [`Registry::builtin`] and pass
//! the registry to [`Application::build`]; `examples/embed.rs` shows the whole program.

pub mod api;
pub mod app;
pub mod attempt;
pub mod batch;
pub mod client;
pub mod config;
pub mod job;
pub mod keys;
pub mod kinds;
pub mod maintenance;
pub mod metrics;
pub mod store;
pub mod tenant;
pub mod webhooks;
pub mod worker;

pub use app::Application;
pub use config::Settings;
pub use job::{Job, JobStatus, NewJob};
pub use kinds::{Handler, JobContext, JobError, Output, Registry};
