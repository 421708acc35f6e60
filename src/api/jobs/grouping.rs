//! Group commit for submissions: concurrent `POST /v1/jobs` requests share one INSERT statement (one
//! round trip, one commit, one NOTIFY) instead of paying for one each. Each job is still committed before
//! its 202 is sent. See [`crate::batch`] for how groups form.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use crate::api::problem::Problem;
use crate::batch::Batcher;
use crate::job::{Job, NewJob};
use crate::store::{self, lanes::Lanes};

/// The most jobs one statement inserts.
pub const MAX_GROUP: usize = 500;
/// Statements in flight at once: one group commits while the next gathers. More flushers make smaller
/// groups, and on a busy database each extra commit costs more than the wait it saves.
const FLUSHERS: usize = 2;

/// What a waiter gets back: its job, or why it was not stored.
pub type Inserted = Result<Job, GroupError>;

impl GroupError {
    /// What the client is told: the store's error, or 503 while shutting down.
    pub fn problem(&self) -> Problem {
        match self {
            GroupError::Store(err) => Problem::from_db(err),
            GroupError::Closed => {
                let mut problem = Problem::unavailable();
                problem.detail = Some(
                    "the server is shutting down; nothing was stored. Retry after the time in Retry-After."
                        .to_owned(),
                );
                problem
            }
        }
    }
}

/// Why a grouped submission was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// The insert failed.
    #[error(transparent)]
    Store(Arc<store::Error>),
    /// The flushers are gone: the server is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

/// The submission side of group commit. Cheap to clone.
#[derive(Clone)]
pub struct SubmitGroups {
    batcher: Batcher<NewJob, Inserted>,
}

impl SubmitGroups {
    /// Starts the flusher tasks; they stop when every `SubmitGroups` clone is dropped.
    pub fn start(pool: PgPool, lanes: Lanes) -> SubmitGroups {
        let batcher = Batcher::start(MAX_GROUP, FLUSHERS, move |jobs| {
            insert_group(pool.clone(), lanes.clone(), jobs)
        });
        SubmitGroups { batcher }
    }

    /// Stores `job`, possibly together with concurrent submissions, and returns its row once committed.
    pub async fn insert(&self, job: NewJob) -> Inserted {
        self.batcher
            .submit(job)
            .await
            .unwrap_or(Err(GroupError::Closed))
    }
}

async fn insert_group(pool: PgPool, lanes: Lanes, jobs: Vec<NewJob>) -> Vec<Inserted> {
    let missing = || {
        GroupError::Store(Arc::new(store::Error::Inconsistent(
            "an inserted job was not returned".to_owned(),
        )))
    };
    let inserted = async {
        let mut lane = lanes.get().await?;
        let inserted = store::jobs::insert_many(lane.conn(), &jobs).await;
        lane.settle(&inserted);
        inserted
    };
    match inserted.await {
        Ok(rows) => {
            let mut rows: HashMap<_, _> = rows.into_iter().map(|job| (job.id, job)).collect();
            jobs.iter()
                .map(|job| rows.remove(&job.id).ok_or_else(missing))
                .collect()
        }
        Err(err) if jobs.len() > 1 && !err.is_unavailable() => {
            // One job's data broke the group: insert them one by one so only that request fails.
            let mut answers = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let answer = match store::jobs::insert_many(&pool, std::slice::from_ref(job)).await
                {
                    Ok(mut rows) => rows.pop().ok_or_else(missing),
                    Err(err) => Err(GroupError::Store(Arc::new(err))),
                };
                answers.push(answer);
            }
            answers
        }
        Err(err) => {
            let err = Arc::new(err);
            jobs.iter()
                .map(|_| Err(GroupError::Store(err.clone())))
                .collect()
        }
    }
}
