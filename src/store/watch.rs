//! Jobs somebody waits for: marking them watched, so each change of their monitor is notified on
//! [`CHANGED_CHANNEL`] (a trigger does it, see the migration `watched_jobs`), and the listening connection
//! that receives those notifications.

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use super::job_columns;
use super::jobs::Visible;
use crate::job::Job;

/// A watched job changed (payload: its id).
pub const CHANGED_CHANNEL: &str = "jobdock_changed";

/// A job as its monitor shows it, and whether its changes are already notified.
#[derive(sqlx::FromRow)]
struct WatchedRow {
    #[sqlx(flatten)]
    job: Job,
    watched: bool,
}

/// One job by id, if `tenant` may see it, with whether it is watched.
pub async fn get(
    pool: &PgPool,
    id: Uuid,
    tenant: Visible<'_>,
) -> super::Result<Option<(Job, bool)>> {
    let row: Option<WatchedRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        ", watched FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| (row.job, row.watched)))
}

/// From now on, every change of `id`'s monitor is notified. A finished job never changes, so it is left
/// alone; the flag is never cleared (it costs a job only the notifications of its own changes).
pub async fn watch(pool: &PgPool, id: Uuid) -> super::Result<()> {
    sqlx::query(
        "UPDATE jobs SET watched = true \
         WHERE id = $1 AND NOT watched AND status IN ('queued', 'running')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A connection of its own (outside `pool`, so waiting never takes one of the pool's connections)
/// listening on [`CHANGED_CHANNEL`].
pub async fn listen(pool: &PgPool) -> super::Result<PgListener> {
    let single = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&single).await?;
    listener.listen(CHANGED_CHANNEL).await?;
    Ok(listener)
}
