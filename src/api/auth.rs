//! Authentication (DESIGN §11): which requests need an API key, which key a bearer token is, and what it
//! grants.
//!
//! The keys that let callers in are held in memory and reloaded every half second from `api_keys`, so a
//! request costs no query and a revoked key stops working on every replica within a second. A presented
//! token is hashed and compared with every key's hash in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use poem::http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::config::AuthMode;
use crate::store;
use crate::tenant::{Caller, Scope, Scopes};

/// How often the keys are reloaded: revocation reaches every replica within this plus one query.
const RELOAD_EVERY: Duration = Duration::from_millis(500);
/// How often a key's `last_used_at` is written at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The server's keys and how it asks for them. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    mode: AuthMode,
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<KeySet>,
    pool: Option<PgPool>,
    touched: Mutex<HashMap<i64, Instant>>,
}

#[derive(Default)]
struct KeySet {
    /// Whether any key was ever created (in `auto`, keys are then required).
    any: bool,
    keys: Vec<Key>,
}

struct Key {
    id: i64,
    caller: Caller,
    sha256: [u8; 32],
}

impl Auth {
    /// No keys asked for: every caller is the default tenant with every scope (`--auth none`).
    pub fn disabled() -> Auth {
        Auth {
            mode: AuthMode::None,
            inner: Arc::new(Inner {
                keys: RwLock::new(KeySet::default()),
                pool: None,
                touched: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Loads the keys and keeps them fresh in the background (until the last clone is dropped).
    ///
    /// # Errors
    /// When the keys cannot be read.
    pub async fn start(pool: PgPool, mode: AuthMode) -> store::Result<Auth> {
        if mode == AuthMode::None {
            return Ok(Auth::disabled());
        }
        let keys = load(&pool).await?;
        let inner = Arc::new(Inner {
            keys: RwLock::new(keys),
            pool: Some(pool.clone()),
            touched: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reload(Arc::downgrade(&inner), pool));
        Ok(Auth { mode, inner })
    }

    /// Whether callers need a key right now.
    pub fn required(&self) -> bool {
        match self.mode {
            AuthMode::None => false,
            AuthMode::Keys => true,
            AuthMode::Auto => self.read().any,
        }
    }

    /// Whether any key that is not revoked exists.
    pub fn has_keys(&self) -> bool {
        !self.read().keys.is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        // A poisoned lock only means a reload panicked mid-write of a plain value: the data is whole.
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Who the request's caller is, if it may do what `needed` allows: 401 without a valid key, 403
    /// without the scope.
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<Caller, Box<Problem>> {
        if !self.required() {
            return Ok(Caller::open());
        }
        let token = bearer_token(headers).ok_or_else(|| {
            Box::new(unauthorized("send an API key as `Authorization: Bearer jdk_...` (create one with `jobdock keys create`)"))
        })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (id, caller) = {
            let set = self.read();
            // Every key is compared, each in constant time: the time taken says nothing about the keys.
            let mut found = None;
            for key in &set.keys {
                if bool::from(key.sha256.ct_eq(&digest)) {
                    found = Some((key.id, key.caller.clone()));
                }
            }
            found.ok_or_else(|| Box::new(unauthorized("the API key is unknown or revoked")))?
        };
        self.touch(id);
        if caller.scopes.allow(needed) {
            Ok(caller)
        } else {
            Err(Box::new(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "The API key lacks a scope",
                format!(
                    "this operation needs the `{needed}` scope; the key has {}",
                    caller.scopes.names().join(", ")
                ),
            )))
        }
    }

    fn touch(&self, id: i64) {
        let Some(pool) = &self.inner.pool else {
            return;
        };
        let mut touched = self
            .inner
            .touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if touched
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < TOUCH_EVERY)
        {
            return;
        }
        touched.insert(id, now);
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(err) = store::api_keys::touch(&pool, &[id]).await {
                tracing::debug!(error = %err, "last use of an API key not recorded");
            }
        });
    }
}

/// The scope a request needs, or `None` for what stays open (health probes, the document, Swagger UI).
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if path == "/metrics" {
        Some(Scope::Admin)
    } else if path == "/v1/worker" || path.starts_with("/v1/worker/") {
        Some(Scope::Work)
    } else if path == "/v1" || path.starts_with("/v1/") {
        Some(if matches!(*method, Method::GET | Method::HEAD) {
            Scope::Read
        } else {
            Scope::Submit
        })
    } else {
        None
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "An API key is required",
        detail,
    )
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn load(pool: &PgPool) -> store::Result<KeySet> {
    let (rows, any) = store::api_keys::active(pool).await?;
    let keys = rows
        .into_iter()
        .filter_map(|row| {
            let sha256: [u8; 32] = row.key_sha256.as_slice().try_into().ok()?;
            let scopes: Scopes = row.scopes.iter().filter_map(|s| s.parse().ok()).collect();
            Some(Key {
                id: row.id,
                caller: Caller {
                    tenant: row.tenant,
                    scopes,
                },
                sha256,
            })
        })
        .collect();
    Ok(KeySet { any, keys })
}

async fn reload(inner: Weak<Inner>, pool: PgPool) {
    let mut failing = false;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match load(&pool).await {
            Ok(keys) => {
                failing = false;
                *inner
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
            }
            // The last keys read stay in force; say so once per outage.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "cannot reload API keys; the last ones read stay in force");
            }
            Err(_) => {}
        }
    }
}

/// A new key: `jdk_` and 64 hex digits (256 random bits), with the SHA-256 stored in its place.
pub fn generate_key() -> (String, [u8; 32]) {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = format!("jdk_{}", super::hex(&secret));
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    (key, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_path_and_method() {
        assert_eq!(required_scope(&Method::GET, "/healthz"), None);
        assert_eq!(required_scope(&Method::GET, "/docs"), None);
        assert_eq!(required_scope(&Method::GET, "/metrics"), Some(Scope::Admin));
        assert_eq!(required_scope(&Method::GET, "/v1/jobs"), Some(Scope::Read));
        assert_eq!(
            required_scope(&Method::POST, "/v1/jobs"),
            Some(Scope::Submit)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/jobs/x"),
            Some(Scope::Submit)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/worker/claim"),
            Some(Scope::Work)
        );
    }

    #[test]
    fn only_a_bearer_token_is_taken() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "bearer jdk_x".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("jdk_x"));
    }

    #[test]
    fn a_generated_key_hashes_to_its_digest() {
        let (key, digest) = generate_key();
        assert!(key.starts_with("jdk_") && key.len() == 68);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(key.as_bytes())), digest);
        assert_ne!(generate_key().0, key);
    }
}
