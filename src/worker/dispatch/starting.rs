//! Starting claimed jobs: the pool's capacity (slots plus a local queue sized by
//! [`Pace`](crate::worker::slots::Pace)), starting waiting
//! jobs as slots free up, the kinds a claim may ask for, the API's intake, and giving waiting jobs back on
//! shutdown. The same [`Dispatcher`]'s state, in a file of its own.

use std::sync::Arc;

use super::Dispatcher;
use crate::store::leases::{self, Lease};
use crate::worker::executor;
use crate::worker::intake::Handed;
use crate::worker::local_queue::Waiting;

impl Dispatcher {
    /// How many jobs the pool may hold: a slot each, plus the local queue.
    pub(super) fn capacity(&mut self) -> usize {
        let slots = &self.shared.slots;
        if slots.total() == 0 {
            return 0;
        }
        slots.total() + self.pace.local_queue(slots.ended())
    }

    /// Starts waiting jobs while there are slots for them.
    pub(super) fn start_waiting(&mut self) {
        let slots = &self.shared.slots;
        while slots.free() > 0 {
            let Some(Waiting { job, stop }) =
                self.local.pop_startable(|kind| slots.has_room_for(kind))
            else {
                return;
            };
            let Some(slot) = slots.take(&job.kind) else {
                // The API's intake took the room just seen; the job waits for the next one.
                self.local.put_back(Waiting { job, stop });
                return;
            };
            self.tasks.spawn(executor::execute(
                self.shared.clone(),
                job,
                stop,
                Some(slot),
            ));
        }
    }

    /// Tells the API whether it may hand jobs over ([`super::intake`]): only while no claimed job waits
    /// for a slot, so the handed jobs take only room nobody here is waiting for. A claim in flight does
    /// not close it (under steady submissions one nearly always is, and the intake would never open):
    /// should the claim bring jobs the handed ones took the room of, they go back to the queue at once
    /// ([`Dispatcher::give_back_excess`]), and while they wait for a slot the intake is closed. Results
    /// being written do not matter.
    pub(super) fn publish_idle(&self) {
        let idle = !self.draining && self.local.is_empty() && self.retry_at.is_none();
        self.shared
            .idle
            .store(idle, std::sync::atomic::Ordering::Release);
    }

    /// A job the API stored and claimed for this pool, in a slot it reserved.
    pub(super) fn handed(&mut self, Handed { job, slot }: Handed) {
        self.occupied += 1;
        if self.reserved > 0 {
            self.handed_during_claims += 1;
        }
        let stop = self.shared.running.insert(Lease {
            id: job.id,
            token: job.lease_token,
        });
        if self.draining {
            // Given back with the other waiting jobs at the next turn.
            drop(slot);
            self.local.push(Waiting { job, stop });
        } else {
            self.tasks.spawn(executor::execute(
                self.shared.clone(),
                job,
                stop,
                Some(slot),
            ));
            self.give_back_excess();
        }
    }

    /// Ends waiting jobs that were cancelled (or lost their lease) meanwhile, without waiting for a slot:
    /// their handlers never run, so they need none. Looked for at each poll tick, so a cancelled job of a
    /// kind that is full does not wait for room to end.
    pub(super) fn end_stopped_waiting(&mut self) {
        for Waiting { job, stop } in self.local.take_stopped() {
            self.tasks
                .spawn(executor::execute(self.shared.clone(), job, stop, None));
        }
    }

    /// A handler ended. When kinds were left out of a claim for want of room, this may have made some.
    pub(super) fn slot_freed(&mut self) {
        if self.waiting_for_room {
            self.waiting_for_room = false;
            self.want_jobs = true;
        }
    }

    /// Gives back the newest waiting jobs while the pool holds more than its capacity, which the API's
    /// intake can cause by taking slots while a claim was in flight: held here, they would wait for a
    /// slot while another replica could start them now. Their places are free at once; the release runs
    /// beside the loop, and jobs it could not release are rescued when their leases run out (they are
    /// forgotten here either way, so no heartbeat keeps them).
    /// Only as many as the intake handed in while claims were in flight: an excess of another origin (the
    /// local queue's allowance shrinking as jobs slow down) waits as it always did, since giving back
    /// would requeue those jobs behind newer ones.
    pub(super) fn give_back_excess(&mut self) {
        let excess = self
            .occupied
            .saturating_sub(self.capacity())
            .min(self.local.len())
            .min(self.handed_during_claims);
        self.handed_during_claims = if self.reserved == 0 {
            0
        } else {
            self.handed_during_claims - excess
        };
        if excess == 0 {
            return;
        }
        let waiting = self.local.take_newest(excess);
        self.occupied -= waiting.len();
        let leases = leases_of(&waiting);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match leases::release_many(&shared.pool, &leases).await {
                Ok(released) => tracing::debug!(
                    released = released.len(),
                    "gave back claimed jobs the API's intake had taken the room of"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, jobs = leases.len(), "giving back claimed jobs failed; they will be rescued")
                }
            }
            for lease in &leases {
                shared.running.remove(lease.id);
            }
        });
    }

    /// Shutdown: gives every waiting job back to the queue at once, in one statement. If that fails, the
    /// jobs stay registered in [`Shared::running`] for shutdown to try again (or the rescuer, if it dies).
    pub(super) async fn give_back(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let waiting = self.local.take_all();
        self.occupied -= waiting.len();
        let leases = leases_of(&waiting);
        match leases::release_many(&self.shared.pool, &leases).await {
            Ok(released) => {
                tracing::info!(
                    released = released.len(),
                    "gave claimed jobs that had not started back to the queue"
                );
                for lease in &leases {
                    self.shared.running.remove(lease.id);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, jobs = leases.len(), "giving back jobs that had not started failed");
            }
        }
    }

    /// The kinds to claim: those this process runs, without paused kinds and kinds whose running and
    /// waiting jobs already fill their `max_concurrency`; and whether any was left out for that.
    pub(super) fn claimable_kinds(&self) -> (Arc<[String]>, bool) {
        let unpaused: Arc<[String]> = match self.shared.pauses.unpaused(&self.kinds) {
            Some(unpaused) => unpaused.into(),
            None => self.kinds.clone(),
        };
        let slots = &self.shared.slots;
        if !slots.has_kind_limits() {
            return (unpaused, false);
        }
        let with_room: Vec<String> = unpaused
            .iter()
            .filter(|kind| !slots.is_full(kind, self.local.waiting(kind)))
            .cloned()
            .collect();
        let left_out = with_room.len() < unpaused.len();
        (with_room.into(), left_out)
    }
}

/// The leases of `waiting` jobs, to give them back.
fn leases_of(waiting: &[Waiting]) -> Vec<Lease> {
    waiting
        .iter()
        .map(|w| Lease {
            id: w.job.id,
            token: w.job.lease_token,
        })
        .collect()
}
