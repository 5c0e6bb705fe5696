//! Every probe kind against real servers started here, on loopback.
#![allow(clippy::unwrap_used)]
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use heck_check::{Defaults, ErrorKind, TargetInput, TargetSpec};
use heck_probe::Prober;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Bind a listener on 127.0.0.1 at a random port below the ephemeral range.
async fn listener() -> TcpListener {
    for attempt in 0..200u64 {
        let seed = std::process::id() as u64 * 7919 + attempt * 104_729 + nanos();
        let port = 10_000 + (seed % 22_000) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
    }
    panic!("no free port in 10000..32000");
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// An HTTP server whose answer depends on the path; counts accepted connections.
async fn http_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let (status, body) = match req.uri().path() {
                        "/ok" => (200, "all systems ok"),
                        "/fail" => (503, "down"),
                        "/redirect" => (301, ""),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            (200, "late")
                        }
                        _ => (404, "no"),
                    };
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

fn spec(url: &str, edit: impl FnOnce(&mut TargetInput)) -> TargetSpec {
    let mut input = TargetInput {
        name: "t".into(),
        url: url.into(),
        ..TargetInput::default()
    };
    input.interval = Some(heck_check::HumanDuration(Duration::from_secs(5)));
    input.timeout = Some(heck_check::HumanDuration(Duration::from_millis(500)));
    edit(&mut input);
    input.resolve(&Defaults::default()).unwrap()
}

#[tokio::test]
async fn a_2xx_answer_is_a_success_with_its_status() {
    let (addr, _) = http_server().await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("http://{addr}/ok"), |_| {}))
        .await;
    assert!(o.is_success(), "{o:?}");
    assert_eq!(o.status_code, Some(200));
}

#[tokio::test]
async fn an_unexpected_status_fails_and_says_which() {
    let (addr, _) = http_server().await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("http://{addr}/fail"), |_| {}))
        .await;
    assert_eq!(o.error, Some(ErrorKind::UnexpectedStatus));
    assert_eq!(o.status_code, Some(503));
    assert_eq!(o.detail.as_deref(), Some("status 503 not in 2xx"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (addr, _) = http_server().await;
    let p = Prober::new().unwrap();
    let o = p
        .probe(&spec(&format!("http://{addr}/redirect"), |_| {}))
        .await;
    assert_eq!(
        (o.error, o.status_code),
        (Some(ErrorKind::UnexpectedStatus), Some(301))
    );
    let o = p
        .probe(&spec(&format!("http://{addr}/redirect"), |t| {
            t.expect_status = Some(serde_json::from_str("[\"3xx\"]").unwrap());
        }))
        .await;
    assert!(o.is_success(), "{o:?}");
}

#[tokio::test]
async fn the_body_must_contain_the_expected_text() {
    let (addr, _) = http_server().await;
    let p = Prober::new().unwrap();
    let ok = p
        .probe(&spec(&format!("http://{addr}/ok"), |t| {
            t.body_contains = Some("systems ok".into())
        }))
        .await;
    assert!(ok.is_success(), "{ok:?}");
    let bad = p
        .probe(&spec(&format!("http://{addr}/ok"), |t| {
            t.body_contains = Some("banana".into())
        }))
        .await;
    assert_eq!(bad.error, Some(ErrorKind::BodyMismatch));
}

#[tokio::test]
async fn a_slow_target_times_out_within_its_timeout() {
    let (addr, _) = http_server().await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("http://{addr}/slow"), |_| {}))
        .await;
    assert_eq!(o.error, Some(ErrorKind::Timeout));
    assert!(o.latency >= Duration::from_millis(500));
    assert!(
        o.latency < Duration::from_secs(3),
        "bounded by the timeout: {o:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let addr = listener().await.local_addr().unwrap(); // dropped: nothing listens now
    let p = Prober::new().unwrap();
    let o = p.probe(&spec(&format!("http://{addr}/ok"), |_| {})).await;
    assert_eq!(o.error, Some(ErrorKind::ConnectionRefused), "{o:?}");
    let o = p.probe(&spec(&format!("tcp://{addr}"), |_| {})).await;
    assert_eq!(o.error, Some(ErrorKind::ConnectionRefused), "{o:?}");
}

