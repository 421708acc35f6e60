//! LISTEN/NOTIFY: hints that wake idle workers and tell running jobs they were cancelled.
//!
//! Notifications are hints, never the source of truth: a lost one costs at most a poll interval (for new
//! jobs) or a heartbeat interval (for cancellation), because workers poll and heartbeats read
//! `cancel_requested` too.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use super::notify_jobs_channel;

/// New jobs were committed (payload empty).
pub const JOBS_CHANNEL: &str = notify_jobs_channel!();
/// A running job was asked to stop (payload: the job id).
pub const CANCEL_CHANNEL: &str = "jobdock_cancel";

/// Tells running workers that `id` should stop.
pub async fn cancel_requested(pool: &PgPool, id: Uuid) -> super::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CANCEL_CHANNEL)
        .bind(id.to_string())
        .execute(pool)
        .await?;
    Ok(())
}

/// Tells idle workers (in every replica) that `tenants` have new jobs: one notification per tenant, in one
/// statement of its own. Send it after the jobs commit, never in their transaction: see
/// [`crate::api::jobs::announce`] for why.
pub async fn jobs_submitted(pool: &PgPool, tenants: &[String]) -> super::Result<()> {
    sqlx::query("SELECT count(pg_notify($1, tenant)) FROM unnest($2::text[]) AS t(tenant)")
        .bind(JOBS_CHANNEL)
        .bind(tenants)
        .execute(pool)
        .await?;
    Ok(())
}

/// Tells idle workers (in every replica) that jobs are due, e.g. after a retry or a release.
pub async fn jobs_available(pool: &PgPool) -> super::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// A dedicated connection listening on both channels. sqlx re-establishes it after a connection loss on
/// the next `recv`; notifications sent while it was down are lost, which polling covers.
pub async fn listen(pool: &PgPool) -> super::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([JOBS_CHANNEL, CANCEL_CHANNEL]).await?;
    Ok(listener)
}

/// Connects with `listen` until it works, waiting 100 ms, then twice as long each time (up to 5 s), between
/// attempts; `None` once `stop` is cancelled.
pub async fn listen_until_stopped<F, Fut>(
    stop: &tokio_util::sync::CancellationToken,
    what: &str,
    mut listen: F,
) -> Option<PgListener>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = super::Result<PgListener>>,
{
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            listener = listen() => match listener {
                Ok(listener) => return Some(listener),
                Err(err) => tracing::debug!(error = %err, "LISTEN for {what} failed; polling until it works"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}
