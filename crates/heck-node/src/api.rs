//! The HTTP API (loopback by default).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/targets[?status=…][&limit=N][&after=NAME]` | array of targets, by name, streamed |
//! | GET | `/v1/targets/{name}` | one target, or 404 |
//! | POST | `/v1/targets` | JSON target spec → 201 with the target; 400 (invalid, names the field), 409 (duplicate), 413 (body over 64 KiB) |
//! | DELETE | `/v1/targets/{name}` | 204, or 404 |
//! | GET | `/v1/events` | Server-Sent Events, one `transition` event per status change |
//! | GET | `/v1/node` | version, uptime, target counts; with gossip, the SWIM, push-pull and stream counters |
//! | GET | `/v1/members` | cluster members `{name, addr, state, incarnation}` (404 without gossip) |
//! | GET | `/metrics` | Prometheus text |
//!
//! Every error is JSON: `{"error": "..."}`, unknown routes (404) and wrong methods (405)
//! included. With a token configured, POST and DELETE need `Authorization: Bearer <token>` (the
//! scheme in any case, RFC 7235; 401 otherwise).
//!
//! Invariant: no client holds the agent. Connections are served by [`serve`], which bounds how
//! many are open ([`ApiLimits::max_connections`], beyond it a 503), how long a request's headers
//! and body may take to arrive (slowloris), how many SSE subscribers there are, and how long
//! shutdown waits for open connections before closing them. Each refusal is counted in
//! `heck_api_rejected_total{reason}`.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use heck_check::{Status, TargetInput, TargetName};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{Command, Shared, membership, registry};

/// Largest accepted request body.
const BODY_LIMIT: usize = 64 * 1024;
/// Targets per page of a streamed `GET /v1/targets` (~400 bytes each as JSON): the registry
/// lock is held for one page, and no buffer holds the whole answer (41 MB at 100,000 targets).
const LIST_PAGE: usize = 256;
/// With a status filter, entries looked at per page at most, so a filter that matches few
/// targets still releases the lock often.
const LIST_SCAN: usize = 4 * LIST_PAGE;

/// Bounds on the API's clients, so that no client can hold the agent or grow its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// A request's headers must arrive within this, and a keep-alive connection idle for this
    /// long is closed (the slowloris bound).
    pub header_timeout: Duration,
    /// A request's body must arrive within this (then 408).
    pub body_timeout: Duration,
    /// Most API connections open at once; a connection beyond it gets a 503 and is closed.
    pub max_connections: usize,
    /// Most `GET /v1/events` subscribers at once (each holds a connection); beyond it, 503.
    pub max_subscribers: usize,
    /// At shutdown, how long open API connections get to finish before they are closed.
    pub shutdown_grace: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_subscribers: 512,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/targets", get(list_targets).post(add_target))
        .route("/v1/targets/{name}", get(get_target).delete(remove_target))
        .route("/v1/events", get(events))
        .route("/v1/node", get(node))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(shared)
}

/// The 503 a connection beyond [`ApiLimits::max_connections`] gets, written without reading
/// its request (a few bytes: they fit in any socket buffer, so a non-blocking write suffices).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nconnection: close\r\ncontent-length: 67\r\n\r\n\
{\"error\":\"too many API connections: try again when one has closed\"}";

/// Serve the API on `listener` until `shutdown`, within `shared.api_limits`. At shutdown, open
/// connections are asked to close (idle ones close at once) and get `shutdown_grace` to finish;
/// what is left then (a client that never finished its request) is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let limits = shared.api_limits;
    let router = router(shared.clone());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before we took it: neither is
                // a reason to stop serving. Pause so a persistent error does not spin.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.metrics.api_rejected("connections");
            // Best effort: the client may have sent nothing yet, or more than we drop.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    shared.metrics.api_rejected("header_timeout");
                }
                tracing::debug!(error = %e, "API connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown: closing API connections that did not finish within the grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// An API error: a status and a sentence, sent as `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, r.body_text())
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &shared.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs Authorization: Bearer <token> (the agent's --api-token)".into(),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 7235 section 2.1: `bearer`, `BEARER` are the same scheme).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compare without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Read a request body of at most [`BODY_LIMIT`] within `timeout`: 413 beyond the limit (told by
/// `Content-Length` before reading, or found while reading), 408 when it does not arrive.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        shared.metrics.api_rejected("body_too_large");
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} KiB", BODY_LIMIT / 1024),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > BODY_LIMIT {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        shared.metrics.api_rejected("body_timeout");
        ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(timeout)
            ),
        )
    })?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_targets(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let filter = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("status={s:?}: use healthy, unhealthy or unknown"),
            )
        })?),
    };
    let after = q
        .after
        .map(|a| {
            TargetName::new(a.clone()).map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("after={a:?} is not a target name: {e}"),
                )
            })
        })
        .transpose()?;
    if q.limit == Some(0) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit=0: give at least 1, or leave it out for every target".into(),
        ));
    }
    let pages = TargetPages {
        shared,
        filter,
        after,
        remaining: q.limit.unwrap_or(usize::MAX),
        part: ListPart::Unopened,
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures_util::stream::iter(
            pages.map(|page| Ok::<_, Infallible>(Bytes::from(page))),
        )),
    )
        .into_response())
}

