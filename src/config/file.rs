//! The configuration file, `jobdock.toml`: the `[server]` section (each key mirrors a flag) and the
//! configured kinds (`[kinds.NAME]`). Read once at start and validated whole; every error names the
//! file, the line and the key, in one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::kinds::schema::PayloadSchema;
use crate::kinds::{HandlerType, KindSpec};

/// What is wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {key}: {message}", file.display(), line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The key at fault, dotted (`kinds.thumbnail.payload_schema`).
    pub key: String,
    pub message: String,
}

/// A configuration file, parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub server: ServerSection,
    pub kinds: Vec<KindSpec>,
    pub tenants: Vec<TenantSettings>,
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// `[tenants.NAME]`: limits for one tenant (DESIGN §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    pub name: String,
    /// The most jobs of the tenant running at once, across all replicas.
    pub max_running: Option<u32>,
}

/// `[server]`: every key mirrors a flag of the same name (flags and environment variables win).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSection {
    pub database_url: Option<String>,
    pub db_max_connections: Option<u32>,
    pub max_connections: Option<u64>,
    pub listen: Option<std::net::SocketAddr>,
    pub max_body_bytes: Option<u64>,
    pub max_result_bytes: Option<u64>,
    pub workers: Option<usize>,
    pub lease_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub retention: Option<Duration>,
    pub poll_interval_ms: Option<u64>,
    pub retry_base_ms: Option<u64>,
    pub auth: Option<super::AuthMode>,
}

/// Kinds that are always there and cannot be redeclared.
const BUILTIN_KINDS: [&str; 3] = ["echo", "sleep", "fail"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    kinds: BTreeMap<String, Spanned<RawKind>>,
    #[serde(default)]
    tenants: BTreeMap<String, Spanned<RawTenant>>,
    webhooks: Option<Spanned<super::webhooks::RawWebhooks>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    max_running: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    database_url: Option<String>,
    db_max_connections: Option<Spanned<u32>>,
    max_connections: Option<Spanned<u64>>,
    listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<u64>>,
    max_result_bytes: Option<Spanned<u64>>,
    workers: Option<Spanned<usize>>,
    lease_secs: Option<Spanned<u64>>,
    shutdown_grace_secs: Option<u64>,
    retention: Option<Spanned<toml::Value>>,
    poll_interval_ms: Option<Spanned<u64>>,
    retry_base_ms: Option<Spanned<u64>>,
    auth: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKind {
    pub handler: Spanned<String>,
    queue: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    payload_schema: Option<Spanned<toml::Value>>,
    payload_schema_file: Option<Spanned<String>>,
    // `http` (DESIGN §9)
    pub url: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub keep_headers: Option<Spanned<Vec<String>>>,
    pub retry_statuses: Option<Spanned<Vec<i64>>>,
    pub follow_async: Option<Spanned<bool>>,
    // `exec` (DESIGN §10)
    pub command: Option<Spanned<Vec<String>>>,
    pub stdin: Option<Spanned<String>>,
    pub result_content_type: Option<Spanned<String>>,
    pub env: Option<Spanned<Vec<String>>>,
    pub working_dir: Option<Spanned<String>>,
    pub max_output_bytes: Option<Spanned<i64>>,
    pub retryable_exit_codes: Option<Spanned<Vec<i64>>>,
    // both
    pub max_concurrency: Option<Spanned<i64>>,
}

/// Reads and validates the file at `path`.
///
/// # Errors
/// The first problem found, naming the file, line and key.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_owned(),
        line: None,
        key: "(file)".to_owned(),
        message: format!("cannot read it: {err}"),
    })?;
    parse(path, &text)
}

/// Validates `text` as the contents of the file at `path` (relative paths inside resolve from its folder).
///
/// # Errors
/// The first problem found, naming the file, line and key.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let at = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError {
        file: path.to_owned(),
        line: Some(line_of(text, span.start)),
        key: key.to_owned(),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let start = err.span().map(|span| span.start).unwrap_or(0);
        ConfigError {
            file: path.to_owned(),
            line: err.span().map(|_| line_of(text, start)),
            key: key_at(text, start),
            message: err.message().trim().to_owned(),
        }
    })?;
    let server = server_section(raw.server, &at)?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut kinds = Vec::with_capacity(raw.kinds.len());
    for (name, kind) in raw.kinds {
        let span = kind.span();
        kinds.push(kind_settings(&name, kind.into_inner(), span, folder, &at)?);
    }
    let mut tenants = Vec::with_capacity(raw.tenants.len());
    for (name, tenant) in raw.tenants {
        let span = tenant.span();
        crate::tenant::validate_tenant_name(&name)
            .map_err(|message| at(span.clone(), &format!("tenants.{name}"), message))?;
        let max_running = match tenant.into_inner().max_running {
            Some(value) => Some(
                u32::try_from(*value.get_ref())
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        at(
                            value.span(),
                            &format!("tenants.{name}.max_running"),
                            format!("{} is out of range: it must be at least 1", value.get_ref()),
                        )
                    })?,
            ),
            None => None,
        };
        tenants.push(TenantSettings { name, max_running });
    }
    let env_secret = std::env::var(super::webhooks::SECRET_ENV).ok();
    let webhooks = super::webhooks::webhooks_section(raw.webhooks, env_secret, &at)?;
    Ok(ConfigFile {
        path: path.to_owned(),
        server,
        kinds,
        tenants,
        webhooks,
    })
}

