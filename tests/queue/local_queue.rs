//! Claiming ahead: jobs claimed before a slot is free wait in the worker's local queue. A kind's
//! `max_concurrency` is honoured before its handler starts (so waiting never spends the attempt timeout),
//! other kinds pass a kind that has no room, and shutdown gives waiting jobs back at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jobdock::kinds::{Handler, JobContext, JobError, Output};
use jobdock::worker::WorkerPool;
use jobdock::{JobStatus, Registry};
use serde_json::Value;

use crate::common::{count, eventually};
use crate::support::*;

/// How many `busy` jobs have succeeded.
async fn busy_succeeded(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM jobs WHERE kind = 'busy' AND status = 'succeeded'",
    )
    .await
}

/// Whether job `id` reaches `wanted` within `limit`.
async fn reaches(pool: &sqlx::PgPool, id: uuid::Uuid, wanted: JobStatus, limit: Duration) -> bool {
    eventually(limit, || async { status(pool, id).await == wanted }).await
}

/// Wraps a handler with a `max_concurrency`.
struct Limited<H> {
    inner: H,
    max: usize,
}

#[async_trait]
impl<H: Handler> Handler for Limited<H> {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        self.inner.run(ctx, payload).await
    }

    fn max_concurrency(&self) -> Option<usize> {
        Some(self.max)
    }
}

/// Takes `work` and records the most handlers that ran at once.
struct Busy {
    work: Duration,
    now: AtomicUsize,
    most: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Busy {
    fn kind(&self) -> &str {
        "busy"
    }

    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Output, JobError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Output::bytes("text/plain", "done"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_at_its_max_concurrency_waits_without_spending_its_timeout_and_other_kinds_pass_it()
{
    let db = Db::new().await;
    let pool = &db.pool;
    let most = Arc::new(AtomicUsize::new(0));
    let busy = Limited {
        inner: Busy {
            work: Duration::from_millis(400),
            now: AtomicUsize::new(0),
            most: most.clone(),
        },
        max: 1,
    };
    let (quick, mut quick_events, _gate) = Gate::new("quick", "quick", GateMode::Immediate);
    // Five jobs of 0.4 s, one at a time, each with a 1 s timeout: the last starts 1.6 s after the
    // first. Had they waited for room inside their attempts, the later ones would have timed out.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let mut job = new_job("busy");
            job.timeout_secs = 1;
            job.max_attempts = 1;
            job
        })
        .collect();
    let slow = insert(pool, &slow).await;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(busy).with(quick),
        config(8, Duration::from_secs(30), Duration::from_millis(10)),
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            busy_succeeded(pool).await == 1
        })
        .await
    );
    // Submitted behind four waiting `busy` jobs, and run before them.
    let quick_id = insert_one(pool, new_job("quick")).await;
    assert!(matches!(
        next_event(&mut quick_events, Duration::from_secs(5)).await,
        Event::Started { id, .. } if id == quick_id
    ));
    assert!(reaches(pool, quick_id, JobStatus::Succeeded, Duration::from_secs(5)).await);
    let busy_done = busy_succeeded(pool).await;
    assert!(busy_done < 5, "the quick job waited for every busy one");

    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_succeeded(pool).await == 5
        })
        .await,
        "some busy job did not succeed: {:?}",
        sqlx::query_as::<_, (String, Option<serde_json::Value>)>(
            "SELECT status::text, error FROM jobs WHERE kind = 'busy' AND status <> 'succeeded'"
        )
        .fetch_all(pool)
        .await
    );
    assert_eq!(most.load(Ordering::SeqCst), 1, "ran past max_concurrency");
    for job in &slow {
        assert_eq!(get(pool, job.id).await.attempt, 1);
    }
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_jobs_that_have_not_started_go_back_at_once_on_shutdown_while_the_running_one_finishes(
) {
    let db = Db::new().await;
    let pool = &db.pool;
    let (gate, mut events, open) = Gate::new("gated", "finished", GateMode::WaitForGate);
    let gated = Limited {
        inner: gate,
        max: 1,
    };
    let ids: Vec<_> = insert(pool, &(0..4).map(|_| new_job("gated")).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|job| job.id)
        .collect();
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(gated),
        config(4, Duration::from_secs(30), Duration::from_millis(10)),
    );
    let Event::Started { id: first, .. } = next_event(&mut events, Duration::from_secs(5)).await
    else {
        panic!("expected a start");
    };
    // All four were claimed in one statement; one runs, three wait for room.
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(pool, "SELECT count(*) FROM jobs WHERE status = 'running'").await == 4
        })
        .await
    );
    assert_eq!(workers.running(), 4);

    let shutdown = tokio::spawn(workers.shutdown(Duration::from_secs(30)));
    assert!(
        eventually(Duration::from_secs(3), || async {
            count(
                pool,
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND attempt = 0",
            )
            .await
                == 3
        })
        .await,
        "the waiting jobs were not given back while the running one still ran"
    );
    assert_eq!(status(pool, first).await, JobStatus::Running);
    assert!(!shutdown.is_finished());
    open.notify_one();
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown ends once the running job finishes")
        .expect("shutdown task");
    assert_eq!(status(pool, first).await, JobStatus::Succeeded);
    for id in ids.iter().filter(|id| **id != first) {
        let job = get(pool, *id).await;
        assert_eq!((job.status, job.attempt), (JobStatus::Queued, 0));
        assert_eq!(lease_row(pool, *id).await.lease_token, None);
    }
    assert!(
        events.try_recv().is_err(),
        "a job given back was started anyway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_it_waits_for_room_ends_cancelled_without_running() {
    use jobdock::store::jobs::{self, Cancelled};
    let db = Db::new().await;
    let pool = &db.pool;
    let (gate, mut events, open) = Gate::new("gated", "finished", GateMode::WaitForGate);
    let gated = Limited {
        inner: gate,
        max: 1,
    };
    let running = insert_one(pool, new_job("gated")).await;
    let waiting = insert_one(pool, new_job("gated")).await;
    let workers = WorkerPool::start(
        pool.clone(),
        Registry::empty().with(gated),
        config(4, Duration::from_secs(30), Duration::from_millis(10)),
    );
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Event::Started { id, .. } if id == running
    ));
    assert!(
        reaches(pool, waiting, JobStatus::Running, Duration::from_secs(5)).await,
        "the second job was not claimed ahead"
    );
    match jobs::cancel(pool, waiting, None).await.expect("cancel") {
        Cancelled::Requested(job) => assert!(job.cancel_requested),
        other => panic!("cancelling a claimed job answered {other:?}"),
    }
    // Ends while the job ahead of it still holds the kind's only slot.
    assert!(reaches(pool, waiting, JobStatus::Cancelled, Duration::from_secs(5)).await);
    assert_eq!(status(pool, running).await, JobStatus::Running);
    assert!(
        events.try_recv().is_err(),
        "the cancelled job's handler ran"
    );
    assert_eq!(results_of(pool, waiting).await, 0);
    open.notify_one();
    assert!(reaches(pool, running, JobStatus::Succeeded, Duration::from_secs(5)).await);
    workers.shutdown(Duration::from_secs(5)).await;
}

