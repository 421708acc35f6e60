//! Lanes: pooled connections handed from one short statement to the next without going back to the pool.
//!
//! sqlx's pool pings every connection it takes back, in a task of its own, before anyone else may use it:
//! a round trip and a wake-up of a backend after every statement. For a request that is one primary-key
//! read (the status monitor) that is a third of its packets. A lane is a connection this process keeps
//! checked out of the pool: the next statement takes it as it is. Used for grouped statements (status reads,
//! submissions) and the dispatcher's claims. The pool still bounds the connections — lanes
//! hold at most `size` of them — and a lane unused for [`LANE_IDLE`] goes back to the pool (which pings it,
//! so a connection broken while it sat idle is never handed out from a lane).
//!
//! A lane is only kept after a statement that succeeded ([`Lane::settle`]); one dropped mid-statement (the
//! request was abandoned) or whose statement failed goes back to the pool, whose ping drains or discards it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::db::ACQUIRE_TIMEOUT;

/// A lane unused this long goes back to the pool, so lanes never keep connections others could use, and a
/// kept connection is at most this stale: the same window after which the pool pings a connection before
/// handing it out.
pub const LANE_IDLE: Duration = super::db::PING_WHEN_IDLE_FOR;

/// Connections kept out of the pool for short statements. Cheap to clone.
#[derive(Clone)]
pub struct Lanes {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// A kept connection unused this long goes back to the pool ([`LANE_IDLE`]).
    idle_for: Duration,
    /// Kept connections, the most recently used last.
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    permits: Semaphore,
}

impl Lanes {
    /// Lanes over `pool`, at most `size` connections (at least one).
    pub fn new(pool: PgPool, size: usize) -> Lanes {
        Lanes::with_idle(pool, size, LANE_IDLE)
    }

    /// [`Lanes::new`], giving kept connections back after `idle_for` unused.
    pub fn with_idle(pool: PgPool, size: usize, idle_for: Duration) -> Lanes {
        let inner = Arc::new(Inner {
            idle_for,
            pool,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        });
        // Stale lanes are also given back while nobody asks for one, so a quiet process keeps no
        // connections from the pool's other users. The task ends with the lanes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(trim(Arc::downgrade(&inner)));
        }
        Lanes { inner }
    }

    /// A lane: a kept connection used within [`LANE_IDLE`], else one from the pool. Waits at most
    /// [`ACQUIRE_TIMEOUT`] for one, like the pool.
    pub async fn get(&self) -> super::Result<Lane<'_>> {
        // One bound for both waits (a lane, then maybe a pooled connection), so an outage is answered
        // within ACQUIRE_TIMEOUT, not twice that.
        let lane = async {
            let permit = self
                .inner
                .permits
                .acquire()
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            let conn = match self.inner.take_fresh() {
                Some(conn) => conn,
                None => self.inner.pool.acquire().await?,
            };
            Ok::<_, sqlx::Error>(Lane {
                conn: Some(conn),
                inner: &self.inner,
                _permit: permit,
            })
        };
        tokio::time::timeout(ACQUIRE_TIMEOUT, lane)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(Into::into)
    }

    /// How many connections the lanes keep right now (for tests).
    pub fn kept(&self) -> usize {
        self.inner.lock_idle().len()
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used kept connection, after giving every stale one back to the pool.
    fn take_fresh(&self) -> Option<PoolConnection<Postgres>> {
        let mut idle = self.lock_idle();
        Self::give_back_stale(&mut idle, self.idle_for);
        idle.pop().map(|(conn, _)| conn)
    }

    fn give_back_stale(idle: &mut Vec<(PoolConnection<Postgres>, Instant)>, idle_for: Duration) {
        let stale = idle
            .iter()
            .take_while(|(_, used)| used.elapsed() >= idle_for)
            .count();
        // Dropping a pooled connection hands it back to the pool (in a task of sqlx's own).
        idle.drain(..stale);
    }
}

/// Gives stale lanes back every `idle_for`, and all of them once the pool is closing.
async fn trim(inner: std::sync::Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|inner| inner.idle_for) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut idle = inner.lock_idle();
        if inner.pool.is_closed() {
            idle.clear();
        } else {
            Inner::give_back_stale(&mut idle, inner.idle_for);
        }
    }
}

/// A connection for one short statement; see [`Lanes`].
pub struct Lane<'a> {
    conn: Option<PoolConnection<Postgres>>,
    inner: &'a Inner,
    _permit: SemaphorePermit<'a>,
}

impl Lane<'_> {
    /// The connection, to run statements on.
    pub fn conn(&mut self) -> &mut PgConnection {
        match self.conn.as_mut() {
            Some(conn) => conn,
            // `conn` is only taken by `settle`, which consumes the lane.
            None => unreachable!("a lane's connection is taken only when the lane is settled"),
        }
    }

    /// Ends the lane's use: after a statement that succeeded the connection is kept for the next statement;
    /// after an error it goes back to the pool, whose ping drains or discards it.
    pub fn settle<T>(mut self, outcome: &super::Result<T>) {
        let healthy = outcome.is_ok();
        if let (true, Some(conn)) = (healthy, self.conn.take()) {
            if !self.inner.pool.is_closed() {
                self.inner.lock_idle().push((conn, Instant::now()));
            }
        }
    }
}
