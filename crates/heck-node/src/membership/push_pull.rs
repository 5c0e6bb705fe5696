//! SWIM push-pull in the agent: the IO half of `heck_swim::push_pull`, over the authenticated
//! stream (`heck_stream`, channel `PushPull`).
//!
//! Invariant: the SWIM loop never waits on the network for a push-pull. An exchange we start
//! runs in its own task (at most [`MAX_IN_FLIGHT`] at once; more are skipped and counted) and
//! hands its outcome back through a channel the loop polls; a request from a peer is answered
//! with a non-blocking queue push.
//!
//! ```text
//!  initiator (Effect::PushPull { to, join })             peer (its membership loop)
//!    state = swim.local_state()
//!    spawn: dial `to` (a seed: learn its name from the handshake)
//!    ──request(PushPull, postcard { join, state })──────> decode (bounded), from == handshake name?
//!                                                         reply = swim.local_state()   (before the merge)
//!    <──────────────────────────response(postcard reply)── then swim.handle_push_pull(state, join)
//!    reply.from == handshake name? ─> loop: swim.handle_push_pull(reply, join)
//!  the whole exchange within PUSH_PULL_TIMEOUT (memberlist's TCPTimeout, 10 s)
//! ```
//! Anything that does not decode, lists more than [`MAX_MEMBERS`] members, or names a sender
//! other than the one the stream authenticated is dropped and counted, never merged.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use heck_stream::{Channel, Peer, Stream};
use heck_swim::PushPullState;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Push-pulls we started and still wait for. memberlist runs them one at a time from its timer;
/// a few at once let a join to several seeds proceed in parallel, and the bound keeps a dead
/// peer (each exchange waits up to [`PUSH_PULL_TIMEOUT`]) from piling up tasks.
pub(super) const MAX_IN_FLIGHT: usize = 4;

/// Longest a push-pull we start may take, dial and handshake included (memberlist's LAN
/// TCPTimeout).
pub(super) const PUSH_PULL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most members one state may list. The stream already caps a frame's bytes (4 MiB by default);
/// this caps what a decoded state costs the merge. A member encodes to ~30 bytes, so 65,536
/// members fit in a frame with room to spare, far above any cluster SWIM serves.
pub(super) const MAX_MEMBERS: usize = 65_536;

/// What the initiator sends: its state, and whether the exchange is part of its join (so the
/// peer counts it apart, as the initiator does).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    pub(super) join: bool,
    pub(super) state: PushPullState<SocketAddr>,
}

/// Why a received state was not merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not a valid postcard encoding of the expected message.
    Malformed,
    /// More than [`MAX_MEMBERS`] members.
    TooManyMembers,
    /// `from` is not the name the stream handshake authenticated.
    WrongSender,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Malformed => "malformed",
            Refused::TooManyMembers => "too many members",
            Refused::WrongSender => "sender is not the authenticated peer",
        })
    }
}

fn check(state: &PushPullState<SocketAddr>, peer: &str) -> Result<(), Refused> {
    if state.members.len() > MAX_MEMBERS {
        return Err(Refused::TooManyMembers);
    }
    if state.from != peer {
        return Err(Refused::WrongSender);
    }
    Ok(())
}

/// Decode a request that `peer` (the authenticated name) sent.
pub(super) fn decode_request(bytes: &[u8], peer: &str) -> Result<Request, Refused> {
    let req: Request = postcard::from_bytes(bytes).map_err(|_| Refused::Malformed)?;
    check(&req.state, peer)?;
    Ok(req)
}

/// Decode the reply that `peer` (the authenticated name) sent.
pub(super) fn decode_reply(bytes: &[u8], peer: &str) -> Result<PushPullState<SocketAddr>, Refused> {
    let state: PushPullState<SocketAddr> =
        postcard::from_bytes(bytes).map_err(|_| Refused::Malformed)?;
    check(&state, peer)?;
    Ok(state)
}

/// Push-pull counters, for `/v1/node` and `/metrics`.
#[derive(Debug, Default)]
pub struct PushPullStats {
    /// Exchanges we started whose reply was merged.
    pub succeeded: AtomicU64,
    /// Exchanges we started that failed: unreachable, refused, timed out, or a reply that was
    /// not merged (those are also counted below by reason).
    pub failed: AtomicU64,
    /// Exchanges not started because [`MAX_IN_FLIGHT`] were already running (the timer or the
    /// next announce retries).
    pub skipped_busy: AtomicU64,
    /// Requests from peers merged (and answered, unless also counted in `reply_failed`).
    pub served: AtomicU64,
    /// Requests we could not answer (state too large for a frame, the reply queue full or
    /// closed); their state is still merged.
    pub reply_failed: AtomicU64,
    /// States (requests or replies) dropped because they did not decode.
    pub malformed: AtomicU64,
    /// States dropped because they listed more than [`MAX_MEMBERS`] members.
    pub too_many_members: AtomicU64,
    /// States dropped because their sender was not the authenticated peer.
    pub wrong_sender: AtomicU64,
}

