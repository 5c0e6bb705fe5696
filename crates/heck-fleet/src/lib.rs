//! A simulated fleet: N HTTP targets, each on its own loopback address (127.a.b.c), for tests,
//! benchmarks and the demo.
//!
//! Target `i` answers `GET /health` at `http://127.a.b.c:PORT/health` with `200 ok` or
//! `503 unhealthy`, after an optional latency. Its health and latency change at run time through
//! the Rust API ([`Fleet::set_healthy`], [`Fleet::set_latency`]) or the control endpoint.
//!
//! How 100,000 hosts fit under a 20,000-socket limit: one listener on `0.0.0.0:PORT` restricted
//! to the loopback device with `SO_BINDTODEVICE lo`, so it accepts connections to *every*
//! 127.x.y.z on that port and nothing from outside the machine; each connection's local address
//! says which target was asked. Binding to a device needs CAP_NET_RAW (root here); without it the
//! fleet falls back to one listener per target address, which limits it to a few thousand targets.
//!
//! Control endpoint (on 127.0.0.1, its own port):
//! `POST /fleet/{i}/healthy`, `POST /fleet/{i}/unhealthy`, `POST /fleet/{i}/latency?ms=N`,
//! `GET /fleet` (a JSON summary).
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What fleet to start.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of targets (1..=1,000,000).
    pub targets: usize,
    /// Fraction of targets unhealthy at start (0.0..=1.0), spread evenly over the indexes.
    pub unhealthy_fraction: f64,
    /// Port every target listens on (below 32768). `None`: a random free one in 10000..32000.
    pub port: Option<u16>,
    /// Latency added to every answer at start.
    pub latency: Duration,
    /// Control endpoint address. `None`: 127.0.0.1 at a random free port.
    pub control_addr: Option<SocketAddr>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            targets: 10,
            unhealthy_fraction: 0.0,
            port: None,
            latency: Duration::ZERO,
            control_addr: None,
        }
    }
}

/// Why a fleet did not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Target {
    healthy: AtomicBool,
    latency_ms: AtomicU32,
    hits: AtomicU64,
}

#[derive(Debug)]
struct State {
    targets: Vec<Target>,
}

