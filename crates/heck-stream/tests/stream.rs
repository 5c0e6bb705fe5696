//! The stream transport with real sockets on loopback: round trips, who is refused and why,
//! caps, replays, reconnects and the inbound bound.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::time::Duration;

use heck_stream::{Channel, Config, Incoming, Peer, Reject, Stream, StreamError};
use heck_swim::Keyring;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const KEY: [u8; 32] = [1; 32];
const WAIT: Duration = Duration::from_secs(5);

struct Node {
    stream: Stream,
    incoming: Incoming,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Node {
    fn peer(&self) -> Peer {
        self.stream.local().clone()
    }

    async fn next(&mut self) -> heck_stream::Inbound {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("a frame within the wait")
            .expect("the transport is running")
    }
}

async fn start_with(
    name: &str,
    ring: Keyring,
    addr: SocketAddr,
    tune: impl FnOnce(&mut Config),
) -> Node {
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut config = Config::new(name, listener.local_addr().unwrap());
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    tune(&mut config);
    let stop = CancellationToken::new();
    let (stream, incoming) = Stream::start(config, ring, listener, stop.clone()).unwrap();
    Node {
        stream,
        incoming,
        stop,
    }
}

async fn start(name: &str) -> Node {
    start_with(name, Keyring::new("heck", &[KEY]), loopback(), |_| {}).await
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Poll `f` until it holds, for at most `WAIT`.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Read until the other side closes; true if it closed within the wait.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_one_way_frame_and_a_request_make_the_round_trip_on_one_connection() {
    let a = start("a").await;
    let mut b = start("b").await;

    a.stream
        .send(&b.peer(), Channel::Crdt, b"delta".to_vec())
        .unwrap();
    let got = b.next().await;
    assert_eq!(got.from, a.peer(), "named by the handshake");
    assert_eq!(
        (got.channel, got.bytes.as_slice()),
        (Channel::Crdt, &b"delta"[..])
    );
    assert!(got.reply.is_none());

    let asking = {
        let s = a.stream.clone();
        let to = b.peer();
        tokio::spawn(async move { s.request(&to, Channel::PushPull, b"state?".to_vec()).await })
    };
    let req = b.next().await;
    assert_eq!(
        (req.channel, req.bytes.as_slice()),
        (Channel::PushPull, &b"state?"[..])
    );
    req.reply.unwrap().send(b"state!".to_vec()).unwrap();
    assert_eq!(asking.await.unwrap().unwrap(), b"state!");

    let (sa, sb) = (a.stream.stats(), b.stream.stats());
    assert_eq!(sa.dialed, 1, "one connection, reused: {sa:?}");
    assert_eq!(sb.accepted, 1);
    assert_eq!(sa.sent["crdt"].frames, 1);
    assert_eq!(sa.sent["push_pull"].bytes, 6);
    assert_eq!(sb.received["push_pull"].frames, 1);
    assert_eq!(sa.received["push_pull"].bytes, 6);
    assert!(sb.rejected.values().all(|n| *n == 0), "{sb:?}");
}

#[tokio::test]
async fn a_peer_with_another_key_is_refused() {
    let a = start_with("a", Keyring::new("heck", &[[2; 32]]), loopback(), |_| {}).await;
    let b = start("b").await;
    let err = a.stream.connect(b.peer().addr).await.unwrap_err();
    assert!(matches!(err, StreamError::Handshake { .. }), "{err}");
    assert!(eventually(|| b.stream.stats().rejected(Reject::Unauthenticated) == 1).await);
    assert_eq!(b.stream.stats().accepted, 0);
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused_even_with_the_same_key() {
    let a = start_with("a", Keyring::new("other", &[KEY]), loopback(), |_| {}).await;
    let b = start("b").await;
    assert!(a.stream.connect(b.peer().addr).await.is_err());
    assert!(eventually(|| b.stream.stats().rejected(Reject::Unauthenticated) == 1).await);
}

#[tokio::test]
async fn a_ring_that_shares_any_key_connects_during_a_rotation() {
    // a already encrypts with the new key; b still encrypts with the old one; both hold both.
    let a = start_with(
        "a",
        Keyring::new("heck", &[[9; 32], KEY]),
        loopback(),
        |_| {},
    )
    .await;
    let mut b = start_with(
        "b",
        Keyring::new("heck", &[KEY, [9; 32]]),
        loopback(),
        |_| {},
    )
    .await;
    assert_eq!(a.stream.connect(b.peer().addr).await.unwrap().name, "b");
    a.stream.send(&b.peer(), Channel::Crdt, vec![1]).unwrap();
    assert_eq!(b.next().await.bytes, [1]);
}

#[tokio::test]
async fn an_oversized_length_is_refused_before_reading_a_body() {
    let b = start("b").await;
    let mut raw = TcpStream::connect(b.peer().addr).await.unwrap();
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(
        closed_by_peer(&mut raw).await,
        "closed without waiting for 4 GiB"
    );
    assert!(eventually(|| b.stream.stats().rejected(Reject::Oversized) == 1).await);
}

#[tokio::test]
async fn garbage_in_place_of_a_handshake_is_refused() {
    let b = start("b").await;
    let mut raw = TcpStream::connect(b.peer().addr).await.unwrap();
    raw.write_all(&100u32.to_be_bytes()).await.unwrap();
    raw.write_all(&[0xAB; 100]).await.unwrap();
    assert!(closed_by_peer(&mut raw).await);
    assert!(eventually(|| b.stream.stats().rejected(Reject::Unauthenticated) == 1).await);
}

#[tokio::test]
async fn a_handshake_cut_off_halfway_is_counted_as_truncated() {
    let b = start("b").await;
    let mut raw = TcpStream::connect(b.peer().addr).await.unwrap();
    // A length that promises 100 bytes, 10 of them, then the dialler goes away.
    raw.write_all(&100u32.to_be_bytes()).await.unwrap();
    raw.write_all(&[0xAB; 10]).await.unwrap();
    drop(raw);
    assert!(eventually(|| b.stream.stats().rejected(Reject::Truncated) == 1).await);
}

/// Accepts one connection on `listen`, forwards it to `to`, and hands back every byte the
/// dialler sent, once the connection has ended.
async fn recording_proxy(
    listen: TcpListener,
    to: SocketAddr,
) -> tokio::sync::oneshot::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listen.accept().await.unwrap();
        let mut server = TcpStream::connect(to).await.unwrap();
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let mut recorded = Vec::new();
        let mut buf = [0u8; 4096];
        let mut back = [0u8; 4096];
        loop {
            tokio::select! {
                n = cr.read(&mut buf) => {
                    let Ok(n @ 1..) = n else { break };
                    recorded.extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() { break }
                }
                n = sr.read(&mut back) => {
                    let Ok(n @ 1..) = n else { break };
                    if cw.write_all(&back[..n]).await.is_err() { break }
                }
            }
        }
        let _ = tx.send(recorded);
    });
    rx
}

