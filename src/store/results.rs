//! Stored results: one row per succeeded job, written by [`super::leases::complete_and_claim`].

use sqlx::PgPool;
use uuid::Uuid;

use crate::job::JobStatus;

/// A stored result, with its own content type.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What looking up a job's result found.
#[derive(Debug)]
pub enum ResultLookup {
    Found(StoredResult),
    /// The job exists but has not succeeded (or has no result).
    NotReady(JobStatus),
    NotFound,
}

/// The result of job `id`, if it has one.
pub async fn get(pool: &PgPool, id: Uuid) -> super::Result<ResultLookup> {
    let row: Option<(JobStatus, Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT j.status, r.content_type, r.body \
         FROM jobs j LEFT JOIN results r ON r.job_id = j.id WHERE j.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => ResultLookup::NotFound,
        Some((_, Some(content_type), Some(body))) => {
            ResultLookup::Found(StoredResult { content_type, body })
        }
        Some((status, _, _)) => ResultLookup::NotReady(status),
    })
}
