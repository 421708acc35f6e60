//! `Retry-After` as a forecast (DESIGN §12): when a job will likely finish, from its kind's recent run
//! times, its own progress and the jobs ahead of it in its queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::job::{Job, JobStatus};
use crate::store;
use crate::store::forecast::{KindPace, QueuedKey, MAX_QUEUE_POSITION};

/// How long a kind's pace is reused before it is read again.
const PACE_TTL: Duration = Duration::from_secs(5);
/// Bounds of `Retry-After`, in seconds.
const MIN_RETRY_AFTER: i64 = 1;
const MAX_RETRY_AFTER: i64 = 60;

/// What the monitor adds to a job: its place in line, when it should finish, when to look again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Queued jobs ahead of it in its queue (only while queued).
    pub queue_position: Option<i64>,
    pub estimated_finish_at: Option<DateTime<Utc>>,
    /// Seconds until the job is worth looking at again, 1 to 60.
    pub retry_after: u32,
}

impl Forecast {
    /// A finished job's: nothing left to forecast.
    pub fn none() -> Forecast {
        Forecast {
            queue_position: None,
            estimated_finish_at: None,
            retry_after: MIN_RETRY_AFTER as u32,
        }
    }
}

/// How long a tenant's queue order is reused before it is read again.
const ORDER_TTL: Duration = Duration::from_secs(1);

/// Kinds' paces, each read at most once per [`PACE_TTL`] by this process, and tenants' queue orders, each
/// read at most once per [`ORDER_TTL`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct Paces {
    known: Arc<Mutex<HashMap<String, (Instant, KindPace)>>>,
    orders: Arc<Mutex<HashMap<String, QueueOrder>>>,
}

/// A tenant's first queued jobs in claim order, as read at `read_at`.
struct QueueOrder {
    read_at: Instant,
    keys: Arc<Vec<QueuedKey>>,
    /// A request is reading it again; others use this one meanwhile.
    refreshing: bool,
}

impl Paces {
    async fn of(&self, pool: &PgPool, kind: &str) -> store::Result<KindPace> {
        if let Ok(known) = self.known.lock() {
            if let Some((read_at, pace)) = known.get(kind) {
                // A kind with no history yet is looked at again soon: its first jobs are finishing.
                let ttl = if pace.run_secs.is_some() {
                    PACE_TTL
                } else {
                    Duration::from_secs(1)
                };
                if read_at.elapsed() < ttl {
                    return Ok(*pace);
                }
            }
        }
        let pace = store::forecast::kind_pace(pool, kind).await?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(kind.to_owned(), (Instant::now(), pace));
        }
        Ok(pace)
    }

    /// `Retry-After` for `job` from what is known without a query (a new job's answer must not wait for
    /// one): the kind's pace if it was read lately, else 1 s (or until `run_at`).
    pub fn retry_after_now(&self, job: &Job) -> u32 {
        let pace = self
            .known
            .lock()
            .ok()
            .and_then(|known| known.get(&job.kind).map(|(_, pace)| *pace))
            .unwrap_or_default();
        forecast(job, pace, None, Utc::now()).retry_after
    }

    /// The forecast for `job` now.
    pub async fn forecast(&self, pool: &PgPool, job: &Job) -> store::Result<Forecast> {
        if job.status.is_terminal() {
            return Ok(Forecast::none());
        }
        let pace = self.of(pool, &job.kind).await?;
        let position = match job.status {
            JobStatus::Queued => Some(position_in(&self.order(pool, &job.tenant).await?, job)),
            _ => None,
        };
        Ok(forecast(job, pace, position, Utc::now()))
    }

    /// `tenant`'s queue order, read at most once per [`ORDER_TTL`]: a status poll of a queued job then
    /// costs no query of its own (counting the jobs ahead of each one cost more than the rest of the
    /// request). Up to a second old: jobs claimed since still count as ahead.
    async fn order(&self, pool: &PgPool, tenant: &str) -> store::Result<Arc<Vec<QueuedKey>>> {
        {
            let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(order) = orders.get_mut(tenant) {
                if order.read_at.elapsed() < ORDER_TTL || order.refreshing {
                    return Ok(order.keys.clone());
                }
                order.refreshing = true;
            }
        }
        let read = store::forecast::queue_order(pool, tenant).await;
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(keys) => {
                let keys = Arc::new(keys);
                orders.insert(
                    tenant.to_owned(),
                    QueueOrder {
                        read_at: Instant::now(),
                        keys: keys.clone(),
                        refreshing: false,
                    },
                );
                Ok(keys)
            }
            Err(err) => {
                if let Some(order) = orders.get_mut(tenant) {
                    order.refreshing = false;
                }
                Err(err)
            }
        }
    }
}

