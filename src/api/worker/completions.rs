//! Group commit for external workers' `complete` calls: concurrent calls share one statement (one round
//! trip, one commit), as submissions do (`api::jobs::grouping`). Each result is committed before its 204
//! is sent. See [`crate::batch`] for how groups form.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::batch::Batcher;
use crate::store::{self, external::Completed, external::Upload};

/// The most results one statement writes.
const MAX_GROUP: usize = 500;
/// Statements in flight at once: one group commits while the next gathers.
const FLUSHERS: usize = 2;

/// What a caller gets back.
pub type Answer = Result<Completed, Arc<store::Error>>;

/// The completion side of group commit. Cheap to clone.
#[derive(Clone)]
pub struct CompleteGroups {
    batcher: Batcher<Upload, Answer>,
}

impl CompleteGroups {
    /// Starts the flusher tasks; they stop when every clone is dropped. Needs a tokio runtime.
    pub fn start(pool: PgPool) -> CompleteGroups {
        let batcher = Batcher::start(MAX_GROUP, FLUSHERS, move |uploads| {
            complete_group(pool.clone(), uploads)
        });
        CompleteGroups { batcher }
    }

    /// Stores `upload`, possibly with concurrent ones, once committed; `None` when the server is
    /// shutting down and nothing was stored.
    pub async fn complete(&self, upload: Upload) -> Option<Answer> {
        self.batcher.submit(upload).await
    }
}

/// Counts completed jobs in the metrics; their ids.
fn finished(done: Vec<store::external::CompletedJob>) -> HashSet<Uuid> {
    done.into_iter()
        .map(|job| {
            crate::metrics::job_finished(&job.kind, crate::JobStatus::Succeeded);
            crate::metrics::job_ran(
                &job.kind,
                std::time::Duration::from_secs_f64(job.ran_secs.max(0.0)),
            );
            job.id
        })
        .collect()
}

async fn complete_group(pool: PgPool, uploads: Vec<Upload>) -> Vec<Answer> {
    // A job may be completed twice in one group (a worker repeating a call): the second copy is judged
    // after the first has been written, like any repeat.
    let mut seen = HashSet::new();
    let first: Vec<&Upload> = uploads
        .iter()
        .filter(|upload| seen.insert(upload.lease.id))
        .collect();
    let applied: Result<HashSet<Uuid>, store::Error> =
        match store::external::complete_many(&pool, &first).await {
            Ok(done) => Ok(finished(done)),
            Err(err) if first.len() > 1 && !err.is_unavailable() => {
                // One upload broke the statement: write them one by one so only that call fails.
                let mut applied = HashSet::new();
                for upload in &first {
                    if let Ok(done) = store::external::complete_many(&pool, &[upload]).await {
                        applied.extend(finished(done));
                    }
                }
                Ok(applied)
            }
            Err(err) => Err(err),
        };
    let applied = match applied {
        Ok(applied) => applied,
        Err(err) => {
            let err = Arc::new(err);
            return uploads.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let mut answered = HashSet::new();
    let mut answers = Vec::with_capacity(uploads.len());
    for upload in &uploads {
        let id = upload.lease.id;
        let answer = if applied.contains(&id) && answered.insert(id) {
            Ok(Completed::Done)
        } else {
            store::external::why_not_completed(&pool, upload.lease)
                .await
                .map_err(Arc::new)
        };
        answers.push(answer);
    }
    answers
}
