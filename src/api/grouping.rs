//! Group commit for submissions: concurrent `POST /v1/jobs` requests share one INSERT statement (one
//! round trip, one commit, one NOTIFY) instead of paying for one each.
//!
//! A request hands its validated job to a channel and waits for its row. A few flusher tasks take whatever
//! has queued up (at most [`MAX_GROUP`] jobs), insert it in one statement and answer each waiter. Nothing is
//! delayed to wait for company: an idle server inserts a lone job at once, and groups form only when
//! requests arrive faster than the database commits. Each job is still committed before its 202 is sent.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::job::{Job, NewJob};
use crate::store;

/// The most jobs one statement inserts.
pub const MAX_GROUP: usize = 500;
/// Statements in flight at once: enough to keep the database busy while one group commits.
const FLUSHERS: usize = 4;

/// What a waiter gets back: its job, or the error its group's insert hit.
pub type Inserted = Result<Job, Arc<sqlx::Error>>;

struct Pending {
    job: NewJob,
    reply: oneshot::Sender<Inserted>,
}

/// The submission side of group commit. Cheap to clone.
#[derive(Clone)]
pub struct SubmitGroups {
    queue: mpsc::Sender<Pending>,
}

impl SubmitGroups {
    /// Starts the flusher tasks; they stop when every `SubmitGroups` clone is dropped.
    pub fn start(pool: PgPool) -> SubmitGroups {
        let (queue, receiver) = mpsc::channel::<Pending>(MAX_GROUP * FLUSHERS);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..FLUSHERS {
            tokio::spawn(flush(pool.clone(), receiver.clone()));
        }
        SubmitGroups { queue }
    }

    /// Stores `job`, possibly together with concurrent submissions, and returns its row once committed.
    pub async fn insert(&self, job: NewJob) -> Inserted {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { job, reply }).await.is_err() {
            return Err(Arc::new(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(Arc::new(sqlx::Error::WorkerCrashed)))
    }
}

async fn flush(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut group = Vec::with_capacity(MAX_GROUP);
        {
            // One flusher at a time collects; the others are inserting meanwhile.
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        insert_group(&pool, group).await;
    }
}

async fn insert_group(pool: &PgPool, group: Vec<Pending>) {
    let jobs: Vec<NewJob> = group.iter().map(|pending| pending.job.clone()).collect();
    match store::jobs::insert_many(pool, &jobs).await {
        Ok(rows) => {
            // insert_many returns rows ordered by id; match them back to their waiters by id.
            let mut rows: std::collections::HashMap<_, _> =
                rows.into_iter().map(|job| (job.id, job)).collect();
            for pending in group {
                let answer = rows
                    .remove(&pending.job.id)
                    .ok_or_else(|| Arc::new(sqlx::Error::RowNotFound));
                let _ = pending.reply.send(answer);
            }
        }
        Err(err) if group.len() > 1 && store::classify(&err) != store::ErrorClass::Unavailable => {
            // One job's data broke the group: insert them one by one so only that request fails.
            for pending in group {
                let answer = store::jobs::insert_many(pool, std::slice::from_ref(&pending.job))
                    .await
                    .map_err(Arc::new)
                    .and_then(|mut rows| {
                        rows.pop().ok_or_else(|| Arc::new(sqlx::Error::RowNotFound))
                    });
                let _ = pending.reply.send(answer);
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for pending in group {
                let _ = pending.reply.send(Err(err.clone()));
            }
        }
    }
}
