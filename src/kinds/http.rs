//! The `http` kind (DESIGN §9): jobdock in front of a slow HTTP backend. Each attempt is one exchange with
//! the upstream (or, with `follow_async`, a chain that polls the upstream's own status monitor); a 2xx is
//! the result, kept with its content type, some of its headers and its status; `retry_statuses`,
//! connection errors and timeouts retry, honouring `Retry-After`; anything else fails the job. A 429 or
//! 503 with `Retry-After` also pauses the whole kind on every replica (back-pressure).
//!
//! Where requests go is fixed by the operator: scheme, host and port come from the configuration only,
//! and a payload fills path segments (percent-encoded, `/` included). Redirects are never followed.

use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Map, Value};

use super::template::{self, Piece};
use super::{Failure, Handler, JobContext, JobError, Output};

/// Characters left as they are in a filled path segment: RFC 3986's unreserved ones. Everything else,
/// `/` included, is percent-encoded, so a payload cannot add segments or reach the query.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// How much of an upstream's error body the job's `error` keeps.
const EXCERPT_BYTES: usize = 4096;
/// The largest upstream body kept as a result.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `follow_async` polling: the wait when the upstream gives no `Retry-After`, and the longest honoured.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(60);
/// How long connecting to the upstream may take (the whole exchange is bounded by the job's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The retry statuses when the configuration names none.
pub const DEFAULT_RETRY_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// An `http` kind's settings, validated.
#[derive(Clone)]
pub struct HttpSettings {
    pub url: String,
    pub method: Method,
    /// Sent on every request; values came from `${VAR}`s and are marked sensitive (never logged).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub max_concurrency: usize,
    pub keep_headers: Vec<HeaderName>,
    pub retry_statuses: Vec<u16>,
    pub follow_async: bool,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold secrets: names only.
        f.debug_struct("HttpSettings")
            .field("url", &self.url)
            .field("method", &self.method)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// A configured `http` kind.
pub struct HttpKind {
    name: String,
    pieces: Vec<Piece>,
    settings: HttpSettings,
    client: reqwest::Client,
}

impl HttpKind {
    /// # Errors
    /// When the URL is not an absolute `http`/`https` URL, or a placeholder is not in its path or query.
    pub fn new(name: &str, settings: HttpSettings) -> Result<HttpKind, String> {
        let pieces = template::pieces(&settings.url);
        // The authority must be fixed: the URL with every placeholder filled must parse, and no
        // placeholder may come before the path starts.
        let sample: String = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Field(_) => "x",
            })
            .collect();
        let parsed =
            Url::parse(&sample).map_err(|err| format!("`{}` is not a URL: {err}", settings.url))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "`{}` must be an http:// or https:// URL with a host",
                settings.url
            ));
        }
        let path_start = settings
            .url
            .find("://")
            .and_then(|at| settings.url[at + 3..].find('/').map(|slash| at + 3 + slash));
        if let Some(first) = settings
            .url
            .find('{')
            .filter(|_| template::fields(&pieces).next().is_some())
        {
            if path_start.is_none_or(|start| first < start) {
                return Err(
                    "placeholders may fill the path only, never the scheme, host or port"
                        .to_owned(),
                );
            }
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|err| format!("cannot build an HTTP client: {err}"))?;
        Ok(HttpKind {
            name: name.to_owned(),
            pieces,
            settings,
            client,
        })
    }

    /// The upstream URL for `payload`.
    fn url(&self, payload: &Value) -> Result<Url, String> {
        let mut url = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => url.push_str(text),
                Piece::Field(name) => {
                    let text = template::field_text(payload, name)?;
                    url.extend(utf8_percent_encode(&text, SEGMENT));
                }
            }
        }
        Url::parse(&url).map_err(|err| format!("the filled URL is invalid: {err}"))
    }

    async fn exchange(&self, ctx: &JobContext, payload: &Value) -> Result<Output, JobError> {
        let url = self.url(payload).map_err(JobError::Permanent)?;
        let mut request = self
            .client
            .request(self.settings.method.clone(), url.clone())
            .header("Idempotency-Key", ctx.id().to_string())
            .header("Jobdock-Job-Id", ctx.id().to_string())
            .header("Jobdock-Attempt", ctx.attempt().to_string());
        for (name, value) in &self.settings.headers {
            request = request.header(name, value.clone());
        }
        if !matches!(
            self.settings.method,
            Method::GET | Method::DELETE | Method::HEAD
        ) {
            request = request.json(payload);
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        if status == StatusCode::ACCEPTED && self.settings.follow_async {
            if let Some(location) = location(&response, &url)? {
                return self
                    .follow(ctx, &url, location, retry_after(response.headers()))
                    .await;
            }
        }
        self.judge(ctx, response).await
    }

    /// Polls an upstream's status monitor at `location` until it gives the result.
    async fn follow(
        &self,
        ctx: &JobContext,
        origin: &Url,
        mut location: Url,
        mut wait: Option<Duration>,
    ) -> Result<Output, JobError> {
        loop {
            tokio::time::sleep(wait.unwrap_or(DEFAULT_POLL).min(MAX_POLL)).await;
            same_origin(origin, &location)?;
            let response = self
                .client
                .get(location.clone())
                .header("Jobdock-Job-Id", ctx.id().to_string())
                .header("Jobdock-Attempt", ctx.attempt().to_string())
                .send()
                .await
                .map_err(|err| self.unreachable(&err))?;
            let status = response.status();
            let still_running = status == StatusCode::ACCEPTED
                || (status == StatusCode::OK && response.headers().contains_key(RETRY_AFTER));
            if still_running {
                wait = retry_after(response.headers());
                if let Some(next) = self::location(&response, &location)? {
                    location = next;
                }
                continue;
            }
            if matches!(status, StatusCode::FOUND | StatusCode::SEE_OTHER) {
                let Some(result) = self::location(&response, &location)? else {
                    return Err(permanent(
                        "The upstream's redirect has no Location",
                        format!("{} answered {status} without a Location", location),
                        status,
                        "",
                    ));
                };
                same_origin(origin, &result)?;
                let response = self
                    .client
                    .get(result)
                    .send()
                    .await
                    .map_err(|err| self.unreachable(&err))?;
                return self.judge(ctx, response).await;
            }
            return self.judge(ctx, response).await;
        }
    }

    /// A final answer: 2xx is the result; a retry status retries; anything else fails the job.
    async fn judge(
        &self,
        ctx: &JobContext,
        response: reqwest::Response,
    ) -> Result<Output, JobError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response).await?;
        if status.is_success() {
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let mut kept: Vec<(String, String)> = self
                .settings
                .keep_headers
                .iter()
                .flat_map(|name| {
                    headers
                        .get_all(name)
                        .iter()
                        .filter_map(|value| value.to_str().ok())
                        .map(|value| (name.as_str().to_owned(), value.to_owned()))
                })
                .collect();
            kept.push(("Upstream-Status".to_owned(), status.as_u16().to_string()));
            return Ok(Output {
                content_type,
                body,
                headers: kept,
            });
        }
        let excerpt = excerpt(&body);
        if self.settings.retry_statuses.contains(&status.as_u16()) {
            let wait = retry_after(&headers);
            // An upstream that asks for air gets it from every replica at once, not job by job.
            if let Some(wait) = wait.filter(|_| {
                matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                )
            }) {
                ctx.pause_kind(wait).await;
            }
            let mut members = Map::new();
            members.insert("upstream_status".into(), json!(status.as_u16()));
            members.insert("upstream_body".into(), json!(excerpt));
            return Err(JobError::Detailed(Box::new(Failure {
                title: "The upstream asked to try again".to_owned(),
                detail: format!("the upstream answered {status}; retrying"),
                retryable: true,
                retry_after: wait,
                members,
            })));
        }
        let detail = if status.is_redirection() {
            format!("the upstream answered {status}; jobdock does not follow redirects")
        } else {
            format!("the upstream answered {status}")
        };
        Err(permanent(
            "The upstream refused the request",
            detail,
            status,
            &excerpt,
        ))
    }

    /// A connection error or an unreadable answer: worth another attempt.
    fn unreachable(&self, err: &reqwest::Error) -> JobError {
        // reqwest's message names the URL, which holds payload fields but no secrets (those are headers).
        JobError::Detailed(Box::new(Failure {
            title: "The upstream could not be reached".to_owned(),
            detail: format!("kind `{}`: {}", self.name, error_chain(err)),
            retryable: true,
            retry_after: None,
            members: Map::new(),
        }))
    }
}

