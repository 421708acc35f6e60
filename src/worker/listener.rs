//! LISTEN/NOTIFY: wakes the dispatcher when jobs are submitted anywhere, and stops cancelled jobs at once
//! instead of at the next heartbeat.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::running::StopReason;
use super::Shared;
use crate::store::notify;

/// Notification payloads kept between two looks of the dispatcher.
const MAX_REMEMBERED: usize = 256;

impl Shared {
    /// Jobs of `tenant` (empty: of any) are due: tells the dispatcher, and every other waiter.
    pub(super) fn jobs_notified(&self, tenant: &str) {
        if let Ok(mut notified) = self.notified.lock() {
            // Bounded: past it, the dispatcher looks for tenants again anyway. A name already noted
            // is not noted twice (a busy API notes one per submission).
            if !notified.iter().any(|noted| noted == tenant) {
                if notified.len() < MAX_REMEMBERED {
                    notified.push(tenant.to_owned());
                } else if notified.len() == MAX_REMEMBERED {
                    notified.push(String::new());
                }
            }
        }
        self.wake.notify_one();
        self.signals.jobs_available();
    }
}

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let Some(mut listener) =
            notify::listen_until_stopped(&stop, "new jobs", || notify::listen(&shared.pool)).await
        else {
            return;
        };
        // Anything sent while we were not listening is lost: look once, for every tenant.
        shared.jobs_notified("");
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.recv() => received,
            };
            match received {
                Ok(notification) if notification.channel() == notify::CANCEL_CHANNEL => {
                    if let Ok(id) = notification.payload().parse::<Uuid>() {
                        shared.running.stop(id, StopReason::CancelRequested);
                    }
                }
                Ok(notification) => shared.jobs_notified(notification.payload()),
                Err(err) => {
                    tracing::debug!(error = %err, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
