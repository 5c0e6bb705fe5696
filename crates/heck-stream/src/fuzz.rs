//! Fuzzing the stream's decoders, from inside the crate (they are private): the frame length
//! prefix ([`frame::read_raw`]), data frames ([`Opener::open`], and behind the AEAD its header
//! parser, fed arbitrary plaintext sealed with the right key), and the handshake messages
//! ([`handshake::accept`] reading a Hello, [`handshake::dial`] reading a Welcome), each with
//! arbitrary bytes, mutated valid frames (bit flips, byte replacements, insertions, deletions),
//! every truncation and lengths at their limits. Asserted: no panic; an error wherever the input
//! must be invalid, of the kind that is counted; allocation bounded by the caps (a counting
//! allocator in this test binary only); valid frames round trip.
//!
//! Short mode: `cargo test -p heck-stream --lib fuzz` (proptest's default 256 cases).
//! Long mode: `PROPTEST_CASES=1000000 cargo test --release -p heck-stream --lib fuzz`
//! (see `docs/reliability.md`).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use heck_swim::Keyring;
use heck_swim::wire::{OVERHEAD, VERSION};
use heck_testkit::{allocated_by, mutate, mutations};
use proptest::prelude::*;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frame::{self, Frame, Kind, Opener, ReadError, Sealer};
use crate::handshake::{self, HandshakeError, MAX_HANDSHAKE};
use crate::{Channel, HEADER, Peer, Reject};

heck_testkit::count_allocations!();

/// Slack for other threads' allocations that a measurement may still include: far below any
/// claimed length under test (at least 65,000), so a decoder that allocated a claim still fails.
const NOISE: usize = 16 * 1024;

/// The handshake's domains, as `handshake.rs` spells them (a test below proves they match).
const HELLO: &[u8] = b"heck-stream/1/hello";
const WELCOME: &[u8] = b"heck-stream/1/welcome";
/// The data cap of these tests' connections (sealed bytes).
const MAX_SEALED: usize = 4096;
const DOMAIN: &[u8] = b"fuzz-direction";

fn ring() -> Keyring {
    Keyring::new("fuzz", &[[3; 32]])
}

fn me() -> Peer {
    Peer {
        name: "me".into(),
        addr: "127.0.0.1:7946".parse().unwrap(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A connection whose other side sent `input` and then closed; what we write is kept.
struct Wire<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.output).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_shutdown(cx)
    }
}

