//! Kind pauses (DESIGN §9 back-pressure): until a kind's `paused_until`, claims on every replica skip its
//! jobs (each runtime reads this table, `crate::worker::pauses`, and leaves paused kinds out of its claims).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Pauses `kind` for `length` from now, or longer if it is already paused longer.
pub async fn pause(pool: &PgPool, kind: &str, length: Duration) -> super::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO kind_pauses (kind, paused_until) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (kind) DO UPDATE SET paused_until = greatest(kind_pauses.paused_until, excluded.paused_until) \
         RETURNING paused_until",
    )
    .bind(kind)
    .bind(length.as_secs_f64())
    .fetch_one(pool)
    .await?)
}

/// Every kind paused now, with when its pause ends.
pub async fn paused(pool: &PgPool) -> super::Result<Vec<(String, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT kind, paused_until FROM kind_pauses WHERE paused_until > now() ORDER BY kind",
    )
    .fetch_all(pool)
    .await?)
}
