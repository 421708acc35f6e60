//! Maintenance: a service of its own, started by `app` on every replica (also one that runs no
//! in-process workers, since external workers' leases need rescuing too) and safe on all of them at once.
//! The rescuer returns jobs with expired leases to the queue, and the pruner deletes finished jobs past
//! the retention period, both in bounded batches; while `jobs` grows fast, its planner statistics are
//! refreshed so cached query plans keep up with its size; and where autovacuum does not keep jobdock's
//! tables bounded, they are vacuumed (see [`crate::store::vacuum`]).

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store::maintenance;

/// Rows one rescue or prune statement touches at most, so no statement holds many locks for long.
pub const BATCH: i64 = 1000;
/// The pruner runs ten times per retention period, at most once a minute and at least once a second, so
/// a job is gone within about a tenth of the retention after it expires.
fn prune_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The rescuer runs twice per lease, so an expired lease is found within half a lease of expiring.
fn rescue_every(lease: Duration) -> Duration {
    (lease / 2).clamp(Duration::from_millis(200), Duration::from_secs(15))
}

/// How often the size of `jobs` is compared with what the planner's statistics say.
const STATISTICS_EVERY: Duration = Duration::from_secs(1);
/// How often dead rows are counted (see [`crate::store::vacuum`]).
const VACUUM_CHECK_EVERY: Duration = Duration::from_secs(10);

/// What maintenance needs to know; see the flags of the same names.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    pub lease: Duration,
    pub retention: Duration,
}

impl MaintenanceConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        MaintenanceConfig {
            lease: settings.lease,
            retention: settings.retention,
        }
    }
}

/// The running maintenance service. Call [`Maintenance::stop`] to end it.
pub struct Maintenance {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Maintenance {
    /// Starts the rescuer, the pruner and the statistics check on `pool`.
    pub fn start(pool: PgPool, config: MaintenanceConfig) -> Maintenance {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(pool, config, stop.clone()));
        Maintenance { stop, task }
    }

    /// Stops after the statement in progress, if any.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "maintenance ended abnormally");
        }
    }
}

struct Shared {
    pool: PgPool,
    config: MaintenanceConfig,
}

async fn run(pool: PgPool, config: MaintenanceConfig, stop: CancellationToken) {
    let shared = Shared { pool, config };
    let mut rescue = tokio::time::interval(rescue_every(shared.config.lease));
    let mut prune = tokio::time::interval(prune_every(shared.config.retention));
    let mut statistics = tokio::time::interval(STATISTICS_EVERY);
    let mut vacuum = tokio::time::interval(VACUUM_CHECK_EVERY);
    for timer in [&mut rescue, &mut prune, &mut statistics, &mut vacuum] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = rescue.tick() => rescue_all(&shared).await,
            _ = prune.tick() => prune_all(&shared, &stop).await,
            _ = statistics.tick() => match maintenance::analyze_if_grown(&shared.pool).await {
                Ok(true) => tracing::debug!("refreshed planner statistics of the grown jobs table"),
                Ok(false) => {}
                Err(err) => tracing::debug!(error = %err, "refreshing statistics failed"),
            },
            _ = vacuum.tick() => vacuum_if_due(&shared.pool).await,
        }
    }
}

/// Vacuums jobdock's tables that dead rows have outgrown, where autovacuum does not.
pub async fn vacuum_if_due(pool: &PgPool) {
    let tables = match crate::store::vacuum::due(pool, Default::default()).await {
        Ok(tables) if !tables.is_empty() => tables,
        Ok(_) => return,
        Err(err) => {
            tracing::debug!(error = %err, "counting dead rows failed");
            return;
        }
    };
    let started = std::time::Instant::now();
    match crate::store::vacuum::vacuum(pool, &tables).await {
        Ok(true) => tracing::info!(
            tables = %tables.join(", "),
            ms = started.elapsed().as_millis() as u64,
            "vacuumed tables that dead rows had outgrown (autovacuum is not keeping them bounded)"
        ),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "VACUUM failed; trying again later"),
    }
}

async fn rescue_all(shared: &Shared) {
    loop {
        match maintenance::rescue_expired(&shared.pool, BATCH).await {
            Ok(rescued) => {
                for job in &rescued {
                    tracing::info!(job = %job.id, status = %job.status, "rescued a job whose lease expired");
                    if job.status.is_terminal() {
                        crate::metrics::job_finished(&job.kind, job.status);
                    }
                }
                if (rescued.len() as i64) < BATCH {
                    return;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "rescue failed");
                return;
            }
        }
    }
}

/// Prunes in batches until nothing is left past retention.
async fn prune_all(shared: &Shared, stop: &CancellationToken) {
    while !stop.is_cancelled() {
        match maintenance::prune_finished(&shared.pool, shared.config.retention, BATCH).await {
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::info!(deleted, "pruned finished jobs past retention");
                }
                if (deleted as i64) < BATCH {
                    break;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "prune failed");
                return;
            }
        }
    }
    // Finished webhook deliveries go after the same retention as jobs (a day at least, so a delivery's
    // state stays readable while its retries could still be running).
    let keep = shared.config.retention.max(Duration::from_secs(86_400));
    while !stop.is_cancelled() {
        match crate::store::deliveries::prune(&shared.pool, keep.as_secs_f64(), BATCH).await {
            Ok(deleted) if (deleted as i64) == BATCH => continue,
            Ok(_) => return,
            Err(err) => {
                tracing::debug!(error = %err, "prune of deliveries failed");
                return;
            }
        }
    }
}
