//! API keys (DESIGN §11): the table holds each key's SHA-256, never the key.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A key as `jobdock keys list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key that lets callers in: what the server compares and what it grants.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveKey {
    pub id: i64,
    pub tenant: String,
    pub scopes: Vec<String>,
    pub key_sha256: Vec<u8>,
}

/// Stores a new key's hash; returns its id.
pub async fn create(
    pool: &PgPool,
    tenant: &str,
    name: &str,
    scopes: &[&str],
    key_sha256: &[u8],
) -> super::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO api_keys (tenant, name, scopes, key_sha256) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(scopes)
    .bind(key_sha256)
    .fetch_one(pool)
    .await?)
}

/// Every key, oldest first, revoked ones included.
pub async fn list(pool: &PgPool) -> super::Result<Vec<KeyRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant, name, scopes, created_at, last_used_at, revoked_at FROM api_keys ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// What revoking a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Done,
    /// It was revoked before; nothing changed.
    Already,
    NotFound,
}

/// Revokes a key: it stops letting callers in (on every replica within a second).
pub async fn revoke(pool: &PgPool, id: i64) -> super::Result<Revoked> {
    let before: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "WITH old AS (SELECT id, revoked_at FROM api_keys WHERE id = $1 FOR UPDATE), \
              upd AS (UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()) \
                      FROM old WHERE k.id = old.id) \
         SELECT revoked_at FROM old",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(match before {
        None => Revoked::NotFound,
        Some(None) => Revoked::Done,
        Some(Some(_)) => Revoked::Already,
    })
}

/// The keys that are not revoked, and whether any key was ever created (in `--auth auto`, one key, even
/// revoked, means keys are required: revoking every key must not reopen the server).
pub async fn active(pool: &PgPool) -> super::Result<(Vec<ActiveKey>, bool)> {
    let keys: Vec<ActiveKey> = sqlx::query_as(
        "SELECT id, tenant, scopes, key_sha256 FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let any = !keys.is_empty()
        || sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(pool)
            .await?;
    Ok((keys, any))
}

/// Records that keys were used (at most about once a minute per key: this is for people, not audits).
pub async fn touch(pool: &PgPool, ids: &[i64]) -> super::Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
