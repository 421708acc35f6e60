//! Connection limits (DESIGN §13): how long a client may take to send its request headers, how long a
//! keep-alive connection may sit idle, and how many connections may be open at once.
//!
//! poem's server has none of these, and at the process's file limit its accept loop spins without a word.
//! [`LimitedAcceptor`] wraps the TCP acceptor: every connection it hands out is tracked (when it last did
//! anything, whether a request is in flight), a reaper closes connections past their timeouts, and at the
//! cap, or when the process is out of file descriptors, the connection idle longest is closed to admit
//! the new one, with a warning at most once a minute. A body that stalls is the middleware's to end (it
//! reads every body with a per-chunk timeout).
//!
//! hyper answers a request it cannot parse (headers too large: 431, URI too long: 414, a malformed request
//! line: 400) itself, with an empty body, before any endpoint runs. [`Tracked`] sees that answer go out on
//! a connection with no request in flight and writes a problem+json answer with the same status instead.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Request headers must arrive within this long of the connection opening or of the previous answer's
/// first byte of a new request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request body that sends nothing for this long ends its request.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the reaper looks.
const REAP_EVERY: Duration = Duration::from_millis(500);
/// The longest pause between warnings about the cap.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The default cap: 80% of the process's file-descriptor limit, leaving room for database connections,
/// the LISTEN connection and the files a job opens.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let soft: u64 = if ok { limit.rlim_cur } else { 1024 };
    usize::try_from(soft.saturating_mul(8) / 10)
        .unwrap_or(usize::MAX)
        .max(16)
}

/// The connections a server has open. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    open: Mutex<HashMap<SocketAddr, Arc<Connection>>>,
    clock: Clock,
}

/// Milliseconds since the server started, so connection state fits in atomics.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Clock(Instant::now())
    }
}

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

struct Connection {
    /// Requests being answered on it.
    in_flight: AtomicUsize,
    /// When it last finished an answer (or opened).
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived while none was in flight (0: none yet).
    request_started: AtomicU64,
    /// Whether it has answered a request (else it is held to the header timeout from its opening).
    served: AtomicBool,
    /// Set to close it: reads then end as if the client had hung up.
    closed: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

impl Connection {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let waker = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

impl Connections {
    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.open().len()
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Connection>>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks a request in flight on the connection from `remote` until the guard is dropped.
    pub fn request(&self, remote: &RemoteAddr) -> Option<InFlight> {
        let addr = remote.as_socket_addr()?;
        let connection = self.open().get(addr)?.clone();
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.request_started.store(0, Ordering::Release);
        Some(InFlight {
            connection,
            clock: self.inner.clock,
        })
    }

    fn track(&self, stream: TcpStream, remote: SocketAddr) -> Tracked {
        let now = self.inner.clock.now();
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            request_started: AtomicU64::new(0),
            served: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reader: Mutex::new(None),
        });
        self.open().insert(remote, connection.clone());
        Tracked {
            stream,
            connection,
            remote,
            connections: Arc::downgrade(&self.inner),
            rewrite: None,
        }
    }

    /// Closes the connection that has been idle longest (no request in flight); false if every open
    /// connection is busy.
    fn close_idlest(&self) -> bool {
        let open = self.open();
        let idlest = open
            .values()
            .filter(|c| c.is_idle() && !c.closed.load(Ordering::Acquire))
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire));
        match idlest {
            Some(connection) => {
                connection.close();
                true
            }
            None => false,
        }
    }

    /// Closes connections past their header or idle timeout.
    fn reap(&self) {
        let now = self.inner.clock.now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        for connection in self.open().values() {
            if !connection.is_idle() {
                continue;
            }
            let started = connection.request_started.load(Ordering::Acquire);
            let idle_since = connection.idle_since.load(Ordering::Acquire);
            let waited = |since: u64, limit: Duration| now.saturating_sub(since) > ms(limit);
            // Headers are late once the next request began arriving that long ago, or, on a connection
            // that never sent one, that long after it opened.
            let headers_late = if started != 0 {
                waited(started, HEADER_TIMEOUT)
            } else {
                !connection.served.load(Ordering::Acquire) && waited(idle_since, HEADER_TIMEOUT)
            };
            let idle_too_long = started == 0 && waited(idle_since, IDLE_TIMEOUT);
            if headers_late || idle_too_long {
                connection.close();
            }
        }
    }
}

/// A request in flight on a tracked connection.
pub struct InFlight {
    connection: Arc<Connection>,
    clock: Clock,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connection
            .idle_since
            .store(self.clock.now(), Ordering::Release);
        self.connection.request_started.store(0, Ordering::Release);
        self.connection.served.store(true, Ordering::Release);
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TCP acceptor with limits (see the module docs).
pub struct LimitedAcceptor {
    inner: TcpAcceptor,
    connections: Connections,
    max: usize,
    last_warning: Option<Instant>,
    _reaper: tokio::task::JoinHandle<()>,
}

impl LimitedAcceptor {
    pub fn new(inner: TcpAcceptor, connections: Connections, max: usize) -> LimitedAcceptor {
        let reaper = tokio::spawn({
            let weak = Arc::downgrade(&connections.inner);
            async move {
                loop {
                    tokio::time::sleep(REAP_EVERY).await;
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    Connections { inner }.reap();
                }
            }
        });
        LimitedAcceptor {
            inner,
            connections,
            max: max.max(1),
            last_warning: None,
            _reaper: reaper,
        }
    }

