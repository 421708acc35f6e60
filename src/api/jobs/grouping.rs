//! Group commit for submissions: concurrent `POST /v1/jobs` requests share one INSERT statement (one
//! round trip, one commit, one notification) instead of paying for one each. Each job is still committed
//! before its 202 is sent. See [`crate::batch`] for how groups form.
//!
//! In a `serve` process the same statement stores the jobs its idle workers may start now already claimed
//! by them ([`crate::worker::intake`]); only the queued ones are announced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::announce::Announcer;
use crate::api::problem::Problem;
use crate::batch::Batcher;
use crate::job::{Job, NewJob};
use crate::store::intake::Stored;
use crate::store::{self, lanes::Lanes};
use crate::worker::intake::Intake;

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
    context: Arc<Context>,
}

/// What the flushers store with and whom they tell.
struct Context {
    pool: PgPool,
    lanes: Lanes,
    announcer: Announcer,
    /// This process's workers, which take the jobs they may start now ([`crate::worker::intake`]).
    intake: Option<Intake>,
}

impl SubmitGroups {
    /// Starts the flusher tasks; they stop when every `SubmitGroups` clone is dropped.
    pub fn start(pool: PgPool, lanes: Lanes, announcer: Announcer) -> SubmitGroups {
        SubmitGroups::with_context(Context {
            pool,
            lanes,
            announcer,
            intake: None,
        })
    }

    fn with_context(context: Context) -> SubmitGroups {
        let context = Arc::new(context);
        let flushing = context.clone();
        let batcher = Batcher::start(MAX_GROUP, FLUSHERS, move |jobs| {
            insert_group(flushing.clone(), jobs)
        });
        SubmitGroups { batcher, context }
    }

    /// The same, handing the jobs `intake`'s idle workers may start straight to them, and announcing the
    /// others with `announcer` (new flushers; the old ones end with the old value).
    pub fn with_intake(self, intake: Intake, announcer: Announcer) -> SubmitGroups {
        SubmitGroups::with_context(Context {
            pool: self.context.pool.clone(),
            lanes: self.context.lanes.clone(),
            announcer,
            intake: Some(intake),
        })
    }

    /// Stores `job`, possibly together with concurrent submissions, and returns its row once committed.
    pub async fn insert(&self, job: NewJob) -> Inserted {
        self.batcher
            .submit(job)
            .await
            .unwrap_or(Err(GroupError::Closed))
    }
}

fn missing() -> GroupError {
    GroupError::Store(Arc::new(store::Error::Inconsistent(
        "an inserted job was not returned".to_owned(),
    )))
}

async fn insert_group(context: Arc<Context>, jobs: Vec<NewJob>) -> Vec<Inserted> {
    let mut reservations = match &context.intake {
        Some(intake) => intake.reserve(&jobs),
        None => Vec::new(),
    };
    reservations.resize_with(jobs.len(), || None);
    let started: Vec<bool> = reservations.iter().map(Option::is_some).collect();
    let (lease, worker_id) = match &context.intake {
        Some(intake) => (intake.lease(), intake.worker_id()),
        None => (Duration::ZERO, ""),
    };
    let inserted = async {
        let mut lane = context.lanes.get().await?;
        let inserted =
            store::intake::insert_many_started(lane.conn(), &jobs, &started, lease, worker_id)
                .await;
        lane.settle(&inserted);
        inserted
    };
    match inserted.await {
        Ok(rows) => {
            let mut rows: HashMap<_, _> = rows.into_iter().map(|row| (row.job.id, row)).collect();
            let mut answers = Vec::with_capacity(jobs.len());
            let mut queued_tenants: Vec<&str> = Vec::new();
            for (job, reservation) in jobs.iter().zip(reservations) {
                let Some(Stored {
                    job: stored,
                    claimed,
                }) = rows.remove(&job.id)
                else {
                    answers.push(Err(missing()));
                    continue;
                };
                match (claimed, reservation) {
                    (Some(claimed), Some(reservation)) => reservation.start(claimed).await,
                    _ if !queued_tenants.contains(&job.tenant.as_str()) => {
                        queued_tenants.push(&job.tenant)
                    }
                    _ => {}
                }
                answers.push(Ok(stored));
            }
            for tenant in queued_tenants {
                context.announcer.submitted(tenant);
            }
            answers
        }
        Err(err) if jobs.len() > 1 && !err.is_unavailable() => {
            // One job's data broke the group: insert them one by one, queued, so only that request fails.
            let mut answers = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let answer = match store::jobs::insert_many(
                    &context.pool,
                    std::slice::from_ref(job),
                )
                .await
                {
                    Ok(mut rows) => rows.pop().ok_or_else(missing),
                    Err(err) => Err(GroupError::Store(Arc::new(err))),
                };
                if answer.is_ok() {
                    context.announcer.submitted(&job.tenant);
                }
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
