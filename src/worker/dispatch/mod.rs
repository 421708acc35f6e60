//! The dispatcher: the one loop that talks to the queue on the hot path. It writes the results of jobs that
//! succeeded and claims the next jobs **in the same statement** ([`leases::complete_and_claim`]), so a busy
//! worker pays one round trip and one commit per batch instead of two, and spawns each claimed job.
//!
//! Capacity: the pool runs at most `--workers` handlers at once ([`super::slots`]), and holds at most that
//! many jobs plus a local queue sized by how fast its handlers end ([`super::slots::Pace`]): claimed jobs
//! wait there for a slot ([`super::local_queue`]). A claim never asks for more jobs than the free
//! capacity. A succeeded job holds its place until the statement that commits its result, which is why
//! that same statement may claim a job for it; any other job holds it until its task ends.
//!
//! A succeeded job's result is the dispatcher's from the moment its executor hands it in
//! ([`super::handoff`]): the dispatcher writes it (again after an outage, once the backoff is over),
//! counts it, and forgets the job in [`super::running`] once the write is settled.
//!
//! Batches form without waiting for a timer: up to [`MAX_IN_FLIGHT`] statements run at once, and
//! completions that arrive meanwhile go into the next one; before sending, the loop yields a few times so
//! jobs that are about to finish (a batch that was just spawned) join it.
//!
//! - [`starting`]: capacity, starting waiting jobs, the kinds to claim, the intake, giving jobs back.
//! - [`wakes`]: notifications, poll ticks and the tenants they name.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod starting;
mod wakes;

use super::handoff::Finished;
use super::intake::Handed;
use super::local_queue::{LocalQueue, Waiting};
use super::slots::Pace;
use super::Shared;
use crate::store::leases::{self, Claim, Completion, Lease, Step};

/// The most jobs one statement claims. With more slots than this, the next batch is claimed while the
/// previous one's results are still being written, so the database is never idle between batches.
const MAX_CLAIM: usize = 500;
/// The most results one statement writes.
const MAX_COMPLETIONS: usize = 500;
/// Statements in flight at once. With two, PostgreSQL sat half idle in a drain (0.5 core busy) while each
/// statement waited on its commit; a third keeps both cores busy (drain 0.78x to 0.87x of the SQL ceiling).
const MAX_IN_FLIGHT: usize = 3;

/// Connections the dispatcher keeps for its statements: one per statement in flight, but at most a third
/// of `pool`, whose other connections serve heartbeats, the API and maintenance.
pub(crate) fn lanes_for(pool: &sqlx::PgPool) -> usize {
    let third = usize::try_from(pool.options().get_max_connections() / 3).unwrap_or(1);
    MAX_IN_FLIGHT.min(third).max(1)
}
/// How long the loop waits for more results while they keep arriving (see [`Dispatcher::gather`]): it
/// stops after a pause this long, and after this long in all.
const GATHER_QUIET: Duration = Duration::from_micros(50);
const GATHER_MAX: Duration = Duration::from_millis(1);
/// The first and the longest pause before claiming again after a database error.
const FIRST_ERROR_BACKOFF: Duration = Duration::from_millis(100);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// How long shutdown waits for statements in flight before giving their jobs up to the rescuer.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// How the dispatcher is told to stop.
pub(super) struct Stop {
    /// No more claims; keep writing results until every running job has ended.
    pub claiming: CancellationToken,
    /// The grace period is over: stop the jobs still running and return at once.
    pub now: CancellationToken,
}

/// What a statement in flight gives back.
struct Answer {
    /// The jobs whose results it carried, and their kinds (for metrics), in the same order.
    ids: Vec<uuid::Uuid>,
    kinds: Vec<String>,
    /// Those results, given back so they can be sent again after an outage (empty if its task panicked).
    completions: Vec<Completion>,
    /// How many jobs it asked for.
    limit: usize,
    /// [`Dispatcher::wakes`] when it was sent.
    wakes: u64,
    /// [`Dispatcher::tenant_epoch`] when it was sent.
    epoch: u64,
    /// Whether it left out a kind for being at its `max_concurrency`.
    left_out_full: bool,
    /// The tenants with queued jobs, when it looked for them.
    found: Option<Arc<[String]>>,
    step: Result<Step, crate::store::Error>,
}

