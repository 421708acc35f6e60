//! Connection limits (DESIGN §13) over raw sockets: header and body timeouts, the connection cap, and
//! problem details for requests hyper refuses before any endpoint runs.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); everything it sent.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return true,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                // A server that closes with our request unread resets the connection: what it sent
                // before is the answer.
                Err(_) => return !answer.is_empty(),
            }
        }
    })
    .await;
    read.ok()?
        .then(|| String::from_utf8_lossy(&answer).into_owned())
}

fn body_of(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn silent_and_half_sent_requests_are_cut_off_after_the_header_timeout() {
    let app = spawn_app().await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(host(&app)).await.unwrap();
    let mut half = TcpStream::connect(host(&app)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (silent, half) = tokio::join!(
        read_to_close(&mut silent, Duration::from_secs(20)),
        read_to_close(&mut half, Duration::from_secs(20))
    );
    assert!(silent.is_some() && half.is_some(), "still open after 20 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // Meanwhile the server answered everyone else.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_body_that_stalls_ends_its_request_with_408_and_stores_nothing() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"kind\": \"echo\",",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(45))
        .await
        .expect("an answer within 45 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(body_of(&answer)["status"], 408);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn with_more_idle_sockets_than_the_cap_the_server_still_answers() {
    let app = spawn_app_with(|settings| settings.max_connections = Some(20)).await;
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(host(&app)).await.unwrap());
    }
    for _ in 0..3 {
        let response = crate::common::client()
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("answered at the cap");
        assert_eq!(response.status(), 200);
    }
    // The oldest idle sockets were closed to make room.
    let mut first = idle.remove(0);
    assert!(read_to_close(&mut first, Duration::from_secs(5))
        .await
        .is_some());
}

#[tokio::test]
async fn requests_hyper_refuses_get_problem_details_too() {
    let app = spawn_app().await;
    // More headers than hyper parses (100).
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|n| format!("X-H{n}: v\r\n"))
            .collect::<String>()
    );
    let huge_uri = format!(
        "GET /v1/jobs?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    for (request, status) in [
        (many_headers, 431),
        (huge_uri, 414),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400),
    ] {
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .expect("an answer");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {}",
            &answer[..answer.len().min(200)]
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert_eq!(body_of(&answer)["status"], status, "{answer}");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_idle_for_a_minute_is_closed() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    // Still open well past the header timeout: it answered a request, so only the idle timeout applies.
    let rest = read_to_close(&mut stream, Duration::from_secs(90)).await;
    assert!(rest.is_some(), "still open after 90 s");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_secs(58) && idle < Duration::from_secs(75),
        "closed after {idle:?}"
    );
}
