//! Runs one claimed job and writes its outcome, fenced by the lease token.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::handoff::Finished;
use super::running::StopReason;
use super::slots::Slot;
use super::Shared;
use crate::attempt::{self, Failure};
use crate::kinds::{JobContext, JobError, Output};
use crate::store::leases::{self, ClaimedJob, Completion, Lease};

/// The longest wait between attempts to write an outcome while the database is unreachable.
const MAX_WRITE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How an attempt ended, before it is written.
#[derive(Debug)]
enum Outcome {
    Succeeded(Output),
    Failed {
        error: Value,
        retryable: bool,
        /// Overrides the backoff.
        retry_after: Option<Duration>,
    },
    Cancelled,
    /// Nothing to write: the lease is gone, or shutdown releases the job.
    Abandoned(StopReason),
}

/// Runs `job`, which the dispatcher has registered in [`Shared::running`] (`stop` is its token there), in
/// the slot it took for it; the slot is given back as soon as the handler returns. Without a slot, the job
/// was told to stop while it waited: only its outcome is written.
///
/// Returns true when the job succeeded and its result was handed to the dispatcher, which then holds its
/// place until the result is written and forgets it in `running` (see [`super::handoff`]).
pub(super) async fn execute(
    shared: Arc<Shared>,
    job: ClaimedJob,
    stop: CancellationToken,
    slot: Option<Slot>,
) -> bool {
    let lease = Lease {
        id: job.id,
        token: job.lease_token,
    };
    if job.cancel_requested {
        shared.running.stop(job.id, StopReason::CancelRequested);
    }
    let started = std::time::Instant::now();
    // Only a job that was told to stop needs the map's word on why.
    let stopped = if stop.is_cancelled() {
        shared.running.reason(job.id)
    } else {
        None
    };
    let outcome = match (stopped, &slot) {
        // Told to stop while it waited in the local queue: its handler never starts.
        (Some(StopReason::CancelRequested), _) => Outcome::Cancelled,
        (Some(reason), _) => Outcome::Abandoned(reason),
        (None, Some(_)) => {
            let waited = (chrono::Utc::now() - job.created_at)
                .to_std()
                .unwrap_or_default();
            crate::metrics::job_started(&job.kind, waited);
            run_handler(&shared, &job, lease, stop).await
        }
        // Never sent without a slot unless told to stop; should it happen, the job goes back to the queue.
        (None, None) => Outcome::Abandoned(StopReason::Shutdown),
    };
    drop(slot);
    crate::metrics::job_ran(&job.kind, started.elapsed());
    // One look at the map both marks the job as writing its outcome and says whether it was told to stop.
    let outcome = match (outcome, shared.running.finishing(job.id)) {
        // Whatever the handler returned after losing its lease cannot be written.
        (_, Some(StopReason::LeaseLost)) => Outcome::Abandoned(StopReason::LeaseLost),
        (Outcome::Succeeded(output), _) => return hand_in(&shared, job, lease, output).await,
        (_, Some(StopReason::CancelRequested)) => Outcome::Cancelled,
        (Outcome::Cancelled, Some(StopReason::Shutdown)) => {
            Outcome::Abandoned(StopReason::Shutdown)
        }
        (outcome, _) => outcome,
    };
    write_outcome(&shared, &job, lease, outcome).await;
    // Forgotten only once the outcome is written: if shutdown aborts this task mid-write, the lease must
    // still be in `running` so shutdown releases the job (the release is fenced, so it is a no-op when the
    // write did commit).
    shared.running.remove(job.id);
    false
}

/// Hands a succeeded job's result to the dispatcher, which writes it in its next batch. False only when
/// the dispatcher has stopped (shutdown aborted it): the job stays in `running` for shutdown to release.
async fn hand_in(shared: &Shared, job: ClaimedJob, lease: Lease, output: Output) -> bool {
    let Output {
        content_type,
        body,
        headers,
    } = output;
    let completion = Completion {
        lease,
        content_type: crate::kinds::servable_content_type(content_type),
        body,
        headers: crate::kinds::servable_headers(&headers),
    };
    let finished = Finished {
        completion,
        kind: job.kind,
    };
    if shared.finished.send(finished).await.is_err() {
        tracing::warn!(job = %job.id, "outcome not written: the dispatcher has stopped");
        return false;
    }
    true
}