/// Runs until every job has ended after [`Stop::claiming`], or until [`Stop::now`]. Jobs still registered
/// in [`Shared::running`] when it returns are for shutdown to release.
pub(super) async fn run(
    shared: Arc<Shared>,
    finished: mpsc::Receiver<Finished>,
    intake: mpsc::UnboundedReceiver<Handed>,
    stop: Stop,
) {
    let mut poll = tokio::time::interval(shared.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dispatcher = Dispatcher {
        kinds: shared.registry.kinds().into(),
        want_jobs: shared.config.slots > 0,
        local: LocalQueue::default(),
        pace: Pace::new(),
        waiting_for_room: false,
        shared,
        finished,
        intake,
        tasks: JoinSet::new(),
        in_flight: FuturesUnordered::new(),
        pending: Vec::new(),
        occupied: 0,
        reserved: 0,
        completing: 0,
        handed_during_claims: 0,
        refilling: 0,
        wakes: 0,
        tenants: None,
        named_meanwhile: Vec::new(),
        tenant_epoch: 0,
        draining: false,
        error_backoff: FIRST_ERROR_BACKOFF,
        retry_at: None,
    };
    loop {
        while let Some(ended) = dispatcher.tasks.try_join_next() {
            dispatcher.task_ended(ended);
        }
        // After joining: a task hands its result in before it ends, so every result of a task joined
        // so far is in the channel now, and `drained` cannot miss one.
        while let Ok(done) = dispatcher.finished.try_recv() {
            dispatcher.pending.push(done);
        }
        if dispatcher.draining {
            dispatcher.give_back().await;
        } else {
            dispatcher.start_waiting();
        }
        if dispatcher.drained() {
            return;
        }
        if dispatcher.in_flight.is_empty() && !dispatcher.pending.is_empty() {
            dispatcher.gather().await;
        }
        if let Some((batch, limit)) = dispatcher.next_statement() {
            dispatcher.send(batch, limit);
            continue;
        }
        dispatcher.publish_idle();
        let backoff_over = async {
            match dispatcher.retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.now.cancelled() => {
                dispatcher.abort().await;
                return;
            }
            _ = stop.claiming.cancelled(), if !dispatcher.draining => dispatcher.draining = true,
            Some(answer) = dispatcher.in_flight.next() => dispatcher.answered(answer),
            Some(done) = dispatcher.finished.recv() => dispatcher.pending.push(done),
            Some(handed) = dispatcher.intake.recv() => dispatcher.handed(handed),
            Some(ended) = dispatcher.tasks.join_next(), if !dispatcher.tasks.is_empty() => {
                dispatcher.task_ended(ended);
            }
            _ = dispatcher.shared.wake.notified() => dispatcher.notified(),
            _ = dispatcher.shared.slots.freed.notified() => dispatcher.slot_freed(),
            _ = poll.tick() => {
                dispatcher.forget_tenants();
                dispatcher.woken();
                dispatcher.end_stopped_waiting();
            }
            _ = backoff_over => dispatcher.retry_at = None,
        }
    }
}

struct Dispatcher {
    shared: Arc<Shared>,
    kinds: Arc<[String]>,
    finished: mpsc::Receiver<Finished>,
    /// Jobs the API stored and claimed for this pool.
    intake: mpsc::UnboundedReceiver<Handed>,
    /// Claimed jobs waiting for a slot.
    local: LocalQueue,
    /// Sizes the local queue.
    pace: Pace,
    /// A claim that came back short had left out kinds at their `max_concurrency`: a freed slot may
    /// make room for them, so it is a reason to claim again.
    waiting_for_room: bool,
    tasks: JoinSet<bool>,
    in_flight: FuturesUnordered<BoxFuture<'static, Answer>>,
    /// Results handed in and not sent yet.
    pending: Vec<Finished>,
    /// Jobs held: claimed jobs until they end (or their result commits), waiting, running or handing in
    /// their result, and the jobs claims in flight may bring.
    occupied: usize,
    /// The part of `occupied` that claims in flight reserved.
    reserved: usize,
    /// Results in statements in flight.
    completing: usize,
    /// Jobs the API's intake handed in while claims were in flight, since none last was: at most these
    /// many claimed jobs are given back for want of room (see [`Dispatcher::give_back_excess`]).
    handed_during_claims: usize,
    /// Slots that statements in flight free and refill at once (per statement, the smaller of its results
    /// and its reservation). Whether such a statement commits or fails, these slots end up taken the same,
    /// so another claim need not keep them free.
    refilling: usize,
    /// Whether due jobs may be waiting: after a notification, a poll tick, or a claim that came back full.
    want_jobs: bool,
    /// Counts notifications and poll ticks, so a claim that comes back short only clears `want_jobs` when
    /// no notification arrived while it was in flight.
    wakes: u64,
    /// The tenants with queued jobs as a search found them (plus those notifications named since): claims
    /// take turns among these until the next poll tick or an unnamed notification, instead of each
    /// looking for tenants again (see `store::leases::queued_tenants`).
    tenants: Option<Arc<[String]>>,
    /// Tenants notifications named while `tenants` was unknown: a search in flight may have looked
    /// before their jobs arrived, so its answer is completed with them.
    named_meanwhile: Vec<String>,
    /// Counts [`Dispatcher::forget_tenants`]: a search that was in flight meanwhile is not kept.
    tenant_epoch: u64,
    draining: bool,
    /// After a statement failed: no statement (claim or results) before `retry_at`, and the next pause
    /// doubles up to [`MAX_ERROR_BACKOFF`].
    error_backoff: Duration,
    retry_at: Option<Instant>,
}

impl Dispatcher {
    /// Jobs running their handler, or about to write an outcome other than a success: neither waiting for
    /// a slot, nor handed in a result, nor being claimed.
    fn working(&self) -> usize {
        self.occupied
            .saturating_sub(self.reserved + self.completing + self.pending.len() + self.local.len())
    }

    fn drained(&self) -> bool {
        self.draining
            && self.intake.is_empty()
            && self.tasks.is_empty()
            && self.in_flight.is_empty()
            && self.pending.is_empty()
            && self.local.is_empty()
    }

    /// Frees the slot of a job whose task ended, unless the statement that wrote its result already did.
    fn task_ended(&mut self, ended: Result<bool, tokio::task::JoinError>) {
        if !matches!(ended, Ok(true)) {
            self.occupied = self.occupied.saturating_sub(1);
        }
    }

    /// Lets jobs that are finishing right now (typically a batch that was just claimed) join the pending
    /// results, instead of sending the first one alone: yields while results keep arriving, briefly.
    async fn gather(&mut self) {
        let started = std::time::Instant::now();
        let mut last_arrival = started;
        while self.pending.len() < MAX_COMPLETIONS && (self.working() > 0 || !self.local.is_empty())
        {
            if !self.draining {
                self.start_waiting();
            }
            tokio::task::yield_now().await;
            let before = self.pending.len();
            while let Ok(done) = self.finished.try_recv() {
                self.pending.push(done);
            }
            let now = std::time::Instant::now();
            if self.pending.len() > before {
                last_arrival = now;
            } else if now - last_arrival > GATHER_QUIET || now - started > GATHER_MAX {
                return;
            }
        }
    }

    /// What to send now, if anything: how many pending results, and how many jobs to claim.
    fn next_statement(&mut self) -> Option<(usize, usize)> {
        if self.in_flight.len() >= MAX_IN_FLIGHT
            || self.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return None;
        }
        let batch = self.pending.len().min(MAX_COMPLETIONS);
        let may_claim = self.want_jobs && !self.draining;
        let capacity = self.capacity();
        // The batch's places are freed by the statement that commits it, so it may claim for them.
        let free = (capacity + batch + self.refilling).saturating_sub(self.occupied);
        let limit = if may_claim { free.min(MAX_CLAIM) } else { 0 };
        let worth_it = if self.in_flight.is_empty() {
            batch > 0 || limit > 0
        } else {
            // A statement is committing: send another only when it is full, when no more results will
            // join it, or when jobs are waiting and nothing in flight claims (new work must not wait for
            // unrelated results to commit); otherwise let results gather for when the first one returns.
            batch >= MAX_COMPLETIONS
                || (batch > 0 && self.working() == 0)
                || limit >= MAX_CLAIM.min(capacity)
                || (limit > 0 && self.reserved == 0)
        };
        worth_it.then_some((batch, limit))
    }

    fn send(&mut self, batch: usize, limit: usize) {
        let batch: Vec<Finished> = self.pending.drain(..batch).collect();
        self.occupied += limit;
        self.reserved += limit;
        self.completing += batch.len();
        self.refilling += batch.len().min(limit);
        let ids: Vec<uuid::Uuid> = batch.iter().map(|done| done.completion.lease.id).collect();
        let (completions, job_kinds): (Vec<Completion>, Vec<String>) = batch
            .into_iter()
            .map(|done| (done.completion, done.kind))
            .unzip();
        let shared = self.shared.clone();
        let (kinds, left_out_full) = self.claimable_kinds();
        let wakes = self.wakes;
        let epoch = self.tenant_epoch;
        let known = self.tenants.clone();
        // The statement, and decoding the rows it returns, run in a task of their own: the dispatcher's
        // loop is one task, and decoding 500 claimed jobs in it capped a drain at what one core could do
        // while the database had room for more.
        let statement = tokio::spawn(async move {
            let tenants = match known {
                Some(tenants) => Ok((tenants, false)),
                None if limit == 0 => Ok((Arc::from(Vec::new()), false)),
                None => leases::queued_tenants(&shared.pool, None)
                    .await
                    .map(|found| (Arc::from(found), true)),
            };
            let (step, found) = match tenants {
                Ok((tenants, found)) => {
                    let claim = Claim {
                        kinds: &kinds,
                        limit: limit as i64,
                        lease: shared.config.lease,
                        worker_id: &shared.config.worker_id,
                        caps: &shared.config.caps,
                        tenants: &tenants,
                    };
                    let step = match shared.lanes.get().await {
                        Ok(mut lane) => {
                            let step =
                                leases::complete_and_claim(lane.conn(), &completions, &claim).await;
                            lane.settle(&step);
                            step
                        }
                        Err(err) => Err(err),
                    };
                    (step, found.then_some(tenants))
                }
                Err(err) => (Err(err), None),
            };
            (step, found, completions)
        });
        self.in_flight.push(Box::pin(async move {
            let (step, found, completions) = statement.await.unwrap_or_else(|err| {
                // Only if the task panicked: its results are lost with it (see `answered`).
                let failed = format!("the claim statement's task ended without an answer: {err}");
                (
                    Err(crate::store::Error::Inconsistent(failed)),
                    None,
                    Vec::new(),
                )
            });
            Answer {
                ids,
                completions,
                kinds: job_kinds,
                limit,
                wakes,
                epoch,
                left_out_full,
                found,
                step,
            }
        }));
    }

    fn answered(&mut self, answer: Answer) {
        let Answer {
            ids,
            kinds,
            completions,
            limit,
            wakes,
            epoch,
            left_out_full,
            found,
            step,
        } = answer;
        if let Some(found) = found {
            self.found_tenants(found, epoch);
        }
        self.occupied -= limit;
        self.reserved -= limit;
        self.completing -= ids.len();
        self.refilling -= ids.len().min(limit);
        match step {
            Ok(step) => {
                tracing::trace!(
                    completed = ids.len(),
                    asked = limit,
                    claimed = step.claimed.len(),
                    "statement answered"
                );
                self.error_backoff = FIRST_ERROR_BACKOFF;
                if limit > 0 && step.claimed.len() < limit && wakes == self.wakes {
                    // The queue ran dry; wait for a notification or the next poll (or for room, if
                    // kinds were left out for want of it).
                    self.want_jobs = false;
                    self.waiting_for_room |= left_out_full;
                }
                self.written(&ids, &kinds, &step.completed);
                self.occupied += step.claimed.len();
                // Registered at once, so heartbeats keep the leases alive while the jobs wait, and
                // shutdown finds them to give them back.
                let stops = self
                    .shared
                    .running
                    .insert_all(step.claimed.iter().map(|job| Lease {
                        id: job.id,
                        token: job.lease_token,
                    }));
                for (job, stop) in step.claimed.into_iter().zip(stops) {
                    self.local.push(Waiting { job, stop });
                }
                if !self.draining {
                    self.start_waiting();
                    self.give_back_excess();
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, results = ids.len(), asked = limit, retry_in = ?self.error_backoff,
                    "the claim statement failed");
                // No statement until the backoff is over: neither claims nor results hammer a database
                // that is down.
                self.retry_at = Some(Instant::now() + self.error_backoff);
                self.error_backoff = (self.error_backoff * 2).min(MAX_ERROR_BACKOFF);
                if err.is_unavailable() && completions.len() == ids.len() {
                    // Written again once the database answers, however long that takes: the write is
                    // fenced, so a lease lost meanwhile is refused rather than applied twice. Their jobs
                    // stay in `running`, so heartbeats keep the leases alive and shutdown releases them.
                    self.pending.extend(
                        completions
                            .into_iter()
                            .zip(kinds)
                            .map(|(completion, kind)| Finished { completion, kind }),
                    );
                } else if !ids.is_empty() {
                    // The database answered and refused: retrying would loop forever. The leases run out
                    // and the rescuer gives the jobs another attempt (or fails them when attempts are
                    // spent).
                    tracing::error!(error = %err, jobs = ids.len(), "the database refused results; their jobs will be rescued");
                    self.occupied -= ids.len();
                    self.shared.running.remove_all(ids);
                }
            }
        }
    }

    /// Settles results a statement carried: counts the ones that applied, and forgets all of them (the
    /// others had lost their lease, so nothing of theirs is this process's any more).
    fn written(&mut self, ids: &[uuid::Uuid], kinds: &[String], completed: &[uuid::Uuid]) {
        self.occupied -= ids.len();
        if ids.is_empty() {
            return;
        }
        let completed: HashSet<&uuid::Uuid> = completed.iter().collect();
        let mut counted: Vec<(&str, u64)> = Vec::new();
        for (id, kind) in ids.iter().zip(kinds) {
            if !completed.contains(id) {
                tracing::warn!(job = %id, "outcome not written: the lease was lost");
                continue;
            }
            match counted.iter_mut().find(|(seen, _)| *seen == kind.as_str()) {
                Some((_, count)) => *count += 1,
                None => counted.push((kind, 1)),
            }
        }
        for (kind, count) in counted {
            crate::metrics::jobs_succeeded(kind, count);
        }
        self.shared.running.remove_all(ids.iter().copied());
    }

    /// The grace period is over: stop every job, and wait (briefly) for statements in flight, registering
    /// what they claimed so shutdown releases it too.
    async fn abort(&mut self) {
        self.shared
            .running
            .stop_all(super::running::StopReason::Shutdown);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let running = &self.shared.running;
        let in_flight = &mut self.in_flight;
        let settled = tokio::time::timeout(IN_FLIGHT_GRACE, async {
            while let Some(answer) = in_flight.next().await {
                if let Ok(step) = answer.step {
                    // Written: nothing for shutdown to release. Results not written stay registered.
                    running.remove_all(step.completed);
                    for job in step.claimed {
                        running.insert(Lease {
                            id: job.id,
                            token: job.lease_token,
                        });
                    }
                }
            }
        })
        .await;
        if settled.is_err() {
            tracing::warn!("statements still in flight at shutdown; their jobs will be rescued when their leases expire");
        }
    }
}
