//! A throw-away PostgreSQL cluster of the test's own (initdb into a temporary directory, pg_ctl on a free
//! port), so a test can stop and restart the database under a running jobdock.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use uuid::Uuid;

use crate::common::free_port;

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Commands run as this user (`postgres` when the tests run as root: initdb refuses root).
    run_as: Option<String>,
}

impl Cluster {
    /// The directory holding `initdb` and `pg_ctl`: `JOBDOCK_TEST_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`, else `None` (no PostgreSQL binaries at all).
    pub fn find_binaries() -> Option<PathBuf> {
        if let Ok(dir) = std::env::var("JOBDOCK_TEST_PG_BIN") {
            return Some(PathBuf::from(dir));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
        let output = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        bin.join("initdb").exists().then_some(bin)
    }

    /// Creates and starts a cluster with trust authentication on 127.0.0.1 and a free port.
    pub fn start(bin: PathBuf) -> Cluster {
        let dir = std::env::temp_dir().join(format!("jobdock-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("create the cluster directory");
        let is_root = std::fs::metadata("/proc/self")
            .map(|meta| meta.uid() == 0)
            .unwrap_or(false);
        let run_as = is_root.then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let chown = Command::new("chown")
                .arg(user)
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(
                chown.success(),
                "running as root: cannot hand {} to user `{user}` (initdb refuses to run as root)",
                dir.display()
            );
        }
        let cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            run_as,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        cluster.start_server();
        cluster
    }

    /// A URL for database `name` on this cluster (jobdock creates it when missing).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        // fsync=off is safe here: a stopped server leaves what it wrote in the OS cache. synchronous_commit
        // must stay on, or an immediate stop loses commits PostgreSQL already acknowledged (and the test
        // would blame jobdock for jobs PostgreSQL dropped).
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c shared_buffers=16MB -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server at once (`-m immediate`: like a crash of the database) and waits until it is down.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        // The postgres user may not be allowed into the test's working directory.
        command.current_dir(&self.dir);
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            read_log(&self.dir.join("server.log")),
        );
        output
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
