//! The `exec` kind (DESIGN §10): a job runs a command from the configuration. No shell: the argv is
//! fixed by the operator, and a payload fills whole arguments (`"{name}"`), each one argument however it
//! is spelled. The environment is cleared but for an allow-list. stdout is the result; `progress: <pct>
//! [message]` lines on stderr report progress; the last 4 KiB of stderr explain a failure.
//!
//! The command runs in a process group of its own. When the attempt ends for any reason other than the
//! command exiting on its own (timeout, cancellation, shutdown, a lost lease), the group gets SIGTERM and,
//! 5 s later, SIGKILL: no child outlives its job.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::template::{self, Piece};
use super::{Failure, Handler, JobContext, JobError, Output};

/// How much of stderr a failed job's `error` keeps.
const STDERR_TAIL_BYTES: usize = 4096;
/// Between SIGTERM and SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);

/// What the command reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// The payload as JSON.
    Payload,
    None,
}

/// An `exec` kind's settings, validated.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// `command[0]` resolved to a path.
    pub program: PathBuf,
    /// The rest of `command`.
    pub args: Vec<String>,
    pub stdin: Stdin,
    pub result_content_type: String,
    /// Variables passed through from jobdock's environment.
    pub env: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub max_output_bytes: usize,
    pub retryable_exit_codes: Vec<i32>,
    pub max_concurrency: usize,
}

/// Finds `program` as the shell would, without a shell: a path as given, else in `PATH`.
///
/// # Errors
/// When it is not there or not executable.
pub fn resolve_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(format!("`{program}` is not an executable file"))
        };
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
        .ok_or_else(|| format!("command `{program}` is not found in PATH"))
}

/// A configured `exec` kind.
pub struct ExecKind {
    name: String,
    args: Vec<Vec<Piece>>,
    settings: ExecSettings,
}

impl ExecKind {
    pub fn new(name: &str, settings: ExecSettings) -> ExecKind {
        ExecKind {
            name: name.to_owned(),
            args: settings.args.iter().map(|arg| arg_pieces(arg)).collect(),
            settings,
        }
    }

    fn argv(&self, payload: &Value) -> Result<Vec<String>, String> {
        self.args
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Text(text) => Ok(text.clone()),
                        Piece::Field(name) => template::field_text(payload, name),
                    })
                    .collect()
            })
            .collect()
    }

    async fn execute(&self, ctx: &JobContext, payload: &Value) -> Result<Output, JobError> {
        let argv = self.argv(payload).map_err(JobError::Permanent)?;
        let mut command = tokio::process::Command::new(&self.settings.program);
        command
            .args(&argv)
            .env_clear()
            .env("JOBDOCK_JOB_ID", ctx.id().to_string())
            .env("JOBDOCK_ATTEMPT", ctx.attempt().to_string())
            .stdin(match self.settings.stdin {
                Stdin::Payload => Stdio::piped(),
                Stdin::None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for name in &self.settings.env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        if let Some(dir) = &self.settings.working_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|err| {
            JobError::Retryable(format!(
                "kind `{}`: cannot start {}: {err}",
                self.name,
                self.settings.program.display()
            ))
        })?;
        // From here on, however this future ends, the whole group is stopped.
        let _group = child.id().map(ProcessGroup);
        if let Some(mut stdin) = child.stdin.take() {
            let input = serde_json::to_vec(payload).unwrap_or_default();
            // A command that does not read its input closes the pipe: that is its business.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let stdout = child.stdout.take().map(|out| {
            let max = self.settings.max_output_bytes;
            tokio::spawn(read_limited(out, max))
        });
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(read_stderr(err, ctx.clone())));
        let status = child
            .wait()
            .await
            .map_err(|err| JobError::Retryable(format!("waiting for the command failed: {err}")))?;
        let (output, overflow) = match stdout {
            Some(task) => task.await.unwrap_or_default(),
            None => (Vec::new(), false),
        };
        let tail = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        if overflow {
            return Err(failure(
                "The command's output is too large",
                format!(
                    "stdout was larger than max_output_bytes ({} bytes)",
                    self.settings.max_output_bytes
                ),
                false,
                status.code(),
                &tail,
            ));
        }
        match status.code() {
            Some(0) => {
                if self
                    .settings
                    .result_content_type
                    .starts_with("application/json")
                    && serde_json::from_slice::<Value>(&output).is_err()
                {
                    return Err(failure(
                        "The command's output is not JSON",
                        "the kind's result_content_type is application/json, but stdout is not JSON"
                            .to_owned(),
                        false,
                        Some(0),
                        &tail,
                    ));
                }
                Ok(Output::bytes(
                    self.settings.result_content_type.clone(),
                    output,
                ))
            }
            Some(code) => {
                let retryable = self.settings.retryable_exit_codes.contains(&code);
                Err(failure(
                    "The command failed",
                    format!("the command exited with code {code}"),
                    retryable,
                    Some(code),
                    &tail,
                ))
            }
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or_default();
                Err(failure(
                    "The command was killed",
                    format!("the command was killed by signal {signal}"),
                    false,
                    None,
                    &tail,
                ))
            }
        }
    }
}