/// Where a streamed listing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListPart {
    /// Nothing written yet: the next page opens the array.
    Unopened,
    /// `[` written, no target yet: the next target needs no comma.
    Opened,
    /// Some targets written: the next one needs a comma.
    Items,
    /// `]` written.
    Done,
}

/// A `GET /v1/targets` answer as pages of a JSON array: the registry lock is taken once per
/// page, so a listing of 100,000 targets neither holds the lock long nor the whole text.
struct TargetPages {
    shared: Arc<Shared>,
    filter: Option<Status>,
    /// The last target looked at.
    after: Option<TargetName>,
    /// How many more targets may be written (`limit`).
    remaining: usize,
    part: ListPart,
}

impl Iterator for TargetPages {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.part {
            ListPart::Done => return None,
            ListPart::Unopened => {
                out.push(b'[');
                self.part = ListPart::Opened;
            }
            ListPart::Opened | ListPart::Items => {}
        }
        let (mut written, mut scanned) = (0, 0);
        // True unless the page ended because it was full: then more may follow.
        let mut finished = true;
        {
            let reg = self.shared.registry();
            // Lock order: registry, then cluster (see membership.rs).
            let cluster = self
                .shared
                .cluster
                .as_ref()
                .map(|c| membership::lock(&c.core));
            let mut last = None;
            for e in reg.iter_after(self.after.as_ref()) {
                if self.remaining == 0 {
                    break;
                }
                if written == LIST_PAGE || scanned == LIST_SCAN {
                    finished = false;
                    break;
                }
                scanned += 1;
                last = Some(&e.spec.name);
                if self.filter.is_some_and(|f| e.status() != f) {
                    continue;
                }
                if self.part == ListPart::Items {
                    out.push(b',');
                }
                let mut view = e.view();
                if let Some(cluster) = &cluster {
                    with_answer(&mut view, cluster.answer(&e.spec.name));
                }
                // A view is plain strings and numbers: serializing it cannot fail.
                let _ = serde_json::to_writer(&mut out, &view);
                self.part = ListPart::Items;
                written += 1;
                self.remaining -= 1;
            }
            if let Some(name) = last {
                self.after = Some(name.clone());
            }
        }
        if finished {
            out.push(b']');
            self.part = ListPart::Done;
        }
        Some(out)
    }
}

/// Show the cluster's answer in a target's view: the status every node answers, with who
/// checks it and who said so. The last check (latency, error) stays this node's own: per-check
/// detail is not replicated, so it is present only where this node checked the target.
fn with_answer(view: &mut registry::TargetView, answer: Option<&heck_cluster::Answer>) {
    let Some(a) = answer else {
        view.cluster = Some(registry::ClusterView {
            owner: None,
            observer: None,
            observed_at: None,
            contested: false,
        });
        return;
    };
    view.status = a.status;
    if let Some(since) = a.since {
        view.since = registry::rfc3339(since);
    }
    (view.consecutive_failures, view.consecutive_successes) = a.consecutive;
    view.cluster = Some(registry::ClusterView {
        owner: a.owner.as_ref().map(|o| o.to_string()),
        observer: a.observer.as_ref().map(|o| o.to_string()),
        observed_at: a
            .observed_at
            .map(|d| registry::rfc3339(std::time::UNIX_EPOCH + d)),
        contested: a.contested,
    });
}

