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
    let (addr, conns, _) = counting_http_server().await;
    (addr, conns)
}

/// As [`http_server`], also counting requests received.
async fn counting_http_server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conn_counter, req_counter) = (conns.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            conn_counter.fetch_add(1, Ordering::SeqCst);
            let req_counter = req_counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    req_counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let auth = req
                            .headers()
                            .get(hyper::header::AUTHORIZATION)
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        let (status, body) = match req.uri().path() {
                            "/ok" => (200, "all systems ok".to_string()),
                            "/fail" => (503, "down".to_string()),
                            "/redirect" => (301, String::new()),
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                (200, "late".to_string())
                            }
                            "/wait" => {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                (200, format!("served by {addr}"))
                            }
                            "/auth" => (200, format!("authorization: {auth}")),
                            _ => (404, "no".to_string()),
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns, requests)
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
    p.forget(&pooled);
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
    assert_eq!(
        strict.detail.as_deref(),
        Some("self-signed certificate (trust it with tls_ca_file, or set tls_skip_verify)"),
        "not webpki's CaUsedAsEndEntity"
    );
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

/// Serve HTTPS with `chain` and `key` on loopback: every request gets 200 "secure ok".
async fn tls_server(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
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
    addr
}

/// A private CA made for one test: its PEM in a temporary file, and a way to issue leaves.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem_file: std::path::PathBuf,
}

impl TestCa {
    fn new(tag: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "heck test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_file = temp_file(tag, &cert.pem());
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem_file,
        }
    }

    /// A leaf for `names`, and its key, signed by this CA.
    fn leaf(
        &self,
        names: &[&str],
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_file);
    }
}

