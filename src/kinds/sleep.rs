//! `sleep`: waits `{"ms": N}` milliseconds, reporting progress and honouring cancellation. Result
//! `{"slept_ms": N}`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{parse_payload, Handler, JobContext, JobError, Output};

/// The longest sleep accepted: one day.
pub const MAX_SLEEP_MS: u64 = 86_400_000;
/// Progress is written at most this often, so a long sleep does not hammer the database.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub struct Sleep;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
}

#[async_trait]
impl Handler for Sleep {
    fn kind(&self) -> &str {
        "sleep"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        let parsed: SleepPayload = parse_payload("sleep", payload)?;
        if parsed.ms > MAX_SLEEP_MS {
            return Err(format!(
                "invalid payload for kind `sleep`: `ms` is {}, at most {MAX_SLEEP_MS} (one day)",
                parsed.ms
            ));
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let SleepPayload { ms } = parse_payload("sleep", &payload).map_err(JobError::Permanent)?;
        let total = Duration::from_millis(ms);
        let start = Instant::now();
        let deadline = start + total;
        let step = PROGRESS_EVERY.max(total / 10);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wake = (now + step).min(deadline);
            tokio::select! {
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep_until(wake) => {}
            }
            if wake < deadline {
                let done = start.elapsed().as_millis() as f64;
                let percent = (done / ms as f64 * 100.0).floor();
                ctx.progress(Some(percent), Some(&format!("slept {done} of {ms} ms")))
                    .await;
            }
        }
        Output::json(&json!({ "slept_ms": ms }))
    }
}