/// A target's view, with the cluster's answer in a cluster.
fn view_of(shared: &Shared, entry: &registry::Entry) -> registry::TargetView {
    let mut view = entry.view();
    if let Some(c) = &shared.cluster {
        with_answer(
            &mut view,
            membership::lock(&c.core).answer(&entry.spec.name),
        );
    }
    view
}

fn not_found(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no target named {name:?}"))
}

async fn get_target(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<registry::TargetView>, ApiError> {
    let Path(name) = path?;
    let key = TargetName::new(name.clone()).map_err(|_| not_found(&name))?;
    let reg = shared.registry();
    reg.get(&key)
        .map(|e| Json(view_of(&shared, e)))
        .ok_or_else(|| not_found(&name))
}

async fn add_target(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<registry::TargetView>), ApiError> {
    authorize(&shared, &headers)?;
    let body = read_body(&shared, &headers, body, shared.api_limits.body_timeout).await?;
    let input: TargetInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid target JSON: {e}")))?;
    let spec = input
        .resolve(&shared.defaults)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    // What the config loader checks at load (a readable PEM bundle for `tls_ca_file`), the API
    // checks before adding, so a bad target is a 400 now rather than a failing check later.
    shared
        .prober
        .prepare(&spec)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let name = spec.name.clone();
    if let Some(cluster) = &shared.cluster {
        return add_to_cluster(&shared, cluster, input, &name).await;
    }
    let view = {
        let mut reg = shared.registry();
        if reg.get(&name).is_some() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("a target named {:?} exists", name.as_str()),
            ));
        }
        // Checked just above, under the same lock: add cannot find a duplicate.
        let _ = reg.add(spec, SystemTime::now());
        shared.metrics.targets(reg.counts());
        reg.get(&name).map(registry::Entry::view)
    };
    shared
        .command(Command::Schedule(name))
        .await
        .map_err(|()| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent is shutting down".into(),
            )
        })?;
    view.map(|v| (StatusCode::CREATED, Json(v)))
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "target vanished".into()))
}

/// `POST /v1/targets` in a cluster: the target is written to the replicated store (every node
/// learns it; its owner checks it); this node's registry has it when the answer comes back.
async fn add_to_cluster(
    shared: &Shared,
    cluster: &crate::ClusterLink,
    input: TargetInput,
    name: &TargetName,
) -> Result<(StatusCode, Json<registry::TargetView>), ApiError> {
    if shared.registry().get(name).is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("a target named {:?} exists", name.as_str()),
        ));
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let shutting_down = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent is shutting down".into(),
        )
    };
    cluster
        .inputs
        .send(membership::Input::Add { input, reply })
        .await
        .map_err(|_| shutting_down())?;
    answer
        .await
        .map_err(|_| shutting_down())?
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let reg = shared.registry();
    reg.get(name)
        .map(|e| (StatusCode::CREATED, Json(view_of(shared, e))))
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "target vanished".into()))
}

async fn remove_target(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    authorize(&shared, &headers)?;
    let Path(name) = path?;
    let key = TargetName::new(name.clone()).map_err(|_| not_found(&name))?;
    if let Some(cluster) = &shared.cluster {
        // A tombstone in the replicated store: deleted on every node, config file or not.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let shutting_down = || {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent is shutting down".into(),
            )
        };
        cluster
            .inputs
            .send(membership::Input::Remove { target: key, reply })
            .await
            .map_err(|_| shutting_down())?;
        return match answer.await.map_err(|_| shutting_down())? {
            Ok(()) => Ok(StatusCode::NO_CONTENT),
            Err(_) => Err(not_found(&name)),
        };
    }
    let removed = {
        let mut reg = shared.registry();
        let entry = reg.remove(&key).ok_or_else(|| not_found(&name))?;
        shared.metrics.targets(reg.counts());
        entry.spec
    };
    shared.prober.forget(&removed);
    // If the driver is gone we are shutting down; the target is already out of the registry.
    let _ = shared.command(Command::Unschedule(key)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    use futures_util::StreamExt;
    use tokio::sync::broadcast::error::RecvError;

    // Held by the stream: released when the subscriber goes.
    let Ok(permit) = shared.subscribers.clone().try_acquire_owned() else {
        shared.metrics.api_rejected("subscribers");
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event subscribers (at most {}): try again when one has left",
                shared.api_limits.max_subscribers
            ),
        ));
    };
    let rx = shared.events.subscribe();
    let stop = shared.shutdown.clone().cancelled_owned();
    let stream = futures_util::stream::unfold(
        (rx, shared, permit),
        |(mut rx, shared, permit)| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let event = SseEvent::default()
                            .event("transition")
                            .json_data(&ev)
                            .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                        return Some((Ok(event), (rx, shared, permit)));
                    }
                    Err(RecvError::Lagged(n)) => shared.metrics.events_dropped(n),
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
    .take_until(stop);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Serialize)]
