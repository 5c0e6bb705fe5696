//! Frames on the wire: a 4-byte length, then bytes sealed by the key ring.
//!
//! ```text
//!  [len: u32 BE][version 1][nonce 24][ciphertext of plain + tag 16]
//!  plain (after the handshake) = [seq u64 BE][kind u8][channel u8][id u64 BE][payload]
//!  associated data = version ‖ 0xFF ‖ len(domain) ‖ domain ‖ cluster name   (Keyring::seal_frame)
//! ```
//! The length is checked against the cap for the connection's phase *before* a byte of the
//! body is allocated. After the handshake the domain is one direction of one connection
//! (both challenges and a direction byte), and `seq` must be exactly the next one: a frame
//! from another connection, the other direction, replayed or reordered, does not open.
use heck_swim::Keyring;
use heck_swim::wire::OVERHEAD;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Channel, Reject};

/// Bytes of the plain header of a data frame: seq, kind, channel, request id.
pub const HEADER: usize = 8 + 1 + 1 + 8;

/// What a data frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No answer expected.
    OneWay = 0,
    /// Answer with a `Response` carrying the same id.
    Request = 1,
    /// The answer to the request with this id.
    Response = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::OneWay),
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            _ => None,
        }
    }
}

/// One opened data frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: Kind,
    pub channel: Channel,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// Read one length-prefixed frame of at most `max` sealed bytes. The length is checked before
/// anything is allocated; `reserve` is called with the length first, so the caller can take
/// a share of a memory budget before the buffer exists. The length must arrive within `idle`
/// (if given: how long a connection may sit silent), the body within `body` after it.
pub(crate) async fn read_raw<R, T, F>(
    r: &mut R,
    max: usize,
    idle: Option<Duration>,
    body: Duration,
    reserve: impl FnOnce(usize) -> F,
) -> Result<(Vec<u8>, T), ReadError>
where
    R: AsyncRead + Unpin,
    F: std::future::Future<Output = Option<T>>,
{
    let mut len = [0u8; 4];
    match idle {
        Some(idle) => tokio::time::timeout(idle, r.read_exact(&mut len))
            .await
            .map_err(|_| ReadError::Idle)?,
        None => r.read_exact(&mut len).await,
    }
    .map_err(ReadError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ReadError::Reject(Reject::Oversized));
    }
    if len < OVERHEAD {
        return Err(ReadError::Reject(Reject::Malformed));
    }
    let token = reserve(len).await.ok_or(ReadError::Budget)?;
    let mut buf = vec![0u8; len];
    tokio::time::timeout(body, r.read_exact(&mut buf))
        .await
        .map_err(|_| ReadError::Reject(Reject::Timeout))?
        .map_err(ReadError::Io)?;
    Ok((buf, token))
}

/// Write one length-prefixed frame (the caller has sealed it and checked its size).
pub(crate) async fn write_raw<W: AsyncWrite + Unpin>(
    w: &mut W,
    sealed: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(sealed.len())
        .map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
    // One buffer, one write: a frame never leaves half-written by a second syscall's failure
    // more often than necessary, and small frames go out in one segment.
    let mut out = Vec::with_capacity(4 + sealed.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(sealed);
    w.write_all(&out).await?;
    w.flush().await
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The bytes are not acceptable.
    Reject(Reject),
    /// No share of the memory budget came in time.
    Budget,
    /// Nothing arrived for the idle time.
    Idle,
}

/// Fresh random bytes for a nonce or a challenge.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], Reject> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| Reject::Internal)?;
    Ok(b)
}

/// The sending half of one direction of a connection.
pub(crate) struct Sealer {
    keyring: Keyring,
    domain: Vec<u8>,
    next: u64,
}

impl Sealer {
    pub(crate) fn new(keyring: Keyring, domain: Vec<u8>) -> Sealer {
        Sealer {
            keyring,
            domain,
            next: 0,
        }
    }

    /// Seal the next frame. Sequence numbers start at 0 and never wrap (2^64 frames).
    pub(crate) fn seal(
        &mut self,
        kind: Kind,
        channel: Channel,
        id: u64,
        payload: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        let mut plain = Vec::with_capacity(HEADER + payload.len());
        plain.extend_from_slice(&self.next.to_be_bytes());
        plain.push(kind as u8);
        plain.push(channel as u8);
        plain.extend_from_slice(&id.to_be_bytes());
        plain.extend_from_slice(payload);
        let sealed = self
            .keyring
            .seal_frame(&self.domain, &plain, random()?)
            .map_err(|_| Reject::Internal)?;
        self.next = self.next.checked_add(1).ok_or(Reject::Internal)?;
        Ok(sealed)
    }
}

/// The receiving half of one direction of a connection.
pub(crate) struct Opener {
    keyring: Keyring,
    domain: Vec<u8>,
    next: u64,
    max: usize,
}