/// A running fleet. Dropping it stops it.
#[derive(Debug)]
pub struct Fleet {
    state: Arc<State>,
    port: u16,
    control: SocketAddr,
    stop: CancellationToken,
    /// True when every target shares one device-bound listener.
    shared_listener: bool,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The address of target `i`: 127.a.b.c with `a >= 1`, so 127.0.0.x (where APIs live) is never used.
pub fn target_ip(i: usize) -> Ipv4Addr {
    let n = i as u32 + 1;
    Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// The index of the target at `ip`, if it is one of ours.
fn target_index(ip: IpAddr, count: usize) -> Option<usize> {
    let IpAddr::V4(v4) = ip else { return None };
    let [a, b, c, d] = v4.octets();
    if a != 127 || b == 0 {
        return None;
    }
    let n = (u32::from(b - 1) << 16) | (u32::from(c) << 8) | u32::from(d);
    let i = (n as usize).checked_sub(1)?;
    (i < count).then_some(i)
}

/// The name of target `i` (`t-00001`, zero-padded to at least 5 digits).
pub fn target_name(i: usize, count: usize) -> String {
    let width = count.to_string().len().max(5);
    format!("t-{:0width$}", i + 1)
}

fn is_unhealthy_at_start(i: usize, fraction: f64) -> bool {
    // Exactly floor(N × fraction) targets, evenly spread: i is unhealthy when the running count
    // floor((i + 1) × f) steps up at i.
    ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

/// Pick a free TCP port in 10000..32000 on `ip`, by trying random ones.
fn random_port(ip: IpAddr, attempt: u32) -> u16 {
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(attempt.wrapping_mul(40_503))
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        )
        .wrapping_add(match ip {
            IpAddr::V4(v) => u32::from(v),
            IpAddr::V6(_) => 0,
        });
    10_000 + (seed % 22_000) as u16
}

fn device_listener(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Only connections that arrive over the loopback device: nothing from outside the machine.
    socket.bind_device(Some(b"lo"))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

impl Fleet {
    /// Start the fleet (spawns its accept loops on the current tokio runtime).
    pub async fn start(config: FleetConfig) -> Result<Fleet, FleetError> {
        if config.targets == 0 || config.targets > 1_000_000 {
            return Err(FleetError::Config(format!(
                "targets = {} is not in 1..=1000000",
                config.targets
            )));
        }
        if !(0.0..=1.0).contains(&config.unhealthy_fraction) {
            return Err(FleetError::Config(format!(
                "unhealthy fraction {} is not in 0..=1",
                config.unhealthy_fraction
            )));
        }
        let latency_ms = u32::try_from(config.latency.as_millis()).unwrap_or(u32::MAX);
        let state = Arc::new(State {
            targets: (0..config.targets)
                .map(|i| Target {
                    healthy: AtomicBool::new(!is_unhealthy_at_start(i, config.unhealthy_fraction)),
                    latency_ms: AtomicU32::new(latency_ms),
                    hits: AtomicU64::new(0),
                })
                .collect(),
        });
        let stop = CancellationToken::new();

        // Listeners: one device-bound wildcard listener, or one per target address.
        let mut listeners = Vec::new();
        let mut shared_listener = true;
        let mut port = config.port;
        let mut last_err = None;
        for attempt in 0..50 {
            let p = port.unwrap_or_else(|| random_port(IpAddr::V4(target_ip(0)), attempt));
            match device_listener(p) {
                Ok(l) => {
                    listeners.push(l);
                    port = Some(p);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    shared_listener = false;
                    last_err = Some(e);
                    break;
                }
                Err(e) => {
                    last_err = Some(e);
                    if config.port.is_some() {
                        break;
                    }
                }
            }
        }
        if !shared_listener {
            tracing::warn!("SO_BINDTODEVICE not permitted: one listener per target");
            let mut found = None;
            for attempt in 0..50 {
                let p = config
                    .port
                    .unwrap_or_else(|| random_port(IpAddr::V4(target_ip(0)), attempt + 100));
                let mut ls = Vec::with_capacity(config.targets);
                let mut ok = true;
                for i in 0..config.targets {
                    match std::net::TcpListener::bind((target_ip(i), p)) {
                        Ok(l) => ls.push(l),
                        Err(e) => {
                            last_err = Some(e);
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    found = Some((p, ls));
                    break;
                }
                if config.port.is_some() {
                    break;
                }
            }
            let Some((p, ls)) = found else {
                let addr = SocketAddr::from((target_ip(0), config.port.unwrap_or(0)));
                return Err(FleetError::Bind {
                    addr,
                    source: last_err.unwrap_or_else(|| std::io::Error::other("no port")),
                });
            };
            port = Some(p);
            for l in ls {
                l.set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(l))
                    .map(|l| listeners.push(l))
                    .map_err(|source| FleetError::Bind {
                        addr: SocketAddr::from((target_ip(0), p)),
                        source,
                    })?;
            }
        }
        let Some(port) = port.filter(|_| !listeners.is_empty()) else {
            return Err(FleetError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], config.port.unwrap_or(0))),
                source: last_err.unwrap_or_else(|| std::io::Error::other("no free port")),
            });
        };
        for l in listeners {
            tokio::spawn(serve_targets(l, state.clone(), stop.clone()));
        }

        let control_listener = match config.control_addr {
            Some(addr) => TcpListener::bind(addr)
                .await
                .map_err(|source| FleetError::Bind { addr, source })?,
            None => {
                let mut bound = None;
                for attempt in 0..50 {
                    let p = random_port(IpAddr::V4(Ipv4Addr::LOCALHOST), attempt + 200);
                    if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).await {
                        bound = Some(l);
                        break;
                    }
                }
                bound.ok_or_else(|| FleetError::Bind {
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    source: std::io::Error::other("no free control port"),
                })?
            }
        };
        let control = control_listener
            .local_addr()
            .map_err(|source| FleetError::Bind {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })?;
        tokio::spawn(serve_control(control_listener, state.clone(), stop.clone()));