struct NodeInfo {
    version: &'static str,
    started_at: String,
    uptime_seconds: f64,
    targets: usize,
    healthy: usize,
    unhealthy: usize,
    unknown: usize,
    checks_in_flight: usize,
    max_in_flight: usize,
    /// Present when membership is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    gossip: Option<GossipInfo>,
}

#[derive(Serialize)]
struct GossipInfo {
    members: usize,
    dropped_bad_packets: u64,
    send_errors: u64,
    /// The SWIM state machine's counters (failed probes, refutations, deaths declared, stale
    /// and misdirected packets, dropped broadcasts, push-pulls merged).
    swim: heck_swim::Stats,
    /// Push-pull exchanges over the stream: succeeded, failed, skipped, served, refused.
    push_pull: crate::membership::PushPullCounts,
    /// The stream transport: traffic per channel, rejects by reason, drops by cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<heck_stream::Stats>,
    /// SWIM datagrams and bytes, sent and received (sealed sizes).
    swim_traffic: SwimTraffic,
    /// Sync messages not sent (no live member there, or the stream refused them).
    sync_unsent: u64,
    /// Check results the cluster driver had no room for (reported again at the next check).
    checks_dropped: u64,
    /// The cluster: owned targets, members, contested answers, deltas pending, decisions and
    /// anti-entropy counters (refreshed every second).
    cluster: membership::ClusterCounts,
    /// Snapshots of the replicated state (only with `--data-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<membership::PersistCounts>,
}

#[derive(Serialize)]
struct SwimTraffic {
    sent: u64,
    sent_bytes: u64,
    received: u64,
    received_bytes: u64,
}

async fn node(State(shared): State<Arc<Shared>>) -> Json<NodeInfo> {
    let reg = shared.registry();
    let [(_, unknown), (_, healthy), (_, unhealthy)] = reg.counts();
    Json(NodeInfo {
        version: env!("CARGO_PKG_VERSION"),
        started_at: registry::rfc3339(shared.started_at),
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        targets: reg.len(),
        healthy,
        unhealthy,
        unknown,
        checks_in_flight: shared.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        max_in_flight: shared.max_in_flight,
        gossip: shared.members.as_ref().map(|v| {
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            let t = &v.stats;
            GossipInfo {
                members: v.members().len(),
                dropped_bad_packets: load(&t.dropped_bad),
                send_errors: load(&t.send_errors),
                swim: v.swim_stats(),
                push_pull: v.push_pull_stats(),
                stream: v.stream_stats(),
                swim_traffic: SwimTraffic {
                    sent: load(&t.swim_sent),
                    sent_bytes: load(&t.swim_sent_bytes),
                    received: load(&t.swim_received),
                    received_bytes: load(&t.swim_received_bytes),
                },
                sync_unsent: load(&t.sync_unsent),
                checks_dropped: load(&t.checks_dropped),
                cluster: v.cluster_counts(),
                data_dir: v.persist_counts(),
            }
        }),
    })
}

async fn members(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<crate::membership::MemberView>>, ApiError> {
    match &shared.members {
        Some(view) => Ok(Json(view.members())),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "membership is off: start the agent with --gossip-addr (and --join)".into(),
        )),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared
        .metrics
        .keepalive_pool_full(shared.prober.pool_full_drops());
    (
        [(
            header::CONTENT_TYPE,
            // What prometheus-client writes (`_total` counters, `# EOF`).
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        // Streamed a page at a time: never the whole text in memory (see metrics.rs).
        axum::body::Body::from_stream(futures_util::stream::iter(
            shared
                .metrics
                .pages()
                .map(|page| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(page))),
        )),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_too_many_connections_answer_declares_its_exact_length() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap();
        assert_eq!(declared, body.len().to_string(), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].is_string());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
