//! Probes: one attempt against one target → [`Outcome`].
//!
//! Invariant: [`Prober::probe`] always returns within the target's `timeout` (connect + TLS +
//! response, bounded as a whole by `tokio::time::timeout`) and never panics on what a target
//! sends. It does not spawn tasks: the hyper connection future is driven inside the call, so the
//! node stays the only place that decides what runs concurrently.
//!
//! HTTP choices, and why (numbers in `../shared/reference/perf-anchors.md`):
//! * a fresh connection per check by default, as Consul and blackbox_exporter do: a check then
//!   sees what a new client sees (DNS, accept queue, TLS handshake);
//! * the request says `Connection: close` and the body is read to EOF, so the *target* closes
//!   first and the checker holds no TIME_WAIT; a checker doing 10,000 checks/s would otherwise
//!   fill the kernel's TIME_WAIT table itself;
//! * when the target has closed first, the checker's socket is closed with a reset rather than a
//!   FIN ([`OneShotTcp`]): the target's application has already let go, so it cannot see the
//!   reset, and its kernel frees the socket at once instead of holding it in TIME_WAIT for a
//!   minute. A target that has not closed gets the ordinary FIN;
//! * redirects are not followed (a 301 is a status like any other; add it to `expect_status`);
//! * at most [`BODY_LIMIT`] bytes of body are read, for `body_contains`; a longer (or endless)
//!   body is not read on, and its connection is not reused;
//! * `keep_alive = true` keeps idle connections per endpoint (scheme, host, port, TLS
//!   settings; see [`pool`]), at most [`MAX_POOLED`] in total (the process may hold 20,000
//!   sockets), reused and retried once, fresh, if the server closed it;
//! * a name that resolves to several addresses is tried address by address, each getting an
//!   equal share of the time left, so one address that swallows SYNs cannot use up the timeout;
//! * a timeout says in which phase it struck, and keeps the status code if one had arrived.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use heck_check::{ErrorKind, Outcome, ProbeKind, TargetSpec};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub mod pool;
mod tls;

pub use pool::PoolKey;

/// Most body bytes read when looking for `body_contains`.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Most idle keep-alive connections held at once, over all targets.
pub const MAX_POOLED: usize = 8_192;

/// Most CA bundles (`tls_ca_file`) whose TLS configs are kept built; past this, a bundle is
/// read again for each connection (correct, only slower). Bundles are few in practice; the
/// bound keeps a stream of API-added paths from growing memory.
pub const MAX_CA_BUNDLES: usize = 64;

