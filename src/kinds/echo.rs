//! `echo`: the result is the payload. For trying the submit → poll → result flow.

use async_trait::async_trait;
use serde_json::Value;

use super::{Handler, JobContext, JobError, Output};

pub struct Echo;

#[async_trait]
impl Handler for Echo {
    fn kind(&self) -> &str {
        "echo"
    }

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        Output::json(&payload)
    }
}