#[tokio::test]
async fn a_tcp_check_passes_when_the_port_accepts() {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("tcp://{addr}"), |_| {}))
        .await;
    assert!(o.is_success(), "{o:?}");
    drop(l);
}

#[tokio::test]
async fn fresh_connections_by_default_and_one_reused_with_keep_alive() {
    let (addr, conns) = http_server().await;
    let p = Prober::new().unwrap();
    let fresh = spec(&format!("http://{addr}/ok"), |_| {});
    for _ in 0..3 {
        assert!(p.probe(&fresh).await.is_success());
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);

    let (addr, conns) = http_server().await;
    let pooled = spec(&format!("http://{addr}/ok"), |t| t.keep_alive = Some(true));
    for _ in 0..3 {
        assert!(p.probe(&pooled).await.is_success());
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(p.pooled(), 1);
    p.forget(&pooled.name);
    assert_eq!(p.pooled(), 0);
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_needs_tls_skip_verify() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs");
    let cert = CertificateDer::from_pem_file(format!("{dir}/cert.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("secure ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let p = Prober::new().unwrap();
    let url = format!("https://{addr}/");
    let strict = p.probe(&spec(&url, |_| {})).await;
    assert_eq!(strict.error, Some(ErrorKind::Tls), "{strict:?}");
    let lax = p
        .probe(&spec(&url, |t| {
            t.tls_skip_verify = Some(true);
            t.body_contains = Some("secure".into());
        }))
        .await;
    assert!(lax.is_success(), "{lax:?}");
}

#[tokio::test]
async fn grpc_health_serving_and_not_serving() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
    reporter
        .set_service_status("my.Down", tonic_health::ServingStatus::NotServing)
        .await;
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(l);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );

    let p = Prober::new().unwrap();
    let whole = p.probe(&spec(&format!("grpc://{addr}"), |_| {})).await;
    assert!(whole.is_success(), "{whole:?}");
    let down = p
        .probe(&spec(&format!("grpc://{addr}/my.Down"), |_| {}))
        .await;
    assert_eq!(down.error, Some(ErrorKind::NotServing), "{down:?}");
    let unknown = p
        .probe(&spec(&format!("grpc://{addr}/no.Such"), |_| {}))
        .await;
    assert_eq!(unknown.error, Some(ErrorKind::NotServing), "{unknown:?}");
}

/// A one-connection HTTP server on a thread: reads the request, answers 200, closes first (its
/// FIN travels with the answer: TCP_CORK holds the data until the shutdown) if `close_first`,
/// then reports how the checker ended the connection: `Ok(0)` for a FIN, an error for a reset.
async fn closing_server(
    close_first: bool,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<std::io::Result<usize>>,
) {
    use std::io::{Read, Write};
    let l = listener().await.into_std().unwrap();
    l.set_nonblocking(false).unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            req.extend_from_slice(&buf[..n]);
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        if close_first {
            socket2::SockRef::from(&s).set_tcp_cork(true).unwrap();
            s.write_all(answer).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        } else {
            s.write_all(answer).unwrap();
        }
        let _ = tx.send(s.read(&mut buf));
    });
    (addr, rx)
}

/// Probe a [`closing_server`] and return how the checker ended the connection.
async fn probe_and_see_how_it_ended(close_first: bool) -> std::io::Result<usize> {
    let (addr, ended) = closing_server(close_first).await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("http://{addr}/"), |_| {}))
        .await;
    assert!(o.is_success(), "{o:?}");
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_target_that_closed_first_gets_a_reset_and_keeps_no_time_wait() {
    let err = probe_and_see_how_it_ended(true)
        .await
        .expect_err("a reset, not a FIN");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn a_target_that_keeps_the_connection_open_gets_an_orderly_close() {
    assert_eq!(probe_and_see_how_it_ended(false).await.unwrap(), 0, "a FIN");
}