/// Why a [`Prober`] could not be built, or a target cannot be probed as configured.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A `tls_ca_file` cannot be used.
    #[error("tls_ca_file {}: {message}", path.display())]
    CaFile {
        /// The bundle's path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Plain TCP for a one-shot (`Connection: close`) HTTP check. hyper shuts the write side down
/// when the exchange is over; this is where the checker's half of the close is decided:
/// * the target already closed (a non-blocking peek reads EOF: its FIN is queued): set
///   `SO_LINGER` to zero and skip the shutdown, so dropping the socket sends a reset. The
///   target's socket is in FIN_WAIT_2 with no application behind it; the reset frees it,
///   where a FIN would park it in TIME_WAIT (at 10,000 checks/s that fills the kernel's table);
/// * otherwise (data still unread, or the target keeps the connection open): the ordinary
///   shutdown, a FIN.
struct OneShotTcp(TcpStream);

impl AsyncRead for OneShotTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneShotTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking (tokio's): nothing queued is WouldBlock, not a wait.
        let peer_closed = matches!(socket2::SockRef::from(&self.0).peek(&mut byte), Ok(0));
        if peer_closed && self.0.set_zero_linger().is_ok() {
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A stream a probe can speak HTTP over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Conn = http1::Connection<TokioIo<Box<dyn Io>>, Empty<Bytes>>;

/// An HTTP/1 connection: the request handle and the connection future that must be polled
/// while a request is in flight. `conn` is `None` once that future has finished (the server
/// closed, or the connection broke): such a connection carries no more requests, and is
/// dropped at once so that a request still waiting on it fails instead of hanging (the
/// request channel closes only when the connection future is dropped).
struct Pooled {
    sender: http1::SendRequest<Empty<Bytes>>,
    conn: Option<Pin<Box<Conn>>>,
}

/// Runs probes. Cheap to clone (shared TLS configs and keep-alive pool).
///
/// The node's part: call [`Prober::forget`] with the old spec whenever a target is removed or
/// replaced, so no connection of the old target is reused; call [`Prober::prepare`] before
/// accepting a target from the API, so a bad `tls_ca_file` is refused then, not at its first
/// check.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

struct Inner {
    tls: tokio_rustls::TlsConnector,
    tls_insecure: tokio_rustls::TlsConnector,
    /// Configs built from `tls_ca_file` bundles, by path, at most [`MAX_CA_BUNDLES`]. A std
    /// mutex: held only to look up or insert, never across an await.
    ca: Mutex<std::collections::HashMap<PathBuf, tokio_rustls::TlsConnector>>,
    pool: pool::Pool<Pooled>,
}

/// What went wrong inside an attempt (before the timeout wrapper adds latency).
struct Failure {
    kind: ErrorKind,
    status: Option<u16>,
    detail: String,
}

fn fail(kind: ErrorKind, detail: impl Into<String>) -> Failure {
    Failure {
        kind,
        status: None,
        detail: detail.into(),
    }
}

/// Where an attempt is, for the message of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolve = 0,
    Connect = 1,
    Tls = 2,
    Headers = 3,
    Body = 4,
    Grpc = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Resolve,
            1 => Phase::Connect,
            2 => Phase::Tls,
            3 => Phase::Headers,
            4 => Phase::Body,
            _ => Phase::Grpc,
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the host name",
            Phase::Connect => "connecting",
            Phase::Tls => "in the TLS handshake",
            Phase::Headers => "waiting for the response headers",
            Phase::Body => "reading the body",
            Phase::Grpc => "waiting for the gRPC health answer",
        }
    }
}

/// How far an attempt got; read after the timeout has dropped the attempt. Atomics rather
/// than `Cell`s because the attempt future must stay `Send`; nothing races (one task).
#[derive(Debug, Default)]
struct Progress {
    phase: AtomicU8,
    /// 0: no status yet.
    status: AtomicU16,
}

impl Progress {
    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn got_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
        self.enter(Phase::Body);
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn status(&self) -> Option<u16> {
        Some(self.status.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }
}

impl Prober {
    /// A prober trusting the webpki root certificates (and, for `tls_skip_verify` targets,
    /// anything), pooling at most [`MAX_POOLED`] idle connections.
    pub fn new() -> Result<Prober, ProbeError> {
        Prober::with_pool_cap(MAX_POOLED)
    }

