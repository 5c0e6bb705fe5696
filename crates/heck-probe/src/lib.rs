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
//! * at most [`BODY_LIMIT`] bytes of body are read for `body_contains`;
//! * `keep_alive = true` keeps one idle connection per target, at most [`MAX_POOLED`] in total
//!   (the process may hold 20,000 sockets), reused and retried once if the server closed it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use heck_check::{ErrorKind, Outcome, ProbeKind, TargetName, TargetSpec};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

mod tls;

/// Most body bytes read when looking for `body_contains`.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Most idle keep-alive connections held at once, over all targets.
pub const MAX_POOLED: usize = 8_192;

/// Why a [`Prober`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
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

/// An idle keep-alive connection: the request handle and the connection future that must be
/// polled while a request is in flight.
struct Pooled {
    sender: http1::SendRequest<Empty<Bytes>>,
    conn: Pin<Box<Conn>>,
}

/// Runs probes. Cheap to clone (shared TLS configs and keep-alive pool).
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
    /// One idle connection per keep-alive target. A std mutex: held only to take or put back an
    /// entry, never across an await.
    pool: Mutex<HashMap<TargetName, Pooled>>,
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

impl Prober {
    /// A prober trusting the webpki root certificates (and, for `tls_skip_verify` targets,
    /// anything).
    pub fn new() -> Result<Prober, ProbeError> {
        Ok(Prober {
            inner: Arc::new(Inner {
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls::verifying()?)),
                tls_insecure: tokio_rustls::TlsConnector::from(Arc::new(tls::insecure()?)),
                pool: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Number of idle keep-alive connections held.
    pub fn pooled(&self) -> usize {
        self.inner.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Forget a target's pooled connection (when the target is removed).
    pub fn forget(&self, target: &TargetName) {
        if let Ok(mut p) = self.inner.pool.lock() {
            p.remove(target);
        }
    }

    /// One attempt against `spec`, bounded by `spec.timeout`.
    pub async fn probe(&self, spec: &TargetSpec) -> Outcome {
        let start = Instant::now();
        let attempt = async {
            match spec.kind {
                ProbeKind::Http | ProbeKind::Https => self.http(spec).await,
                ProbeKind::Tcp => tcp(spec).await.map(|_| None),
                ProbeKind::Grpc => grpc(spec).await.map(|_| None),
            }
        };
        let result = tokio::time::timeout(spec.timeout, attempt).await;
        let latency = start.elapsed();
        match result {
            Ok(Ok(status)) => Outcome::success(latency, status),
            Ok(Err(f)) => Outcome::failure(latency, f.status, f.kind, f.detail),
            Err(_) => Outcome::failure(
                latency,
                None,
                ErrorKind::Timeout,
                format!("no answer within {}", show(spec.timeout)),
            ),
        }
    }

    async fn http(&self, spec: &TargetSpec) -> Result<Option<u16>, Failure> {
        if spec.keep_alive {
            let pooled = self
                .inner
                .pool
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&spec.name));
            if let Some(mut pooled) = pooled {
                match exchange(&mut pooled, spec).await {
                    Ok((status, reusable)) => {
                        if reusable {
                            self.put_back(spec, pooled);
                        }
                        return Ok(status);
                    }
                    // The server may have closed the idle connection: retry once, fresh.
                    Err(f) if f.status.is_none() => {}
                    Err(f) => return Err(f),
                }
            }
        }
        let mut conn = self.connect(spec).await?;
        let (status, reusable) = exchange(&mut conn, spec).await?;
        if spec.keep_alive && reusable {
            self.put_back(spec, conn);
        }
        Ok(status)
    }

    fn put_back(&self, spec: &TargetSpec, conn: Pooled) {
        if let Ok(mut pool) = self.inner.pool.lock()
            && pool.len() < MAX_POOLED
        {
            pool.insert(spec.name.clone(), conn);
        }
    }

    async fn connect(&self, spec: &TargetSpec) -> Result<Pooled, Failure> {
        let host = spec.url.host_str().unwrap_or_default();
        let port = spec.url.port_or_known_default().unwrap_or(80);
        let tcp = connect_tcp(host, port).await?;
        let io: Box<dyn Io> = if spec.kind == ProbeKind::Https {
            let connector = if spec.tls_skip_verify {
                &self.inner.tls_insecure
            } else {
                &self.inner.tls
            };
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| {
                        fail(ErrorKind::Tls, format!("bad TLS server name {host:?}: {e}"))
                    })?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| fail(ErrorKind::Tls, format!("TLS handshake: {e}")))?;
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
            conn: Box::pin(conn),
        })
    }
}