/// A frame on the wire: 4-byte big-endian length, then the sealed bytes.
fn framed(sealed: &[u8]) -> Vec<u8> {
    let mut out = (sealed.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(sealed);
    out
}

/// The Hello and Welcome as `handshake.rs` declares them (same fields, same order: postcard
/// encodes them identically).
#[derive(Debug, Clone, Serialize)]
struct Hello {
    name: String,
    addr: SocketAddr,
    challenge: [u8; 32],
}

#[derive(Debug, Clone, Serialize)]
struct Welcome {
    name: String,
    addr: SocketAddr,
    challenge: [u8; 32],
    echo: [u8; 32],
}

/// How the acceptor ended on `input`, and whether it answered (wrote a Welcome). Past a valid
/// Hello it answers and waits for a Confirm that never comes: an IO error (end of input).
fn accept_on(rt: &tokio::runtime::Runtime, input: &[u8]) -> (Result<(), HandshakeError>, bool) {
    let mut wire = Wire {
        input,
        output: Vec::new(),
    };
    let r = rt
        .block_on(handshake::accept(&mut wire, &ring(), &me(), MAX_SEALED))
        .map(|_| ());
    (r, !wire.output.is_empty())
}

fn dial_on(rt: &tokio::runtime::Runtime, input: &[u8]) -> Result<(), HandshakeError> {
    let mut wire = Wire {
        input,
        output: Vec::new(),
    };
    rt.block_on(handshake::dial(&mut wire, &ring(), &me(), None, MAX_SEALED))
        .map(|_| ())
}

fn is_eof(r: &Result<(), HandshakeError>) -> bool {
    matches!(r, Err(HandshakeError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

fn is_reject(r: &Result<(), HandshakeError>, want: Reject) -> bool {
    matches!(r, Err(HandshakeError::Reject(got)) if *got == want)
}

fn hello_frame(name: &str, nonce: [u8; 24]) -> Vec<u8> {
    let hello = Hello {
        name: name.into(),
        addr: "10.0.0.1:7946".parse().unwrap(),
        challenge: [5; 32],
    };
    let plain = postcard::to_allocvec(&hello).unwrap();
    framed(&ring().seal_frame(HELLO, &plain, nonce).unwrap())
}

/// What `Opener::open` must make of `plain` (sealed correctly) as the first frame.
fn expected_open(plain: &[u8]) -> Result<Frame, Reject> {
    if plain.len() < HEADER {
        return Err(Reject::Malformed);
    }
    if plain[..8] != [0; 8] {
        return Err(Reject::Replayed);
    }
    let kind = match plain[8] {
        0 => Kind::OneWay,
        1 => Kind::Request,
        2 => Kind::Response,
        _ => return Err(Reject::Malformed),
    };
    let channel = match plain[9] {
        1 => Channel::PushPull,
        2 => Channel::Crdt,
        _ => return Err(Reject::Malformed),
    };
    Ok(Frame {
        kind,
        channel,
        id: u64::from_be_bytes(plain[10..18].try_into().unwrap()),
        payload: plain[HEADER..].to_vec(),
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::OneWay),
        Just(Kind::Request),
        Just(Kind::Response)
    ]
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![Just(Channel::PushPull), Just(Channel::Crdt)]
}

/// Read one frame from `input` with cap `max`; also says whether (and with what) the budget
/// was asked.
fn read_on(
    rt: &tokio::runtime::Runtime,
    input: &[u8],
    max: usize,
) -> (Result<Vec<u8>, ReadError>, Option<usize>) {
    let mut input = input;
    let mut reserved = None;
    let r = rt.block_on(frame::read_raw(
        &mut input,
        max,
        None,
        Duration::from_secs(5),
        |len| {
            reserved = Some(len);
            async { Some(()) }
        },
    ));
    (r.map(|(buf, ())| buf), reserved)
}

#[test]
fn lengths_at_their_limits_are_checked_before_anything_is_reserved_or_allocated() {
    let rt = runtime();
    let max = MAX_SEALED;
    let body = vec![0xA5; max + 1];
    let cases = [
        0,
        1,
        OVERHEAD - 1,
        OVERHEAD,
        max - 1,
        max,
        max + 1,
        u32::MAX as usize,
    ];
    for len in cases {
        let input = [&(len as u32).to_be_bytes()[..], &body].concat();
        let ((r, reserved), allocated) = allocated_by(|| read_on(&rt, &input, max));
        if len > max {
            assert!(
                matches!(r, Err(ReadError::Reject(Reject::Oversized))),
                "{len}"
            );
            assert_eq!(reserved, None, "{len}: nothing reserved");
            assert!(allocated < NOISE, "{len}: {allocated} bytes allocated");
        } else if len < OVERHEAD {
            assert!(
                matches!(r, Err(ReadError::Reject(Reject::Malformed))),
                "{len}"
            );
            assert_eq!(reserved, None, "{len}: nothing reserved");
            assert!(allocated < NOISE, "{len}: {allocated} bytes allocated");
        } else {
            assert_eq!(r.unwrap(), body[..len], "{len}");
            assert_eq!(reserved, Some(len));
            assert!(
                allocated < len + NOISE,
                "{len}: {allocated} bytes allocated"
            );
        }
        // The same length with the body cut short: an IO error, never a frame.
        if (OVERHEAD..=max).contains(&len) {
            let cut = [&(len as u32).to_be_bytes()[..], &body[..len - 1]].concat();
            let (r, _) = read_on(&rt, &cut, max);
            assert!(matches!(r, Err(ReadError::Io(_))), "{len} cut short");
        }
    }
    // A handshake frame at its cap passes the length check; one byte more does not.
    let at = [
        &(MAX_HANDSHAKE as u32).to_be_bytes()[..],
        &body[..MAX_HANDSHAKE],
    ]
    .concat();
    assert!(is_reject(&accept_on(&rt, &at).0, Reject::Unauthenticated));
    let over = [
        &(MAX_HANDSHAKE as u32 + 1).to_be_bytes()[..],
        &body[..MAX_HANDSHAKE + 1],
    ]
    .concat();
    assert!(is_reject(&accept_on(&rt, &over).0, Reject::Oversized));
}

#[test]
fn a_valid_hello_gets_an_answer_and_a_name_out_of_range_is_malformed() {
    let rt = runtime();
    // The mirrored Hello and domain are what the acceptor reads: it answers and waits.
    for name in ["peer".to_string(), "n".repeat(255)] {
        let (r, answered) = accept_on(&rt, &hello_frame(&name, [1; 24]));
        assert!(is_eof(&r) && answered, "{name}");
    }
    for name in [String::new(), "n".repeat(256)] {
        let (r, answered) = accept_on(&rt, &hello_frame(&name, [1; 24]));
        assert!(is_reject(&r, Reject::Malformed) && !answered, "{name}");
    }
    // Every truncation of a valid Hello frame ends the connection unanswered (the length or
    // the body never arrives whole).
    let good = hello_frame("peer", [2; 24]);
    for len in 0..good.len() {
        let (r, answered) = accept_on(&rt, &good[..len]);
        assert!(is_eof(&r) && !answered, "cut to {len}: {:?}", r.err());
    }
}

#[test]
fn a_valid_welcome_with_a_stale_echo_is_a_replay() {
    let rt = runtime();
    let welcome = Welcome {
        name: "peer".into(),
        addr: "10.0.0.2:7946".parse().unwrap(),
        challenge: [6; 32],
        echo: [7; 32],
    };
    let plain = postcard::to_allocvec(&welcome).unwrap();
    let frame = framed(&ring().seal_frame(WELCOME, &plain, [4; 24]).unwrap());
    assert!(is_reject(&dial_on(&rt, &frame), Reject::Replayed));
}

proptest! {
    #[test]
    fn any_byte_stream_is_read_as_its_length_says_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        max in prop_oneof![Just(OVERHEAD), Just(256usize), Just(MAX_SEALED)],
    ) {
        let rt = runtime();
        let ((r, reserved), allocated) = allocated_by(|| read_on(&rt, &bytes, max));
        prop_assert!(allocated < NOISE + bytes.len(), "{} bytes allocated", allocated);
        let Some(prefix) = bytes.get(..4) else {
            prop_assert!(matches!(r, Err(ReadError::Io(_))));
            prop_assert_eq!(reserved, None);
            return Ok(());
        };
        let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        match r {
            Ok(buf) => {
                prop_assert!((OVERHEAD..=max).contains(&len));
                prop_assert_eq!(&buf[..], &bytes[4..4 + len]);
            }
            Err(ReadError::Reject(Reject::Oversized)) => prop_assert!(len > max),
            Err(ReadError::Reject(Reject::Malformed)) => prop_assert!(len < OVERHEAD),
            Err(ReadError::Io(_)) => prop_assert!(bytes.len() - 4 < len && reserved == Some(len)),
            Err(_) => prop_assert!(false, "unexpected error"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_open_as_a_data_frame(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        versioned in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if versioned && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        let mut o = Opener::new(ring(), DOMAIN.to_vec(), MAX_SEALED);
        let (r, allocated) = allocated_by(|| o.open(&bytes));
        prop_assert_eq!(r, Err(Reject::Unauthenticated));
        prop_assert!(allocated < NOISE + bytes.len(), "{} bytes allocated", allocated);
    }

    #[test]
    fn data_frames_round_trip_and_every_mutation_or_truncation_is_refused(
        k in kind(),
        ch in channel(),
        id in any::<u64>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        edits in mutations(),
    ) {
        let mut s = Sealer::new(ring(), DOMAIN.to_vec());
        let sealed = s.seal(k, ch, id, &payload).unwrap();
        prop_assert_eq!(sealed.len(), OVERHEAD + HEADER + payload.len());
        let fresh = || Opener::new(ring(), DOMAIN.to_vec(), MAX_SEALED);
        let want = Frame { kind: k, channel: ch, id, payload: payload.clone() };
        prop_assert_eq!(fresh().open(&sealed), Ok(want));
        let bad = mutate(&sealed, &edits);
        if bad != sealed {
            prop_assert!(fresh().open(&bad).is_err());
        }
        for len in 0..sealed.len() {
            prop_assert!(fresh().open(&sealed[..len]).is_err(), "cut to {}", len);
        }
        // Over the opener's cap: refused before decrypting.
        let tight = Opener::new(ring(), DOMAIN.to_vec(), sealed.len() - 1).open(&sealed);
        prop_assert_eq!(tight, Err(Reject::Unauthenticated));
    }

    #[test]
    fn arbitrary_plaintext_behind_a_valid_tag_is_parsed_exactly_as_the_header_says(
        plain in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Mostly a header with seq 0 and small kind and channel bytes, to reach past it.
            (0u8..4, 0u8..4, any::<u64>(), prop::collection::vec(any::<u8>(), 0..32))
                .prop_map(|(k, c, id, p)| {
                    [&[0u8; 8][..], &[k, c], &id.to_be_bytes(), &p].concat()
                }),
        ],
    ) {
        let sealed = ring().seal_frame(DOMAIN, &plain, [8; 24]).unwrap();
        let mut o = Opener::new(ring(), DOMAIN.to_vec(), MAX_SEALED);
        prop_assert_eq!(o.open(&sealed), expected_open(&plain));
    }

    #[test]
    fn arbitrary_bytes_never_complete_a_handshake(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        prefix_len in any::<bool>(),
    ) {
        let rt = runtime();
        let mut bytes = bytes;
        if prefix_len && bytes.len() >= 4 {
            // A length that fits, so the sealed part is read and tried.
            let len = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&len.to_be_bytes());
        }
        let ((r, answered), allocated) = allocated_by(|| accept_on(&rt, &bytes));
        prop_assert!(r.is_err() && !answered);
        if prefix_len && bytes.len() >= 4 + OVERHEAD {
            prop_assert!(is_reject(&r, Reject::Unauthenticated), "{:?}", r.err());
        }
        prop_assert!(allocated < 4 * MAX_HANDSHAKE + NOISE, "{} bytes allocated", allocated);
        prop_assert!(dial_on(&rt, &bytes).is_err());
    }

    #[test]
    fn a_mutated_hello_frame_is_refused(edits in mutations(), nonce in any::<[u8; 24]>()) {
        let rt = runtime();
        let good = hello_frame("peer", nonce);
        let bad = mutate(&good, &edits);
        let (r, answered) = accept_on(&rt, &bad);
        // Any change to the frame fails the length check, the tag, or leaves it short:
        // unanswered. Bytes appended after a whole frame are the next frame's (never read).
        prop_assert_eq!(answered, bad.starts_with(&good), "{:?}", r.err());
        prop_assert!(r.is_err());
    }

    #[test]
    fn arbitrary_handshake_plaintext_is_malformed_unless_it_is_a_hello(
        plain in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..96),
            // A name length and name, then random bytes for the address and challenge.
            (0u8..8, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(n, rest)| {
                [&[n][..], &b"abcdefgh"[..n as usize], &rest].concat()
            }),
            // A valid Hello, mutated: mostly still a Hello, often with an edge broken.
            ("[a-z]{0,4}", any::<SocketAddr>(), any::<[u8; 32]>(), mutations()).prop_map(
                |(name, addr, challenge, edits)| {
                    let hello = Hello { name, addr, challenge };
                    mutate(&postcard::to_allocvec(&hello).unwrap(), &edits)
                }
            ),
        ],
    ) {
        let rt = runtime();
        let frame = framed(&ring().seal_frame(HELLO, &plain, [9; 24]).unwrap());
        let (r, answered) = accept_on(&rt, &frame);
        // A Hello that decodes and has a name of 1..=255 bytes is answered (then EOF);
        // anything else is refused as malformed, unanswered.
        prop_assert!((is_eof(&r) && answered) || (is_reject(&r, Reject::Malformed) && !answered),
            "{:?}", r.err());
        // As a Welcome, at the dialer: it never passes (the echo is never our challenge).
        let frame = framed(&ring().seal_frame(WELCOME, &plain, [9; 24]).unwrap());
        let r = dial_on(&rt, &frame);
        prop_assert!(is_reject(&r, Reject::Malformed) || is_reject(&r, Reject::Replayed),
            "{:?}", r.err());
    }
}
