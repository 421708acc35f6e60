//! The `jobdock` binary: parse the command line, set up logging, call into the library.

use clap::{CommandFactory, FromArgMatches};
use jobdock::config::{self, Cli, Command, ConfigError, LogFormat, Settings};
use jobdock::{app, Application, Registry};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (a usage error, as clap's own).
const EXIT_CONFIG: i32 = 2;

#[tokio::main]
async fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    init_logging(cli.log_format);
    let sub = matches
        .subcommand()
        .map(|(_, sub)| sub.clone())
        .unwrap_or_default();
    if let Command::Client(command) = cli.command {
        let mut stdout = std::io::stdout();
        let code = jobdock::client::run(command, &mut stdout).await;
        let _ = std::io::Write::flush(&mut stdout);
        std::process::exit(code);
    }
    match run(cli.command, &sub).await {
        Ok(()) => {}
        Err(Failure::Config(err)) => {
            eprintln!("jobdock: {err}");
            std::process::exit(EXIT_CONFIG);
        }
        Err(Failure::Other(err)) => {
            eprintln!("jobdock: {err:#}");
            std::process::exit(1);
        }
    }
}

enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::Config(err)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Other(err)
    }
}

async fn run(command: Command, matches: &clap::ArgMatches) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => {
            let config = args.worker.database.config.as_deref();
            let settings = Settings::load(Settings::for_serve(&args), config, matches)?;
            let app = Application::build(settings, Registry::builtin()).await?;
            app.run_until_stopped(app::shutdown_signal()).await?;
        }
        Command::Worker(args) => {
            let config = args.database.config.as_deref();
            let settings = Settings::load(Settings::for_worker(&args), config, matches)?;
            app::run_workers(settings, Registry::builtin(), app::shutdown_signal()).await?;
        }
        Command::Migrate(args) => {
            let settings = Settings::load(
                Settings::for_database(&args),
                args.config.as_deref(),
                matches,
            )?;
            app::run_migrations(&settings).await?;
        }
        Command::Keys(args) => {
            let settings = Settings::load(
                Settings::for_database(&args.database),
                args.database.config.as_deref(),
                matches,
            )?;
            let pool = jobdock::store::db::connect(&settings.database_url, 2).await?;
            jobdock::store::db::migrate(&pool).await?;
            let printed = jobdock::keys::run(&pool, args.action).await;
            pool.close().await;
            print!("{}", printed?);
        }
        // Handled in `main` before this is called.
        Command::Client(_) => {}
        Command::Openapi => print!("{}", jobdock::api::document().yaml),
        Command::CheckConfig { path } => {
            let given = path.or_else(|| std::env::var_os("JOBDOCK_CONFIG").map(Into::into));
            let Some(path) = config::config_path(given.as_deref()) else {
                return Err(ConfigError {
                    file: config::DEFAULT_CONFIG_FILE.into(),
                    line: None,
                    key: "(file)".to_owned(),
                    message: "no configuration file: give a path, set JOBDOCK_CONFIG, or create ./jobdock.toml"
                        .to_owned(),
                }
                .into());
            };
            let file = config::file::load(&path)?;
            let kinds: Vec<String> = file
                .kinds
                .iter()
                .map(|kind| format!("{} ({})", kind.name, kind.handler.as_str()))
                .collect();
            println!(
                "{}: valid; {} configured kind{}{}",
                path.display(),
                kinds.len(),
                if kinds.len() == 1 { "" } else { "s" },
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(": {}", kinds.join(", "))
                }
            );
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,poem=warn"));
    // Colours only for a person at a terminal: escape codes would litter a log file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
