//! Waiting for a job (DESIGN §12): the long poll (`?wait=N`), `Prefer: wait=N` on submit and the event
//! stream. None of them holds a database connection while it waits: they sleep on [`Watchers`] and read
//! the job once per change.
//!
//! [`Watchers`]: crate::api::watch::Watchers

use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::ApiState;
use crate::job::Job;
use crate::store;
use crate::store::jobs::Visible;

/// The longest wait a request may ask for, in seconds.
pub const MAX_WAIT_SECS: u32 = 60;

/// Reads job `id` until it is terminal or `done` says so, `deadline` passes, or the server shuts down;
/// returns the last read (`None`: the job is gone, or `tenant` may not see it).
pub(crate) async fn wait_for(
    state: &ApiState,
    id: Uuid,
    tenant: Visible<'_>,
    deadline: Instant,
    done: impl Fn(&Job) -> bool,
) -> store::Result<Option<Job>> {
    // Subscribed before the first read: a change committed after that read is then always heard.
    let mut subscription = state.watchers.subscribe(id);
    loop {
        let Some((job, watched)) = store::watch::get(&state.pool, id, tenant).await? else {
            return Ok(None);
        };
        if job.status.is_terminal() || done(&job) || Instant::now() >= deadline {
            return Ok(Some(job));
        }
        if !watched {
            store::watch::watch(&state.pool, id).await?;
            // A change between the read and the mark was not notified: read once more.
            continue;
        }
        tokio::select! {
            _ = subscription.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::time::sleep(crate::api::watch::RECHECK) => {}
            _ = state.shutdown.cancelled() => return Ok(Some(job)),
        }
    }
}

/// The instant `secs` seconds from now.
pub(crate) fn deadline_after(secs: u32) -> Instant {
    Instant::now() + Duration::from_secs(u64::from(secs.min(MAX_WAIT_SECS)))
}

/// `wait=N` in `Prefer` headers (RFC 7240), capped at [`MAX_WAIT_SECS`]; `None` without one.
pub(crate) fn preferred_wait(prefer: &str) -> Option<u32> {
    prefer
        .split(',')
        .flat_map(|preference| preference.split(';').next())
        .filter_map(|token| {
            let (name, value) = token.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .next()
        .map(|secs| u32::try_from(secs.min(u64::from(MAX_WAIT_SECS))).unwrap_or(MAX_WAIT_SECS))
}

/// How long an event stream stays open at most; a client reconnects for more.
const STREAM_FOR: Duration = Duration::from_secs(3600);

/// The job's monitor now and at each change, ending after a terminal one (or when the job disappears,
/// the database fails, the server shuts down or [`STREAM_FOR`] passes).
pub(crate) fn changes(
    state: ApiState,
    first: Job,
    tenant: Option<String>,
    tag: fn(&Job) -> String,
) -> BoxStream<'static, Job> {
    let deadline = Instant::now() + STREAM_FOR;
    let start = (state, first, tenant, false);
    stream::unfold(Some(start), move |next| async move {
        let (state, job, tenant, sent) = next?;
        if !sent {
            let after = (!job.status.is_terminal()).then(|| (state, job.clone(), tenant, true));
            return Some((job, after));
        }
        let seen = tag(&job);
        let changed = wait_for(&state, job.id, tenant.as_deref(), deadline, |now| {
            tag(now) != seen
        })
        .await;
        match changed {
            Ok(Some(now)) if tag(&now) != seen => {
                let after = (!now.status.is_terminal()).then(|| (state, now.clone(), tenant, true));
                Some((now, after))
            }
            _ => None,
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_read_from_any_preference_and_capped() {
        assert_eq!(preferred_wait("wait=5"), Some(5));
        assert_eq!(preferred_wait("respond-async, wait=10"), Some(10));
        assert_eq!(preferred_wait("Wait = 7; foo=bar"), Some(7));
        assert_eq!(preferred_wait("wait=600"), Some(MAX_WAIT_SECS));
        assert_eq!(preferred_wait("respond-async"), None);
        assert_eq!(preferred_wait("wait=soon"), None);
    }
}
