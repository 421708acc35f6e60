//! The settings of kinds jobdock runs itself, from `jobdock.toml`: `http` (DESIGN §9) and `exec`
//! (DESIGN §10). Each key belongs to one handler; a key of the other handler is an error, not ignored.

use std::path::Path;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use toml::Spanned;

use super::file::{At, ConfigError, RawKind};
use crate::kinds::exec::{self, ExecKind, ExecSettings, Stdin};
use crate::kinds::http::{HttpKind, HttpSettings, DEFAULT_RETRY_STATUSES};
use crate::kinds::{HandlerType, Runner};

/// `exec`'s `max_output_bytes` when left out.
const DEFAULT_MAX_OUTPUT_BYTES: i64 = 16 * 1024 * 1024;
/// `max_concurrency` when left out: requests or commands in flight for the kind, per process.
const DEFAULT_MAX_CONCURRENCY: i64 = 8;

/// Builds the in-process runner of an `http` or `exec` kind (`None` for `external`), refusing keys that
/// belong to another handler.
pub(super) fn runner(
    name: &str,
    handler: HandlerType,
    raw: &mut RawKind,
    folder: &Path,
    at: &At<'_>,
) -> Result<Option<Runner>, ConfigError> {
    let key = |field: &str| format!("kinds.{name}.{field}");
    let misplaced = |field: &str, span: std::ops::Range<usize>, belongs: &str| {
        at(
            span,
            &key(field),
            format!(
                "`{field}` belongs to handler = \"{belongs}\"; this kind's handler is `{}`",
                handler.as_str()
            ),
        )
    };
    let http_keys = [
        ("url", raw.url.as_ref().map(Spanned::span)),
        ("method", raw.method.as_ref().map(Spanned::span)),
        ("headers", raw.headers.as_ref().map(Spanned::span)),
        ("keep_headers", raw.keep_headers.as_ref().map(Spanned::span)),
        (
            "retry_statuses",
            raw.retry_statuses.as_ref().map(Spanned::span),
        ),
        ("follow_async", raw.follow_async.as_ref().map(Spanned::span)),
    ];
    let exec_keys = [
        ("command", raw.command.as_ref().map(Spanned::span)),
        ("stdin", raw.stdin.as_ref().map(Spanned::span)),
        (
            "result_content_type",
            raw.result_content_type.as_ref().map(Spanned::span),
        ),
        ("env", raw.env.as_ref().map(Spanned::span)),
        ("working_dir", raw.working_dir.as_ref().map(Spanned::span)),
        (
            "max_output_bytes",
            raw.max_output_bytes.as_ref().map(Spanned::span),
        ),
        (
            "retryable_exit_codes",
            raw.retryable_exit_codes.as_ref().map(Spanned::span),
        ),
    ];
    let check = |keys: &[(&str, Option<std::ops::Range<usize>>)], belongs: &str| match keys
        .iter()
        .find_map(|(field, span)| Some((*field, span.clone()?)))
    {
        Some((field, span)) => Err(misplaced(field, span, belongs)),
        None => Ok(()),
    };
    match handler {
        HandlerType::Http => check(&exec_keys, "exec")?,
        HandlerType::Exec => check(&http_keys, "http")?,
        _ => {
            check(&http_keys, "http")?;
            check(&exec_keys, "exec")?;
            if let Some(span) = raw.max_concurrency.as_ref().map(Spanned::span) {
                return Err(at(
                    span,
                    &key("max_concurrency"),
                    "`max_concurrency` belongs to handlers that jobdock runs (`http`, `exec`); external \
                     workers decide their own"
                        .to_owned(),
                ));
            }
            return Ok(None);
        }
    }
    let max_concurrency = match raw.max_concurrency.take() {
        Some(value) if !(1..=10_000).contains(value.get_ref()) => {
            return Err(at(
                value.span(),
                &key("max_concurrency"),
                format!(
                    "{} is out of range: it must be between 1 and 10000",
                    value.get_ref()
                ),
            ))
        }
        Some(value) => value.into_inner(),
        None => DEFAULT_MAX_CONCURRENCY,
    } as usize;
    let runner: Arc<dyn crate::kinds::Handler> = match handler {
        HandlerType::Http => Arc::new(http_kind(name, raw, max_concurrency, &key, at)?),
        _ => Arc::new(exec_kind(name, raw, max_concurrency, folder, &key, at)?),
    };
    Ok(Some(Runner(runner)))
}

