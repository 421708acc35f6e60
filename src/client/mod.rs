//! The command-line client (DESIGN §13): `jobdock submit`, `status`, `result`, `jobs`, `cancel`. It speaks
//! HTTP to any jobdock server, like any other client, and exits with a code a script can act on.
//!
//! - [`wait`]: following a job until it ends (`submit --wait`), with a progress bar on a terminal.

pub mod wait;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Exit codes of the client commands.
pub mod exit {
    /// The command did what was asked (with `--wait`: the job succeeded).
    pub const OK: i32 = 0;
    /// The job failed or was cancelled (`submit --wait`), or could not be cancelled.
    pub const JOB_FAILED: i32 = 1;
    /// The request was refused as invalid (a usage error, or a 4xx other than those below).
    pub const INVALID: i32 = 2;
    /// No such job (404).
    pub const NOT_FOUND: i32 = 3;
    /// No API key, or one without the scope (401, 403).
    pub const DENIED: i32 = 4;
    /// The server could not be reached or answered 5xx.
    pub const UNAVAILABLE: i32 = 5;
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The jobdock server's base URL.
    #[arg(
        long,
        env = "JOBDOCK_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// An API key (`jdk_...`), when the server asks for one.
    #[arg(long, env = "JOBDOCK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Submit a job; prints its id, or with --wait follows it and prints its result.
    Submit {
        /// The job's kind.
        kind: String,
        /// The payload: JSON, `@FILE` for a file, `-` for stdin. Default `{}`.
        payload: Option<String>,
        /// Follow the job until it ends; print the result on stdout (exit 0), or the error (exit 1).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        queue: Option<String>,
        /// Makes the submission safe to retry.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a job's status monitor (JSON).
    Status {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a job's result (or write it to a file).
    Result {
        id: String,
        /// Write the result here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List jobs as a table, newest first.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// How many at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a job.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

impl ClientCommand {
    /// The server this command talks to.
    pub fn server(&self) -> &ServerArgs {
        match self {
            ClientCommand::Submit { server, .. }
            | ClientCommand::Status { server, .. }
            | ClientCommand::Result { server, .. }
            | ClientCommand::Jobs { server, .. }
            | ClientCommand::Cancel { server, .. } => server,
        }
    }
}

/// What went wrong, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// An HTTP client for one jobdock server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(server: &ServerArgs) -> Result<Client, Failure> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(|err| Failure::new(exit::UNAVAILABLE, format!("cannot start HTTP: {err}")))?;
        Ok(Client {
            http,
            base: server.server.trim_end_matches('/').to_owned(),
            api_key: server.api_key.clone().filter(|key| !key.is_empty()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|err| {
            Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "cannot reach the jobdock server at {} ({err}); set --server or JOBDOCK_URL",
                    self.base
                ),
            )
        })?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(response);
        }
        let code = match status.as_u16() {
            404 => exit::NOT_FOUND,
            401 | 403 => exit::DENIED,
            500..=599 => exit::UNAVAILABLE,
            _ => exit::INVALID,
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"]
            .as_str()
            .or(body["title"].as_str())
            .unwrap_or("no details")
            .to_owned();
        let hint = if code == exit::DENIED {
            " (pass --api-key or set JOBDOCK_API_KEY)"
        } else {
            ""
        };
        Err(Failure::new(code, format!("{status}: {detail}{hint}")))
    }

    pub(crate) async fn monitor(&self, id: &str) -> Result<reqwest::Response, Failure> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}?redirect=false"),
        ))
        .await
    }
}

/// Runs a client command, writing what it prints to `out`; the exit code.
pub async fn run(command: ClientCommand, out: &mut dyn Write) -> i32 {
    let outcome = match Client::new(command.server()) {
        Ok(client) => execute(&client, command, out).await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("jobdock: {}", failure.message);
            failure.code
        }
    }
}

