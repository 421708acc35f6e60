//! The intake: how a `serve` process's API gives jobs it is storing straight to its own workers when
//! they are idle, so the jobs start without waiting for a notification and a claim, and their rows are
//! written once instead of twice (DESIGN §4's pickup path, one commit instead of two).
//!
//! Only when the workers have room nobody here is waiting for: no claim is in flight and no claimed job
//! waits for a slot ([`Shared::idle`]), a slot (and room under the kind's `max_concurrency`) is free, the
//! kind is not paused, the job's tenant has no `max_running` cap and the job is due now. Anything else
//! goes the usual way, through the queue. A job another process queued just before is not passed over
//! for long: its notification makes the dispatcher claim at once, which closes the intake until that
//! claim is answered, and it starts beside the handed jobs. The jobs are claimed in the statement that stores
//! them (a submission group, see `api::jobs::grouping`), under this process's lease, so every guarantee of
//! a claimed job holds: heartbeats, cancellation, rescue if this process dies, release on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::slots::Slot;
use super::Shared;
use crate::job::NewJob;
use crate::store::leases::{self, ClaimedJob, Lease};

/// A job stored and claimed by the API, with the slot reserved for it.
pub(super) struct Handed {
    pub job: ClaimedJob,
    pub slot: Slot,
}

/// The API's handle on its process's worker pool. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Handed>,
}

impl Intake {
    pub(super) fn new(shared: Arc<Shared>, sender: mpsc::UnboundedSender<Handed>) -> Intake {
        Intake { shared, sender }
    }

    /// A slot for each of `jobs` the workers may start now, in order; `None` for those that must go
    /// through the queue.
    pub fn reserve(&self, jobs: &[NewJob]) -> Vec<Option<Reservation>> {
        let shared = &self.shared;
        let idle = shared.idle.load(Ordering::Acquire);
        let now = chrono::Utc::now();
        jobs.iter()
            .map(|job| {
                let may_start = idle
                    && job.idempotency.is_none()
                    && job.run_at.is_none_or(|at| at <= now)
                    && shared.registry.get(&job.kind).is_some()
                    && !shared.config.caps.names.contains(&job.tenant)
                    && !shared.pauses.is_paused(&job.kind);
                if !may_start {
                    return None;
                }
                let slot = shared.slots.take(&job.kind)?;
                Some(Reservation {
                    intake: self.clone(),
                    slot,
                })
            })
            .collect()
    }

    /// How long the leases of jobs stored started last.
    pub fn lease(&self) -> Duration {
        self.shared.config.lease
    }

    /// The worker id claimed jobs carry.
    pub fn worker_id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// The API stored queued jobs of `tenant`: wakes the dispatcher as their notification would, without
    /// waiting for it to come back from the database.
    pub fn jobs_submitted(&self, tenant: &str) {
        self.shared.jobs_notified(tenant);
    }
}

/// A reserved slot: store the job started (see `store::intake::insert_many_started`), then
/// [`Reservation::start`] it. Dropped unused, the slot is free again.
pub struct Reservation {
    intake: Intake,
    slot: Slot,
}

impl Reservation {
    /// Hands the claimed job to the dispatcher, which runs it in the reserved slot. If the pool has shut
    /// down meanwhile, the job goes back to the queue at once (or is rescued when its lease runs out, if
    /// even that fails).
    pub async fn start(self, job: ClaimedJob) {
        let Reservation { intake, slot } = self;
        if let Err(mpsc::error::SendError(handed)) = intake.sender.send(Handed { job, slot }) {
            let lease = Lease {
                id: handed.job.id,
                token: handed.job.lease_token,
            };
            drop(handed);
            if let Err(err) = leases::release_many(&intake.shared.pool, &[lease]).await {
                tracing::warn!(job = %lease.id, error = %err, "releasing a job the stopped workers could not take failed; it will be rescued");
            }
        }
    }
}
