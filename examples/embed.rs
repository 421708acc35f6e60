//! Embedding jobdock in a Rust program with a kind of its own.
//!
//! Run it (PostgreSQL on localhost; the database is created if missing):
//!
//! ```text
//! cargo run --example embed
//! curl -si -X POST localhost:8080/v1/jobs -H 'content-type: application/json' \
//!      -d '{"kind": "word_count", "payload": {"text": "the quick brown fox"}}'
//! ```
//!
//! The server keeps the built-in kinds (`echo`, `sleep`, `fail`) and adds `word_count`.

use async_trait::async_trait;
use jobdock::{app, Application, Handler, JobContext, JobError, Output, Registry, Settings};
use serde::Deserialize;
use serde_json::{json, Value};

/// Counts the words in `{"text": "..."}`; the result is `{"words": N}`.
struct WordCount;

#[derive(Deserialize)]
struct WordCountPayload {
    text: String,
}

#[async_trait]
impl Handler for WordCount {
    fn kind(&self) -> &str {
        "word_count"
    }

    /// Runs before the job is accepted: a bad payload is answered 400 and nothing is stored.
    fn validate(&self, payload: &Value) -> Result<(), String> {
        jobdock::kinds::parse_payload::<WordCountPayload>("word_count", payload).map(|_| ())
    }

    /// Runs on a worker. It may run more than once (a crashed worker's job is retried elsewhere), so it
    /// must be safe to repeat; this one has no side effects at all.
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        let WordCountPayload { text } =
            jobdock::kinds::parse_payload("word_count", &payload).map_err(JobError::Permanent)?;
        if ctx.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        ctx.progress(Some(50.0), Some("counting")).await;
        Output::json(&json!({ "words": text.split_whitespace().count() }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| jobdock::config::DEFAULT_DATABASE_URL.to_owned()),
        ..Settings::default()
    };
    let registry = Registry::builtin().with(WordCount);
    let server = Application::build(settings, registry).await?;
    server.run_until_stopped(app::shutdown_signal()).await
}
