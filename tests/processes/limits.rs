//! The process at its file limit (DESIGN §13): more idle sockets than it may open files, and it still
//! answers `/healthz`, with one warning in the log instead of a silent spin.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::common::{eventually, TestDatabase};
use crate::support::Jobdock;

/// Lowers a running process's file limit (soft and hard) to `files`.
fn limit_files(pid: u32, files: u64) {
    let limit = libc::rlimit {
        rlim_cur: files,
        rlim_max: files,
    };
    // SAFETY: prlimit reads the struct it is given and writes nothing (no old-limit pointer).
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn at_its_file_limit_the_server_still_answers_healthz_and_says_why_once() {
    let database = TestDatabase::create().await;
    let server = Jobdock::serve("fd-limit", &database.url, &["--workers", "0"]).await;
    limit_files(server.pid(), 128);
    let host = server
        .address
        .as_deref()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let mut idle = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(&host).await {
            Ok(stream) => idle.push(stream),
            Err(err) => panic!("the test itself ran out of sockets: {err}"),
        }
    }
    let http = crate::common::client();
    let healthz = server.url("/healthz");
    let answered = eventually(Duration::from_secs(20), || async {
        http.get(&healthz)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        answered,
        "no answer at the file limit:\n{}",
        server.log_text()
    );
    let warnings = server.log_text().matches("out of file descriptors").count();
    assert_eq!(warnings, 1, "{}", server.log_text());
    drop(idle);
}
