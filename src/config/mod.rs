//! Settings from flags, environment and the configuration file, parsed and validated once at the edge.
//!
//! Every flag also reads an environment variable, and every default makes `jobdock serve` work against a
//! PostgreSQL on localhost with no configuration at all. A configuration file ([`file`], `jobdock.toml`)
//! declares kinds and may set any flag's value in `[server]`; a flag or environment variable wins over it.

pub mod file;
mod runners;
mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};

use crate::kinds::KindSpec;
pub use file::{ConfigError, ConfigFile, TenantSettings};

/// The command line of the `jobdock` binary.
#[derive(Debug, Parser)]
#[command(
    name = "jobdock",
    version,
    about = "A persistent job server: long-running work behind HTTP, queued in PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, env = "JOBDOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// When callers need an API key (DESIGN §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuthMode {
    /// Keys are required as soon as one exists; until then the server runs open, on a loopback address
    /// only.
    #[default]
    Auto,
    /// Keys are always required.
    Keys,
    /// No keys: anyone who reaches the address may do anything.
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Auto => "auto",
            AuthMode::Keys => "keys",
            AuthMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and an in-process worker pool.
    Serve(ServeArgs),
    /// Run workers only (no HTTP API).
    Worker(WorkerArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print the OpenAPI document (YAML) to stdout.
    Openapi,
    /// Create, list and revoke API keys.
    Keys(KeysArgs),
    #[command(flatten)]
    Client(crate::client::ClientCommand),
    /// Validate a configuration file and exit (0: valid; 2: the error, naming file, line and key).
    CheckConfig {
        /// The file to check. Defaults to $JOBDOCK_CONFIG, else ./jobdock.toml.
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Configuration file (kinds, and `[server]` values for these flags). Defaults to ./jobdock.toml when
    /// that file exists.
    #[arg(long, env = "JOBDOCK_CONFIG")]
    pub config: Option<PathBuf>,

    /// PostgreSQL connection URL. The database is created if it does not exist.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Most connections this process opens to PostgreSQL.
    #[arg(long, env = "JOBDOCK_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        /// The tenant the key's jobs belong to.
        #[arg(long)]
        tenant: String,
        /// A name for people (which client uses it).
        #[arg(long)]
        name: String,
        /// Comma-separated: submit, read, work, admin.
        #[arg(long)]
        scopes: String,
    },
    /// List the keys (never a secret).
    List,
    /// Revoke a key by its ID (as `jobdock keys list` shows it).
    Revoke { id: i64 },
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How many jobs this process runs at once (tokio tasks). 0 runs no workers.
    #[arg(long, env = "JOBDOCK_WORKERS", default_value_t = 32)]
    pub workers: usize,

    /// How long a claim holds a job without a heartbeat before the rescuer may give it to another worker.
    #[arg(long, env = "JOBDOCK_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_secs: u64,

    /// On SIGTERM/SIGINT, how long running jobs may take to finish before they are released to the queue.
    #[arg(long, env = "JOBDOCK_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// How long finished jobs and their results are kept (e.g. `7d`, `12h`, `90m`, or seconds).
    #[arg(long, env = "JOBDOCK_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,

    /// How often idle workers look for due jobs when no notification arrives (milliseconds).
    #[arg(long, env = "JOBDOCK_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub poll_interval_ms: u64,

    /// First retry delay after a retryable failure (milliseconds); doubles with each attempt, with jitter.
    #[arg(long, env = "JOBDOCK_RETRY_BASE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub retry_base_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "JOBDOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "JOBDOCK_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub max_body_bytes: u64,

    /// Origins that browsers may call the API from (CORS), comma-separated, e.g.
    /// `https://app.example.com`; none by default.
    #[arg(long, env = "JOBDOCK_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// When callers need an API key: `auto` (as soon as one exists; without keys only on a loopback
    /// address), `keys` (always) or `none` (never).
    #[arg(long, env = "JOBDOCK_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub auth: AuthMode,

    /// Open HTTP connections at most; at the cap the connection idle longest is closed to admit a new
    /// one. Default: 80% of the process's file limit.
    #[arg(long, env = "JOBDOCK_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: Option<u64>,

    /// Largest result an external worker may store, in bytes; larger ones get 413.
    #[arg(long, env = "JOBDOCK_MAX_RESULT_BYTES", default_value_t = DEFAULT_MAX_RESULT_BYTES, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub max_result_bytes: u64,

    #[command(flatten)]
    pub worker: WorkerArgs,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://localhost/jobdock";
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;
/// Read when no `--config` is given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "jobdock.toml";

/// Everything a jobdock process needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// Connections to PostgreSQL this process opens at most.
    pub db_max_connections: u32,
    /// Open HTTP connections at most (`--max-connections`); `None`: 80% of the file limit.
    pub max_connections: Option<usize>,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_result_bytes: usize,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    pub auth: AuthMode,
    /// `[tenants.NAME]` from the configuration file.
    pub tenants: Vec<TenantSettings>,
    /// `[webhooks]` from the configuration file.
    pub webhooks: crate::webhooks::WebhookSettings,
    pub workers: usize,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    pub retention: Duration,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    /// Kinds declared in the configuration file.
    pub kinds: Vec<KindSpec>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            db_max_connections: 10,
            max_connections: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES as usize,
            cors_origins: Vec::new(),
            auth: AuthMode::Auto,
            tenants: Vec::new(),
            webhooks: Default::default(),
            workers: 32,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            kinds: Vec::new(),
        }
    }
}

