//! What a scenario measures: a fresh database, and a jobdock server, either in a process of its own (the
//! HTTP scenarios: the load generator does not share its runtime, and its memory can be measured) or in
//! this process (scenarios with a handler of the bench's own).

use std::net::SocketAddr;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use jobdock::{Application, Registry, Settings};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

/// The external kind every bench server accepts.
pub const EXTERNAL_KIND: &str = "bench-external";

/// A database of the run's own, dropped at the end.
pub struct BenchDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDatabase {
    /// Creates a database beside `base_url` and applies jobdock's migrations to it.
    pub async fn create(base_url: &str) -> anyhow::Result<BenchDatabase> {
        let name = format!("jobdock_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(base_url)
            .await
            .with_context(|| format!("connecting to {base_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let (server, _) = base_url
            .rsplit_once('/')
            .context("the database URL must name a database")?;
        let database = BenchDatabase {
            admin_url: base_url.to_owned(),
            url: format!("{server}/{name}"),
            name,
        };
        let pool = database.pool().await?;
        jobdock::store::db::migrate(&pool).await?;
        pool.close().await;
        Ok(database)
    }

    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&self.url)
            .await?)
    }

    /// A connection that watches the database during a measurement. Its queries may not plan sequential
    /// scans: once half the jobs are done, "is any job still queued?" as a sequential scan walks every
    /// finished row (and its dead versions) before the first queued one — milliseconds of the measured
    /// server's CPU per poll, a hundred polls a second. Through the partial indexes, the first poll marks
    /// the dead entries it passes and the next ones skip them.
    pub async fn observer(&self) -> anyhow::Result<PgConnection> {
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)?
            .options([("enable_seqscan", "off")]);
        Ok(PgConnection::connect_with(&options).await?)
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// A jobdock server running in this process.
pub struct Server {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(
        database: &BenchDatabase,
        workers: usize,
        registry: Registry,
    ) -> anyhow::Result<Server> {
        Server::start_with(database, workers, registry, "").await
    }

    /// As [`Server::start`], with more kinds declared in `config` (`jobdock.toml` text).
    pub async fn start_with(
        database: &BenchDatabase,
        workers: usize,
        registry: Registry,
        config: &str,
    ) -> anyhow::Result<Server> {
        let mut settings = settings(&database.url, workers)?;
        let extra =
            jobdock::config::file::parse(std::path::Path::new("jobdock-bench.toml"), config)?;
        settings.kinds.extend(extra.kinds);
        let app = Application::build(settings, registry).await?;
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Server { addr, stop, task })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// How the bench runs a server: any free port, and more connections than the default 10, so the pool is
/// not what limits a run at 32 clients.
fn settings(database_url: &str, workers: usize) -> anyhow::Result<Settings> {
    // An external kind for the `external` scenario, whose HTTP workers claim it.
    let external = jobdock::config::file::parse(
        std::path::Path::new("jobdock-bench.toml"),
        &format!("[kinds.{EXTERNAL_KIND}]\nhandler = \"external\"\n"),
    )?;
    Ok(Settings {
        kinds: external.kinds,
        database_url: database_url.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        workers,
        db_max_connections: 20,
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    })
}

/// The hidden `serve-for-bench` subcommand: a jobdock server with the built-in kinds that prints its
/// address on stdout and runs until its stdin closes (so it never outlives the bench).
pub async fn serve_for_bench(
    database_url: &str,
    workers: usize,
    retention_secs: Option<u64>,
) -> anyhow::Result<()> {
    let mut settings = settings(database_url, workers)?;
    if let Some(secs) = retention_secs {
        settings.retention = Duration::from_secs(secs);
    }
    let app = Application::build(settings, Registry::builtin()).await?;
    println!("{}", app.local_addr());
    app.run_until_stopped(async {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    })
    .await
}

/// A jobdock server in a process of its own: this binary, re-run as `serve-for-bench`, so the server is
/// the library's code built with the bench, whichever binaries cargo built.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: tokio::process::Child,
}

impl ServerProcess {
    pub async fn start(database: &BenchDatabase, workers: usize) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(database, workers, &[]).await
    }

    /// As [`ServerProcess::start`], with more `serve-for-bench` arguments (`--retention-secs N`).
    pub async fn start_with(
        database: &BenchDatabase,
        workers: usize,
        extra: &[String],
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve-for-bench", &database.url, &workers.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server process did not start within 60 s")??
            .context("the server process exited before listening")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the server process printed `{line}`, not an address"))?;
        Ok(ServerProcess { addr, child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes the server's stdin, which shuts it down gracefully, and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        exits_cleanly(
            &mut self.child,
            Duration::from_secs(30),
            "the server process",
        )
        .await
    }
}