/// An argument of the configured argv: a whole-element `"{name}"` is a field; anything else is literal.
fn arg_pieces(arg: &str) -> Vec<Piece> {
    match template::pieces(arg).as_slice() {
        [Piece::Field(name)] => vec![Piece::Field(name.clone())],
        _ => vec![Piece::Text(arg.to_owned())],
    }
}

fn failure(
    title: &str,
    detail: String,
    retryable: bool,
    code: Option<i32>,
    stderr: &str,
) -> JobError {
    let mut members = Map::new();
    if let Some(code) = code {
        members.insert("exit_code".into(), json!(code));
    }
    members.insert("stderr".into(), json!(stderr));
    JobError::Detailed(Box::new(Failure {
        title: title.to_owned(),
        detail,
        retryable,
        retry_after: None,
        members,
    }))
}

/// Reads all of `reader`, keeping at most `max` bytes; true when there was more.
async fn read_limited(mut reader: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflow = false;
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, overflow),
            Ok(read) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..read.min(room)]);
                overflow |= read > room;
            }
        }
    }
}

/// Reads stderr line by line: `progress:` lines become the job's progress; the tail is kept.
async fn read_stderr(reader: impl AsyncRead + Unpin, ctx: JobContext) -> String {
    let mut lines = BufReader::new(reader).lines();
    let mut tail = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(progress) = line.strip_prefix("progress:") {
            let mut words = progress.trim().splitn(2, char::is_whitespace);
            let percent = words
                .next()
                .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok());
            if percent.is_some() {
                let message = words.next().map(str::trim).filter(|m| !m.is_empty());
                ctx.progress(percent, message).await;
                continue;
            }
        }
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > 2 * STDERR_TAIL_BYTES {
            tail = last_bytes(&tail, STDERR_TAIL_BYTES);
        }
    }
    last_bytes(&tail, STDERR_TAIL_BYTES)
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn last_bytes(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// The command's process group: stopped when dropped (SIGTERM, then SIGKILL after [`KILL_AFTER`] if any
/// member is still alive). Dropped when the attempt ends however it ends, including when the executor's
/// timeout or a cancellation drops the attempt's future.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory of ours.
        let alive = unsafe { libc::kill(-pgid, libc::SIGTERM) } == 0;
        if alive {
            std::thread::spawn(move || {
                std::thread::sleep(KILL_AFTER);
                // SAFETY: as above. If the group is gone this fails with ESRCH, which is fine.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            });
        }
    }
}

#[async_trait]
impl Handler for ExecKind {
    fn kind(&self) -> &str {
        &self.name
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        self.argv(payload).map(|_| ())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        tokio::select! {
            _ = ctx.cancelled() => Err(JobError::Cancelled),
            outcome = self.execute(&ctx, &payload) => outcome,
        }
    }

    fn max_concurrency(&self) -> Option<usize> {
        Some(self.settings.max_concurrency.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_argument_is_a_placeholder() {
        assert_eq!(arg_pieces("{file}"), vec![Piece::Field("file".into())]);
        assert_eq!(
            arg_pieces("--in={file}"),
            vec![Piece::Text("--in={file}".into())]
        );
    }

    #[test]
    fn programs_are_found_in_path_or_refused() {
        assert!(resolve_program("sh").is_ok());
        assert!(resolve_program("/bin/sh").is_ok());
        assert!(resolve_program("no-such-program-here").is_err());
        assert!(resolve_program("/etc/passwd").is_err());
    }

    #[test]
    fn the_stderr_tail_is_cut_at_a_character_boundary() {
        assert_eq!(last_bytes("aé", 1), "");
        assert_eq!(last_bytes("abc", 2), "bc");
    }
}
