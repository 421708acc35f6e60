//! Telling workers that jobs were submitted: after the jobs commit, outside their transaction, and
//! coalesced.
//!
//! Why not a NOTIFY in the statement that stores the jobs: PostgreSQL takes one lock on the notification
//! queue from a notifying transaction's pre-commit to the end of its commit, WAL flush included, so the
//! commits of all notifying transactions happen one after another. Under submit load two group inserts
//! could never commit together; sampled in `e2e`, a third of a group insert's time went to waiting for
//! that lock. So the API stores jobs without one and hands their tenants to [`Announcer`], whose one task
//! sends a single statement for all the submissions that committed since its last one, and at most one
//! per [`SPACING`]: each is a commit of its own, and a busy submit path would otherwise send one per group.
//! The first after a quiet spell goes at once, so an idle worker elsewhere starts a lone job without delay.
//! This process's own workers are woken directly, without the round trip.
//!
//! Notifications are hints (workers poll too, see [`crate::store::notify`]): one lost to a crash between
//! the commit and the send costs an idle worker at most a poll interval, and the job is stored either way.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::notify;
use crate::worker::intake::Intake;

/// The least time between two notifications from this process.
const SPACING: Duration = Duration::from_millis(2);
/// The most tenants one notification statement names; more are sent in the next one.
const MAX_TENANTS: usize = 256;

/// Hands submitted jobs' tenants to the notifying task. Cheap to clone; the task ends when every clone
/// is dropped.
#[derive(Clone)]
pub struct Announcer {
    sender: mpsc::UnboundedSender<String>,
    /// This process's workers, if it runs any.
    local: Option<Intake>,
}

impl Announcer {
    /// Starts the task that notifies on `pool`. Must be called inside a tokio runtime.
    pub fn start(pool: sqlx::PgPool) -> Announcer {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, receiver));
        Announcer {
            sender,
            local: None,
        }
    }

    /// Also wakes these workers directly.
    pub fn with_local(mut self, local: Intake) -> Announcer {
        self.local = Some(local);
        self
    }

    /// Jobs of `tenant` committed, queued: idle workers should look. Returns at once.
    pub fn submitted(&self, tenant: &str) {
        if let Some(local) = &self.local {
            local.jobs_submitted(tenant);
        }
        // Only fails once the task is gone, at shutdown, when nobody needs waking.
        let _ = self.sender.send(tenant.to_owned());
    }
}

async fn run(pool: sqlx::PgPool, mut receiver: mpsc::UnboundedReceiver<String>) {
    let mut tenants: Vec<String> = Vec::new();
    while let Some(first) = receiver.recv().await {
        tenants.push(first);
        // Everything that committed while the last statement was out (or during the spacing) goes in
        // this one.
        while tenants.len() < MAX_TENANTS {
            match receiver.try_recv() {
                Ok(tenant) if !tenants.contains(&tenant) => tenants.push(tenant),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let next = tokio::time::Instant::now() + SPACING;
        if let Err(err) = notify::jobs_submitted(&pool, &tenants).await {
            // A hint lost: the workers find the jobs at their next poll.
            tracing::debug!(error = %err, "telling workers about submitted jobs failed; they will find them when they poll");
        }
        tenants.clear();
        tokio::time::sleep_until(next).await;
    }
}