async fn execute(
    client: &Client,
    command: ClientCommand,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let write_err =
        |err: std::io::Error| Failure::new(exit::INVALID, format!("cannot write: {err}"));
    match command {
        ClientCommand::Submit {
            kind,
            payload,
            wait,
            queue,
            idempotency_key,
            ..
        } => {
            let payload = read_payload(payload.as_deref())?;
            let mut body = serde_json::json!({"kind": kind, "payload": payload});
            if let Some(queue) = queue {
                body["queue"] = Value::from(queue);
            }
            let mut request = client
                .request(reqwest::Method::POST, "/v1/jobs")
                .json(&body);
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let job: Value = client
                .send(request)
                .await?
                .json()
                .await
                .map_err(unreadable)?;
            let id = job["id"].as_str().unwrap_or_default().to_owned();
            if !wait {
                writeln!(out, "{id}").map_err(write_err)?;
                return Ok(exit::OK);
            }
            wait::follow(client, &id, out).await
        }
        ClientCommand::Status { id, .. } => {
            let monitor: Value = client
                .monitor(&id)
                .await?
                .json()
                .await
                .map_err(unreadable)?;
            let text = serde_json::to_string_pretty(&monitor).unwrap_or_default();
            writeln!(out, "{text}").map_err(write_err)?;
            Ok(exit::OK)
        }
        ClientCommand::Result { id, output, .. } => {
            let bytes = result_bytes(client, &id).await?;
            match output {
                Some(path) => std::fs::write(&path, &bytes).map_err(|err| {
                    Failure::new(
                        exit::INVALID,
                        format!("cannot write {}: {err}", path.display()),
                    )
                })?,
                None => out.write_all(&bytes).map_err(write_err)?,
            }
            Ok(exit::OK)
        }
        ClientCommand::Jobs {
            status,
            kind,
            queue,
            limit,
            ..
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.min(500).to_string())];
            query.extend(status.map(|v| ("status", v)));
            query.extend(kind.map(|v| ("kind", v)));
            query.extend(queue.map(|v| ("queue", v)));
            let list: Value = client
                .send(
                    client
                        .request(reqwest::Method::GET, "/v1/jobs")
                        .query(&query),
                )
                .await?
                .json()
                .await
                .map_err(unreadable)?;
            let mut rows =
                vec![["ID", "KIND", "QUEUE", "STATUS", "ATTEMPT", "CREATED"].map(str::to_owned)];
            for job in list["jobs"].as_array().into_iter().flatten() {
                let text = |key: &str| job[key].as_str().unwrap_or_default().to_owned();
                rows.push([
                    text("id"),
                    text("kind"),
                    text("queue"),
                    text("status"),
                    format!("{}/{}", job["attempt"], job["max_attempts"]),
                    text("created_at").chars().take(19).collect(),
                ]);
            }
            out.write_all(crate::keys::render_table(&rows).as_bytes())
                .map_err(write_err)?;
            Ok(exit::OK)
        }
        ClientCommand::Cancel { id, .. } => {
            let response = client
                .send(client.request(reqwest::Method::POST, &format!("/v1/jobs/{id}/cancel")))
                .await;
            match response {
                Ok(response) => {
                    let message = if response.status() == reqwest::StatusCode::ACCEPTED {
                        "cancel requested: the job is running and has been asked to stop"
                    } else {
                        "cancelled"
                    };
                    writeln!(out, "{message}").map_err(write_err)?;
                    Ok(exit::OK)
                }
                // 409: it already succeeded or failed.
                Err(failure) if failure.code == exit::INVALID => {
                    Err(Failure::new(exit::JOB_FAILED, failure.message))
                }
                Err(failure) => Err(failure),
            }
        }
    }
}

/// A server answer that is not the JSON it should be.
pub(crate) fn unreadable(err: reqwest::Error) -> Failure {
    Failure::new(exit::UNAVAILABLE, format!("unreadable answer: {err}"))
}

/// The result body of a succeeded job.
pub(crate) async fn result_bytes(client: &Client, id: &str) -> Result<Vec<u8>, Failure> {
    let response = client
        .send(client.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/result")))
        .await?;
    response
        .bytes()
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|err| Failure::new(exit::UNAVAILABLE, format!("unreadable result: {err}")))
}

/// The payload argument: JSON text, `@FILE`, or `-` for stdin; `{}` when absent.
fn read_payload(argument: Option<&str>) -> Result<Value, Failure> {
    let text = match argument {
        None => return Ok(serde_json::json!({})),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|err| Failure::new(exit::INVALID, format!("cannot read stdin: {err}")))?;
            text
        }
        Some(path) if path.starts_with('@') => {
            std::fs::read_to_string(&path[1..]).map_err(|err| {
                Failure::new(exit::INVALID, format!("cannot read {}: {err}", &path[1..]))
            })?
        }
        Some(text) => text.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|err| Failure::new(exit::INVALID, format!("the payload is not JSON: {err}")))
}
