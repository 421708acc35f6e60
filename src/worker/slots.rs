//! Handler slots: how many jobs this process runs at once (`--workers`), and, for kinds that set
//! `max_concurrency` (`http`, `exec`), how many of that kind.
//!
//! The dispatcher takes a [`Slot`] to start a claimed job; the executor holds it while the handler runs
//! and drops it the moment the handler returns, before the outcome is written: writing a result is the
//! dispatcher's batch work, not a handler's, so it must not keep the next job from starting. A kind's
//! limit is enforced here rather than inside its handler so a job never waits for a permit with its
//! attempt timeout already running, and so claims can leave out a kind that has no room (see
//! [`Slots::is_full`]).
//!
//! The slots also count the handlers that have ended, which sizes the local queue ([`Pace`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One kind's limit and its handlers running now.
struct KindSlots {
    max: usize,
    active: AtomicUsize,
}

/// The slots of one worker pool, taken by the dispatcher and by the API's intake.
pub(crate) struct Slots {
    total: usize,
    active: AtomicUsize,
    kinds: Vec<KindSlots>,
    kind_index: HashMap<String, usize>,
    /// Handlers that have returned since the pool started.
    ended: AtomicU64,
    /// Signalled each time a slot is given back.
    pub freed: Notify,
}

impl Slots {
    /// `total` handlers at once, and at most `max` of each kind in `limits`.
    pub fn new(total: usize, limits: impl IntoIterator<Item = (String, usize)>) -> Arc<Slots> {
        let mut kinds = Vec::new();
        let mut kind_index = HashMap::new();
        for (kind, max) in limits {
            kind_index.insert(kind, kinds.len());
            kinds.push(KindSlots {
                max: max.max(1),
                active: AtomicUsize::new(0),
            });
        }
        Arc::new(Slots {
            total,
            active: AtomicUsize::new(0),
            kinds,
            kind_index,
            ended: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.total
            .saturating_sub(self.active.load(Ordering::Acquire))
    }

    /// Whether some kind has a limit of its own.
    pub fn has_kind_limits(&self) -> bool {
        !self.kinds.is_empty()
    }

    /// Whether `kind` has a limit and `waiting` more of its jobs (claimed, not started) would fill it.
    pub fn is_full(&self, kind: &str, waiting: usize) -> bool {
        self.kind_index.get(kind).is_some_and(|&index| {
            let slots = &self.kinds[index];
            slots.active.load(Ordering::Acquire) + waiting >= slots.max
        })
    }

    /// Whether a job of `kind` could start now.
    pub fn has_room_for(&self, kind: &str) -> bool {
        self.free() > 0 && !self.is_full(kind, 0)
    }

    /// Takes a slot for a job of `kind`, if there is room. The dispatcher and the API's intake take slots
    /// concurrently, so each count is raised only while it is below its limit.
    pub fn take(self: &Arc<Self>, kind: &str) -> Option<Slot> {
        let kind = self.kind_index.get(kind).copied();
        if let Some(index) = kind {
            let slots = &self.kinds[index];
            if !raise_below(&slots.active, slots.max) {
                return None;
            }
        }
        if !raise_below(&self.active, self.total) {
            if let Some(index) = kind {
                self.kinds[index].active.fetch_sub(1, Ordering::AcqRel);
            }
            return None;
        }
        Some(Slot {
            slots: self.clone(),
            kind,
        })
    }

    /// Handlers that have returned since the pool started.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }
}

/// Adds one to `count` if it stays within `max`.
fn raise_below(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now < max).then_some(now + 1)
        })
        .is_ok()
}

/// A taken slot; dropping it gives it back (also when the executor's task is aborted).
pub(crate) struct Slot {
    slots: Arc<Slots>,
    kind: Option<usize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(index) = self.kind {
            self.slots.kinds[index]
                .active
                .fetch_sub(1, Ordering::AcqRel);
        }
        self.slots.active.fetch_sub(1, Ordering::AcqRel);
        self.slots.ended.fetch_add(1, Ordering::AcqRel);
        self.slots.freed.notify_one();
    }
}