/// How many of the workers' connections whose last statement was a claim also meet `condition` (this
/// probe's own query left out).
async fn claim_connections(pool: &sqlx::PgPool, condition: &str) -> i64 {
    count(
        pool,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND query LIKE '%WITH done AS%' AND query NOT LIKE '%pg_stat_activity%' \
               AND {condition}"
        ),
    )
    .await
}

/// Whether a claim statement of the workers is blocked waiting for a lock.
async fn a_claim_is_blocked(pool: &sqlx::PgPool) -> bool {
    claim_connections(pool, "wait_event_type = 'Lock'").await > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_while_the_intake_took_its_slot_goes_back_to_the_queue_at_once() {
    use jobdock::store::intake::insert_many_started;
    let db = Db::new().await;
    let pool = &db.pool;
    let (gate, mut events, open) = Gate::new("gated", "finished", GateMode::WaitForGate);
    // No poll ticks during the test: every claim after the first is one a notification asked for.
    let mut config = config(1, Duration::from_secs(30), Duration::from_millis(10));
    config.poll_interval = Duration::from_secs(60);
    let workers = WorkerPool::start(pool.clone(), Registry::empty().with(gate), config);
    assert!(eventually(Duration::from_secs(5), || listener_is_up(pool)).await);
    // The first claim has been answered (found nothing) before the lock is taken.
    let first_claim_done = eventually(Duration::from_secs(5), || async {
        claim_connections(pool, "state = 'idle'").await > 0
    })
    .await;
    assert!(first_claim_done);

    // Hold the claim statement in flight: it writes results, so a SHARE lock on them stops it.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE results IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock results");
    let queued = insert_one(pool, new_job("gated")).await;
    assert!(
        eventually(Duration::from_secs(5), || a_claim_is_blocked(pool)).await,
        "no claim went out for the queued job"
    );

    // Meanwhile the API stores a job and hands it to the idle workers: it takes the only slot.
    let intake = workers.intake();
    let handed_job = new_job("gated");
    let mut reservations = intake.reserve(std::slice::from_ref(&handed_job));
    let reservation = reservations
        .pop()
        .flatten()
        .expect("a claim in flight does not close the intake");
    let mut stored = insert_many_started(
        pool,
        std::slice::from_ref(&handed_job),
        &[true],
        intake.lease(),
        intake.worker_id(),
    )
    .await
    .expect("insert started");
    let claimed = stored
        .pop()
        .and_then(|s| s.claimed)
        .expect("stored started");
    reservation.start(claimed).await;
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Event::Started { id, .. } if id == handed_job.id
    ));

    // The claim goes on and brings the queued job, for which there is no room now: it goes back.
    blocker.rollback().await.expect("unlock");
    let given_back = eventually(Duration::from_secs(5), || async {
        count(
            pool,
            &format!(
                "SELECT count(*) FROM jobs WHERE id = '{queued}' AND status = 'queued' \
                   AND attempt = 0 AND worker_id IS NULL AND updated_at > created_at"
            ),
        )
        .await
            == 1
    })
    .await;
    assert!(
        given_back,
        "the claimed job was held for a slot the intake had taken"
    );
    assert_eq!(status(pool, handed_job.id).await, JobStatus::Running);
    assert!(events.try_recv().is_err(), "the given-back job was started");

    // Once the slot is free, it is claimed again and runs.
    open.notify_one();
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Event::Started { id, .. } if id == queued
    ));
    open.notify_one();
    assert!(reaches(pool, queued, JobStatus::Succeeded, Duration::from_secs(5)).await);
    assert!(
        reaches(
            pool,
            handed_job.id,
            JobStatus::Succeeded,
            Duration::from_secs(5)
        )
        .await
    );
    workers.shutdown(Duration::from_secs(5)).await;
}
