//! The status monitor's answer: `Retry-After`, the entity tag, 302/200/304.

use super::forecast::Forecast;
use super::responses::GetJobResponse;
use super::types::{result_path, CallbackState, JobMonitor};
use crate::api::json_body::JsonBody;
use crate::job::{Job, JobStatus};

const NO_STORE: &str = "no-store";

/// The monitor's entity tag: it changes whenever a field of the job the monitor shows changes (every
/// such write moves `updated_at`, but the fields are hashed too, so a write that forgot to would still
/// show), and differs between the 302 and the `redirect=false` answers. The forecast (`queue_position`,
/// `estimated_finish_at`) is not part of it: it moves with the clock and the jobs ahead, and a tag that
/// changed every second would make `If-None-Match` useless.
pub(super) fn etag(job: &Job, redirect: bool) -> String {
    use sha2::{Digest, Sha256};
    let state = format!(
        "{}|{}|{}|{}|{}|{:?}|{:?}|{}|{:?}|{:?}|{}",
        job.id,
        job.status,
        job.attempt,
        job.updated_at.timestamp_micros(),
        job.cancel_requested,
        job.progress,
        job.error,
        job.run_at.timestamp_micros(),
        job.started_at.map(|at| at.timestamp_micros()),
        job.finished_at.map(|at| at.timestamp_micros()),
        redirect,
    );
    let digest = Sha256::digest(state.as_bytes());
    format!("\"{}\"", crate::api::hex(&digest[..12]))
}

/// `If-None-Match` (a list of tags, or `*`) names `tag`; weak tags compare by their opaque part.
pub(super) fn etag_matches(header: &str, tag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    })
}

/// The monitor's answer to a GET of `job` (see [`super::JobsApi::get_job`]).
pub(super) fn answer(
    job: Job,
    forecast: Forecast,
    callback: Option<CallbackState>,
    redirect: bool,
    if_none_match: Option<&str>,
) -> GetJobResponse {
    let tag = etag(&job, redirect);
    let status = job.status;
    let id = job.id;
    let mut monitor = JobMonitor::from(job).with_forecast(&forecast);
    monitor.callback = callback;
    match status {
        JobStatus::Succeeded if redirect => {
            GetJobResponse::Found(JsonBody(monitor), result_path(id), NO_STORE.to_owned(), tag)
        }
        JobStatus::Queued | JobStatus::Running => {
            let retry_after = forecast.retry_after;
            if if_none_match.is_some_and(|seen| etag_matches(seen, &tag)) {
                return GetJobResponse::NotModified(tag, retry_after, NO_STORE.to_owned());
            }
            GetJobResponse::Ok(
                JsonBody(monitor),
                Some(retry_after),
                NO_STORE.to_owned(),
                tag,
            )
        }
        _ => GetJobResponse::Ok(JsonBody(monitor), None, NO_STORE.to_owned(), tag),
    }
}

/// The state of `job`'s completion webhook, if it has one.
pub(super) async fn callback_state(
    pool: &sqlx::PgPool,
    job: &Job,
) -> crate::store::Result<Option<CallbackState>> {
    if job.callback_url.is_none() {
        return Ok(None);
    }
    if !job.status.is_terminal() {
        return Ok(Some(CallbackState {
            state: "waiting".to_owned(),
            attempts: 0,
            last_status: None,
        }));
    }
    let delivery = crate::store::deliveries::state_of(pool, job.id).await?;
    Ok(Some(match delivery {
        Some(delivery) => CallbackState {
            state: delivery.state,
            attempts: delivery.attempts,
            last_status: delivery.last_status,
        },
        None => CallbackState {
            state: "pending".to_owned(),
            attempts: 0,
            last_status: None,
        },
    }))
}
