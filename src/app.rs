//! Wiring: connect and migrate, bind the listener, run the API and the workers side by side, shut down
//! gracefully.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::Server;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Auth;
use crate::api::connections::{Connections, LimitedAcceptor};
use crate::api::{self, ApiState};
use crate::config::{AuthMode, Settings};
use crate::kinds::Registry;
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::store;
use crate::worker::{WorkerConfig, WorkerPool};

/// A jobdock server, connected, migrated and bound, ready to run.
pub struct Application {
    settings: Settings,
    registry: Registry,
    auth: Auth,
    pool: PgPool,
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
}

impl Application {
    /// Connects to the database (creating it if missing), applies migrations and binds the listen address.
    ///
    /// # Errors
    /// When PostgreSQL is unreachable, migrations fail, or the address cannot be bound; the message says
    /// which, and what to do.
    pub async fn build(settings: Settings, registry: Registry) -> anyhow::Result<Application> {
        let registry = registry
            .with_configured(settings.kinds.clone())
            .map_err(anyhow::Error::msg)?;
        let pool = store::db::connect(&settings.database_url, settings.db_max_connections).await?;
        store::db::migrate(&pool).await?;
        let auth = Auth::start(pool.clone(), settings.auth)
            .await
            .context("cannot read the API keys")?;
        check_exposure(&settings, &auth)?;
        let acceptor = TcpListener::bind(settings.listen)
            .into_acceptor()
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (set --listen or JOBDOCK_LISTEN)",
                    settings.listen
                )
            })?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .context("the listener has no local address")?;
        Ok(Application {
            settings,
            registry,
            auth,
            pool,
            acceptor,
            local_addr,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves the API and runs the workers until `shutdown` completes, then drains in-flight requests and
    /// shuts the workers down gracefully (see [`WorkerPool::shutdown`]).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        let maintenance = Maintenance::start(
            self.pool.clone(),
            MaintenanceConfig::from_settings(&self.settings),
        );
        let workers = WorkerPool::start(
            self.pool.clone(),
            self.registry.clone(),
            WorkerConfig::from_settings(&self.settings),
        );
        tracing::info!(
            listen = %self.local_addr,
            workers = self.settings.workers,
            database = %self.settings.redacted_database_url(),
            "jobdock is serving; API docs at http://{}/docs",
            self.local_addr
        );
        let connections = Connections::default();
        let mut state = ApiState::new(self.pool.clone(), self.registry.clone());
        state.connections = connections.clone();
        let routes = api::routes(
            state
                .with_settings(&self.settings)
                .with_auth(self.auth.clone())
                .with_signals(workers.signals(), stop.clone())
                .with_intake(workers.intake()),
            self.settings.max_body_bytes,
        );
        let depth = crate::metrics::count_depth(self.pool.clone(), stop.clone());
        let deliverer = crate::webhooks::deliver::Deliverer::start(
            self.pool.clone(),
            self.settings.webhooks.clone(),
        );
        let grace = self.settings.shutdown_grace;
        let max_connections = self
            .settings
            .max_connections
            .unwrap_or_else(api::connections::default_max_connections);
        let acceptor = LimitedAcceptor::new(self.acceptor, connections, max_connections);
        let http = Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            routes,
            stop.clone().cancelled_owned(),
            Some(grace),
        );
        let work = async {
            stop.cancelled().await;
            tracing::info!("shutting down: no new jobs are claimed");
            workers.shutdown(grace).await;
        };
        let (served, ()) = tokio::join!(http, work);
        if let Some(deliverer) = deliverer {
            deliverer.stop().await;
        }
        maintenance.stop().await;
        let _ = depth.await;
        self.pool.close().await;
        tracing::info!("jobdock stopped");
        served.context("the HTTP server failed")
    }
}

/// Refuses to serve every job to anyone who can reach a non-loopback address (`--auth auto` without keys),
/// before the address is bound; warns when `--auth keys` will refuse every caller.
fn check_exposure(settings: &Settings, auth: &Auth) -> anyhow::Result<()> {
    let ip = settings.listen.ip();
    match settings.auth {
        AuthMode::Auto if !auth.required() && !ip.is_loopback() => anyhow::bail!(
            "refusing to listen on {} without API keys: anyone who reaches it could read, cancel and \
             delete every job. Create a key first (`jobdock keys create --tenant NAME --name NAME \
             --scopes submit,read`), listen on 127.0.0.1, or pass --auth none to run open on purpose",
            settings.listen
        ),
        AuthMode::Keys if !auth.has_keys() => tracing::warn!(
            "--auth keys and no API key exists: every API request is refused until one is created \
             (`jobdock keys create`)"
        ),
        AuthMode::None if !ip.is_loopback() => tracing::warn!(
            listen = %settings.listen,
            "--auth none on a non-loopback address: anyone who reaches it may do anything"
        ),
        _ => {}
    }
    Ok(())
}

/// Runs workers only (`jobdock worker`) until `shutdown` completes, then shuts them down gracefully.
pub async fn run_workers(
    settings: Settings,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let registry = registry
        .with_configured(settings.kinds.clone())
        .map_err(anyhow::Error::msg)?;
    let pool = store::db::connect(&settings.database_url, settings.db_max_connections).await?;
    store::db::migrate(&pool).await?;
    let maintenance = Maintenance::start(pool.clone(), MaintenanceConfig::from_settings(&settings));
    let workers = WorkerPool::start(
        pool.clone(),
        registry,
        WorkerConfig::from_settings(&settings),
    );
    let deliverer =
        crate::webhooks::deliver::Deliverer::start(pool.clone(), settings.webhooks.clone());
    tracing::info!(workers = settings.workers, database = %settings.redacted_database_url(), "jobdock worker is running");
    shutdown.await;
    tracing::info!("shutting down: no new jobs are claimed");
    workers.shutdown(settings.shutdown_grace).await;
    if let Some(deliverer) = deliverer {
        deliverer.stop().await;
    }
    maintenance.stop().await;
    pool.close().await;
    tracing::info!("jobdock worker stopped");
    Ok(())
}

/// Applies migrations and returns (`jobdock migrate`).
pub async fn run_migrations(settings: &Settings) -> anyhow::Result<()> {
    let pool = store::db::connect(&settings.database_url, settings.db_max_connections).await?;
    store::db::migrate(&pool).await?;
    pool.close().await;
    tracing::info!(database = %settings.redacted_database_url(), "migrations applied");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("received SIGINT"),
        _ = terminate => tracing::info!("received SIGTERM"),
    }
}