impl Opener {
    pub(crate) fn new(keyring: Keyring, domain: Vec<u8>, max: usize) -> Opener {
        Opener {
            keyring,
            domain,
            next: 0,
            max,
        }
    }

    /// Open the next frame: it must authenticate for this direction of this connection and
    /// carry exactly the next sequence number.
    pub(crate) fn open(&mut self, sealed: &[u8]) -> Result<Frame, Reject> {
        let plain = self
            .keyring
            .open_frame(&self.domain, sealed, self.max)
            .map_err(|_| Reject::Unauthenticated)?;
        if plain.len() < HEADER {
            return Err(Reject::Malformed);
        }
        let (header, payload) = plain.split_at(HEADER);
        let seq = u64::from_be_bytes(header[0..8].try_into().map_err(|_| Reject::Malformed)?);
        if seq != self.next {
            return Err(Reject::Replayed);
        }
        let kind = Kind::from_u8(header[8]).ok_or(Reject::Malformed)?;
        let channel = Channel::from_u8(header[9]).ok_or(Reject::Malformed)?;
        let id = u64::from_be_bytes(header[10..18].try_into().map_err(|_| Reject::Malformed)?);
        self.next = self.next.saturating_add(1);
        Ok(Frame {
            kind,
            channel,
            id,
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair() -> (Sealer, Opener) {
        let ring = Keyring::new("test", &[[7; 32]]);
        (
            Sealer::new(ring.clone(), b"dir-0".to_vec()),
            Opener::new(ring, b"dir-0".to_vec(), 1 << 20),
        )
    }

    #[test]
    fn frames_open_in_order_with_their_header() {
        let (mut s, mut o) = pair();
        let a = s.seal(Kind::Request, Channel::PushPull, 9, b"a").unwrap();
        let b = s.seal(Kind::OneWay, Channel::Crdt, 0, b"bb").unwrap();
        assert_eq!(
            o.open(&a).unwrap(),
            Frame {
                kind: Kind::Request,
                channel: Channel::PushPull,
                id: 9,
                payload: b"a".to_vec()
            }
        );
        assert_eq!(o.open(&b).unwrap().payload, b"bb");
    }

    #[test]
    fn a_replayed_frame_is_rejected() {
        let (mut s, mut o) = pair();
        let a = s.seal(Kind::OneWay, Channel::Crdt, 0, b"a").unwrap();
        o.open(&a).unwrap();
        assert_eq!(o.open(&a), Err(Reject::Replayed));
    }

    #[test]
    fn a_reordered_frame_is_rejected() {
        let (mut s, mut o) = pair();
        let _first = s.seal(Kind::OneWay, Channel::Crdt, 0, b"1").unwrap();
        let second = s.seal(Kind::OneWay, Channel::Crdt, 0, b"2").unwrap();
        assert_eq!(o.open(&second), Err(Reject::Replayed));
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_frame_is_refused() {
        let (mut s, _) = pair();
        let good = s.seal(Kind::Request, Channel::Crdt, 3, b"payload").unwrap();
        for len in 0..good.len() {
            let (_, mut o) = pair();
            assert!(o.open(&good[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let (_, mut o) = pair();
            assert!(o.open(&bad).is_err(), "bit {i} flipped");
        }
        let (_, mut o) = pair();
        assert!(o.open(&good).is_ok(), "the original still opens");
    }

    #[test]
    fn a_frame_of_the_other_direction_does_not_open() {
        let ring = Keyring::new("test", &[[7; 32]]);
        let mut s = Sealer::new(ring.clone(), b"dir-0".to_vec());
        let mut o = Opener::new(ring, b"dir-1".to_vec(), 1 << 20);
        let a = s.seal(Kind::OneWay, Channel::Crdt, 0, b"a").unwrap();
        assert_eq!(o.open(&a), Err(Reject::Unauthenticated));
    }

    #[test]
    fn a_gossip_packet_does_not_open_as_a_frame_nor_a_frame_as_a_packet() {
        let ring = Keyring::new("test", &[[7; 32]]);
        let packet = ring.seal(&b"hello".to_vec(), [1; 24]).unwrap();
        assert!(ring.open_frame(b"", &packet, 1 << 20).is_err());
        let frame = ring.seal_frame(b"", b"hello", [1; 24]).unwrap();
        assert!(ring.open::<Vec<u8>>(&frame).is_err());
    }

    #[tokio::test]
    async fn a_length_over_the_cap_is_rejected_before_reserving_anything() {
        let mut bytes: &[u8] = &u32::MAX.to_be_bytes();
        let mut reserved = false;
        let r = read_raw(&mut bytes, 1024, None, Duration::from_secs(1), |_| {
            reserved = true;
            async { Some(()) }
        })
        .await;
        assert!(matches!(r, Err(ReadError::Reject(Reject::Oversized))));
        assert!(
            !reserved,
            "nothing reserved or allocated for an oversized length"
        );
    }
}