/// How far ahead a worker claims: what its handlers would start within this long, at the rate they ended
/// lately. Short jobs keep a deep local queue (a drain claims 500 a statement); jobs that take seconds keep
/// almost none, so one replica does not sit on work another could start now.
const HORIZON: Duration = Duration::from_millis(100);
/// The most claimed jobs that wait in the local queue. With 500 a claim and three statements in flight,
/// this keeps the database busy while the handlers run the previous batches.
pub(crate) const MAX_WAITING: usize = 2000;
/// How long the rate of ending handlers is measured over before it is replaced.
const WINDOW: Duration = Duration::from_millis(250);
/// The shortest window whose rate may raise the estimate (so a cold worker ramps up within milliseconds).
const MIN_WINDOW: Duration = Duration::from_millis(5);

/// The rate at which handlers end, measured over windows of [`WINDOW`], and the local queue it sizes.
pub(crate) struct Pace {
    window_start: Instant,
    ended_at_start: u64,
    /// Handlers ended per second in the last whole window.
    rate: f64,
}

impl Pace {
    pub fn new() -> Pace {
        Pace {
            window_start: Instant::now(),
            ended_at_start: 0,
            rate: 0.0,
        }
    }

    /// How many claimed jobs may wait for a slot now, given `ended` handlers so far.
    pub fn local_queue(&mut self, ended: u64) -> usize {
        let elapsed = self.window_start.elapsed();
        let in_window = ended.saturating_sub(self.ended_at_start) as f64
            / elapsed.as_secs_f64().max(f64::EPSILON);
        let rate = if elapsed >= WINDOW {
            self.rate = in_window;
            self.window_start = Instant::now();
            self.ended_at_start = ended;
            in_window
        } else if elapsed >= MIN_WINDOW {
            self.rate.max(in_window)
        } else {
            self.rate
        };
        ((rate * HORIZON.as_secs_f64()) as usize).min(MAX_WAITING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_with_a_limit_takes_no_more_slots_than_it() {
        let slots = Slots::new(10, [("exec".to_owned(), 2)]);
        let first = slots.take("exec");
        let second = slots.take("exec");
        assert!(first.is_some() && second.is_some());
        assert!(slots.take("exec").is_none());
        assert!(slots.is_full("exec", 0));
        assert!(slots.take("echo").is_some(), "other kinds still start");
        drop(first);
        assert!(slots.take("exec").is_some());
    }

    #[test]
    fn no_slot_is_taken_past_the_total_and_a_dropped_one_counts_as_ended() {
        let slots = Slots::new(2, []);
        let held: Vec<Slot> = (0..5).filter_map(|_| slots.take("echo")).collect();
        assert_eq!(held.len(), 2);
        assert_eq!(slots.free(), 0);
        drop(held);
        assert_eq!(slots.free(), 2);
        assert_eq!(slots.ended(), 2);
    }

    #[test]
    fn slots_taken_from_many_threads_at_once_never_pass_their_limits() {
        let slots = Slots::new(16, [("exec".to_owned(), 4)]);
        let most = Arc::new(AtomicUsize::new(0));
        let most_exec = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let (slots, most, most_exec) = (slots.clone(), most.clone(), most_exec.clone());
                std::thread::spawn(move || {
                    let kind = if n % 2 == 0 { "exec" } else { "echo" };
                    for _ in 0..2_000 {
                        if let Some(slot) = slots.take(kind) {
                            most.fetch_max(slots.total - slots.free(), Ordering::SeqCst);
                            let exec = slots.kinds[0].active.load(Ordering::SeqCst);
                            most_exec.fetch_max(exec, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert!(most.load(Ordering::SeqCst) <= 16);
        assert!(most_exec.load(Ordering::SeqCst) <= 4);
        assert_eq!(slots.free(), 16);
    }

    #[test]
    fn waiting_jobs_count_towards_a_kind_being_full() {
        let slots = Slots::new(10, [("exec".to_owned(), 3)]);
        let _one = slots.take("exec");
        assert!(!slots.is_full("exec", 1));
        assert!(slots.is_full("exec", 2));
        assert!(
            !slots.is_full("echo", 100),
            "a kind without a limit is never full"
        );
    }

    #[test]
    fn an_idle_pool_keeps_no_local_queue_and_a_busy_one_a_bounded_one() {
        let mut pace = Pace::new();
        assert_eq!(pace.local_queue(0), 0);
        pace.window_start = Instant::now() - Duration::from_millis(50);
        // 50,000 handlers ended in 50 ms: a million a second, far past the bound.
        assert_eq!(pace.local_queue(50_000), MAX_WAITING);
        pace.window_start = Instant::now() - WINDOW;
        pace.ended_at_start = 50_000;
        // Nothing ended in a whole window: the queue empties.
        assert_eq!(pace.local_queue(50_000), 0);
    }
}
