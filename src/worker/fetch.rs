//! The claim loop: claims as many due jobs as there are free slots, in one statement, and spawns each.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{executor, Shared};
use crate::store::leases::{self, Lease};

/// The most jobs one claim takes. With more slots than this, the next batch is claimed while the
/// previous one's results are still being written, so the database is never idle between batches.
const MAX_CLAIM: usize = 500;
/// How long a busy claim loop waits, once a slot frees up, for more slots to free up.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(1);
/// The longest a claim loop backs off after database errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `stop` is cancelled; returns the tasks of the jobs still running, for shutdown to drain.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if shared.config.slots == 0 {
        stop.cancelled().await;
        return tasks;
    }
    let slots = Arc::new(Semaphore::new(shared.config.slots));
    let kinds = shared.registry.kinds();
    let mut error_backoff = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            return tasks;
        }
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}

        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.cancelled() => return tasks,
                permit = slots.acquire() => drop(permit),
            }
            // Jobs that finish together free their slots together, when their batch of results commits:
            // a moment's pause lets the claim take all of them instead of the first one.
            tokio::time::sleep(CLAIM_COOLDOWN).await;
            continue;
        }
        // Not raced against `stop`: dropping the claim mid-flight does not undo it (the statement may
        // already have committed on the server), and the jobs it claimed would be left `running` with no
        // worker until their leases expire. The claim is one short statement; shutdown waits for it, then
        // drains or releases what it claimed.
        let claimed = leases::claim_available(
            &shared.pool,
            &kinds,
            free.min(MAX_CLAIM) as i64,
            shared.config.lease,
            &shared.config.worker_id,
        )
        .await;
        match claimed {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(100);
                let full = jobs.len() == free.min(MAX_CLAIM);
                for job in jobs {
                    // Cannot fail: `free` permits were available and only this loop takes them.
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    // Registered before the task is spawned: shutdown can abort a task before it first
                    // runs, and must still find the lease to release the job.
                    let stop = shared.running.insert(Lease {
                        id: job.id,
                        token: job.lease_token,
                    });
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        executor::execute(shared, job, stop).await;
                        drop(permit);
                    });
                }
                if full {
                    // There may be more due jobs: claim again as soon as a slot is free.
                    continue;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?error_backoff, "claiming jobs failed");
                tokio::select! {
                    _ = stop.cancelled() => return tasks,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(MAX_ERROR_BACKOFF);
                continue;
            }
        }
        // Idle: the queue had fewer due jobs than free slots. Wait for a notification or the poll interval
        // (a job finishing here frees a slot but adds no work).
        tokio::select! {
            _ = stop.cancelled() => return tasks,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}
