//! A minimal HTTP/1.1 client for load: one keep-alive connection per simulated client, requests written
//! as prepared bytes, responses read only as far as the status code and the body's length.
//!
//! Why not reqwest: the load generator shares 2 cores with the server and PostgreSQL, so every cycle it
//! spends is taken from what it measures. The baseline, pgbench, is a thin C client; this keeps the HTTP
//! side comparably thin (reqwest's pool, hyper's client machinery and header maps cost several times
//! more per request). It understands exactly what jobdock sends: `Content-Length` bodies.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Where the last response's body starts in `buffer`.
    body_start: usize,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
            body_start: 0,
        })
    }

    /// Sends one prepared request (see [`post_json`], [`get`]) and returns the response's status code.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let header_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = &self.buffer[..header_end];
        let status = head
            .get(9..12)
            .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok())
            .context("malformed status line")?;
        let length = content_length(head)?;
        while self.buffer.len() < header_end + length {
            self.fill().await?;
        }
        self.body_start = header_end;
        Ok(status)
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        &self.buffer[self.body_start..]
    }

    /// A header of the last response (the first with that name, case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = std::str::from_utf8(&self.buffer[..self.body_start]).ok()?;
        head.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let head = std::str::from_utf8(head).context("response headers are not UTF-8")?;
    for line in head.split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                return value.trim().parse().context("bad Content-Length");
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the load generator");
            }
        }
    }
    Ok(0)
}

/// A prepared `POST` with a JSON body.
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A prepared `POST` of a JSON body with one extra header.
pub fn post_json_with(addr: SocketAddr, path: &str, header: (&str, &str), body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{}: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        header.0,
        header.1,
        body.len()
    )
    .into_bytes()
}

/// A prepared `GET`.
pub fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
}

/// A prepared `GET` with one extra header.
pub fn get_with(addr: SocketAddr, path: &str, header: (&str, &str)) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{}: {}\r\n\r\n",
        header.0, header.1
    )
    .into_bytes()
}

/// One GET on a new connection; its status code.
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut connection = Connection::open(addr).await?;
    connection.send(&get(addr, path)).await
}
