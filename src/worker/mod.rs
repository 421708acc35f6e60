//! The worker runtime: claims due jobs, runs them as tokio tasks, keeps their leases alive, and hands them
//! back on shutdown.
//!
//! - [`fetch`]: the claim loop (one statement per batch, never more jobs than free slots).
//! - [`executor`]: runs one job and writes its outcome, fenced by its lease token.
//! - [`completer`]: writes the results of jobs that succeed together in one statement.
//! - [`heartbeat`]: extends every running job's lease in one statement, and notices cancellations and lost
//!   leases.
//! - [`listener`]: LISTEN/NOTIFY, which wakes the claim loop and reaches cancelled jobs at once.
//! - [`maintenance`]: the rescuer (expired leases) and the pruner (retention).
//! - [`running`]: the jobs this process is running.

mod completer;
pub mod executor;
mod fetch;
mod heartbeat;
mod listener;
pub mod maintenance;
pub mod running;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::kinds::Registry;
use running::{Running, StopReason};

/// How a worker pool behaves; see the flags of the same names in [`crate::config`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once. 0 runs no claim loop (maintenance still runs).
    pub slots: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub retention: Duration,
    /// Written on claimed jobs, to tell in the database which process runs what.
    pub worker_id: String,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        WorkerConfig {
            slots: settings.workers,
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            retry_base: settings.retry_base,
            retention: settings.retention,
            worker_id: format!(
                "{}:{}:{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// State shared by the runtime's tasks.
pub(crate) struct Shared {
    pub pool: PgPool,
    pub registry: Registry,
    pub config: WorkerConfig,
    pub running: Running,
    /// Wakes the claim loop: a NOTIFY arrived.
    pub wake: Notify,
    pub completer: completer::Completer,
}

/// A running worker pool. Call [`WorkerPool::shutdown`] to stop it gracefully.
pub struct WorkerPool {
    shared: Arc<Shared>,
    stop_claiming: CancellationToken,
    stop_background: CancellationToken,
    fetch: tokio::task::JoinHandle<JoinSet<()>>,
    background: JoinSet<()>,
}

impl WorkerPool {
    /// Starts the claim loop (when `config.slots > 0`), heartbeats, the listener and maintenance.
    pub fn start(pool: PgPool, registry: Registry, config: WorkerConfig) -> WorkerPool {
        let shared = Arc::new(Shared {
            completer: completer::start(pool.clone()),
            pool,
            registry,
            config,
            running: Running::default(),
            wake: Notify::new(),
        });
        let stop_claiming = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(heartbeat::run(shared.clone(), stop_background.clone()));
        background.spawn(listener::run(shared.clone(), stop_background.clone()));
        background.spawn(maintenance::run(shared.clone(), stop_background.clone()));
        let fetch = tokio::spawn(fetch::run(shared.clone(), stop_claiming.clone()));
        WorkerPool {
            shared,
            stop_claiming,
            stop_background,
            fetch,
            background,
        }
    }

    /// How many jobs are running in this pool right now.
    pub fn running(&self) -> usize {
        self.shared.running.len()
    }

    /// Stops claiming, lets running jobs finish for up to `grace`, then stops the rest and releases them to
    /// `queued` at once (other replicas pick them up without waiting for the lease to expire).
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_claiming.cancel();
        let mut tasks = match self.fetch.await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::error!(error = %err, "claim loop ended abnormally");
                JoinSet::new()
            }
        };
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                ?grace,
                "waiting for running jobs to finish"
            );
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            let leases = self.shared.running.leases();
            tracing::warn!(
                jobs = leases.len(),
                "grace period over; releasing unfinished jobs to the queue"
            );
            self.shared.running.stop_all(StopReason::Shutdown);
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            match crate::store::leases::release_many(&self.shared.pool, &leases).await {
                Ok(released) => tracing::info!(released = released.len(), "released jobs"),
                Err(err) => {
                    tracing::error!(error = %err, "releasing jobs failed; they will be rescued when their leases expire")
                }
            }
        }
        self.stop_background.cancel();
        while self.background.join_next().await.is_some() {}
    }
}