async fn run_handler(
    shared: &Shared,
    job: &ClaimedJob,
    lease: Lease,
    stop: CancellationToken,
) -> Outcome {
    let Some(handler) = shared.registry.get(&job.kind).cloned() else {
        // Claims only ask for registered kinds, so this is a bug, not a client error.
        return Outcome::Failed {
            error: attempt::failed(&format!("no handler for kind `{}`", job.kind), job.attempt),
            retryable: false,
            retry_after: None,
        };
    };
    let ctx = JobContext::new(
        job.kind.clone(),
        job.id,
        job.attempt,
        job.max_attempts,
        lease,
        shared.pool.clone(),
        stop,
    )
    .with_pauses(shared.pauses.clone());
    let timeout = Duration::from_secs(u64::try_from(job.timeout_secs).unwrap_or(1).max(1));
    let payload: Value = match serde_json::from_str(&job.payload) {
        Ok(payload) => payload,
        Err(err) => {
            return Outcome::Failed {
                error: attempt::failed(
                    &format!("its stored payload cannot be read back: {err}"),
                    job.attempt,
                ),
                retryable: false,
                retry_after: None,
            }
        }
    };
    let run = AssertUnwindSafe(handler.run(ctx, payload)).catch_unwind();
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Ok(output))) => Outcome::Succeeded(output),
        Ok(Ok(Err(JobError::Cancelled))) => Outcome::Cancelled,
        Ok(Ok(Err(JobError::Retryable(message)))) => Outcome::Failed {
            error: attempt::failed(&message, job.attempt),
            retryable: true,
            retry_after: None,
        },
        Ok(Ok(Err(JobError::Detailed(failure)))) => {
            let mut error =
                attempt::problem("job-failed", &failure.title, &failure.detail, job.attempt);
            if let Value::Object(error) = &mut error {
                for (key, value) in failure.members {
                    error.entry(key).or_insert(value);
                }
            }
            Outcome::Failed {
                error,
                retryable: failure.retryable,
                retry_after: failure.retry_after,
            }
        }
        Ok(Ok(Err(JobError::Permanent(message)))) => Outcome::Failed {
            error: attempt::failed(&message, job.attempt),
            retryable: false,
            retry_after: None,
        },
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(job = %job.id, kind = %job.kind, %message, "handler panicked");
            Outcome::Failed {
                error: attempt::failed(&format!("the handler panicked: {message}"), job.attempt),
                retryable: true,
                retry_after: None,
            }
        }
        Err(_elapsed) => Outcome::Failed {
            error: attempt::timed_out(job.attempt, job.timeout_secs),
            retryable: true,
            retry_after: None,
        },
    }
}

/// Writes an outcome other than a success (successes go to the dispatcher, see [`hand_in`]), retrying
/// until the database answers, however long an outage lasts. Retrying is safe because the write is
/// fenced: if the lease was lost meanwhile (rescued and run elsewhere), the write is refused rather than
/// applied twice. Giving up instead would lose the attempt's outcome. The job stays in `running`, so
/// heartbeats keep its lease alive once the database is back, and shutdown still releases it.
async fn write_outcome(shared: &Shared, job: &ClaimedJob, lease: Lease, outcome: Outcome) {
    let mut delay = Duration::from_millis(50);
    loop {
        match try_write(shared, job, lease, &outcome).await {
            Ok(applied) => {
                if !applied {
                    tracing::warn!(job = %job.id, "outcome not written: the lease was lost");
                }
                return;
            }
            Err(err) if err.is_unavailable() => {
                tracing::warn!(job = %job.id, error = %err, retry_in = ?delay, "writing outcome failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_WRITE_RETRY_DELAY);
            }
            Err(err) => {
                // The database answered and refused: retrying would loop forever. The lease runs out and
                // the rescuer gives the job another attempt (or fails it when attempts are spent).
                tracing::error!(job = %job.id, error = %err, "the database refused the outcome; the job will be rescued");
                return;
            }
        }
    }
}

async fn try_write(
    shared: &Shared,
    job: &ClaimedJob,
    lease: Lease,
    outcome: &Outcome,
) -> crate::store::Result<bool> {
    let pool = &shared.pool;
    match outcome {
        // Handed to the dispatcher before this is reached.
        Outcome::Succeeded(_) => Ok(false),
        Outcome::Failed {
            error,
            retryable,
            retry_after,
        } => {
            let failure = Failure {
                retryable: *retryable,
                retry_after: *retry_after,
            };
            let moved = attempt::fail(
                pool,
                lease,
                job.attempt,
                error,
                failure,
                shared.config.retry_base,
            )
            .await?;
            if let Some(status) = moved.filter(|status| status.is_terminal()) {
                crate::metrics::job_finished(&job.kind, status);
            }
            Ok(moved.is_some())
        }
        Outcome::Cancelled => {
            let cancelled = attempt::cancel(pool, lease, job.attempt).await?;
            if cancelled {
                crate::metrics::job_finished(&job.kind, crate::JobStatus::Cancelled);
            }
            Ok(cancelled)
        }
        Outcome::Abandoned(StopReason::Shutdown) => leases::release_many(pool, &[lease])
            .await
            .map(|released| !released.is_empty()),
        Outcome::Abandoned(_) => Ok(true),
    }
}
