//! The worker runtime: claims due jobs, runs them as tokio tasks, keeps their leases alive, and hands them
//! back on shutdown.
//!
//! - [`dispatch`]: the hot path: writes the results of jobs that succeeded and claims the next batch in
//!   one statement, and starts each job when a slot is free.
//! - [`slots`]: how many jobs run at once, in all and per kind with a `max_concurrency`; and how far
//!   ahead to claim.
//! - [`local_queue`]: claimed jobs waiting for a slot (their leases kept alive, given back on shutdown).
//! - [`intake`]: jobs the API of the same process stores and claims in one commit while the workers idle.
//! - [`executor`]: runs one job and writes its outcome, fenced by its lease token.
//! - [`handoff`]: how an executor hands a result to the dispatcher (so neither imports the other).
//! - [`heartbeat`]: extends every running job's lease in one statement, and notices cancellations and lost
//!   leases.
//! - [`listener`]: LISTEN/NOTIFY, which wakes the dispatcher and reaches cancelled jobs at once.
//! - [`signals`]: "jobs are due" hints for other waiters in the process (external workers' claims).
//! - [`pauses`]: kinds paused by back-pressure, left out of claims until their pause ends.
//! - [`running`]: the jobs this process is running.

mod dispatch;
pub mod executor;
mod handoff;
mod heartbeat;
pub mod intake;
mod listener;
mod local_queue;
pub mod pauses;
pub mod running;
pub mod signals;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::kinds::Registry;
use crate::store::leases::TenantCaps;
use running::Running;

/// How a worker pool behaves; see the flags of the same names in [`crate::config`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once. 0 claims nothing (maintenance still runs).
    pub slots: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    /// Written on claimed jobs, to tell in the database which process runs what.
    pub worker_id: String,
    /// `[tenants.NAME] max_running`.
    pub caps: Arc<TenantCaps>,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        WorkerConfig {
            slots: settings.workers,
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            retry_base: settings.retry_base,
            caps: Arc::new(tenant_caps(settings)),
            worker_id: format!(
                "{}:{}:{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }
}

/// The tenant caps of `[tenants.NAME] max_running`.
pub fn tenant_caps(settings: &Settings) -> TenantCaps {
    TenantCaps::new(
        settings
            .tenants
            .iter()
            .filter_map(|tenant| Some((tenant.name.clone(), tenant.max_running?))),
    )
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
    /// Kept connections for the dispatcher's statements (see [`crate::store::lanes`]).
    pub lanes: crate::store::lanes::Lanes,
    pub registry: Registry,
    pub config: WorkerConfig,
    pub running: Running,
    /// Wakes the dispatcher: a NOTIFY arrived.
    pub wake: Notify,
    /// The payloads of the job notifications since the dispatcher last looked: the tenant whose jobs were
    /// submitted, or empty when jobs came back to the queue some other way.
    pub notified: std::sync::Mutex<Vec<String>>,
    /// Wakes everyone else waiting for jobs.
    pub signals: signals::SignalSender,
    /// Where executors hand results to the dispatcher.
    pub finished: mpsc::Sender<handoff::Finished>,
    /// Kinds the dispatcher does not claim for now.
    pub pauses: pauses::Pauses,
    /// How many jobs run at once, in all and per kind.
    pub slots: Arc<slots::Slots>,
    /// No claim is in flight and no claimed job waits for a slot: the API may hand the dispatcher jobs
    /// ([`intake`]).
    pub idle: std::sync::atomic::AtomicBool,
}

/// A running worker pool. Call [`WorkerPool::shutdown`] to stop it gracefully.
pub struct WorkerPool {
    shared: Arc<Shared>,
    stop_claiming: CancellationToken,
    stop_now: CancellationToken,
    stop_background: CancellationToken,
    dispatch: tokio::task::JoinHandle<()>,
    background: JoinSet<()>,
    signals: signals::Signals,
    intake: intake::Intake,
}

impl WorkerPool {
    /// Starts the dispatcher (it claims only when `config.slots > 0`), heartbeats and the listener.
    /// Maintenance is a service of its own ([`crate::maintenance`]).
    pub fn start(pool: PgPool, registry: Registry, config: WorkerConfig) -> WorkerPool {
        // Each held job hands in at most one result at a time.
        let (finished, results) = mpsc::channel(config.slots + slots::MAX_WAITING + 1);
        let (signal_sender, signals) = signals::Signals::new();
        let slots = slots::Slots::new(config.slots, registry.concurrency_limits());
        let shared = Arc::new(Shared {
            slots,
            idle: std::sync::atomic::AtomicBool::new(false),
            finished,
            lanes: crate::store::lanes::Lanes::new(pool.clone(), dispatch::lanes_for(&pool)),
            pool,
            registry,
            config,
            running: Running::default(),
            wake: Notify::new(),
            notified: std::sync::Mutex::new(Vec::new()),
            signals: signal_sender,
            pauses: pauses::Pauses::default(),
        });
        let stop_claiming = CancellationToken::new();
        let stop_now = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(heartbeat::run(shared.clone(), stop_background.clone()));
        background.spawn(listener::run(shared.clone(), stop_background.clone()));
        if shared.registry.can_pause() {
            background.spawn(pauses::refresh(
                shared.pool.clone(),
                shared.pauses.clone(),
                stop_background.clone(),
            ));
        }
        let stop = dispatch::Stop {
            claiming: stop_claiming.clone(),
            now: stop_now.clone(),
        };
        let (handed, intake_receiver) = mpsc::unbounded_channel();
        let intake = intake::Intake::new(shared.clone(), handed);
        let dispatch = tokio::spawn(dispatch::run(
            shared.clone(),
            results,
            intake_receiver,
            stop,
        ));
        WorkerPool {
            intake,
            shared,
            stop_claiming,
            stop_now,
            stop_background,
            dispatch,
            background,
            signals,
        }
    }

    /// Hints that jobs are due, from this pool's LISTEN connection, for other waiters in the process.
    pub fn signals(&self) -> signals::Signals {
        self.signals.clone()
    }

    /// Where the API of the same process hands jobs it stores while these workers are idle.
    pub fn intake(&self) -> intake::Intake {
        self.intake.clone()
    }

    /// How many jobs are running in this pool right now.
    pub fn running(&self) -> usize {
        self.shared.running.len()
    }

    /// Stops claiming, gives claimed jobs that have not started back at once, lets running jobs finish for
    /// up to `grace`, then stops the rest and releases them to `queued` at once (other replicas pick them up
    /// without waiting for the lease to expire).
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_claiming.cancel();
        let running = self.shared.running.len();
        if running > 0 {
            tracing::info!(running, ?grace, "waiting for running jobs to finish");
        }
        let finished_in_grace = tokio::time::timeout(grace, &mut self.dispatch)
            .await
            .is_ok();
        if !finished_in_grace {
            self.stop_now.cancel();
            if let Err(err) = (&mut self.dispatch).await {
                tracing::error!(error = %err, "the dispatcher ended abnormally");
            }
        }
        // Left registered: jobs stopped when the grace period ran out, and jobs that never started if
        // giving them back failed the first time.
        let leases = self.shared.running.leases();
        if !leases.is_empty() {
            if !finished_in_grace {
                tracing::warn!(
                    jobs = leases.len(),
                    "grace period over; releasing unfinished jobs to the queue"
                );
            }
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
