//! The handshake: each side proves it holds a key of the ring *now* and names itself.
//!
//! ```text
//!  dialer A                                             acceptor B
//!  Hello   { name_a, addr_a, challenge_a }        ──>   (sealed, domain "hello")
//!          <──   Welcome { name_b, addr_b, challenge_b, echo: challenge_a }   (domain "welcome")
//!  A: echo == challenge_a?  (else a replayed Welcome: reject)
//!  Confirm { echo: challenge_b }                  ──>   (domain "confirm")
//!                                                       B: echo == challenge_b? (else replay)
//!  both: data domains = "data" ‖ challenge_a ‖ challenge_b ‖ direction (0: A→B, 1: B→A)
//! ```
//! The challenges are 32 fresh random bytes from each side, so a recorded connection cannot
//! be replayed: a replayed Hello gets a new challenge it cannot answer, and a replayed Welcome
//! echoes an old one. Every frame after the handshake is bound to both challenges and a
//! direction, so it opens on this connection, in this direction, only.
//!
//! What a name is worth: every member of the cluster holds the key, so the handshake proves
//! "a member of this cluster", and the name is what that member says it is, exactly the trust
//! SWIM's packets carry. What it rules out is anyone without the key, a name taken from a
//! frame, and a recording played back.
use std::net::SocketAddr;
use std::time::Duration;

use heck_swim::Keyring;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{self, Opener, ReadError, Sealer};
use crate::{Peer, Reject};

/// The most bytes a handshake frame may have (a name of at most [`MAX_NAME`] bytes, an
/// address and two challenges, sealed): a stranger gets no bigger buffer than this.
pub const MAX_HANDSHAKE: usize = 1024;
/// The longest node name, in bytes.
pub const MAX_NAME: usize = 255;

const HELLO: &[u8] = b"heck-stream/1/hello";
const WELCOME: &[u8] = b"heck-stream/1/welcome";
const CONFIRM: &[u8] = b"heck-stream/1/confirm";
const DATA: &[u8] = b"heck-stream/1/data";

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    name: String,
    addr: SocketAddr,
    challenge: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    name: String,
    addr: SocketAddr,
    challenge: [u8; 32],
    echo: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
struct Confirm {
    echo: [u8; 32],
}

/// A finished handshake: who is on the other side and the two halves of the session.
pub(crate) struct Established {
    pub peer: Peer,
    pub sealer: Sealer,
    pub opener: Opener,
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(std::io::Error),
    Reject(Reject),
}

impl From<ReadError> for HandshakeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => HandshakeError::Io(e),
            ReadError::Reject(r) => HandshakeError::Reject(r),
            ReadError::Budget | ReadError::Idle => HandshakeError::Reject(Reject::Timeout),
        }
    }
}

impl From<Reject> for HandshakeError {
    fn from(r: Reject) -> Self {
        HandshakeError::Reject(r)
    }
}

async fn send<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    keyring: &Keyring,
    domain: &[u8],
    msg: &T,
) -> Result<(), HandshakeError> {
    let plain = postcard::to_allocvec(msg).map_err(|_| Reject::Internal)?;
    let sealed = keyring
        .seal_frame(domain, &plain, frame::random()?)
        .map_err(|_| Reject::Internal)?;
    frame::write_raw(w, &sealed)
        .await
        .map_err(HandshakeError::Io)
}

async fn receive<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
    keyring: &Keyring,
    domain: &[u8],
) -> Result<T, HandshakeError> {
    // The caller bounds the whole handshake with its IO timeout.
    let (sealed, ()) = frame::read_raw(r, MAX_HANDSHAKE, None, Duration::MAX, |_| async {
        Some(())
    })
    .await?;
    let plain = keyring
        .open_frame(domain, &sealed, MAX_HANDSHAKE)
        .map_err(|_| Reject::Unauthenticated)?;
    postcard::from_bytes(&plain).map_err(|_| HandshakeError::Reject(Reject::Malformed))
}

fn check_name(name: &str) -> Result<(), Reject> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Reject::Malformed);
    }
    Ok(())
}

fn data_domain(a: &[u8; 32], b: &[u8; 32], direction: u8) -> Vec<u8> {
    let mut d = Vec::with_capacity(DATA.len() + 65);
    d.extend_from_slice(DATA);
    d.extend_from_slice(a);
    d.extend_from_slice(b);
    d.push(direction);
    d
}

/// The dialer's side. `expect`: the name the caller believes is at that address, if any; a
/// different name is [`Reject::WrongPeer`] (a process restarted under another name).
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    keyring: &Keyring,
    me: &Peer,
    expect: Option<&str>,
    max_sealed: usize,
) -> Result<Established, HandshakeError> {
    let challenge_a: [u8; 32] = frame::random()?;
    let hello = Hello {
        name: me.name.clone(),
        addr: me.addr,
        challenge: challenge_a,
    };
    send(s, keyring, HELLO, &hello).await?;
    let welcome: Welcome = receive(s, keyring, WELCOME).await?;
    if welcome.echo != challenge_a {
        return Err(Reject::Replayed.into());
    }
    check_name(&welcome.name)?;
    if expect.is_some_and(|e| e != welcome.name) {
        return Err(Reject::WrongPeer.into());
    }
    send(
        s,
        keyring,
        CONFIRM,
        &Confirm {
            echo: welcome.challenge,
        },
    )
    .await?;
    Ok(Established {
        peer: Peer {
            name: welcome.name,
            addr: welcome.addr,
        },
        sealer: Sealer::new(
            keyring.clone(),
            data_domain(&challenge_a, &welcome.challenge, 0),
        ),
        opener: Opener::new(
            keyring.clone(),
            data_domain(&challenge_a, &welcome.challenge, 1),
            max_sealed,
        ),
    })
}

/// The acceptor's side.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    keyring: &Keyring,
    me: &Peer,
    max_sealed: usize,
) -> Result<Established, HandshakeError> {
    let hello: Hello = receive(s, keyring, HELLO).await?;
    check_name(&hello.name)?;
    let challenge_b: [u8; 32] = frame::random()?;
    let welcome = Welcome {
        name: me.name.clone(),
        addr: me.addr,
        challenge: challenge_b,
        echo: hello.challenge,
    };
    send(s, keyring, WELCOME, &welcome).await?;
    let confirm: Confirm = receive(s, keyring, CONFIRM).await?;
    if confirm.echo != challenge_b {
        return Err(Reject::Replayed.into());
    }
    Ok(Established {
        peer: Peer {
            name: hello.name,
            addr: hello.addr,
        },
        sealer: Sealer::new(
            keyring.clone(),
            data_domain(&hello.challenge, &challenge_b, 1),
        ),
        opener: Opener::new(
            keyring.clone(),
            data_domain(&hello.challenge, &challenge_b, 0),
            max_sealed,
        ),
    })
}
