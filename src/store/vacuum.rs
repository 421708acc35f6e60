//! Keeping `jobs`, `results` and `deliveries` bounded where autovacuum does not (DESIGN issue 13): every job
//! leaves dead row versions behind (claim, completion, prune), and without `VACUUM` the tables and their
//! indexes grow without bound and every claim walks dead index entries.
//!
//! jobdock vacuums a table itself when its dead rows pass a threshold and autovacuum is not looking after
//! it (off, globally or for the table, or not having run on it lately), if this role owns it. One replica at
//! a time: a session-level advisory lock on a connection of its own (`VACUUM` cannot run in a transaction,
//! so a transaction-scoped lock cannot be used).

use sqlx::PgPool;

/// Key of the advisory lock that lets one replica at a time vacuum.
const VACUUM_LOCK: i64 = 0x6a6f_6264_6f63_6b02;

/// When a table is due: more dead rows than `min_dead` and than `scale` × its live rows.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    pub min_dead: i64,
    pub scale: f64,
    /// Autovacuum counts as keeping up with a table it vacuumed within this many seconds.
    pub autovacuum_recent_secs: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            min_dead: 10_000,
            scale: 0.2,
            autovacuum_recent_secs: 300.0,
        }
    }
}

/// jobdock's tables that are due for a `VACUUM` by jobdock (see the module docs), most dead rows first.
pub async fn due(pool: &PgPool, threshold: Threshold) -> super::Result<Vec<String>> {
    let tables = sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.relid IN ('jobs'::regclass, 'results'::regclass, 'deliveries'::regclass) \
           AND pg_has_role(c.relowner, 'USAGE') \
           AND s.n_dead_tup > greatest($1, $2 * s.n_live_tup) \
           AND NOT ( \
             current_setting('autovacuum')::bool \
             AND NOT coalesce('autovacuum_enabled=false' = ANY (c.reloptions), false) \
             AND coalesce(s.last_autovacuum > now() - make_interval(secs => $3), false)) \
         ORDER BY s.n_dead_tup DESC",
    )
    .bind(threshold.min_dead)
    .bind(threshold.scale)
    .bind(threshold.autovacuum_recent_secs)
    .fetch_all(pool)
    .await?;
    Ok(tables)
}

/// Vacuums `tables` (names from [`due`] only) unless another replica is vacuuming; returns whether it did.
pub async fn vacuum(pool: &PgPool, tables: &[String]) -> super::Result<bool> {
    let mut connection = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(VACUUM_LOCK)
        .fetch_one(&mut *connection)
        .await?;
    if !locked {
        return Ok(false);
    }
    let mut outcome = Ok(());
    for table in tables {
        // Only the three names `due` can return reach here; they are quoted all the same.
        let statement = format!("VACUUM \"{}\"", table.replace('"', "\"\""));
        if let Err(err) = sqlx::query(&statement).execute(&mut *connection).await {
            outcome = Err(err);
            break;
        }
    }
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(VACUUM_LOCK)
        .execute(&mut *connection)
        .await;
    if unlocked.is_err() {
        // A connection whose unlock failed may still hold the lock: do not hand it back to the pool.
        connection.detach();
    }
    outcome?;
    Ok(true)
}
