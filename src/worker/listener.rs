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

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let Some(mut listener) =
            notify::listen_until_stopped(&stop, "new jobs", || notify::listen(&shared.pool)).await
        else {
            return;
        };
        // Anything sent while we were not listening is lost: look once.
        shared.wake.notify_one();
        shared.signals.jobs_available();
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
                Ok(notification) => {
                    if let Ok(mut notified) = shared.notified.lock() {
                        // Bounded: past it, the dispatcher looks for tenants again anyway.
                        if notified.len() < MAX_REMEMBERED {
                            notified.push(notification.payload().to_owned());
                        } else if notified.len() == MAX_REMEMBERED {
                            notified.push(String::new());
                        }
                    }
                    shared.wake.notify_one();
                    shared.signals.jobs_available();
                }
                Err(err) => {
                    tracing::debug!(error = %err, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
