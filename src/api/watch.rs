//! Waiting for a job to change without holding a database connection (DESIGN §12).
//!
//! One listening connection per process receives the ids of watched jobs that changed; a request that
//! waits subscribes to its job's id here and sleeps until that id is named, then reads the job once. So
//! 500 waiting requests cost no pooled connection while they wait, and one query each per change of their
//! own job. Notifications are hints: a waiter also looks again every [`RECHECK`], and all of them look
//! again when the listening connection comes back after a loss (anything sent meanwhile was missed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store;

/// How often a waiter looks again without being told: covers lost notifications and the changes that are
/// not notified (a job's place in its queue moves as the jobs ahead of it start).
pub const RECHECK: Duration = Duration::from_secs(5);

/// The process's waiters, by job id. Cheap to clone.
#[derive(Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<HashMap<Uuid, Entry>>,
    /// Bumped whenever every waiter should look again (the listener (re)connected).
    everyone: watch::Sender<u64>,
}

struct Entry {
    changed: watch::Sender<u64>,
    waiters: usize,
}

/// One request's interest in one job. Dropping it ends the interest.
pub struct Subscription {
    id: Uuid,
    changed: watch::Receiver<u64>,
    everyone: watch::Receiver<u64>,
    inner: Arc<Inner>,
}

impl Subscription {
    /// Resolves when the job was named in a notification, or when everyone should look again, since the
    /// subscription was made or since the last call.
    pub async fn changed(&mut self) {
        tokio::select! {
            _ = self.changed.changed() => {}
            _ = self.everyone.changed() => {}
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            if let Some(entry) = jobs.get_mut(&self.id) {
                entry.waiters -= 1;
                if entry.waiters == 0 {
                    jobs.remove(&self.id);
                }
            }
        }
    }
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            inner: Arc::new(Inner {
                jobs: Mutex::new(HashMap::new()),
                everyone: watch::channel(0).0,
            }),
        }
    }
}

impl Watchers {
    /// Waiters that are woken by notifications received on a connection of their own, until `stop`.
    pub fn start(pool: PgPool, stop: CancellationToken) -> Watchers {
        let watchers = Watchers::default();
        tokio::spawn(watchers.clone().listen(pool, stop));
        watchers
    }

    /// Subscribes to changes of `id`. Subscribe before reading the job: a change committed after the read
    /// is then never missed.
    pub fn subscribe(&self, id: Uuid) -> Subscription {
        let everyone = self.inner.everyone.subscribe();
        let changed = match self.inner.jobs.lock() {
            Ok(mut jobs) => {
                let entry = jobs.entry(id).or_insert_with(|| Entry {
                    changed: watch::channel(0).0,
                    waiters: 0,
                });
                entry.waiters += 1;
                entry.changed.subscribe()
            }
            // A poisoned map: fall back to looking again every RECHECK.
            Err(_) => watch::channel(0).1,
        };
        Subscription {
            id,
            changed,
            everyone,
            inner: self.inner.clone(),
        }
    }

    fn notify(&self, id: Uuid) {
        if let Ok(jobs) = self.inner.jobs.lock() {
            if let Some(entry) = jobs.get(&id) {
                entry.changed.send_modify(|n| *n += 1);
            }
        }
    }

    async fn listen(self, pool: PgPool, stop: CancellationToken) {
        loop {
            let Some(mut listener) =
                store::notify::listen_until_stopped(&stop, "job changes", || {
                    store::watch::listen(&pool)
                })
                .await
            else {
                return;
            };
            // Changes made while nobody listened were not heard: everyone looks again.
            self.inner.everyone.send_modify(|n| *n += 1);
            loop {
                let received = tokio::select! {
                    _ = stop.cancelled() => return,
                    received = listener.recv() => received,
                };
                match received {
                    Ok(notification) => {
                        if let Ok(id) = notification.payload().parse::<Uuid>() {
                            self.notify(id);
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "LISTEN connection for job changes lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
