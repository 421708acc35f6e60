//! Claimed jobs waiting for a slot: the worker claims ahead (see [`super::slots::Pace`]) so one statement
//! can bring hundreds of short jobs, and starts them as slots free up.
//!
//! A waiting job is already `running` in the database under this process's lease, and registered in
//! [`super::running::Running`], so heartbeats keep its lease alive, a cancellation reaches it, and if this
//! process dies it is rescued like any running job. Its attempt timeout starts only when its handler
//! does. On shutdown the dispatcher gives every waiting job back to the queue at once.
//!
//! Jobs start in claim order, except that a job whose kind is at its `max_concurrency` lets the jobs of
//! other kinds behind it go first: each kind has its own line, and the next job is the oldest at the head
//! of a line whose kind has room.

use std::collections::{HashMap, VecDeque};

use tokio_util::sync::CancellationToken;

use crate::store::leases::ClaimedJob;

/// A claimed job and the token that tells it to stop (from [`super::running::Running::insert`]).
pub(super) struct Waiting {
    pub job: ClaimedJob,
    pub stop: CancellationToken,
}

pub(super) struct LocalQueue {
    /// Per kind, in claim order, each with its place in the overall claim order.
    lines: HashMap<String, VecDeque<(u64, Waiting)>>,
    /// The place of the next job pushed; places of jobs put back count down from the middle.
    next: u64,
    first: u64,
    len: usize,
}

impl Default for LocalQueue {
    fn default() -> Self {
        LocalQueue {
            lines: HashMap::new(),
            next: u64::MAX / 2,
            first: u64::MAX / 2,
            len: 0,
        }
    }
}

impl LocalQueue {
    pub fn push(&mut self, waiting: Waiting) {
        self.lines
            .entry(waiting.job.kind.clone())
            .or_default()
            .push_back((self.next, waiting));
        self.next += 1;
        self.len += 1;
    }

    /// Puts a job just taken by [`LocalQueue::pop_startable`] back, first in line.
    pub fn put_back(&mut self, waiting: Waiting) {
        self.first -= 1;
        self.lines
            .entry(waiting.job.kind.clone())
            .or_default()
            .push_front((self.first, waiting));
        self.len += 1;
    }

    /// The oldest waiting job whose kind `has_room`, taken out of the queue.
    pub fn pop_startable(&mut self, has_room: impl Fn(&str) -> bool) -> Option<Waiting> {
        let kind = self
            .lines
            .iter()
            .filter_map(|(kind, line)| line.front().map(|(order, _)| (*order, kind)))
            .filter(|(_, kind)| has_room(kind))
            .min_by_key(|(order, _)| *order)
            .map(|(_, kind)| kind.clone())?;
        let line = self.lines.get_mut(&kind)?;
        let (_, waiting) = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&kind);
        }
        self.len -= 1;
        Some(waiting)
    }

    /// The waiting jobs that were told to stop (cancelled, or their lease lost), taken out of the queue.
    pub fn take_stopped(&mut self) -> Vec<Waiting> {
        let mut stopped = Vec::new();
        // Looked at every poll tick: lines with nothing stopped are left as they are.
        for line in self.lines.values_mut() {
            if !line.iter().any(|(_, waiting)| waiting.stop.is_cancelled()) {
                continue;
            }
            let mut kept = VecDeque::with_capacity(line.len());
            for (order, waiting) in line.drain(..) {
                if waiting.stop.is_cancelled() {
                    stopped.push(waiting);
                } else {
                    kept.push_back((order, waiting));
                }
            }
            *line = kept;
        }
        self.lines.retain(|_, line| !line.is_empty());
        self.len -= stopped.len();
        stopped
    }

    /// How many jobs of `kind` wait.
    pub fn waiting(&self, kind: &str) -> usize {
        self.lines.get(kind).map_or(0, VecDeque::len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `n` waiting jobs last in claim order, taken out of the queue.
    pub fn take_newest(&mut self, n: usize) -> Vec<Waiting> {
        let mut all = self.take_all();
        let newest = all.split_off(all.len().saturating_sub(n));
        for waiting in all {
            self.push(waiting);
        }
        newest
    }

    /// Every waiting job, taken out of the queue.
    pub fn take_all(&mut self) -> Vec<Waiting> {
        self.len = 0;
        let mut all: Vec<(u64, Waiting)> = self.lines.drain().flat_map(|(_, line)| line).collect();
        all.sort_by_key(|(order, _)| *order);
        all.into_iter().map(|(_, waiting)| waiting).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: &str) -> Waiting {
        Waiting {
            job: ClaimedJob {
                id: uuid::Uuid::now_v7(),
                kind: kind.to_owned(),
                payload: "{}".to_owned(),
                attempt: 1,
                max_attempts: 3,
                timeout_secs: 60,
                lease_token: uuid::Uuid::new_v4(),
                cancel_requested: false,
                created_at: chrono::Utc::now(),
            },
            stop: CancellationToken::new(),
        }
    }

    #[test]
    fn jobs_start_in_claim_order_across_kinds() {
        let mut queue = LocalQueue::default();
        let claimed: Vec<Waiting> = ["a", "b", "a", "c"].into_iter().map(job).collect();
        let ids: Vec<_> = claimed.iter().map(|w| w.job.id).collect();
        for waiting in claimed {
            queue.push(waiting);
        }
        let started: Vec<_> = std::iter::from_fn(|| queue.pop_startable(|_| true))
            .map(|w| w.job.id)
            .collect();
        assert_eq!(started, ids);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_job_put_back_is_the_next_to_start() {
        let mut queue = LocalQueue::default();
        queue.push(job("a"));
        queue.push(job("b"));
        let first = queue.pop_startable(|_| true).expect("a job");
        let id = first.job.id;
        queue.put_back(first);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop_startable(|_| true).map(|w| w.job.id), Some(id));
    }

    #[test]
    fn a_kind_without_room_lets_the_jobs_behind_it_go_first() {
        let mut queue = LocalQueue::default();
        queue.push(job("exec"));
        queue.push(job("exec"));
        queue.push(job("echo"));
        let next = queue
            .pop_startable(|kind| kind != "exec")
            .map(|w| w.job.kind);
        assert_eq!(next.as_deref(), Some("echo"));
        assert!(queue.pop_startable(|kind| kind != "exec").is_none());
        assert_eq!(queue.waiting("exec"), 2);
        assert_eq!(queue.take_all().len(), 2);
        assert_eq!(queue.len(), 0);
    }
}