        Ok(Fleet {
            state,
            port,
            control,
            stop,
            shared_listener,
        })
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.state.targets.len()
    }

    /// Never true (a fleet has at least one target); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.state.targets.is_empty()
    }

    /// The port every target listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control endpoint.
    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    /// Whether one device-bound listener serves every target (see the crate docs).
    pub fn shared_listener(&self) -> bool {
        self.shared_listener
    }

    /// The health URL of target `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{}/health", target_ip(i), self.port)
    }

    /// The name of target `i`.
    pub fn name(&self, i: usize) -> String {
        target_name(i, self.len())
    }

    /// Is target `i` answering 200?
    pub fn is_healthy(&self, i: usize) -> bool {
        self.state
            .targets
            .get(i)
            .is_some_and(|t| t.healthy.load(Ordering::Relaxed))
    }

    /// Make target `i` answer 200 (`true`) or 503 (`false`). Returns false if `i` is out of range.
    pub fn set_healthy(&self, i: usize, healthy: bool) -> bool {
        self.state
            .targets
            .get(i)
            .map(|t| t.healthy.store(healthy, Ordering::Relaxed))
            .is_some()
    }

    /// Delay target `i`'s answers by `latency`. Returns false if `i` is out of range.
    pub fn set_latency(&self, i: usize, latency: Duration) -> bool {
        let ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        self.state
            .targets
            .get(i)
            .map(|t| t.latency_ms.store(ms, Ordering::Relaxed))
            .is_some()
    }

    /// Requests answered by target `i` so far.
    pub fn hits(&self, i: usize) -> u64 {
        self.state
            .targets
            .get(i)
            .map_or(0, |t| t.hits.load(Ordering::Relaxed))
    }

    /// Requests answered by all targets.
    pub fn total_hits(&self) -> u64 {
        self.state
            .targets
            .iter()
            .map(|t| t.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Indexes of the targets answering 503 now.
    pub fn unhealthy(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| !self.is_healthy(i)).collect()
    }

    /// A heck config for this fleet: `defaults` (TOML lines for `[defaults]`, e.g.
    /// `interval = "10s"`) and one `[[target]]` per target.
    pub fn config_toml(&self, defaults: &str) -> String {
        let mut out = String::with_capacity(80 * self.len() + 200);
        out.push_str("# written by heck-fleet\n[defaults]\n");
        out.push_str(defaults.trim());
        out.push('\n');
        for i in 0..self.len() {
            out.push_str(&format!(
                "\n[[target]]\nname = \"{}\"\nurl = \"{}\"\n",
                self.name(i),
                self.url(i)
            ));
        }
        out
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn serve_targets(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: shed load, never die.
                tracing::debug!(%e, "fleet accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let Some(i) = stream
            .local_addr()
            .ok()
            .and_then(|a| target_index(a.ip(), state.targets.len()))
        else {
            continue; // an address that is not one of ours: drop the connection
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let t = &state.targets[i];
                    let ms = t.latency_ms.load(Ordering::Relaxed);
                    if ms > 0 {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                    }
                    t.hits.fetch_add(1, Ordering::Relaxed);
                    let (status, body) = if t.healthy.load(Ordering::Relaxed) {
                        (200, "ok\n")
                    } else {
                        (503, "unhealthy\n")
                    };
                    let mut resp =
                        hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

async fn serve_control(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(control(&state, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn control(
    state: &State,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    };
    let path = req.uri().path();
    if req.method() == http::Method::GET && path == "/fleet" {
        let unhealthy = state
            .targets
            .iter()
            .filter(|t| !t.healthy.load(Ordering::Relaxed))
            .count();
        let hits: u64 = state
            .targets
            .iter()
            .map(|t| t.hits.load(Ordering::Relaxed))
            .sum();
        return reply(
            200,
            format!(
                "{{\"targets\":{},\"unhealthy\":{unhealthy},\"hits\":{hits}}}\n",
                state.targets.len()
            ),
        );
    }
    if req.method() == http::Method::GET && path == "/fleet/hits" {
        // Requests per target, in index order: how a test counts checks per target.
        let hits: Vec<u64> = state
            .targets
            .iter()
            .map(|t| t.hits.load(Ordering::Relaxed))
            .collect();
        return reply(200, format!("{hits:?}\n"));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (["fleet", index, action], &http::Method::POST) = (parts.as_slice(), req.method()) else {
        return reply(
            404,
            "{\"error\":\"use POST /fleet/{i}/healthy|unhealthy|latency?ms=N, GET /fleet or GET /fleet/hits\"}\n"
                .into(),
        );
    };
    let Some(t) = index
        .parse::<usize>()
        .ok()
        .and_then(|i| state.targets.get(i))
    else {
        return reply(404, format!("{{\"error\":\"no target {index}\"}}\n"));
    };
    match *action {
        "healthy" => t.healthy.store(true, Ordering::Relaxed),
        "unhealthy" => t.healthy.store(false, Ordering::Relaxed),
        "latency" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
                .and_then(|v| v.parse::<u32>().ok());
            let Some(ms) = ms else {
                return reply(400, "{\"error\":\"latency needs ?ms=N\"}\n".into());
            };
            t.latency_ms.store(ms, Ordering::Relaxed);
        }
        other => return reply(404, format!("{{\"error\":\"unknown action {other:?}\"}}\n")),
    }
    reply(200, "{\"ok\":true}\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_indexes_round_trip() {
        for i in [0usize, 1, 254, 255, 256, 65_535, 65_536, 99_999, 999_999] {
            let ip = target_ip(i);
            assert_eq!(target_index(IpAddr::V4(ip), 1_000_000), Some(i), "{ip}");
            assert_ne!(ip.octets()[1], 0, "never 127.0.x.x");
        }
        assert_eq!(
            target_index(
                "127.0.0.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                10
            ),
            None
        );
        assert_eq!(
            target_index(IpAddr::V4(target_ip(10)), 10),
            None,
            "out of range"
        );
    }

    #[test]
    fn the_unhealthy_fraction_is_exact_and_spread() {
        let n = 1000;
        let bad: Vec<usize> = (0..n).filter(|&i| is_unhealthy_at_start(i, 0.1)).collect();
        assert_eq!(bad.len(), 100);
        assert!(bad.windows(2).all(|w| w[1] - w[0] == 10), "evenly spread");
        assert_eq!((0..n).filter(|&i| is_unhealthy_at_start(i, 0.0)).count(), 0);
        assert_eq!((0..n).filter(|&i| is_unhealthy_at_start(i, 1.0)).count(), n);
    }

    #[test]
    fn names_sort_in_index_order() {
        assert_eq!(target_name(0, 50), "t-00001");
        assert_eq!(target_name(99_999, 100_000), "t-100000");
        assert_eq!(target_name(0, 100_000), "t-000001");
    }

    #[tokio::test]
    async fn each_target_answers_on_its_own_address_and_flips() {
        let fleet = Fleet::start(FleetConfig {
            targets: 300,
            unhealthy_fraction: 0.5,
            ..FleetConfig::default()
        })
        .await
        .expect("fleet starts");
        for i in [0usize, 1, 255, 299] {
            let url = fleet.url(i);
            let status = get_status(&url).await;
            assert_eq!(status, if fleet.is_healthy(i) { 200 } else { 503 }, "{url}");
        }
        assert!(fleet.set_healthy(1, !fleet.is_healthy(1)));
        let expect = if fleet.is_healthy(1) { 200 } else { 503 };
        assert_eq!(get_status(&fleet.url(1)).await, expect);
        assert_eq!(fleet.hits(1), 2);
        assert!(!fleet.set_healthy(300, true), "out of range");
    }

    async fn get_status(url: &str) -> u16 {
        let rest = url.trim_start_matches("http://");
        let (hostport, _) = rest.split_once('/').unwrap_or((rest, ""));
        let stream = tokio::net::TcpStream::connect(hostport)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::get("/health")
            .header(http::header::HOST, hostport)
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        sender
            .send_request(req)
            .await
            .expect("response")
            .status()
            .as_u16()
    }
}