impl PushPullStats {
    pub(super) fn refused(&self, why: Refused) {
        let c = match why {
            Refused::Malformed => &self.malformed,
            Refused::TooManyMembers => &self.too_many_members,
            Refused::WrongSender => &self.wrong_sender,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A plain copy, for the API.
    pub fn snapshot(&self) -> PushPullCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PushPullCounts {
            succeeded: g(&self.succeeded),
            failed: g(&self.failed),
            skipped_busy: g(&self.skipped_busy),
            served: g(&self.served),
            reply_failed: g(&self.reply_failed),
            malformed: g(&self.malformed),
            too_many_members: g(&self.too_many_members),
            wrong_sender: g(&self.wrong_sender),
        }
    }
}

/// [`PushPullStats`] at one moment (field meanings there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct PushPullCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped_busy: u64,
    pub served: u64,
    pub reply_failed: u64,
    pub malformed: u64,
    pub too_many_members: u64,
    pub wrong_sender: u64,
}

/// How an exchange we started ended.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) to: SocketAddr,
    pub(super) join: bool,
    pub(super) result: Result<PushPullState<SocketAddr>, Failure>,
}

/// Why an exchange we started gave nothing to merge.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request could not be encoded (never expected: the types are plain data).
    Encode,
    /// The stream failed: unreachable, refused handshake, closed, too large.
    Stream(heck_stream::StreamError),
    /// No reply within [`PUSH_PULL_TIMEOUT`].
    Timeout,
    /// A reply that was not merged.
    Refused(Refused),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Encode => f.write_str("cannot encode our state"),
            Failure::Stream(e) => write!(f, "{e}"),
            Failure::Timeout => write!(f, "no reply within {PUSH_PULL_TIMEOUT:?}"),
            Failure::Refused(r) => write!(f, "reply refused: {r}"),
        }
    }
}

/// The exchanges we started: spawned tasks, and the channel their outcomes come back on.
#[derive(Debug)]
pub(super) struct PushPulls {
    stream: Stream,
    in_flight: usize,
    tx: mpsc::Sender<Outcome>,
    rx: mpsc::Receiver<Outcome>,
}

impl PushPulls {
    pub(super) fn new(stream: Stream) -> PushPulls {
        // Each task sends exactly one outcome and at most MAX_IN_FLIGHT run: never full.
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        PushPulls {
            stream,
            in_flight: 0,
            tx,
            rx,
        }
    }

    /// Start an exchange with `to` (whose name we know if it is a member; a seed's comes from
    /// the handshake). Returns false when too many are running (the caller counts it).
    pub(super) fn start(
        &mut self,
        to: SocketAddr,
        name: Option<String>,
        join: bool,
        state: PushPullState<SocketAddr>,
    ) -> bool {
        if self.in_flight >= MAX_IN_FLIGHT {
            return false;
        }
        self.in_flight += 1;
        let stream = self.stream.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                PUSH_PULL_TIMEOUT,
                exchange(&stream, to, name, join, state),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Failure::Timeout),
            };
            // The receiver lives as long as the loop; if it is gone there is nobody to tell.
            let _ = tx.send(Outcome { to, join, result }).await;
        });
        true
    }

    /// The next outcome of an exchange we started (pending forever when none runs).
    pub(super) async fn next(&mut self) -> Option<Outcome> {
        let outcome = self.rx.recv().await;
        if outcome.is_some() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        outcome
    }
}

async fn exchange(
    stream: &Stream,
    to: SocketAddr,
    name: Option<String>,
    join: bool,
    state: PushPullState<SocketAddr>,
) -> Result<PushPullState<SocketAddr>, Failure> {
    let bytes = postcard::to_allocvec(&Request { join, state }).map_err(|_| Failure::Encode)?;
    // A member's name is checked by the handshake (another name there is refused); a seed is
    // known only by address, so its handshake tells us who it is.
    let peer = match name {
        Some(name) => Peer { name, addr: to },
        None => stream.connect(to).await.map_err(Failure::Stream)?,
    };
    let reply = stream
        .request(&peer, Channel::PushPull, bytes)
        .await
        .map_err(Failure::Stream)?;
    decode_reply(&reply, &peer.name).map_err(Failure::Refused)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use heck_swim::{Member, State};

    fn state(from: &str, n: usize) -> PushPullState<SocketAddr> {
        PushPullState {
            from: from.into(),
            members: (0..n)
                .map(|i| Member {
                    name: format!("n{i}"),
                    addr: SocketAddr::from(([127, 0, 0, 1], (i % 50_000) as u16 + 1)),
                    incarnation: 1,
                    state: State::Alive,
                })
                .collect(),
        }
    }

    #[test]
    fn a_request_from_the_authenticated_peer_decodes() {
        let bytes = postcard::to_allocvec(&Request {
            join: true,
            state: state("a", 3),
        })
        .unwrap();
        let req = decode_request(&bytes, "a").unwrap();
        assert!(req.join);
        assert_eq!(req.state, state("a", 3));
    }

    #[test]
    fn a_state_naming_another_sender_than_the_handshake_is_refused() {
        let bytes = postcard::to_allocvec(&state("mallory", 2)).unwrap();
        assert_eq!(decode_reply(&bytes, "a"), Err(Refused::WrongSender));
        let bytes = postcard::to_allocvec(&Request {
            join: false,
            state: state("mallory", 2),
        })
        .unwrap();
        assert_eq!(
            decode_request(&bytes, "a").map(|_| ()),
            Err(Refused::WrongSender)
        );
    }

    #[test]
    fn a_state_listing_more_than_the_cap_is_refused() {
        let bytes = postcard::to_allocvec(&state("a", MAX_MEMBERS + 1)).unwrap();
        assert_eq!(decode_reply(&bytes, "a"), Err(Refused::TooManyMembers));
    }

    #[test]
    fn garbage_truncations_and_a_huge_length_are_malformed_not_a_panic() {
        let bytes = postcard::to_allocvec(&Request {
            join: false,
            state: state("a", 5),
        })
        .unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_request(&bytes[..cut], "a").map(|_| ()),
                Err(Refused::Malformed),
                "cut at {cut}"
            );
        }
        // A name of 2^32 bytes announced in 6 bytes: refused without allocating it.
        let huge = [0x01, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(decode_reply(&huge, "a"), Err(Refused::Malformed));
    }
}

