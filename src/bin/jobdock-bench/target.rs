//! What a scenario measures: a fresh database, and a jobdock server in this process.

use std::time::Duration;

use anyhow::Context;
use jobdock::{Application, Registry, Settings};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

/// A database of the run's own, dropped at the end.
pub struct BenchDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDatabase {
    /// Creates a database beside `base_url` and applies jobdock's migrations to it.
    pub async fn create(base_url: &str) -> anyhow::Result<BenchDatabase> {
        let name = format!("jobdock_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(base_url)
            .await
            .with_context(|| format!("connecting to {base_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let (server, _) = base_url
            .rsplit_once('/')
            .context("the database URL must name a database")?;
        let database = BenchDatabase {
            admin_url: base_url.to_owned(),
            url: format!("{server}/{name}"),
            name,
        };
        let pool = database.pool().await?;
        jobdock::store::db::migrate(&pool).await?;
        pool.close().await;
        Ok(database)
    }

    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&self.url)
            .await?)
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// A jobdock server running in this process.
pub struct Server {
    pub base: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(
        database: &BenchDatabase,
        workers: usize,
        registry: Registry,
    ) -> anyhow::Result<Server> {
        let settings = Settings {
            database_url: database.url.clone(),
            listen: "127.0.0.1:0".parse()?,
            workers,
            max_connections: 20,
            shutdown_grace: Duration::from_secs(5),
            ..Settings::default()
        };
        let app = Application::build(settings, registry).await?;
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Server { base, stop, task })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// An HTTP client with enough idle connections for the scenario's concurrency.
pub fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}