    fn warn(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            tracing::warn!(
                open = self.connections.count(),
                max_connections = self.max,
                "{message}"
            );
        }
    }
}

impl Drop for LimitedAcceptor {
    fn drop(&mut self) {
        self._reaper.abort();
    }
}

/// Out of file descriptors (the process's or the system's).
fn out_of_files(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Acceptor for LimitedAcceptor {
    type Io = Tracked;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Tracked, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            match self.inner.accept().await {
                Ok((stream, local, remote, scheme)) => {
                    let Some(addr) = remote.as_socket_addr().copied() else {
                        return Err(io::Error::other("a TCP connection without a peer address"));
                    };
                    // The stream inside poem's acceptor is a tokio TcpStream; it is boxed as `Io`.
                    if self.connections.count() >= self.max {
                        let closed = self.connections.close_idlest();
                        self.warn(if closed {
                            "connection cap reached: closed the connection idle longest to admit a new one (--max-connections)"
                        } else {
                            "connection cap reached and every connection is busy: admitting one more (--max-connections)"
                        });
                    }
                    let tracked = self.connections.track(stream, addr);
                    return Ok((tracked, local, remote, scheme));
                }
                Err(err) if out_of_files(&err) => {
                    // The pending connection stays in the backlog: free a descriptor, and do not spin.
                    self.connections.close_idlest();
                    self.warn(
                        "out of file descriptors: closing idle connections to accept new ones",
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// A connection handed to the server: a TCP stream that can be closed from outside and that records
/// when the next request starts arriving.
pub struct Tracked {
    stream: TcpStream,
    connection: Arc<Connection>,
    remote: SocketAddr,
    connections: Weak<Inner>,
    /// A problem+json answer replacing hyper's own: the bytes, how many are written, and how many of
    /// hyper's bytes to report written once it is out.
    rewrite: Option<(Vec<u8>, usize, usize)>,
}

impl Tracked {
    /// Whether `head` is hyper answering a request that never reached the server (see the module docs):
    /// an HTTP/1 error status while no request is in flight.
    fn replacement(&self, head: &[u8]) -> Option<Vec<u8>> {
        // Bytes of a request arrived, and no request was handed to the server since: whatever is written
        // now is hyper's own refusal. (A dispatched request clears the mark when it starts.)
        let undispatched = self.connection.is_idle()
            && self.connection.request_started.load(Ordering::Acquire) != 0;
        if !undispatched || !head.starts_with(b"HTTP/1.1 ") || head.len() < 12 {
            return None;
        }
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        if !(400..600).contains(&status) {
            return None;
        }
        let (slug, title, detail) = match status {
            431 => (
                "headers-too-large",
                "Request headers too large",
                "the request's headers are larger than the server accepts; send fewer or smaller headers",
            ),
            414 => (
                "uri-too-long",
                "URI too long",
                "the request's URI is longer than the server accepts; move large values into the body",
            ),
            408 => (
                "request-timeout",
                "Request timeout",
                "the request did not arrive in time",
            ),
            _ => (
                "malformed-request",
                "Malformed request",
                "the request is not valid HTTP/1.1 (request line or headers could not be parsed)",
            ),
        };
        let body = serde_json::json!({
            "type": format!("urn:jobdock:problem:{slug}"),
            "title": title,
            "status": status,
            "detail": detail,
        })
        .to_string();
        let reason = poem::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("Error");
        Some(
            format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n\
                 content-length: {}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// Writes the pending replacement; `Ready(n)` with the count of hyper's bytes it stands for.
    fn drive_rewrite(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        let (bytes, written, stands_for) = self.rewrite.as_mut()?;
        while *written < bytes.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(err)) => return Some(Poll::Ready(Err(err))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        let stands_for = *stands_for;
        self.rewrite = None;
        Some(Poll::Ready(Ok(stands_for)))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(inner) = self.connections.upgrade() {
            let mut open = inner
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if open
                .get(&self.remote)
                .is_some_and(|c| Arc::ptr_eq(c, &self.connection))
            {
                open.remove(&self.remote);
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.connection.closed.load(Ordering::Acquire) {
            // As if the client hung up: the server ends the connection.
            return Poll::Ready(Ok(()));
        }
        *self
            .connection
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cx.waker().clone());
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let connection = &self.connection;
            if connection.is_idle() && connection.request_started.load(Ordering::Acquire) == 0 {
                if let Some(inner) = self.connections.upgrade() {
                    connection
                        .request_started
                        .store(inner.clock.now().max(1), Ordering::Release);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none() {
            if let Some(bytes) = self.replacement(buf) {
                self.rewrite = Some((bytes, 0, buf.len()));
            }
        }
        if let Some(polled) = self.drive_rewrite(cx) {
            return polled;
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none() {
            if let Some(bytes) = bufs.first().and_then(|head| self.replacement(head)) {
                let total = bufs.iter().map(|b| b.len()).sum();
                self.rewrite = Some((bytes, 0, total));
            }
        }
        if let Some(polled) = self.drive_rewrite(cx) {
            return polled;
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
