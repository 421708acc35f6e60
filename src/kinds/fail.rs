//! `fail`: always fails, with `{"message": "...", "retryable": bool}` (both optional). For trying retries
//! and error paths.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_payload, Handler, JobContext, JobError, Output};

pub struct Fail;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailPayload {
    #[serde(default = "default_message")]
    message: String,
    #[serde(default)]
    retryable: bool,
}

fn default_message() -> String {
    "failed on purpose".to_owned()
}

#[async_trait]
impl Handler for Fail {
    fn kind(&self) -> &str {
        "fail"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        parse_payload::<FailPayload>("fail", payload).map(|_| ())
    }

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let FailPayload { message, retryable } =
            parse_payload("fail", &payload).map_err(JobError::Permanent)?;
        Err(if retryable {
            JobError::Retryable(message)
        } else {
            JobError::Permanent(message)
        })
    }
}