/// Waits up to `limit` for `child` (`what`) to exit with success; kills it past that.
async fn exits_cleanly(
    child: &mut tokio::process::Child,
    limit: Duration,
    what: &str,
) -> anyhow::Result<()> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => {
            let status = status?;
            if !status.success() {
                bail!("{what} exited with {status}");
            }
            Ok(())
        }
        Err(_) => {
            child.kill().await?;
            bail!("{what} did not stop within {} s", limit.as_secs())
        }
    }
}

/// The resident memory of process `pid`, in MiB (from `/proc`, so Linux only).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The `jobdock` binary: `JOBDOCK_BIN`, or the one cargo builds beside this bench. Under `cargo run` (which
/// sets `CARGO`) it is built first, once per run, in this bench's profile: `cargo run -p jobdock-bench` alone
/// would otherwise measure whatever `jobdock` binary an earlier build left there.
pub fn jobdock_binary() -> anyhow::Result<std::path::PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Some(path) = std::env::var_os("JOBDOCK_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("finding the bench binary")?;
    let folder = exe.parent().context("the bench binary has no folder")?;
    let path = folder.join("jobdock");
    if let Some(cargo) = std::env::var_os("CARGO") {
        BUILT
            .get_or_init(|| {
                let mut build = std::process::Command::new(cargo);
                build.args(["build", "--quiet", "-p", "jobdock", "--bin", "jobdock"]);
                if folder.ends_with("release") {
                    build.arg("--release");
                }
                match build.status() {
                    Ok(status) if status.success() => Ok(()),
                    Ok(status) => Err(format!("building jobdock failed ({status})")),
                    Err(err) => Err(format!("running cargo to build jobdock: {err}")),
                }
            })
            .clone()
            .map_err(anyhow::Error::msg)?;
    }
    if !path.is_file() {
        bail!(
            "{} is missing: this scenario runs the real server binary; build it with \
             `cargo build --release --workspace` (or point JOBDOCK_BIN at one)",
            path.display()
        );
    }
    Ok(path)
}

/// A real `jobdock serve` or `jobdock worker` process, with its defaults: only the database (and for
/// `serve` a free port) is given, plus whatever `args` a scenario passes. Its logs go to stderr at
/// `warn`, so a failure shows and a run does not drown in lines.
pub struct JobdockProcess {
    /// Where `serve` listens.
    pub addr: Option<SocketAddr>,
    child: tokio::process::Child,
}

impl JobdockProcess {
    fn spawn(
        database: &BenchDatabase,
        subcommand: &str,
        args: &[String],
    ) -> anyhow::Result<tokio::process::Child> {
        tokio::process::Command::new(jobdock_binary()?)
            .arg(subcommand)
            .args(args)
            .env("DATABASE_URL", &database.url)
            .env("RUST_LOG", "warn")
            .env_remove("JOBDOCK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `jobdock {subcommand}`"))
    }

    /// Starts `jobdock worker` and returns at once (a drain is timed from here).
    pub fn worker(database: &BenchDatabase, args: &[String]) -> anyhow::Result<JobdockProcess> {
        Ok(JobdockProcess {
            addr: None,
            child: JobdockProcess::spawn(database, "worker", args)?,
        })
    }

    /// Starts `jobdock serve` on a free port and waits until `/healthz` answers 200.
    pub async fn serve(
        database: &BenchDatabase,
        args: &[String],
    ) -> anyhow::Result<JobdockProcess> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut listen = vec!["--listen".to_owned(), addr.to_string()];
        listen.extend_from_slice(args);
        let mut child = JobdockProcess::spawn(database, "serve", &listen)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("`jobdock serve` exited with {status} before listening");
            }
            if crate::http::get_status(addr, "/healthz").await.ok() == Some(200) {
                return Ok(JobdockProcess {
                    addr: Some(addr),
                    child,
                });
            }
            if tokio::time::Instant::now() > deadline {
                bail!("`jobdock serve` did not answer /healthz within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Where `serve` listens (an error for a `worker`).
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.addr.context("a worker process has no address")
    }

    /// Sends SIGTERM (a graceful shutdown) and waits for the process to exit successfully.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        exits_cleanly(&mut self.child, Duration::from_secs(60), "jobdock").await
    }
}
