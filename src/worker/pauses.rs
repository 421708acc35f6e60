//! Kinds paused by back-pressure (DESIGN §9), as this process knows them: the dispatcher leaves them out
//! of its claims until their pause ends. A pause this process records is known at once; pauses recorded
//! by other replicas are read from `kind_pauses` every second, and only by a process that runs kinds
//! that can be paused (`http`), so the claim statement itself stays as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::kind_pauses;

/// How often pauses recorded elsewhere are read.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Paused kinds and when each pause ends. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pauses(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl Pauses {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        // Held only for map operations; a poisoned map is still a valid map.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `kind` is paused until `until` (the later of two pauses wins).
    pub fn record(&self, kind: &str, until: DateTime<Utc>) {
        let mut pauses = self.lock();
        let entry = pauses.entry(kind.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether `kind` is paused now.
    pub fn is_paused(&self, kind: &str) -> bool {
        let pauses = self.lock();
        pauses.get(kind).is_some_and(|until| *until > Utc::now())
    }

    /// `kinds` without those paused now; `None` when none is paused (the common case: no allocation).
    pub fn unpaused(&self, kinds: &[String]) -> Option<Vec<String>> {
        let mut pauses = self.lock();
        if pauses.is_empty() {
            return None;
        }
        let now = Utc::now();
        pauses.retain(|_, until| *until > now);
        if pauses.is_empty() {
            return None;
        }
        Some(
            kinds
                .iter()
                .filter(|kind| !pauses.contains_key(*kind))
                .cloned()
                .collect(),
        )
    }
}

/// Reads the pauses other replicas recorded, every [`REFRESH_EVERY`], until `stop`.
pub(super) async fn refresh(pool: PgPool, pauses: Pauses, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(REFRESH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match kind_pauses::paused(&pool).await {
            Ok(paused) => {
                for (kind, until) in paused {
                    pauses.record(&kind, until);
                }
            }
            Err(err) => tracing::debug!(error = %err, "reading kind pauses failed"),
        }
    }
}