/// How many jobs of `job`'s queue the claim takes before it, in `order` (its tenant's first queued jobs in
/// claim order); [`MAX_QUEUE_POSITION`] when `order` is full and `job` comes after all of it.
fn position_in(order: &[QueuedKey], job: &Job) -> i64 {
    let ahead = order.partition_point(|key| {
        key.priority > job.priority
            || (key.priority == job.priority && (key.run_at, key.id) < (job.run_at, job.id))
    });
    if ahead == order.len() && order.len() as i64 >= MAX_QUEUE_POSITION {
        return MAX_QUEUE_POSITION;
    }
    order[..ahead]
        .iter()
        .filter(|key| key.queue == job.queue)
        .count() as i64
}

/// The forecast for `job` at `now`, given its kind's pace and its place in line.
pub fn forecast(job: &Job, pace: KindPace, position: Option<i64>, now: DateTime<Utc>) -> Forecast {
    let secs = |s: f64| chrono::Duration::milliseconds((s * 1000.0).round() as i64);
    let finish = match job.status {
        JobStatus::Running => {
            let elapsed = job
                .started_at
                .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            match (percent(job), pace.run_secs) {
                // The job's own progress says most: the rest at the pace it has kept so far.
                (Some(done), _) if done >= 5.0 && elapsed > 0.0 => {
                    Some(now + secs(elapsed * (100.0 - done) / done))
                }
                (_, Some(run)) => Some(now + secs((run - elapsed).max(0.0))),
                _ => None,
            }
        }
        JobStatus::Queued => pace.run_secs.map(|run| {
            // The jobs ahead run `running` at a time (at least one), then this one.
            let ahead = position.unwrap_or(0) as f64 * run / pace.running.max(1) as f64;
            job.run_at.max(now) + secs(ahead + run)
        }),
        _ => None,
    };
    let until = match finish {
        Some(at) => (at - now).num_milliseconds() as f64 / 1000.0,
        // Unknown: soon while due, else at its run_at.
        None => (job.run_at - now).num_milliseconds() as f64 / 1000.0,
    };
    let retry_after = (until.ceil() as i64).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER) as u32;
    Forecast {
        queue_position: position,
        estimated_finish_at: finish.map(|at| at.with_timezone(&Utc)),
        retry_after,
    }
}