    /// As [`Prober::new`], with at most `max_pooled` idle keep-alive connections.
    pub fn with_pool_cap(max_pooled: usize) -> Result<Prober, ProbeError> {
        Ok(Prober {
            inner: Arc::new(Inner {
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls::verifying()?)),
                tls_insecure: tokio_rustls::TlsConnector::from(Arc::new(tls::insecure()?)),
                ca: Mutex::new(std::collections::HashMap::new()),
                pool: pool::Pool::new(max_pooled),
            }),
        })
    }

    /// Number of idle keep-alive connections held.
    pub fn pooled(&self) -> usize {
        self.inner.pool.idle()
    }

    /// Keep-alive connections closed because the pool was full.
    pub fn pool_full_drops(&self) -> u64 {
        self.inner.pool.dropped_full()
    }

    /// A target was removed (or replaced by another spec): close the idle connections of its
    /// endpoint, and refuse the connections that checks still running hand back. Other targets
    /// on the same endpoint lose their idle connections too (they reconnect once).
    pub fn forget(&self, spec: &TargetSpec) {
        self.inner.pool.forget(&PoolKey::of(spec));
    }

    /// Read and check what `spec` needs before its first check: its `tls_ca_file` bundle (read
    /// again on every call, so re-adding a target picks up a changed file).
    pub fn prepare(&self, spec: &TargetSpec) -> Result<(), ProbeError> {
        if let Some(path) = ca_file_of(spec) {
            let connector = load_ca(path)?;
            let mut cache = self.inner.ca.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() < MAX_CA_BUNDLES || cache.contains_key(path) {
                cache.insert(path.to_path_buf(), connector);
            }
        }
        Ok(())
    }

    fn connector(&self, spec: &TargetSpec) -> Result<tokio_rustls::TlsConnector, Failure> {
        if spec.tls_skip_verify {
            return Ok(self.inner.tls_insecure.clone());
        }
        let Some(path) = ca_file_of(spec) else {
            return Ok(self.inner.tls.clone());
        };
        if let Some(c) = self
            .inner
            .ca
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(c.clone());
        }
        self.prepare(spec)
            .map_err(|e| fail(ErrorKind::Tls, e.to_string()))?;
        let cached = self
            .inner
            .ca
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        match cached {
            Some(c) => Ok(c),
            // The cache is full of other bundles: use this one uncached.
            None => load_ca(path).map_err(|e| fail(ErrorKind::Tls, e.to_string())),
        }
    }

    /// One attempt against `spec`, bounded by `spec.timeout`.
    pub async fn probe(&self, spec: &TargetSpec) -> Outcome {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + spec.timeout;
        let progress = Progress::default();
        let attempt = async {
            match spec.kind {
                ProbeKind::Http | ProbeKind::Https => self.http(spec, &progress, deadline).await,
                ProbeKind::Tcp => tcp(spec, &progress, deadline).await.map(|_| None),
                ProbeKind::Grpc => grpc(spec, &progress).await.map(|_| None),
            }
        };
        let result = tokio::time::timeout_at(deadline, attempt).await;
        let latency = start.elapsed();
        match result {
            Ok(Ok(status)) => Outcome::success(latency, status),
            Ok(Err(f)) => Outcome::failure(latency, f.status, f.kind, f.detail),
            Err(_) => Outcome::failure(
                latency,
                progress.status(),
                ErrorKind::Timeout,
                format!(
                    "timed out after {} {}",
                    show(spec.timeout),
                    progress.phase().doing()
                ),
            ),
        }
    }

    async fn http(
        &self,
        spec: &TargetSpec,
        progress: &Progress,
        deadline: tokio::time::Instant,
    ) -> Result<Option<u16>, Failure> {
        if !spec.keep_alive {
            let mut conn = self.connect(spec, progress, deadline).await?;
            let answer = exchange(&mut conn, spec, progress).await?;
            return judge(spec, &answer);
        }
        let mut lease = self.inner.pool.lease(PoolKey::of(spec));
        if let Some(mut conn) = lease.take() {
            match exchange(&mut conn, spec, progress).await {
                Ok(answer) => {
                    if answer.reusable {
                        lease.put_back(conn);
                    }
                    return judge(spec, &answer);
                }
                // The server may have closed the idle connection: retry once, fresh.
                Err(f) if f.status.is_none() => {}
                Err(f) => return Err(f),
            }
        }
        let mut conn = self.connect(spec, progress, deadline).await?;
        let answer = exchange(&mut conn, spec, progress).await?;
        if answer.reusable {
            lease.put_back(conn);
        }
        judge(spec, &answer)
    }

    async fn connect(
        &self,
        spec: &TargetSpec,
        progress: &Progress,
        deadline: tokio::time::Instant,
    ) -> Result<Pooled, Failure> {
        let host = spec.url.host_str().unwrap_or_default();
        let port = spec.url.port_or_known_default().unwrap_or(80);
        let tcp = connect_tcp(host, port, progress, deadline).await?;
        let io: Box<dyn Io> = if spec.kind == ProbeKind::Https {
            let connector = self.connector(spec)?;
            let sni = spec.tls_server_name().unwrap_or(host);
            let name = rustls::pki_types::ServerName::try_from(
                sni.trim_matches(['[', ']']).to_string(),
            )
            .map_err(|e| fail(ErrorKind::Tls, format!("bad TLS server name {sni:?}: {e}")))?;
            progress.enter(Phase::Tls);
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| fail(ErrorKind::Tls, tls::describe(&e)))?;
            Box::new(tls)
        } else if spec.keep_alive {
            Box::new(tcp)
        } else {
            Box::new(OneShotTcp(tcp))
        };
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| fail(ErrorKind::Protocol, format!("HTTP handshake: {e}")))?;
        Ok(Pooled {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }
}

