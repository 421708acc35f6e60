//! The intake: how a `serve` process's API gives a job it is storing straight to its own workers when
//! they are idle, so the job starts without waiting for a notification and a claim (DESIGN §4's pickup
//! path, one commit instead of two).
//!
//! Only when nothing could be ahead of the job: the dispatcher's last claim found no due job of its kinds
//! and nothing is in flight ([`Shared::idle`]), a slot (and room under the kind's `max_concurrency`) is
//! free, the kind is not paused, the job's tenant has no `max_running` cap, and no other submission is
//! taking this path right now (under load, group commit stores many jobs in one commit, which is worth
//! more than skipping a claim). Anything else goes the usual way, through the queue. The job is claimed in the transaction that stores it, under this
//! process's lease, so every guarantee of a claimed job holds: heartbeats, cancellation, rescue if this
//! process dies, release on shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::slots::Slot;
use super::Shared;
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
    /// A reservation is out: concurrent submissions go through the queue, where group commit stores
    /// them together (one commit for many instead of one each).
    reserved: Arc<AtomicBool>,
}

impl Intake {
    pub(super) fn new(shared: Arc<Shared>, sender: mpsc::UnboundedSender<Handed>) -> Intake {
        Intake {
            shared,
            sender,
            reserved: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A slot for a job of `kind` and `tenant`, if the workers are idle and may start it now.
    pub fn reserve(&self, kind: &str, tenant: &str) -> Option<Reservation> {
        let shared = &self.shared;
        if !shared.idle.load(Ordering::Acquire)
            || shared.registry.get(kind).is_none()
            || shared
                .config
                .caps
                .names
                .iter()
                .any(|capped| capped == tenant)
            || shared.pauses.is_paused(kind)
        {
            return None;
        }
        let one = OneAtATime::take(&self.reserved)?;
        let slot = shared.slots.take(kind)?;
        Some(Reservation {
            intake: self.clone(),
            slot,
            _one: one,
        })
    }
}

impl Intake {
    /// The API stored queued jobs of `tenant`: wakes the dispatcher as their notification would, without
    /// waiting for it to come back from the database.
    pub fn jobs_submitted(&self, tenant: &str) {
        self.shared.jobs_notified(tenant);
    }
}

/// The one reservation out at a time; given back when dropped.
struct OneAtATime(Arc<AtomicBool>);

impl OneAtATime {
    fn take(flag: &Arc<AtomicBool>) -> Option<OneAtATime> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| OneAtATime(flag.clone()))
    }
}

impl Drop for OneAtATime {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A reserved slot: store the job with [`crate::store::intake::insert_started`], then [`Reservation::start`]
/// it. Dropped unused, the slot is free again.
pub struct Reservation {
    intake: Intake,
    slot: Slot,
    _one: OneAtATime,
}

impl Reservation {
    pub fn lease(&self) -> Duration {
        self.intake.shared.config.lease
    }

    pub fn worker_id(&self) -> &str {
        &self.intake.shared.config.worker_id
    }

    /// Hands the claimed job to the dispatcher, which runs it in the reserved slot. If the pool has shut
    /// down meanwhile, the job goes back to the queue at once (or is rescued when its lease runs out, if
    /// even that fails).
    pub async fn start(self, job: ClaimedJob) {
        let Reservation { intake, slot, .. } = self;
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