#[async_trait]
impl Handler for HttpKind {
    fn kind(&self) -> &str {
        &self.name
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        for name in template::fields(&self.pieces) {
            template::field_text(payload, name)?;
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Output, JobError> {
        // Cancellation, shutdown and a lost lease drop the exchange, which aborts the request in flight.
        tokio::select! {
            _ = ctx.cancelled() => Err(JobError::Cancelled),
            outcome = self.exchange(&ctx, &payload) => outcome,
        }
    }

    fn max_concurrency(&self) -> Option<usize> {
        Some(self.settings.max_concurrency.max(1))
    }
}

fn permanent(title: &str, detail: String, status: StatusCode, excerpt: &str) -> JobError {
    let mut members = Map::new();
    members.insert("upstream_status".into(), json!(status.as_u16()));
    members.insert("upstream_body".into(), json!(excerpt));
    JobError::Detailed(Box::new(Failure {
        title: title.to_owned(),
        detail,
        retryable: false,
        retry_after: None,
        members,
    }))
}

/// The response's `Location`, resolved against `base`.
fn location(response: &reqwest::Response, base: &Url) -> Result<Option<Url>, JobError> {
    let Some(value) = response.headers().get(LOCATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| JobError::Permanent("the upstream sent a Location that is not text".into()))?;
    base.join(text).map(Some).map_err(|err| {
        JobError::Permanent(format!(
            "the upstream sent an invalid Location `{text}`: {err}"
        ))
    })
}

fn same_origin(origin: &Url, other: &Url) -> Result<(), JobError> {
    if origin.origin() == other.origin() {
        Ok(())
    } else {
        Err(JobError::Permanent(format!(
            "the upstream pointed at another origin ({}); jobdock only follows its own upstream",
            other.origin().ascii_serialization()
        )))
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, JobError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(JobError::Permanent(format!(
                        "the upstream's answer is larger than {MAX_BODY_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) => {
                return Err(JobError::Retryable(format!(
                    "reading the upstream's answer failed: {}",
                    error_chain(&err)
                )))
            }
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let cut = body.len().min(EXCERPT_BYTES);
    String::from_utf8_lossy(&body[..cut]).into_owned()
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(url: &str) -> Result<HttpKind, String> {
        HttpKind::new(
            "t",
            HttpSettings {
                url: url.to_owned(),
                method: Method::POST,
                headers: Vec::new(),
                max_concurrency: 1,
                keep_headers: Vec::new(),
                retry_statuses: DEFAULT_RETRY_STATUSES.to_vec(),
                follow_async: false,
            },
        )
    }

    #[test]
    fn placeholders_fill_path_segments_percent_encoded() {
        let kind = kind("http://reports.internal:9000/v1/reports/{customer}").unwrap();
        let url = kind.url(&json!({"customer": "a/../b?c=d#e"})).unwrap();
        assert_eq!(url.host_str(), Some("reports.internal"));
        assert_eq!(url.path(), "/v1/reports/a%2F..%2Fb%3Fc%3Dd%23e");
        assert_eq!(url.query(), None);
    }

    #[test]
    fn placeholders_may_not_fill_the_authority() {
        assert!(kind("http://{host}/x").is_err());
        assert!(kind("http://example.com:{port}/x").is_err());
        assert!(kind("ftp://example.com/{x}").is_err());
        assert!(kind("/relative/{x}").is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
