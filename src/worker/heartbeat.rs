//! Heartbeats: one statement extends the lease of every job this process runs, and reports which jobs
//! were asked to stop and which leases were lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::running::StopReason;
use super::Shared;
use crate::store::leases;

/// Beats three times per lease, so two can be missed before the lease expires.
fn interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval(shared.config.lease));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let held = shared.running.leases();
        if held.is_empty() {
            continue;
        }
        match leases::heartbeat_many(&shared.pool, &held, shared.config.lease).await {
            Ok(beats) => {
                let alive: HashSet<_> = beats.iter().map(|beat| beat.id).collect();
                for beat in beats.iter().filter(|beat| beat.cancel_requested) {
                    shared.running.stop(beat.id, StopReason::CancelRequested);
                }
                for lost in held.iter().filter(|lease| !alive.contains(&lease.id)) {
                    if shared.running.lease_lost(lost.id) {
                        tracing::warn!(job = %lost.id, "lease lost; stopping the job");
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, jobs = held.len(), "heartbeat failed"),
        }
    }
}