/// Send the GET and judge the response. Returns the status and whether the connection can be
/// reused. Drives the connection future alongside the request (no spawned task).
async fn exchange(c: &mut Pooled, spec: &TargetSpec) -> Result<(Option<u16>, bool), Failure> {
    let path = match spec.url.query() {
        Some(q) => format!("{}?{q}", spec.url.path()),
        None => spec.url.path().to_string(),
    };
    let host = match spec.url.port() {
        Some(p) => format!("{}:{p}", spec.url.host_str().unwrap_or_default()),
        None => spec.url.host_str().unwrap_or_default().to_string(),
    };
    let request = http::Request::get(path)
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

    let Pooled { sender, conn } = c;
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
        let reusable = !resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // Read the body to EOF (bounded), so a `Connection: close` target closes first.
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
                let room = BODY_LIMIT.saturating_sub(seen.len());
                if data.len() > room {
                    truncated = true;
                }
                seen.extend_from_slice(&data[..data.len().min(room)]);
                if truncated && !spec.keep_alive {
                    break;
                }
            }
        }
        Ok::<_, Failure>((status, seen, reusable && !truncated))
    };
    tokio::pin!(response);
    let (status, body, reusable) = tokio::select! {
        biased;
        r = &mut response => r?,
        // The connection ended first (closed after the response, or broke): the request future
        // now finishes with what arrived, or with an error.
        _ = conn.as_mut() => response.await?,
    };

    if !spec.expect_status.accepts(status) {
        return Err(Failure {
            kind: ErrorKind::UnexpectedStatus,
            status: Some(status),
            detail: format!("status {status} not in {}", spec.expect_status),
        });
    }
    if let Some(needle) = &spec.body_contains
        && !contains(&body, needle.as_bytes())
    {
        return Err(Failure {
            kind: ErrorKind::BodyMismatch,
            status: Some(status),
            detail: format!("body (first {} bytes) lacks {needle:?}", body.len()),
        });
    }
    Ok((Some(status), reusable && spec.keep_alive))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, Failure> {
    let host = host.trim_matches(['[', ']']);
    let addr: SocketAddr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| fail(ErrorKind::Dns, format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| fail(ErrorKind::Dns, format!("{host} has no address")))?,
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ErrorKind::ConnectionRefused
        } else {
            ErrorKind::Connect
        };
        fail(kind, format!("connect {addr}: {e}"))
    })?;
    // Checks are one small request each: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn tcp(spec: &TargetSpec) -> Result<(), Failure> {
    let host = spec.url.host_str().unwrap_or_default();
    let port = spec.url.port().unwrap_or(0);
    connect_tcp(host, port).await.map(drop)
}

async fn grpc(spec: &TargetSpec) -> Result<(), Failure> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let host = spec.url.host_str().unwrap_or_default();
    let port = spec.url.port().unwrap_or(0);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| fail(ErrorKind::Protocol, format!("bad gRPC endpoint: {e}")))?;
    let channel = endpoint.connect().await.map_err(|e| {
        let text = format!("{e}: {}", source_chain(&e));
        let kind = if text.contains("refused") {
            ErrorKind::ConnectionRefused
        } else {
            ErrorKind::Connect
        };
        fail(kind, format!("gRPC connect {host}:{port}: {text}"))
    })?;
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
            code => fail(
                ErrorKind::Protocol,
                format!("health check failed: {code:?}: {}", status.message()),
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

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