pub(crate) type At<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a;

fn server_section(raw: RawServer, at: &At<'_>) -> Result<ServerSection, ConfigError> {
    fn within<T: PartialOrd + Copy + std::fmt::Display>(
        value: Option<Spanned<T>>,
        key: &str,
        range: std::ops::RangeInclusive<T>,
        at: &At<'_>,
    ) -> Result<Option<T>, ConfigError> {
        match value {
            Some(value) if !range.contains(value.get_ref()) => Err(at(
                value.span(),
                key,
                format!(
                    "{} is out of range: it must be between {} and {}",
                    value.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
            other => Ok(other.map(Spanned::into_inner)),
        }
    }
    let listen = match raw.listen {
        Some(listen) => Some(listen.get_ref().parse().map_err(|err| {
            at(
                listen.span(),
                "server.listen",
                format!(
                    "`{}` is not an address such as 127.0.0.1:8080 ({err})",
                    listen.get_ref()
                ),
            )
        })?),
        None => None,
    };
    let retention = match raw.retention {
        Some(value) => {
            let parsed = match value.get_ref() {
                toml::Value::Integer(secs) => u64::try_from(*secs)
                    .map(Duration::from_secs)
                    .map_err(|_| "a duration cannot be negative".to_owned()),
                toml::Value::String(text) => super::parse_duration(text),
                other => Err(format!(
                    "expected a duration such as \"7d\" or a number of seconds, found {}",
                    other.type_str()
                )),
            };
            Some(parsed.map_err(|message| at(value.span(), "server.retention", message))?)
        }
        None => None,
    };
    let auth = match raw.auth {
        Some(value) => Some(
            <super::AuthMode as clap::ValueEnum>::from_str(value.get_ref(), false).map_err(
                |_| {
                    at(
                        value.span(),
                        "server.auth",
                        format!("`{}` is not one of auto, keys, none", value.get_ref()),
                    )
                },
            )?,
        ),
        None => None,
    };
    Ok(ServerSection {
        auth,
        database_url: raw.database_url,
        db_max_connections: within(
            raw.db_max_connections,
            "server.db_max_connections",
            2..=1000,
            at,
        )?,
        max_connections: within(
            raw.max_connections,
            "server.max_connections",
            1..=10_000_000,
            at,
        )?,
        listen,
        max_body_bytes: within(raw.max_body_bytes, "server.max_body_bytes", 1..=1 << 30, at)?,
        max_result_bytes: within(
            raw.max_result_bytes,
            "server.max_result_bytes",
            1..=1 << 30,
            at,
        )?,
        workers: within(raw.workers, "server.workers", 0..=100_000, at)?,
        lease_secs: within(raw.lease_secs, "server.lease_secs", 1..=86_400, at)?,
        shutdown_grace_secs: raw.shutdown_grace_secs,
        retention,
        poll_interval_ms: within(
            raw.poll_interval_ms,
            "server.poll_interval_ms",
            10..=600_000,
            at,
        )?,
        retry_base_ms: within(raw.retry_base_ms, "server.retry_base_ms", 1..=3_600_000, at)?,
    })
}

fn kind_settings(
    name: &str,
    mut raw: RawKind,
    span: std::ops::Range<usize>,
    folder: &Path,
    at: &At<'_>,
) -> Result<KindSpec, ConfigError> {
    let key = |field: &str| format!("kinds.{name}.{field}");
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(at(
            span,
            &format!("kinds.{name}"),
            "a kind's name must be 1 to 255 characters, without NUL".to_owned(),
        ));
    }
    if BUILTIN_KINDS.contains(&name) {
        return Err(at(
            span,
            &format!("kinds.{name}"),
            format!("`{name}` is a built-in kind and cannot be redeclared; choose another name"),
        ));
    }
    let handler = match raw.handler.get_ref().as_str() {
        "external" => HandlerType::External,
        "http" => HandlerType::Http,
        "exec" => HandlerType::Exec,
        other => {
            return Err(at(
                raw.handler.span(),
                &key("handler"),
                format!("unknown handler `{other}`; expected `external`, `http` or `exec`"),
            ))
        }
    };
    let runner = super::runners::runner(name, handler, &mut raw, folder, at)?;
    let queue = match raw.queue {
        Some(queue) => {
            let text = queue.get_ref();
            if text.is_empty() || text.len() > 255 || text.contains('\0') {
                return Err(at(
                    queue.span(),
                    &key("queue"),
                    "a queue name must be 1 to 255 characters, without NUL".to_owned(),
                ));
            }
            Some(queue.into_inner())
        }
        None => None,
    };
    let number = |value: Option<Spanned<i64>>, field: &str, max: i64| match value {
        Some(value) if !(1..=max).contains(value.get_ref()) => Err(at(
            value.span(),
            &key(field),
            format!(
                "{} is out of range: it must be between 1 and {max}",
                value.get_ref()
            ),
        )),
        // In range, so it fits an i32.
        Some(value) => Ok(i32::try_from(value.into_inner()).ok()),
        None => Ok(None),
    };
    let max_attempts = number(raw.max_attempts, "max_attempts", 100)?;
    let timeout_secs = number(raw.timeout_secs, "timeout_secs", 604_800)?;
    let schema_json = match (raw.payload_schema, raw.payload_schema_file) {
        (Some(_), Some(file)) => {
            return Err(at(
                file.span(),
                &key("payload_schema_file"),
                "give `payload_schema` or `payload_schema_file`, not both".to_owned(),
            ))
        }
        (Some(inline), None) => {
            let span = inline.span();
            let json = serde_json::to_value(inline.into_inner())
                .map_err(|err| at(span.clone(), &key("payload_schema"), err.to_string()))?;
            Some((json, span, key("payload_schema")))
        }
        (None, Some(file)) => {
            let path = folder.join(file.get_ref());
            let read = std::fs::read_to_string(&path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))
                .and_then(|text| {
                    serde_json::from_str(&text)
                        .map_err(|err| format!("{} is not JSON: {err}", path.display()))
                })
                .map_err(|message| at(file.span(), &key("payload_schema_file"), message))?;
            Some((read, file.span(), key("payload_schema_file")))
        }
        (None, None) => None,
    };
    let payload_schema = match schema_json {
        Some((json, span, key)) => {
            Some(PayloadSchema::compile(json).map_err(|message| at(span, &key, message))?)
        }
        None => None,
    };
    Ok(KindSpec {
        name: name.to_owned(),
        handler,
        queue,
        max_attempts,
        timeout_secs,
        payload_schema,
        runner,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|before| before.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The dotted key at `offset`, for parse errors that carry only a position: the nearest table header
/// above, and the key on the line itself.
fn key_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map(|at| at + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned()
        });
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match (table, key.is_empty()) {
        (Some(table), false) => format!("{table}.{key}"),
        (Some(table), true) => table,
        (None, false) => key.to_owned(),
        (None, true) => "(file)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ConfigFile, ConfigError> {
        parse(Path::new("jobdock.toml"), text)
    }

    #[test]
    fn the_designs_example_parses_into_typed_settings() {
        let file = parse_str(
            r#"
[server]
listen = "127.0.0.1:9090"
workers = 4
retention = "12h"

[kinds.thumbnail]
handler = "external"
queue = "images"
max_attempts = 5
timeout_secs = 600
payload_schema = { type = "object", required = ["url"], properties = { url = { type = "string", format = "uri" } } }
"#,
        )
        .expect("valid");
        assert_eq!(file.server.workers, Some(4));
        assert_eq!(file.server.retention, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(file.server.listen.map(|a| a.port()), Some(9090));
        let kind = &file.kinds[0];
        assert_eq!(kind.name, "thumbnail");
        assert_eq!(kind.handler, HandlerType::External);
        assert_eq!(kind.queue.as_deref(), Some("images"));
        assert_eq!((kind.max_attempts, kind.timeout_secs), (Some(5), Some(600)));
        assert!(kind.payload_schema.is_some());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse_str("[kinds.a]\nhandler = \"external\"\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(err.key, "kinds.a.colour", "{err}");
        assert!(err.message.contains("unknown field `colour`"), "{err}");
        assert!(
            err.to_string()
                .starts_with("jobdock.toml:3: kinds.a.colour: "),
            "{err}"
        );
    }

    #[test]
    fn a_schema_that_is_not_json_schema_is_named_with_its_line() {
        let err = parse_str("\n[kinds.a]\nhandler = \"external\"\npayload_schema = { type = 7 }\n")
            .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert_eq!(err.key, "kinds.a.payload_schema");
    }

    #[test]
    fn syntax_errors_out_of_range_numbers_and_unknown_handlers_are_refused() {
        assert!(parse_str("[server\n").is_err());
        let err = parse_str("[server]\nworkers = -1\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = parse_str("[kinds.a]\nhandler = \"external\"\nmax_attempts = 0\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (Some(3), "kinds.a.max_attempts")
        );
        let err = parse_str("[kinds.a]\nhandler = \"magic\"\n").unwrap_err();
        assert_eq!(err.key, "kinds.a.handler");
        let err = parse_str("[kinds.echo]\nhandler = \"external\"\n").unwrap_err();
        assert!(err.message.contains("built-in"), "{err}");
    }
}