fn temp_file(tag: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "heck-probe-{}-{tag}-{}.pem",
        std::process::id(),
        nanos()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_private_ca_is_trusted_through_tls_ca_file() {
    let ca = TestCa::new("private-ca");
    let (chain, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let addr = tls_server(chain, key).await;
    let p = Prober::new().unwrap();
    let url = format!("https://{addr}/");
    let roots_only = p.probe(&spec(&url, |_| {})).await;
    assert_eq!(
        roots_only.detail.as_deref(),
        Some("certificate signed by an unknown authority (for a private CA, set tls_ca_file)"),
        "{roots_only:?}"
    );
    let with_ca = spec(&url, |t| {
        t.tls_ca_file = Some(ca.pem_file.clone());
        t.body_contains = Some("secure ok".into());
    });
    p.prepare(&with_ca).unwrap();
    let o = p.probe(&with_ca).await;
    assert!(o.is_success(), "{o:?}");
}

#[tokio::test]
async fn a_hostname_mismatch_is_reported_as_such_and_tls_server_name_fixes_it() {
    let ca = TestCa::new("mismatch");
    let (chain, key) = ca.leaf(&["backend.internal"]);
    let addr = tls_server(chain, key).await;
    let p = Prober::new().unwrap();
    let url = format!("https://{addr}/");
    let o = p
        .probe(&spec(&url, |t| t.tls_ca_file = Some(ca.pem_file.clone())))
        .await;
    assert_eq!(o.error, Some(ErrorKind::Tls));
    assert_eq!(
        o.detail.as_deref(),
        Some(
            "hostname mismatch: the certificate is valid for DnsName(\"backend.internal\"), not \"127.0.0.1\" \
             (set tls_server_name to verify another name)"
        ),
        "{o:?}"
    );
    let named = p
        .probe(&spec(&url, |t| {
            t.tls_ca_file = Some(ca.pem_file.clone());
            t.tls_server_name = Some("backend.internal".into());
        }))
        .await;
    assert!(named.is_success(), "{named:?}");
}

#[tokio::test]
async fn a_self_signed_leaf_is_called_self_signed_and_can_be_trusted_by_itself() {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = temp_file("self-signed", &cert.pem());
    let addr = tls_server(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
    )
    .await;
    let p = Prober::new().unwrap();
    let url = format!("https://{addr}/");
    let o = p.probe(&spec(&url, |_| {})).await;
    assert_eq!(
        o.detail.as_deref(),
        Some("self-signed certificate (trust it with tls_ca_file, or set tls_skip_verify)")
    );
    let trusted = p
        .probe(&spec(&url, |t| t.tls_ca_file = Some(pem.clone())))
        .await;
    let _ = std::fs::remove_file(&pem);
    assert!(trusted.is_success(), "{trusted:?}");
}

#[tokio::test]
async fn a_ca_file_that_is_not_a_pem_bundle_is_refused_before_the_first_check() {
    let junk = temp_file("junk", "not a certificate\n");
    let s = spec("https://127.0.0.1:1/", |t| {
        t.tls_ca_file = Some(junk.clone())
    });
    let e = Prober::new().unwrap().prepare(&s).unwrap_err();
    let _ = std::fs::remove_file(&junk);
    assert_eq!(
        e.to_string(),
        format!(
            "tls_ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            junk.display()
        )
    );
}

#[tokio::test]
async fn a_recreated_target_never_gets_the_old_targets_connection() {
    let (old_addr, old_conns, old_requests) = counting_http_server().await;
    let (new_addr, new_conns, _) = counting_http_server().await;
    let p = Prober::new().unwrap();
    let keep = |url: &str| {
        spec(url, |t| {
            t.keep_alive = Some(true);
            t.timeout = Some(heck_check::HumanDuration(Duration::from_secs(4)));
        })
    };
    // A check of "t" is running when "t" is deleted.
    let old = keep(&format!("http://{old_addr}/wait"));
    let running = tokio::spawn({
        let (p, old) = (p.clone(), old.clone());
        async move { p.probe(&old).await }
    });
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while old_requests.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the check never reached the server");
    p.forget(&old);
    assert!(running.await.unwrap().is_success());
    assert_eq!(p.pooled(), 0, "the late connection was not pooled");

    // "t" again, on another host: served by the new host, over a new connection.
    let o = p
        .probe(&spec(&format!("http://{new_addr}/wait"), |t| {
            t.keep_alive = Some(true);
            t.timeout = Some(heck_check::HumanDuration(Duration::from_secs(4)));
            t.body_contains = Some(format!("served by {new_addr}"));
        }))
        .await;
    assert!(o.is_success(), "{o:?}");
    assert_eq!(new_conns.load(Ordering::SeqCst), 1);
    // "t" again, at the old URL: a fresh connection too.
    assert!(p.probe(&old).await.is_success());
    assert_eq!(old_conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_pool_keeps_at_most_its_cap_and_counts_what_it_closes() {
    let p = Prober::with_pool_cap(2).unwrap();
    for _ in 0..3 {
        let (addr, _) = http_server().await;
        let o = p
            .probe(&spec(&format!("http://{addr}/ok"), |t| {
                t.keep_alive = Some(true)
            }))
            .await;
        assert!(o.is_success(), "{o:?}");
    }
    assert_eq!((p.pooled(), p.pool_full_drops()), (2, 1));
    assert_eq!(
        heck_probe::MAX_POOLED,
        8_192,
        "Prober::new's cap, as documented"
    );
}

/// A raw HTTP/1.1 server on a thread: for each connection, reads one request, writes
/// `answer`, then keeps writing `tail` (if any) until the checker goes away, waits for a word on
/// `hold` (if given), and closes. Reports each close on the returned receiver.
async fn raw_server(
    answer: &'static [u8],
    tail: Option<Vec<u8>>,
    hold: Option<std::sync::mpsc::Receiver<()>>,
) -> (SocketAddr, Arc<AtomicUsize>, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let l = listener().await.into_std().unwrap();
    l.set_nonblocking(false).unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let _ = s.write_all(answer);
            if let Some(tail) = &tail {
                // Until the checker goes away (or 10 s: the test is over by then).
                let until = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < until && s.write_all(tail).is_ok() {}
            }
            if let Some(hold) = &hold {
                let _ = hold.recv_timeout(Duration::from_secs(10));
            }
            drop(s);
            let _ = tx.send(());
        }
    });
    (addr, conns, rx)
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_once_fresh() {
    // Keep-alive is granted, then the server closes the idle connection (its idle timeout).
    let (close, hold) = std::sync::mpsc::channel();
    let (addr, conns, closed) = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        None,
        Some(hold),
    )
    .await;
    let p = Prober::new().unwrap();
    let s = spec(&format!("http://{addr}/"), |t| t.keep_alive = Some(true));
    assert!(p.probe(&s).await.is_success());
    assert_eq!(p.pooled(), 1);
    close.send(()).unwrap();
    closed.recv_timeout(Duration::from_secs(5)).unwrap();
    // The retry's connection is answered and closed without waiting.
    drop(close);
    let o = p.probe(&s).await;
    assert!(
        o.is_success(),
        "{o:?} after {} connections",
        conns.load(Ordering::SeqCst)
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "one retry, on a new connection"
    );
}

#[tokio::test]
async fn with_keep_alive_an_endless_body_is_read_to_64_kib_and_the_connection_dropped() {
    let (addr, _, _) = raw_server(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n",
        Some(format!("400\r\n{}\r\n", "_".repeat(0x400)).into_bytes()),
        None,
    )
    .await;
    let p = Prober::new().unwrap();
    let o = p
        .probe(&spec(&format!("http://{addr}/"), |t| {
            t.keep_alive = Some(true);
            t.timeout = Some(heck_check::HumanDuration(Duration::from_secs(4)));
            t.body_contains = Some("hello".into());
        }))
        .await;
    assert!(o.is_success(), "{o:?}");
    assert_eq!(p.pooled(), 0, "a connection with unread body is not reused");
}

#[tokio::test]
async fn a_timeout_says_in_which_phase_and_keeps_the_status() {
    let p = Prober::new().unwrap();
    // Waiting for the response headers.
    let (addr, _) = http_server().await;
    let o = p.probe(&spec(&format!("http://{addr}/slow"), |_| {})).await;
    assert_eq!(
        (o.error, o.status_code, o.detail.as_deref()),
        (
            Some(ErrorKind::Timeout),
            None,
            Some("timed out after 500ms waiting for the response headers")
        )
    );
    // Reading the body: the status arrived and is kept.
    let (_hold_open, hold) = std::sync::mpsc::channel();
    let (addr, _, _) = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial",
        None,
        Some(hold),
    )
    .await;
    let o = p.probe(&spec(&format!("http://{addr}/"), |_| {})).await;
    assert_eq!(
        (o.error, o.status_code, o.detail.as_deref()),
        (
            Some(ErrorKind::Timeout),
            Some(200),
            Some("timed out after 500ms reading the body")
        )
    );
    // In the TLS handshake: a port that accepts and never speaks.
    let silent = listener().await;
    let addr = silent.local_addr().unwrap();
    let o = p.probe(&spec(&format!("https://{addr}/"), |_| {})).await;
    assert_eq!(
        o.detail.as_deref(),
        Some("timed out after 500ms in the TLS handshake")
    );
    drop(silent);
}

