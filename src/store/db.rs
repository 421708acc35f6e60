//! Connecting to PostgreSQL: the pool, creating the database when missing, migrations, readiness.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::redact_url;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a request waits for a pooled connection before it is answered 503. sqlx's default (30 s) would
/// turn a database outage into a hang.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle at least this long is pinged before it is handed out.
pub(crate) const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Opens a pool to `url`, creating the database first if it does not exist.
///
/// # Errors
/// A one-line, actionable message when PostgreSQL is unreachable, refuses the credentials, or the URL is
/// malformed.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = parse_url(url)?;
    ensure_database(&options, url).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        // sqlx pings every connection it hands out (a full round trip, and a wake-up of the backend) before
        // the statement it was acquired for; on a busy pool that doubles the round trips of every request.
        // A connection used moments ago is known to be alive, so only one idle for a second or more is
        // tested: a broken connection still gets replaced (the pool also pings every connection it takes
        // back, and drops one that fails), and a database restart costs at most one failed statement per
        // connection used in the second before it (answered 503, retried).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(|err| explain_connect_error(err, url))?;
    Ok(pool)
}

/// The connect options in `url`, with an error that says what is wrong once (sqlx's error already carries
/// its cause in its message, so it is not kept as a source).
fn parse_url(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|err| {
        anyhow::anyhow!(
            "DATABASE_URL `{}` is not a valid PostgreSQL URL: {err}",
            redact_url(url)
        )
    })
}

/// Applies pending migrations. Safe for replicas starting together: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations failed")
}

/// True when the database answers and every embedded migration has been applied.
pub async fn is_ready(pool: &PgPool) -> super::Result<bool> {
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _sqlx_migrations WHERE success AND version = ANY($1)",
    )
    .bind(MIGRATOR.iter().map(|m| m.version).collect::<Vec<i64>>())
    .fetch_one(pool)
    .await
    .or_else(|err| match &err {
        // The migrations table does not exist yet: reachable, not ready.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(0),
        _ => Err(err),
    })?;
    Ok(usize::try_from(applied).unwrap_or(0) == MIGRATOR.iter().count())
}

/// Creates the database named in `options` when connecting fails because it does not exist.
async fn ensure_database(options: &PgConnectOptions, url: &str) -> anyhow::Result<()> {
    match options.connect().await {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or("jobdock").to_owned();
            let mut admin = options
                .clone()
                .database("postgres")
                .connect()
                .await
                .map_err(|err| explain_connect_error(err, url))?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match sqlx::query(&format!("CREATE DATABASE {quoted}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another replica created it first.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
                Err(err) => {
                    return Err(anyhow::anyhow!(
                    "database `{name}` does not exist and could not be created ({err}); create it \
                         yourself or point DATABASE_URL at an existing database"
                ))
                }
            }
            let _ = admin.close().await;
            Ok(())
        }
        Err(err) => Err(explain_connect_error(err, url)),
    }
}

fn explain_connect_error(err: sqlx::Error, url: &str) -> anyhow::Error {
    let url = redact_url(url);
    match &err {
        sqlx::Error::Io(io) => anyhow::anyhow!(
            "cannot reach PostgreSQL at {url} ({io}): start PostgreSQL, or set DATABASE_URL (or \
             --database-url) to a server that is running"
        ),
        sqlx::Error::PoolTimedOut => anyhow::anyhow!(
            "PostgreSQL at {url} did not answer in time: check that it is running and reachable"
        ),
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some("28P01") || db.code().as_deref() == Some("28000") =>
        {
            anyhow::anyhow!(
                "PostgreSQL at {url} refused the credentials ({}): put a user and password it accepts in \
                 DATABASE_URL",
                db.message()
            )
        }
        _ => anyhow::anyhow!("connecting to PostgreSQL at {url} failed: {err}"),
    }
}