/// The CA bundle a spec verifies with, if any.
fn ca_file_of(spec: &TargetSpec) -> Option<&Path> {
    (spec.kind == ProbeKind::Https && !spec.tls_skip_verify)
        .then(|| spec.tls_ca_file())
        .flatten()
}

fn load_ca(path: &Path) -> Result<tokio_rustls::TlsConnector, ProbeError> {
    tls::ca_bundle(path)
        .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
        .map_err(|message| ProbeError::CaFile {
            path: path.to_path_buf(),
            message,
        })
}

/// What one HTTP exchange brought back.
struct Answer {
    status: u16,
    /// At most [`BODY_LIMIT`] bytes.
    body: Vec<u8>,
    /// The connection can carry another request (keep-alive asked and granted, body read
    /// to its end).
    reusable: bool,
}

/// Send the GET and read the answer (body bounded). Drives the connection future alongside
/// the request (no spawned task). An `Err` means the exchange itself failed.
async fn exchange(
    c: &mut Pooled,
    spec: &TargetSpec,
    progress: &Progress,
) -> Result<Answer, Failure> {
    let path = match spec.url.query() {
        Some(q) => format!("{}?{q}", spec.url.path()),
        None => spec.url.path().to_string(),
    };
    let host = match spec.url.port() {
        Some(p) => format!("{}:{p}", spec.url.host_str().unwrap_or_default()),
        None => spec.url.host_str().unwrap_or_default().to_string(),
    };
    let mut request = http::Request::get(path);
    if let Some(credentials) = basic_auth(spec.url.as_url()) {
        request = request.header(http::header::AUTHORIZATION, credentials);
    }
    let request = request
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("heck/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            http::header::CONNECTION,
            if spec.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(ErrorKind::Protocol, format!("cannot build request: {e}")))?;

    progress.enter(Phase::Headers);
    let Pooled { sender, conn } = c;
    let Some(open) = conn.as_mut() else {
        return Err(fail(ErrorKind::Protocol, "connection closed while idle"));
    };
    let response = async {
        sender
            .ready()
            .await
            .map_err(|e| fail(ErrorKind::Protocol, format!("connection not ready: {e}")))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| fail(ErrorKind::Protocol, format!("no response: {e}")))?;
        let status = resp.status().as_u16();
        progress.got_status(status);
        let keep = !resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // Read the body to its end, so a `Connection: close` target closes first; but never
        // past BODY_LIMIT: a longer (or endless) body is cut there, and its connection, with
        // the rest unread, is not reused.
        let mut body = resp.into_body();
        let mut seen = Vec::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let mut f = fail(ErrorKind::Protocol, format!("reading body: {e}"));
                f.status = Some(status);
                f
            })?;
            if let Some(data) = frame.data_ref() {
                let room = BODY_LIMIT - seen.len();
                if data.len() > room {
                    seen.extend_from_slice(&data[..room]);
                    truncated = true;
                    break;
                }
                seen.extend_from_slice(data);
            }
        }
        Ok::<_, Failure>(Answer {
            status,
            body: seen,
            reusable: spec.keep_alive && keep && !truncated,
        })
    };
    tokio::pin!(response);
    tokio::select! {
        biased;
        r = &mut response => r,
        // The connection ended first (closed after the response, or broke): drop it, and the
        // request future finishes with what arrived, or with an error.
        _ = open.as_mut() => {
            *conn = None;
            response.await.map(|answer| Answer { reusable: false, ..answer })
        }
    }
}

