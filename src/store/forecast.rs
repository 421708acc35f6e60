//! What a forecast of a job's finish is made of: how long its kind's jobs ran lately, how many of them run
//! now, and how many queued jobs are ahead of it. Each read is bounded, whatever the table's size.

use sqlx::PgPool;
use uuid::Uuid;

/// The most jobs a queue position counts.
pub const MAX_QUEUE_POSITION: i64 = 10_000;

/// How a kind's jobs have been running lately.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KindPace {
    /// The median run time, in seconds, of the kind's latest succeeded jobs (`None`: none finished lately).
    pub run_secs: Option<f64>,
    /// How many of the kind's jobs are running now (counted up to 10,000).
    pub running: i64,
}

/// The pace of `kind`: the median run time among its succeeded jobs among the 5,000 jobs that finished
/// last (read from the index on `finished_at`, newest first), and its running jobs.
pub async fn kind_pace(pool: &PgPool, kind: &str) -> super::Result<KindPace> {
    let (run_secs, running): (Option<f64>, i64) = sqlx::query_as(
        "SELECT \
           (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) \
              FROM (SELECT kind, status, started_at, finished_at FROM jobs \
                    WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 5000) latest \
             WHERE kind = $1 AND status = 'succeeded' AND started_at IS NOT NULL)::float8, \
           (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'running' AND kind = $1 \
                                  LIMIT 10000) running)",
    )
    .bind(kind)
    .fetch_one(pool)
    .await?;
    Ok(KindPace { run_secs, running })
}

/// A queued job's place in the claim order: what [`queue_order`] reads.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedKey {
    pub priority: i32,
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub id: Uuid,
    pub queue: String,
}

/// The first [`MAX_QUEUE_POSITION`] queued jobs of `tenant` in claim order (priority, then `run_at`, then
/// id): one range scan of the claim index. Other tenants take turns with it, so they are not ahead.
pub async fn queue_order(pool: &PgPool, tenant: &str) -> super::Result<Vec<QueuedKey>> {
    Ok(sqlx::query_as(
        "SELECT priority, run_at, id, queue FROM jobs WHERE status = 'queued' AND tenant = $1 \
         ORDER BY priority DESC, run_at, id LIMIT $2",
    )
    .bind(tenant)
    .bind(MAX_QUEUE_POSITION)
    .fetch_all(pool)
    .await?)
}