fn http_kind(
    name: &str,
    raw: &mut RawKind,
    max_concurrency: usize,
    key: &dyn Fn(&str) -> String,
    at: &At<'_>,
) -> Result<HttpKind, ConfigError> {
    let Some(url) = raw.url.take() else {
        return Err(at(
            raw.handler.span(),
            &key("url"),
            "an `http` kind needs `url`, e.g. \"http://reports.internal:9000/v1/reports/{customer}\"".to_owned(),
        ));
    };
    let method = match raw.method.take() {
        Some(method) => {
            let upper = method.get_ref().to_ascii_uppercase();
            match upper.as_str() {
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
                    Method::from_bytes(upper.as_bytes()).unwrap_or(Method::POST)
                }
                _ => {
                    return Err(at(
                        method.span(),
                        &key("method"),
                        format!(
                            "`{}` is not one of GET, POST, PUT, PATCH, DELETE",
                            method.get_ref()
                        ),
                    ))
                }
            }
        }
        None => Method::POST,
    };
    let mut headers = Vec::new();
    if let Some(table) = raw.headers.take() {
        let span = table.span();
        for (header, value) in table.into_inner() {
            let field = format!("headers.{header}");
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                at(
                    span.clone(),
                    &key(&field),
                    format!("`{header}` is not a header name"),
                )
            })?;
            // The value is never shown: it may hold a secret.
            let expanded =
                expand_env(&value).map_err(|message| at(span.clone(), &key(&field), message))?;
            let mut value = HeaderValue::from_str(&expanded).map_err(|_| {
                at(
                    span.clone(),
                    &key(&field),
                    "the value (after ${VAR} expansion) is not a valid header value".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
    }
    let keep_headers = match raw.keep_headers.take() {
        Some(list) => {
            let span = list.span();
            list.into_inner()
                .iter()
                .map(|header| {
                    HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                        at(
                            span.clone(),
                            &key("keep_headers"),
                            format!("`{header}` is not a header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    let retry_statuses = match raw.retry_statuses.take() {
        Some(list) => {
            let span = list.span();
            list.into_inner()
                .into_iter()
                .map(|status| {
                    u16::try_from(status)
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| {
                            at(
                                span.clone(),
                                &key("retry_statuses"),
                                format!("{status} is not an HTTP status"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => DEFAULT_RETRY_STATUSES.to_vec(),
    };
    let settings = HttpSettings {
        url: url.get_ref().clone(),
        method,
        headers,
        max_concurrency,
        keep_headers,
        retry_statuses,
        follow_async: raw
            .follow_async
            .take()
            .map(Spanned::into_inner)
            .unwrap_or(false),
    };
    HttpKind::new(name, settings).map_err(|message| at(url.span(), &key("url"), message))
}

fn exec_kind(
    name: &str,
    raw: &mut RawKind,
    max_concurrency: usize,
    folder: &Path,
    key: &dyn Fn(&str) -> String,
    at: &At<'_>,
) -> Result<ExecKind, ConfigError> {
    let Some(command) = raw.command.take() else {
        return Err(at(
            raw.handler.span(),
            &key("command"),
            "an `exec` kind needs `command`, e.g. [\"wc\", \"-w\"]".to_owned(),
        ));
    };
    let span = command.span();
    let mut argv = command.into_inner().into_iter();
    let Some(program) = argv.next() else {
        return Err(at(span, &key("command"), "`command` is empty".to_owned()));
    };
    let program = exec::resolve_program(&program)
        .map_err(|message| at(span.clone(), &key("command"), message))?;
    let stdin = match raw.stdin.take() {
        Some(value) => match value.get_ref().as_str() {
            "payload" => Stdin::Payload,
            "none" => Stdin::None,
            other => {
                return Err(at(
                    value.span(),
                    &key("stdin"),
                    format!("`{other}` is neither \"payload\" nor \"none\""),
                ))
            }
        },
        None => Stdin::Payload,
    };
    let result_content_type = match raw.result_content_type.take() {
        Some(value)
            if HeaderValue::from_str(value.get_ref()).is_err() || value.get_ref().is_empty() =>
        {
            return Err(at(
                value.span(),
                &key("result_content_type"),
                format!("`{}` is not a content type", value.get_ref()),
            ))
        }
        Some(value) => value.into_inner(),
        None => "application/octet-stream".to_owned(),
    };
    let working_dir = match raw.working_dir.take() {
        Some(dir) => {
            let path = folder.join(dir.get_ref());
            if !path.is_dir() {
                return Err(at(
                    dir.span(),
                    &key("working_dir"),
                    format!("{} is not a directory", path.display()),
                ));
            }
            Some(path)
        }
        None => None,
    };
    let max_output_bytes = match raw.max_output_bytes.take() {
        Some(value) if !(1..=1 << 30).contains(value.get_ref()) => {
            return Err(at(
                value.span(),
                &key("max_output_bytes"),
                format!(
                    "{} is out of range: it must be between 1 and 1073741824",
                    value.get_ref()
                ),
            ))
        }
        Some(value) => value.into_inner(),
        None => DEFAULT_MAX_OUTPUT_BYTES,
    } as usize;
    let retryable_exit_codes = match raw.retryable_exit_codes.take() {
        Some(codes) => {
            let span = codes.span();
            codes
                .into_inner()
                .into_iter()
                .map(|code| {
                    i32::try_from(code)
                        .ok()
                        .filter(|c| (1..=255).contains(c))
                        .ok_or_else(|| {
                            at(
                                span.clone(),
                                &key("retryable_exit_codes"),
                                format!("{code} is not an exit code (1-255)"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    let settings = ExecSettings {
        program,
        args: argv.collect(),
        stdin,
        result_content_type,
        env: raw
            .env
            .take()
            .map(Spanned::into_inner)
            .unwrap_or_else(|| vec!["PATH".to_owned()]),
        working_dir,
        max_output_bytes,
        retryable_exit_codes,
        max_concurrency,
    };
    Ok(ExecKind::new(name, settings))
}

/// Replaces each `${VAR}` with the variable's value.
///
/// # Errors
/// When a variable is unset (named; its value never is).
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("an unclosed `${` in the value".to_owned());
        };
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("the environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