#[tokio::test]
async fn credentials_in_the_url_are_sent_as_basic_auth() {
    let (addr, _) = http_server().await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("http://alice:p%40ss@{addr}/auth"), |t| {
            // base64("alice:p@ss")
            t.body_contains = Some("authorization: Basic YWxpY2U6cEBzcw==".into());
        }))
        .await;
    assert!(o.is_success(), "{o:?}");
}

#[tokio::test]
async fn a_grpc_target_that_speaks_plain_http_says_why() {
    let (addr, _) = http_server().await;
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("grpc://{addr}"), |_| {}))
        .await;
    let detail = o.detail.unwrap_or_default();
    assert!(
        detail.starts_with("health check failed: ")
            && detail.len() > "health check failed: Unknown: transport error".len(),
        "the cause is named: {detail}"
    );
}

#[tokio::test]
async fn a_refused_grpc_connect_says_each_cause_once() {
    let addr = listener().await.local_addr().unwrap();
    let o = Prober::new()
        .unwrap()
        .probe(&spec(&format!("grpc://{addr}"), |_| {}))
        .await;
    assert_eq!(o.error, Some(ErrorKind::ConnectionRefused), "{o:?}");
    let detail = o.detail.unwrap_or_default();
    assert!(
        !detail.contains("tcp connect error: tcp connect error"),
        "{detail}"
    );
}
