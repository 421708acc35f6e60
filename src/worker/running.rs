//! The jobs this process is running right now, so heartbeats, cancel notifications and shutdown can reach
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::leases::Lease;

/// Why a running job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled it.
    CancelRequested,
    /// A heartbeat found the lease gone (rescued elsewhere, or the job deleted): nothing it writes counts.
    LeaseLost,
    /// This process is shutting down and the grace period is over.
    Shutdown,
}

struct Entry {
    lease: Lease,
    stop: CancellationToken,
    reason: Option<StopReason>,
    /// The handler has returned and its outcome is being written. The lease is still renewed (the write
    /// may be retrying through an outage), but a missing lease then most likely means the write committed.
    finishing: bool,
}

impl Entry {
    fn new(lease: Lease, stop: CancellationToken) -> Entry {
        Entry {
            lease,
            stop,
            reason: None,
            finishing: false,
        }
    }
}

/// Shared between the executor tasks, the heartbeat, the listener and shutdown.
///
/// A `std::sync::Mutex`, not a tokio one: it is held only for map operations, never across an `.await`.
#[derive(Clone, Default)]
pub struct Running {
    jobs: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and removes), so
        // a poisoned lock is still safe to use.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a job; the returned token is cancelled when it should stop.
    pub fn insert(&self, lease: Lease) -> CancellationToken {
        let stop = CancellationToken::new();
        self.lock()
            .insert(lease.id, Entry::new(lease, stop.clone()));
        stop
    }

    /// Registers a claimed batch under one lock (the executors of the previous batch are using the map
    /// at the same moment); the tokens come back in the same order.
    pub fn insert_all(
        &self,
        leases: impl ExactSizeIterator<Item = Lease>,
    ) -> Vec<CancellationToken> {
        let entries: Vec<(Lease, CancellationToken)> = leases
            .map(|lease| (lease, CancellationToken::new()))
            .collect();
        let mut jobs = self.lock();
        jobs.reserve(entries.len());
        entries
            .into_iter()
            .map(|(lease, stop)| {
                jobs.insert(lease.id, Entry::new(lease, stop.clone()));
                stop
            })
            .collect()
    }

    /// Why a job was told to stop, if it was.
    pub fn reason(&self, id: Uuid) -> Option<StopReason> {
        self.lock().get(&id).and_then(|entry| entry.reason)
    }

    /// Forgets a job, returning why it was told to stop, if it was.
    pub fn remove(&self, id: Uuid) -> Option<StopReason> {
        self.lock().remove(&id).and_then(|entry| entry.reason)
    }

    /// Marks a job whose handler has returned and whose outcome is being written; returns why it was told
    /// to stop, if it was (one lock for what the executor asks at that moment).
    pub fn finishing(&self, id: Uuid) -> Option<StopReason> {
        let mut jobs = self.lock();
        let entry = jobs.get_mut(&id)?;
        entry.finishing = true;
        entry.reason
    }

    /// Forgets jobs whose results the dispatcher wrote (or gave up writing), under one lock.
    pub fn remove_all(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut jobs = self.lock();
        for id in ids {
            jobs.remove(&id);
        }
    }

    /// A heartbeat found the job's lease gone. Returns true when that is news: the job was still running
    /// its handler (so it is told to stop), rather than writing its outcome or already forgotten.
    pub fn lease_lost(&self, id: Uuid) -> bool {
        match self.lock().get_mut(&id) {
            Some(entry) if !entry.finishing => {
                entry.reason.get_or_insert(StopReason::LeaseLost);
                entry.stop.cancel();
                true
            }
            _ => false,
        }
    }

    /// Tells a job to stop. The first reason given sticks.
    pub fn stop(&self, id: Uuid, reason: StopReason) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.reason.get_or_insert(reason);
            entry.stop.cancel();
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        for entry in self.lock().values_mut() {
            entry.reason.get_or_insert(reason);
            entry.stop.cancel();
        }
    }

    pub fn leases(&self) -> Vec<Lease> {
        self.lock().values().map(|entry| entry.lease).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