/// The job's reported `progress.percent`, if it is a number between 0 and 100.
fn percent(job: &Job) -> Option<f64> {
    job.progress
        .as_ref()?
        .get("percent")?
        .as_f64()
        .filter(|p| (0.0..100.0).contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: JobStatus, now: DateTime<Utc>) -> Job {
        Job {
            id: uuid::Uuid::now_v7(),
            kind: "k".into(),
            queue: "default".into(),
            status,
            priority: 0,
            run_at: now,
            attempt: 1,
            max_attempts: 3,
            timeout_secs: 300,
            progress: None,
            error: None,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            started_at: Some(now - chrono::Duration::seconds(2)),
            finished_at: None,
            callback_url: None,
            tenant: crate::tenant::DEFAULT_TENANT.to_owned(),
        }
    }

    #[test]
    fn a_slow_kind_is_told_to_come_back_later_than_a_fast_one() {
        let now = Utc::now();
        let slow = KindPace {
            run_secs: Some(5.0),
            running: 1,
        };
        let fast = KindPace {
            run_secs: Some(0.1),
            running: 1,
        };
        let queued = job(JobStatus::Queued, now);
        assert_eq!(forecast(&queued, slow, Some(0), now).retry_after, 5);
        assert_eq!(forecast(&queued, fast, Some(0), now).retry_after, 1);
    }

    #[test]
    fn jobs_ahead_push_the_finish_back_in_proportion_to_those_running() {
        let now = Utc::now();
        let queued = job(JobStatus::Queued, now);
        let one_at_a_time = KindPace {
            run_secs: Some(2.0),
            running: 1,
        };
        let four_at_a_time = KindPace {
            run_secs: Some(2.0),
            running: 4,
        };
        assert_eq!(
            forecast(&queued, one_at_a_time, Some(10), now).retry_after,
            22
        );
        assert_eq!(
            forecast(&queued, four_at_a_time, Some(10), now).retry_after,
            7
        );
        assert_eq!(
            forecast(&queued, one_at_a_time, Some(1000), now).retry_after,
            60
        );
    }

    #[test]
    fn a_running_job_with_progress_is_extrapolated_from_its_own_pace() {
        let now = Utc::now();
        let mut running = job(JobStatus::Running, now);
        running.progress = Some(json!({"percent": 25}));
        // 2 s for 25%: 6 s to go, whatever the kind usually takes.
        let pace = KindPace {
            run_secs: Some(30.0),
            running: 1,
        };
        let forecast = forecast(&running, pace, None, now);
        assert_eq!(forecast.retry_after, 6);
        assert_eq!(
            forecast.estimated_finish_at,
            Some(now + chrono::Duration::seconds(6))
        );
    }

    #[test]
    fn the_position_counts_the_same_queue_ahead_by_priority_then_age_even_for_a_job_read_later() {
        let now = Utc::now();
        let key = |priority: i32, secs: i64, queue: &str| QueuedKey {
            priority,
            run_at: now + chrono::Duration::seconds(secs),
            id: uuid::Uuid::now_v7(),
            queue: queue.to_owned(),
        };
        let order = vec![
            key(10, 5, "default"),
            key(0, 0, "default"),
            key(0, 1, "other"),
            key(0, 2, "default"),
        ];
        let mut mine = job(JobStatus::Queued, now);
        // Not in the order (submitted after it was read), behind all of it.
        mine.run_at = now + chrono::Duration::seconds(3);
        assert_eq!(position_in(&order, &mine), 3);
        mine.queue = "other".to_owned();
        assert_eq!(position_in(&order, &mine), 1);
        mine.priority = 20;
        assert_eq!(position_in(&order, &mine), 0);
    }

    #[test]
    fn without_history_a_due_job_is_looked_at_again_in_a_second() {
        let now = Utc::now();
        let forecast = forecast(
            &job(JobStatus::Queued, now),
            KindPace::default(),
            Some(3),
            now,
        );
        assert_eq!(forecast.retry_after, 1);
        assert_eq!(forecast.estimated_finish_at, None);
        assert_eq!(forecast.queue_position, Some(3));
    }

    #[test]
    fn a_job_scheduled_later_is_looked_at_when_due_at_most_a_minute_ahead() {
        let now = Utc::now();
        let mut later = job(JobStatus::Queued, now);
        later.run_at = now + chrono::Duration::seconds(30);
        assert_eq!(
            forecast(&later, KindPace::default(), Some(0), now).retry_after,
            30
        );
        later.run_at = now + chrono::Duration::hours(2);
        assert_eq!(
            forecast(&later, KindPace::default(), Some(0), now).retry_after,
            60
        );
    }
}
