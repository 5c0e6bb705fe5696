//! The HTTP API (loopback by default).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/targets[?status=healthy\|unhealthy\|unknown]` | array of targets |
//! | GET | `/v1/targets/{name}` | one target, or 404 |
//! | POST | `/v1/targets` | JSON target spec → 201 with the target; 400 (invalid, names the field), 409 (duplicate) |
//! | DELETE | `/v1/targets/{name}` | 204, or 404 |
//! | GET | `/v1/events` | Server-Sent Events, one `transition` event per status change |
//! | GET | `/v1/node` | version, uptime, target counts |
//! | GET | `/v1/members` | cluster members `{name, addr, state, incarnation}` (404 without gossip) |
//! | GET | `/metrics` | Prometheus text |
//!
//! Errors are JSON: `{"error": "..."}`. With a token configured, POST and DELETE need
//! `Authorization: Bearer <token>` (401 otherwise).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::Stream;
use heck_check::{Status, TargetInput, TargetName};
use serde::{Deserialize, Serialize};

use crate::{Command, Shared, registry};

/// Largest accepted request body.
const BODY_LIMIT: usize = 64 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/targets", get(list_targets).post(add_target))
        .route("/v1/targets/{name}", get(get_target).delete(remove_target))
        .route("/v1/events", get(events))
        .route("/v1/node", get(node))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
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

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &shared.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
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

/// Compare without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_targets(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<registry::TargetView>>, ApiError> {
    let filter = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("status={s:?}: use healthy, unhealthy or unknown"),
            )
        })?),
    };
    let reg = shared.registry();
    Ok(Json(
        reg.iter()
            .filter(|e| filter.is_none_or(|f| e.state.status() == f))
            .map(registry::Entry::view)
            .collect(),
    ))
}

fn not_found(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no target named {name:?}"))
}

async fn get_target(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<registry::TargetView>, ApiError> {
    let key = TargetName::new(name.clone()).map_err(|_| not_found(&name))?;
    let reg = shared.registry();
    reg.get(&key)
        .map(|e| Json(e.view()))
        .ok_or_else(|| not_found(&name))
}

async fn add_target(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<registry::TargetView>), ApiError> {
    authorize(&shared, &headers)?;
    let input: TargetInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid target JSON: {e}")))?;
    let spec = input
        .resolve(&shared.defaults)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let name = spec.name.clone();
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

async fn remove_target(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&shared, &headers)?;
    let key = TargetName::new(name.clone()).map_err(|_| not_found(&name))?;
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
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    use futures_util::StreamExt;
    use tokio::sync::broadcast::error::RecvError;

    let rx = shared.events.subscribe();
    let stop = shared.shutdown.clone().cancelled_owned();
    let stream = futures_util::stream::unfold((rx, shared), |(mut rx, shared)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let event = SseEvent::default()
                        .event("transition")
                        .json_data(&ev)
                        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                    return Some((Ok(event), (rx, shared)));
                }
                Err(RecvError::Lagged(n)) => shared.metrics.events_dropped(n),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .take_until(stop);
    Sse::new(stream).keep_alive(KeepAlive::default())
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
        gossip: shared.members.as_ref().map(|v| GossipInfo {
            members: v.members().len(),
            dropped_bad_packets: v
                .stats
                .dropped_bad
                .load(std::sync::atomic::Ordering::Relaxed),
            send_errors: v
                .stats
                .send_errors
                .load(std::sync::atomic::Ordering::Relaxed),
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
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