/// `Authorization: Basic …` for credentials in the URL (`http://user:pw@host/`), as curl sends
/// them. They are percent-decoded first: `p%40ss` in a URL is the password `p@ss`.
fn basic_auth(url: &url::Url) -> Option<String> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut user_pass = decode(url.username());
    user_pass.push(b':');
    user_pass.extend(decode(url.password().unwrap_or_default()));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    ))
}

/// Judge an answer against the spec's expectations.
fn judge(spec: &TargetSpec, answer: &Answer) -> Result<Option<u16>, Failure> {
    let status = answer.status;
    if !spec.expect_status.accepts(status) {
        return Err(Failure {
            kind: ErrorKind::UnexpectedStatus,
            status: Some(status),
            detail: format!("status {status} not in {}", spec.expect_status),
        });
    }
    if let Some(needle) = &spec.body_contains
        && !contains(&answer.body, needle.as_bytes())
    {
        return Err(Failure {
            kind: ErrorKind::BodyMismatch,
            status: Some(status),
            detail: format!("body (first {} bytes) lacks {needle:?}", answer.body.len()),
        });
    }
    Ok(Some(status))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn connect_tcp(
    host: &str,
    port: u16,
    progress: &Progress,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, Failure> {
    let host = host.trim_matches(['[', ']']);
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            progress.enter(Phase::Resolve);
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| fail(ErrorKind::Dns, format!("cannot resolve {host}: {e}")))?
                .collect()
        }
    };
    if addrs.is_empty() {
        return Err(fail(ErrorKind::Dns, format!("{host} has no address")));
    }
    progress.enter(Phase::Connect);
    let stream = connect_any(&addrs, deadline).await?;
    // Checks are one small request each: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connect to the first of `addrs` that accepts, trying them in order (the resolver's order,
/// which already prefers what the host can reach). Each address but the last gets an equal
/// share of the time left, so one that swallows SYNs cannot use up the timeout; the last gets
/// whatever is left, bounded by the probe's own timeout.
async fn connect_any(
    addrs: &[SocketAddr],
    deadline: tokio::time::Instant,
) -> Result<TcpStream, Failure> {
    let mut failures: Vec<(SocketAddr, std::io::Error)> = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let left = addrs.len() - i;
        let attempt = TcpStream::connect(addr);
        let result = if left == 1 {
            attempt.await
        } else {
            let share = deadline.saturating_duration_since(tokio::time::Instant::now())
                / u32::try_from(left).unwrap_or(u32::MAX);
            tokio::time::timeout(share, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {}, trying the next address", show(share)),
                    ))
                })
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) => failures.push((addr, e)),
        }
    }
    let kind = if failures
        .iter()
        .all(|(_, e)| e.kind() == std::io::ErrorKind::ConnectionRefused)
    {
        ErrorKind::ConnectionRefused
    } else {
        ErrorKind::Connect
    };
    let detail = failures
        .iter()
        .map(|(addr, e)| format!("connect {addr}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(fail(kind, detail))
}

async fn tcp(
    spec: &TargetSpec,
    progress: &Progress,
    deadline: tokio::time::Instant,
) -> Result<(), Failure> {
    let host = spec.url.host_str().unwrap_or_default();
    let port = spec.url.port().unwrap_or(0);
    connect_tcp(host, port, progress, deadline).await.map(drop)
}

async fn grpc(spec: &TargetSpec, progress: &Progress) -> Result<(), Failure> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let host = spec.url.host_str().unwrap_or_default();
    let port = spec.url.port().unwrap_or(0);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| fail(ErrorKind::Protocol, format!("bad gRPC endpoint: {e}")))?;
    progress.enter(Phase::Connect);
    let channel = endpoint.connect().await.map_err(|e| {
        let kind = if io_kind_in(&e) == Some(std::io::ErrorKind::ConnectionRefused) {
            ErrorKind::ConnectionRefused
        } else {
            ErrorKind::Connect
        };
        fail(kind, format!("gRPC connect {host}:{port}: {}", chain(&e)))
    })?;
    progress.enter(Phase::Grpc);
    let service = spec.grpc_service().to_string();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => fail(
                ErrorKind::NotServing,
                format!("service {service:?} unknown to the health server"),
            ),
            // The message alone can be just "transport error": the cause (a server that
            // speaks HTTP/1, a reset) is in the source chain.
            code => fail(
                ErrorKind::Protocol,
                format!(
                    "health check failed: {code:?}: {}",
                    say_once(
                        status.message().to_string(),
                        std::error::Error::source(&status)
                    )
                ),
            ),
        })?;
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| format!("status {status}"));
        Err(fail(ErrorKind::NotServing, format!("health says {name}")))
    }
}

