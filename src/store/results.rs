//! Stored results: one row per succeeded job, written by [`super::leases::complete_and_claim`].

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::job::JobStatus;

/// A stored result, with its own content type.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Served with the result: `(name, value)` pairs.
    pub headers: Vec<(String, String)>,
}

/// What looking up a job's result found.
#[derive(Debug)]
pub enum ResultLookup {
    Found(StoredResult),
    /// The job exists but has not succeeded (or has no result).
    NotReady(JobStatus),
    NotFound,
}

/// A job's status, and its result's content type, body and headers when it has one.
type ResultRow = (JobStatus, Option<String>, Option<Vec<u8>>, Option<Value>);

/// The result of job `id`, if it has one.
pub async fn get(
    pool: &PgPool,
    id: Uuid,
    tenant: super::jobs::Visible<'_>,
) -> super::Result<ResultLookup> {
    let row: Option<ResultRow> = sqlx::query_as(
        "SELECT j.status, r.content_type, r.body, r.headers \
         FROM jobs j LEFT JOIN results r ON r.job_id = j.id \
         WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => ResultLookup::NotFound,
        Some((_, Some(content_type), Some(body), headers)) => ResultLookup::Found(StoredResult {
            content_type,
            body,
            headers: headers.map(header_pairs).unwrap_or_default(),
        }),
        Some((status, _, _, _)) => ResultLookup::NotReady(status),
    })
}

/// `[["name", "value"], ...]` as pairs; anything else in the column is skipped.
fn header_pairs(headers: Value) -> Vec<(String, String)> {
    let Value::Array(pairs) = headers else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|pair| {
            Some((
                pair.get(0)?.as_str()?.to_owned(),
                pair.get(1)?.as_str()?.to_owned(),
            ))
        })
        .collect()
}
