//! The `jobdock` binary: parse the command line, set up logging, call into the library.

use clap::Parser;
use jobdock::config::{Cli, Command, LogFormat, Settings};
use jobdock::{app, Application, Registry};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(err) = run(cli.command).await {
        eprintln!("jobdock: {err:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let settings = Settings::for_serve(&args);
            let app = Application::build(settings, Registry::builtin()).await?;
            app.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Worker(args) => {
            app::run_workers(
                Settings::for_worker(&args),
                Registry::builtin(),
                app::shutdown_signal(),
            )
            .await
        }
        Command::Migrate(args) => app::run_migrations(&Settings::for_database(&args)).await,
        Command::Openapi => {
            print!("{}", jobdock::api::document().yaml);
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,poem=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