/// The first `io::ErrorKind` in an error's source chain.
fn io_kind_in(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    say_once(e.to_string(), e.source())
}

/// `first`, then each cause in `next`'s chain, each said once: wrappers often repeat their
/// cause's text ("tcp connect error: tcp connect error") or already end with it.
fn say_once(first: String, mut next: Option<&dyn std::error::Error>) -> String {
    let mut parts = vec![first];
    while let Some(e) = next {
        let text = e.to_string();
        let said = parts
            .iter()
            .any(|p| p == &text || p.ends_with(&format!(": {text}")));
        if !said && !text.is_empty() {
            parts.push(text);
        }
        next = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let os = E("Connection refused (os error 111)", None);
        let inner = E("tcp connect error", Some(Box::new(os)));
        let outer = E("tcp connect error", Some(Box::new(inner)));
        let top = E("transport error", Some(Box::new(outer)));
        assert_eq!(
            chain(&top),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
        let ends = E(
            "cannot read: Is a directory (os error 21)",
            Some(Box::new(E("Is a directory (os error 21)", None))),
        );
        assert_eq!(chain(&ends), "cannot read: Is a directory (os error 21)");
    }

    /// A loopback listener on a random port below the ephemeral range (CONTRIBUTING).
    async fn listener() -> tokio::net::TcpListener {
        let seed = u64::from(std::process::id()).wrapping_mul(7919)
            ^ u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos(),
            );
        for attempt in 0..200u64 {
            let port = 10_000 + ((seed + attempt * 104_729) % 22_000) as u16;
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return l;
            }
        }
        panic!("no free port in 10000..32000");
    }

    async fn free_addr() -> SocketAddr {
        // Bound then dropped: nothing listens there now.
        listener().await.local_addr().unwrap()
    }

    #[tokio::test]
    async fn every_address_of_a_name_is_tried_in_turn() {
        let closed = free_addr().await;
        let open = listener().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let stream = connect_any(&[closed, open.local_addr().unwrap()], deadline)
            .await
            .map_err(|f| f.detail)
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open.local_addr().unwrap());
    }

    #[tokio::test]
    async fn when_every_address_refuses_each_is_named() {
        let (a, b) = (free_addr().await, free_addr().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let f = connect_any(&[a, b], deadline).await.err().unwrap();
        assert_eq!(f.kind, ErrorKind::ConnectionRefused);
        assert!(
            f.detail.contains(&a.to_string()) && f.detail.contains(&b.to_string()),
            "{}",
            f.detail
        );
    }
}