impl Settings {
    pub fn for_database(args: &DatabaseArgs) -> Self {
        Settings {
            database_url: args.database_url.clone(),
            db_max_connections: args.db_max_connections,
            ..Settings::default()
        }
    }

    pub fn for_worker(args: &WorkerArgs) -> Self {
        Settings {
            workers: args.workers,
            lease: Duration::from_secs(args.lease_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            retention: args.retention,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            retry_base: Duration::from_millis(args.retry_base_ms),
            ..Settings::for_database(&args.database)
        }
    }

    pub fn for_serve(args: &ServeArgs) -> Self {
        Settings {
            listen: args.listen,
            // The range check above keeps this within usize on every supported platform.
            max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
            max_result_bytes: usize::try_from(args.max_result_bytes).unwrap_or(usize::MAX),
            cors_origins: args
                .cors_origins
                .iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
            auth: args.auth,
            max_connections: args
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            ..Settings::for_worker(&args.worker)
        }
    }

    /// Takes the kinds of `file`, and each `[server]` value whose flag was left at its default
    /// (`defaulted(flag id)` says which were: a flag or environment variable wins over the file).
    pub fn with_file(mut self, file: ConfigFile, defaulted: impl Fn(&str) -> bool) -> Settings {
        let server = file.server;
        macro_rules! take {
            ($id:literal, $value:expr, $apply:expr) => {
                if let Some(value) = $value {
                    if defaulted($id) {
                        #[allow(clippy::redundant_closure_call)]
                        ($apply)(&mut self, value);
                    }
                }
            };
        }
        take!(
            "database_url",
            server.database_url,
            |s: &mut Settings, v| s.database_url = v
        );
        take!(
            "db_max_connections",
            server.db_max_connections,
            |s: &mut Settings, v| s.db_max_connections = v
        );
        take!("listen", server.listen, |s: &mut Settings, v| s.listen = v);
        take!(
            "max_body_bytes",
            server.max_body_bytes,
            |s: &mut Settings, v: u64| {
                s.max_body_bytes = usize::try_from(v).unwrap_or(usize::MAX)
            }
        );
        take!(
            "max_result_bytes",
            server.max_result_bytes,
            |s: &mut Settings, v: u64| {
                s.max_result_bytes = usize::try_from(v).unwrap_or(usize::MAX)
            }
        );
        take!("workers", server.workers, |s: &mut Settings, v| s.workers =
            v);
        take!("lease_secs", server.lease_secs, |s: &mut Settings, v| s
            .lease =
            Duration::from_secs(v));
        take!(
            "shutdown_grace_secs",
            server.shutdown_grace_secs,
            |s: &mut Settings, v| { s.shutdown_grace = Duration::from_secs(v) }
        );
        take!("retention", server.retention, |s: &mut Settings, v| s
            .retention =
            v);
        take!(
            "poll_interval_ms",
            server.poll_interval_ms,
            |s: &mut Settings, v| { s.poll_interval = Duration::from_millis(v) }
        );
        take!(
            "retry_base_ms",
            server.retry_base_ms,
            |s: &mut Settings, v| { s.retry_base = Duration::from_millis(v) }
        );
        take!("auth", server.auth, |s: &mut Settings, v| s.auth = v);
        take!(
            "max_connections",
            server.max_connections,
            |s: &mut Settings, v: u64| {
                s.max_connections = Some(usize::try_from(v).unwrap_or(usize::MAX))
            }
        );
        self.kinds = file.kinds;
        self.tenants = file.tenants;
        self.webhooks = file.webhooks;
        self
    }

    /// Settings for a subcommand: its flags, then the configuration file for what they left at defaults.
    /// `matches` are the subcommand's own.
    ///
    /// # Errors
    /// The configuration file's first problem.
    pub fn load(
        base: Settings,
        config: Option<&Path>,
        matches: &ArgMatches,
    ) -> Result<Settings, ConfigError> {
        let Some(path) = config_path(config) else {
            return Ok(base);
        };
        let file = file::load(&path)?;
        // An id this subcommand does not have (`listen` for `worker`) counts as defaulted: harmless.
        let defaulted = |id: &str| match matches.try_get_raw(id) {
            Ok(Some(_)) => matches.value_source(id) == Some(ValueSource::DefaultValue),
            _ => true,
        };
        Ok(base.with_file(file, defaulted))
    }

    /// The database URL with any password replaced, for logs and error messages.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url)
    }
}

/// The configuration file to read: the one given, else `./jobdock.toml` when it exists, else none.
pub fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(path) => Some(path.to_owned()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.is_file().then_some(default)
        }
    }
}

/// Replaces the password in a URL of the form `scheme://user:password@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Parses `7d`, `12h`, `90m`, `30s`, `1h 30m`, `7 days`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(secs) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(trimmed)
        .or_else(|_| humantime::parse_duration(&trimmed.replace(' ', "")))
        .map_err(|err| {
            format!("`{text}` is not a duration ({err}); try e.g. `7d`, `12h` or `3600`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_forms_the_readme_shows() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("7 days").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3_600));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/jobs"),
            "postgres://app:***@db:5432/jobs"
        );
        assert_eq!(
            redact_url("postgres://localhost/jobdock"),
            "postgres://localhost/jobdock"
        );
    }

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["jobdock", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let settings = Settings::for_serve(&args);
        assert_eq!(settings.workers, 32);
        assert_eq!(settings.lease, Duration::from_secs(30));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(30));
        assert_eq!(settings.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.max_body_bytes, 1024 * 1024);
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
    }
}
