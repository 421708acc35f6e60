//! Batched completion: the results of jobs that succeed together are written in one statement (see
//! [`crate::batch`]), each still fenced by its own lease token. A job's slot is freed only after its
//! result is committed, so "succeeded" on the monitor always means the result is there.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;

use crate::batch::Batcher;
use crate::store::leases::{self, Completion};

/// The most completions one statement writes.
pub const MAX_BATCH: usize = 500;
/// Statements in flight at once.
const FLUSHERS: usize = 2;

/// Whether the completion applied (false: the lease was lost), or the error its batch hit.
pub type Completed = Result<bool, Arc<sqlx::Error>>;

pub type Completer = Batcher<Completion, Completed>;

pub fn start(pool: PgPool) -> Completer {
    Batcher::start(MAX_BATCH, FLUSHERS, move |completions| {
        write(pool.clone(), completions)
    })
}

async fn write(pool: PgPool, completions: Vec<Completion>) -> Vec<Completed> {
    match leases::complete_many(&pool, &completions).await {
        Ok(applied) => {
            let applied: HashSet<_> = applied.into_iter().collect();
            completions
                .iter()
                .map(|completion| Ok(applied.contains(&completion.lease.id)))
                .collect()
        }
        Err(err) => {
            let err = Arc::new(err);
            completions.iter().map(|_| Err(err.clone())).collect()
        }
    }
}
