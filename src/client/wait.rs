//! `jobdock submit --wait`: follow a job until it ends. On a terminal a progress bar (indicatif) shows its
//! status and progress on stderr; otherwise each change is one plain line on stderr. The result goes to
//! stdout either way, so `jobdock submit ... --wait > out.json` works in scripts.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{exit, result_bytes, Client, Failure};

/// How long to wait between polls at most, whatever `Retry-After` says.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the follower shows: a bar on a terminal, lines otherwise.
enum Display {
    Bar(ProgressBar),
    Lines { last: String },
}

impl Display {
    fn new() -> Display {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = ProgressBar::new(100);
            let style =
                ProgressStyle::with_template("{spinner} {prefix:>9} [{bar:30}] {pos:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: String::new(),
            }
        }
    }

    fn show(&mut self, monitor: &Value) {
        let status = monitor["status"].as_str().unwrap_or("unknown");
        let percent = monitor["progress"]["percent"].as_f64();
        let message = monitor["progress"]["message"].as_str().unwrap_or_default();
        match self {
            Display::Bar(bar) => {
                bar.set_prefix(status.to_owned());
                if let Some(percent) = percent {
                    bar.set_position(percent.clamp(0.0, 100.0) as u64);
                }
                bar.set_message(message.to_owned());
            }
            Display::Lines { last } => {
                let mut line = status.to_owned();
                if let Some(percent) = percent {
                    line.push_str(&format!(" {percent}%"));
                }
                if !message.is_empty() {
                    line.push(' ');
                    line.push_str(message);
                }
                if *last != line {
                    eprintln!("{line}");
                    *last = line;
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// How long each long poll may wait on the server.
const LONG_POLL_SECS: u32 = 30;

/// Follows job `id` until it ends: its result on `out` and 0, or its error on stderr and 1.
pub async fn follow(client: &Client, id: &str, out: &mut dyn Write) -> Result<i32, Failure> {
    let mut display = Display::new();
    let mut etag: Option<String> = None;
    loop {
        // After the first look, a long poll: the server answers when the monitor changes (or after
        // LONG_POLL_SECS with 304), so progress shows as it happens without polling blindly.
        let path = match &etag {
            None => format!("/v1/jobs/{id}?redirect=false"),
            Some(_) => format!("/v1/jobs/{id}?redirect=false&wait={LONG_POLL_SECS}"),
        };
        let mut request = client.request(reqwest::Method::GET, &path);
        if let Some(tag) = &etag {
            request = request.header("If-None-Match", tag);
        }
        let asked = std::time::Instant::now();
        let response = client.send(request).await?;
        let pause = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1))
            .min(MAX_PAUSE);
        if response.status() != reqwest::StatusCode::NOT_MODIFIED {
            etag = response
                .headers()
                .get("etag")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let monitor: Value = response.json().await.map_err(super::unreadable)?;
            display.show(&monitor);
            match monitor["status"].as_str() {
                Some("succeeded") => {
                    display.finish();
                    let bytes = result_bytes(client, id).await?;
                    out.write_all(&bytes).map_err(|err| {
                        Failure::new(exit::INVALID, format!("cannot write the result: {err}"))
                    })?;
                    return Ok(exit::OK);
                }
                Some(status @ ("failed" | "cancelled")) => {
                    display.finish();
                    let error = &monitor["error"];
                    let title = error["title"].as_str().unwrap_or(status);
                    let detail = error["detail"].as_str().unwrap_or_default();
                    eprintln!(
                        "jobdock: job {id} {status}: {title}{}",
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    );
                    return Ok(exit::JOB_FAILED);
                }
                _ => {}
            }
            continue;
        }
        // 304 at once: a server that does not hold long polls; fall back to its Retry-After.
        if asked.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(pause).await;
        }
    }
}