#[tokio::test]
async fn a_recorded_handshake_played_back_is_refused() {
    let a = start("a").await;
    let mut b = start("b").await;
    let proxy = TcpListener::bind(loopback()).await.unwrap();
    let via = proxy.local_addr().unwrap();
    let recording = recording_proxy(proxy, b.peer().addr).await;
    // a dials b through the proxy and sends a frame: the recording holds Hello, Confirm and it.
    assert_eq!(a.stream.connect(via).await.unwrap().name, "b");
    a.stream
        .send(&b.peer(), Channel::Crdt, b"once".to_vec())
        .unwrap();
    assert_eq!(b.next().await.bytes, b"once");
    drop(a); // closes the proxied connection, so the recording ends
    let recorded = tokio::time::timeout(WAIT, recording)
        .await
        .unwrap()
        .unwrap();

    // Played back to b: b answers the old Hello with a fresh challenge, which the recorded
    // Confirm does not echo.
    let mut raw = TcpStream::connect(b.peer().addr).await.unwrap();
    raw.write_all(&recorded).await.unwrap();
    assert!(closed_by_peer(&mut raw).await);
    assert!(eventually(|| b.stream.stats().rejected(Reject::Replayed) == 1).await);
    assert_eq!(b.stream.stats().accepted, 1, "only the real connection");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.incoming.recv())
            .await
            .is_err(),
        "the recorded frame is not delivered again"
    );
}