/// The serving side against a real member loop, with a test peer on the stream.
#[cfg(test)]
mod serve_tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use heck_stream::{Channel, Peer, Stream};
    use heck_swim::{Keyring, Member, PushPullState, State};
    use tokio_util::sync::CancellationToken;

    use super::Request;
    use crate::membership::{self, MembershipConfig, MembershipView};

    fn keyring() -> Keyring {
        Keyring::new("serve-test", &[[7; 32]])
    }

    /// A stream endpoint named `name` that gives up on a request after ~2 s.
    async fn peer(name: &str, shutdown: &CancellationToken) -> Stream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = heck_stream::Config::new(name, addr);
        config.dial_timeout = std::time::Duration::from_secs(1);
        config.io_timeout = std::time::Duration::from_secs(1);
        config.idle_timeout = std::time::Duration::from_secs(1);
        Stream::start(config, keyring(), listener, shutdown.clone())
            .unwrap()
            .0
    }

    fn state(from: &str, addr: std::net::SocketAddr) -> PushPullState<std::net::SocketAddr> {
        PushPullState {
            from: from.into(),
            members: vec![Member {
                name: from.into(),
                addr,
                incarnation: 1,
                state: State::Alive,
            }],
        }
    }

    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_answers_with_its_state_before_the_merge_and_drops_forged_or_malformed_states()
    {
        let shutdown = CancellationToken::new();
        let sockets = membership::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = sockets.local_addr().unwrap();
        let view = Arc::new(MembershipView::default());
        let config = MembershipConfig {
            node_name: heck_check::NodeName::new("a").unwrap(),
            gossip_addr: addr,
            advertise_addr: addr,
            join: vec![],
            cluster: heck_cluster::Config::fast(),
            keyring: keyring(),
            data_dir: None,
        };
        let task = tokio::spawn(membership::run(
            config,
            sockets,
            view.clone(),
            shutdown.clone(),
        ));
        let mallory = peer("mallory", &shutdown).await;
        let a = Peer {
            name: "a".into(),
            addr,
        };
        let me = mallory.local().addr;

        // Garbage: dropped, counted, no answer.
        let garbage = mallory.request(&a, Channel::PushPull, vec![0xff; 64]).await;
        assert!(garbage.is_err());
        assert!(eventually(|| view.push_pull_stats().malformed == 1).await);

        // A state that claims another sender than the handshake's: dropped, never merged.
        let forged = postcard::to_allocvec(&Request {
            join: false,
            state: state("bob", me),
        })
        .unwrap();
        assert!(
            mallory
                .request(&a, Channel::PushPull, forged)
                .await
                .is_err()
        );
        assert!(eventually(|| view.push_pull_stats().wrong_sender == 1).await);
        assert!(view.members().iter().all(|m| m.name != "bob"));

        // An honest join push-pull: the reply is `a`'s state before it merged ours.
        let honest = postcard::to_allocvec(&Request {
            join: true,
            state: state("mallory", me),
        })
        .unwrap();
        let reply = mallory
            .request(&a, Channel::PushPull, honest)
            .await
            .unwrap();
        let reply: PushPullState<std::net::SocketAddr> = postcard::from_bytes(&reply).unwrap();
        assert_eq!(reply.from, "a");
        let names: Vec<&str> = reply.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        assert!(eventually(|| view.members().iter().any(|m| m.name == "mallory")).await);
        let stats = view.push_pull_stats();
        assert_eq!((stats.served, stats.reply_failed), (1, 0));
        assert_eq!(view.swim_stats().join_push_pulls, 1);

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