#[tokio::test]
async fn the_dialler_refuses_another_name_at_the_address() {
    let a = start("a").await;
    let b = start("b").await;
    let impostor = Peer {
        name: "c".into(),
        addr: b.peer().addr,
    };
    let err = a
        .stream
        .request(&impostor, Channel::PushPull, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Handshake { .. }), "{err}");
    assert_eq!(a.stream.stats().rejected(Reject::WrongPeer), 1);
}

#[tokio::test]
async fn a_frame_over_the_cap_is_not_sent() {
    let a = start_with("a", Keyring::new("heck", &[KEY]), loopback(), |c| {
        c.max_frame = 1024
    })
    .await;
    let b = start("b").await;
    let err = a
        .stream
        .send(&b.peer(), Channel::Crdt, vec![0; 1025])
        .unwrap_err();
    assert!(matches!(
        err,
        StreamError::TooLarge {
            len: 1025,
            max: 1024
        }
    ));
    assert_eq!(a.stream.stats().dropped["too_large"], 1);
}

#[tokio::test]
async fn the_connection_is_redialled_after_the_peer_restarts() {
    let a = start("a").await;
    let mut b = start("b").await;
    let addr = b.peer().addr;
    a.stream
        .send(&b.peer(), Channel::Crdt, b"before".to_vec())
        .unwrap();
    assert_eq!(b.next().await.bytes, b"before");

    drop(b); // b stops: its listener and connections close
    let mut b = loop {
        // The port is free once the old listener's task has seen the cancellation.
        if let Ok(l) = TcpListener::bind(addr).await {
            drop(l);
            break start_with("b", Keyring::new("heck", &[KEY]), addr, |_| {}).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Frames sent before a notices the closed connection may be lost (the CRDT resends);
    // within the wait, one gets through on a new connection.
    let mut got = None;
    for _ in 0..100 {
        let _ = a.stream.send(&b.peer(), Channel::Crdt, b"after".to_vec());
        if let Ok(Some(f)) =
            tokio::time::timeout(Duration::from_millis(50), b.incoming.recv()).await
        {
            got = Some(f);
            break;
        }
    }
    assert_eq!(got.expect("delivered after the restart").bytes, b"after");
    assert_eq!(a.stream.stats().dialed, 2);
}

#[tokio::test]
async fn inbound_connections_beyond_the_limit_are_closed_at_once() {
    let b = start_with("b", Keyring::new("heck", &[KEY]), loopback(), |c| {
        c.max_inbound = 2
    })
    .await;
    // Two silent connections hold both slots (their handshakes wait up to io_timeout).
    let _one = TcpStream::connect(b.peer().addr).await.unwrap();
    let _two = TcpStream::connect(b.peer().addr).await.unwrap();
    let mut third = TcpStream::connect(b.peer().addr).await.unwrap();
    assert!(
        closed_by_peer(&mut third).await,
        "the third is closed at once"
    );
    assert_eq!(b.stream.stats().rejected(Reject::InboundLimit), 1);
    // A real peer gets in once a slot is free.
    drop(_one);
    let a = start("a").await;
    assert!(
        eventually(|| {
            let _ = a.stream.send(&b.peer(), Channel::Crdt, vec![]);
            b.stream.stats().accepted == 1
        })
        .await
    );
}

#[tokio::test]
async fn the_config_refuses_an_unspecified_advertised_address() {
    let c = Config::new("a", "0.0.0.0:7946".parse().unwrap());
    assert!(matches!(c.validate(), Err(StreamError::Config(_))));
}

#[test]
fn the_advertised_address_defaults_to_the_bind_address_unless_it_is_unspecified() {
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        heck_stream::advertise_addr(at("10.0.0.1:7946"), None),
        Ok(at("10.0.0.1:7946"))
    );
    assert_eq!(
        heck_stream::advertise_addr(at("0.0.0.0:7946"), Some(at("10.0.0.1:7946"))),
        Ok(at("10.0.0.1:7946"))
    );
    let refused = heck_stream::advertise_addr(at("0.0.0.0:7946"), None).unwrap_err();
    assert!(refused.contains("--advertise-addr"), "{refused}");
    assert!(heck_stream::advertise_addr(at("[::]:7946"), None).is_err());
}

#[tokio::test]
async fn frames_beyond_a_full_incoming_queue_are_dropped_and_counted() {
    let a = start("a").await;
    let mut b = start_with("b", Keyring::new("heck", &[KEY]), loopback(), |c| {
        c.incoming_queue = 1;
    })
    .await;
    for i in 0..3u8 {
        a.stream.send(&b.peer(), Channel::Crdt, vec![i]).unwrap();
    }
    assert!(eventually(|| b.stream.stats().dropped["incoming_full"] == 2).await);
    assert_eq!(
        b.next().await.bytes,
        [0],
        "the first one waits in the queue"
    );
    assert_eq!(b.stream.stats().received["crdt"].frames, 3);
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_dialled_again_on_demand() {
    let idle = |c: &mut Config| {
        c.io_timeout = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(100);
    };
    let a = start_with("a", Keyring::new("heck", &[KEY]), loopback(), idle).await;
    let mut b = start("b").await;
    a.stream.send(&b.peer(), Channel::Crdt, vec![1]).unwrap();
    assert_eq!(b.next().await.bytes, [1]);
    assert!(
        eventually(|| a.stream.peers().is_empty()).await,
        "the idle peer task ended"
    );
    a.stream.send(&b.peer(), Channel::Crdt, vec![2]).unwrap();
    assert_eq!(b.next().await.bytes, [2]);
    assert_eq!(a.stream.stats().dialed, 2);
}

#[tokio::test]
async fn frames_not_yet_consumed_hold_their_share_of_the_byte_budget() {
    let mut b = start_with("b", Keyring::new("heck", &[KEY]), loopback(), |c| {
        c.max_frame = 1024;
        c.max_buffered_bytes = c.max_sealed(); // room for one frame
        c.io_timeout = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(200);
    })
    .await;
    let a = start("a").await;
    a.stream
        .send(&b.peer(), Channel::Crdt, vec![1; 1000])
        .unwrap();
    a.stream
        .send(&b.peer(), Channel::Crdt, vec![2; 1000])
        .unwrap();
    let first = b.next().await;
    // The second frame's reader cannot get its share while the first is held: after the IO
    // timeout it gives up and closes the connection, without having allocated the frame.
    assert!(eventually(|| b.stream.stats().rejected(Reject::Timeout) == 1).await);
    assert_eq!(b.stream.stats().received["crdt"].frames, 1);
    drop(first);
    // With the budget free again, frames flow (on a new connection).
    let mut got = None;
    for _ in 0..100 {
        let _ = a.stream.send(&b.peer(), Channel::Crdt, vec![3]);
        if let Ok(Some(f)) =
            tokio::time::timeout(Duration::from_millis(50), b.incoming.recv()).await
        {
            got = Some(f);
            break;
        }
    }
    assert_eq!(got.expect("delivered once the budget is free").bytes, [3]);
}
