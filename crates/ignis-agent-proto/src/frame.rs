//! Frame encoding and a bounded, resynchronising decoder.

use crate::{MAGIC, MAX_PAYLOAD, VERSION};

pub const HEADER_LEN: usize = 12;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Session 0: JSON [`crate::Hello`], both ways.
    Hello = 1,
    /// Host → agent: JSON [`crate::Request`] opening a session.
    Open = 2,
    /// Agent → host: the request was accepted (JSON, e.g. `{"pid":42}`).
    Started = 3,
    /// Host → agent: standard input bytes (exec) or a tar stream (copy in).
    Stdin = 4,
    /// Host → agent: no more standard input.
    StdinEof = 5,
    /// Agent → host: standard output bytes (exec) or a tar stream (copy out).
    Stdout = 6,
    Stderr = 7,
    /// Agent → host: JSON [`crate::ExitMsg`]; the session is over.
    Exit = 8,
    /// Host → agent: a signal number (u32 BE) for the session's process.
    Signal = 9,
    /// Host → agent: terminal size, rows u16 BE then cols u16 BE.
    Resize = 10,
    /// Either way: u32 BE bytes consumed; the sender may send that much more.
    Credit = 11,
    /// Agent → host (or supervisor → client): JSON [`crate::ErrorMsg`]; the
    /// session (or, on session 0, the stream) failed.
    Error = 12,
    /// Host → agent: abandon the session (kill its process).
    Close = 13,
    /// Health check: the agent answers on the same session.
    Ping = 14,
    Pong = 15,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Self> {
        use Kind::*;
        Some(match v {
            1 => Hello,
            2 => Open,
            3 => Started,
            4 => Stdin,
            5 => StdinEof,
            6 => Stdout,
            7 => Stderr,
            8 => Exit,
            9 => Signal,
            10 => Resize,
            11 => Credit,
            12 => Error,
            13 => Close,
            14 => Ping,
            15 => Pong,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub session: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, session: u32, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            session,
            payload: payload.into(),
        }
    }

    pub fn json<T: serde::Serialize>(kind: Kind, session: u32, v: &T) -> Self {
        Self::new(
            kind,
            session,
            serde_json::to_vec(v).expect("protocol messages serialize"),
        )
    }

    pub fn u32(kind: Kind, session: u32, v: u32) -> Self {
        Self::new(kind, session, v.to_be_bytes().to_vec())
    }

    /// The payload as a u32 (Credit, Signal).
    pub fn as_u32(&self) -> Option<u32> {
        <[u8; 4]>::try_from(self.payload.as_slice())
            .ok()
            .map(u32::from_be_bytes)
    }

    /// The payload as JSON of type `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_slice(&self.payload).map_err(|source| PayloadError::Json {
            kind: self.kind,
            source,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self.kind, self.session, &self.payload)
    }
}

/// Why a frame's payload is not the message its kind carries.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("bad {kind:?} payload")]
    Json {
        kind: Kind,
        #[source]
        source: serde_json::Error,
    },
}

/// Encodes one frame.
pub fn encode(kind: Kind, session: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut out, kind, session, payload);
    out
}

/// Appends one frame to `out`. Panics if the payload exceeds
/// [`MAX_PAYLOAD`] (a bug in the sender, never input-driven).
pub fn encode_into(out: &mut Vec<u8>, kind: Kind, session: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD)
        .expect("frame payload within MAX_PAYLOAD");
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Why input was not a frame. Every error has already been skipped over:
/// the decoder continues with the next frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bytes that do not start a frame were dropped (resync on the magic).
    #[error("{skipped} bytes of garbage skipped")]
    Garbage { skipped: usize },
    /// A frame of another protocol version (skipped).
    #[error("protocol version {version} not supported (want {VERSION})")]
    Version { version: u8, session: u32 },
    /// A frame kind this version does not know (skipped).
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8, session: u32 },
    /// A frame larger than [`MAX_PAYLOAD`] (its payload is discarded as it
    /// arrives, never buffered).
    #[error("frame of {len} bytes exceeds the limit of {MAX_PAYLOAD}")]
    Oversized { len: u32, session: u32 },
}

impl DecodeError {
    /// The session the bad frame claimed (0 when unknown).
    pub fn session(&self) -> u32 {
        match self {
            Self::Garbage { .. } => 0,
            Self::Version { session, .. }
            | Self::UnknownKind { session, .. }
            | Self::Oversized { session, .. } => *session,
        }
    }
}

/// Incremental decoder. Memory is bounded by one maximal frame plus the
/// bytes of one `push`.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Payload bytes of an oversized or rejected frame still to discard.
    skip: u64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds input.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.skip -= n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered (for tests of the memory bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// The next frame or error, `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.skip -= n as u64;
            self.drop_front(n);
            if self.skip > 0 {
                return None;
            }
        }
        // Resync: drop everything before the first possible magic.
        let start = self.buf.windows(2).position(|w| w == MAGIC).unwrap_or(
            self.buf
                .len()
                .saturating_sub(usize::from(self.buf.last() == Some(&MAGIC[0]))),
        );
        if start > 0 {
            self.drop_front(start);
            return Some(Err(DecodeError::Garbage { skipped: start }));
        }
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let h = &self.buf[..HEADER_LEN];
        let version = h[2];
        let kind = h[3];
        let session = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if len > MAX_PAYLOAD {
            self.drop_front(HEADER_LEN);
            self.skip = u64::from(len);
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.skip -= n as u64;
            self.drop_front(n);
            return Some(Err(DecodeError::Oversized { len, session }));
        }
        let total = HEADER_LEN + len as usize;
        if self.buf.len() < total {
            return None;
        }
        if version != VERSION {
            self.drop_front(total);
            return Some(Err(DecodeError::Version { version, session }));
        }
        let Some(kind_v) = Kind::from_u8(kind) else {
            self.drop_front(total);
            return Some(Err(DecodeError::UnknownKind { kind, session }));
        };
        let payload = self.buf[HEADER_LEN..total].to_vec();
        self.drop_front(total);
        Some(Ok(Frame {
            kind: kind_v,
            session,
            payload,
        }))
    }
}

/// Frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    dec: Decoder,
    chunk: Vec<u8>,
}

impl<R: std::io::Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            dec: Decoder::new(),
            chunk: vec![0; 64 << 10],
        }
    }

    /// The next frame (or decode error, already skipped); `Ok(None)` at end
    /// of stream.
    pub fn read_frame(&mut self) -> std::io::Result<Option<Result<Frame, DecodeError>>> {
        loop {
            if let Some(f) = self.dec.next_frame() {
                return Ok(Some(f));
            }
            let n = match self.inner.read(&mut self.chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.dec.push(&self.chunk[..n]);
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data generators
mod tests {
    use super::*;

    /// xorshift64*: a deterministic test RNG (no dependency for a fuzz loop).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    fn all(dec: &mut Decoder) -> Vec<Result<Frame, DecodeError>> {
        std::iter::from_fn(|| dec.next_frame()).collect()
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let frames = vec![
            Frame::new(Kind::Open, 1, b"{}".to_vec()),
            Frame::new(Kind::Stdout, 7, vec![0u8; 70_000]),
            Frame::u32(Kind::Credit, 7, 65536),
            Frame::new(Kind::StdinEof, u32::MAX, vec![]),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut dec = Decoder::new();
        let mut out = vec![];
        for b in &bytes {
            dec.push(std::slice::from_ref(b));
            out.extend(all(&mut dec));
        }
        assert_eq!(out, frames.into_iter().map(Ok).collect::<Vec<_>>());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversized_frames_are_skipped_without_buffering() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend([VERSION, Kind::Stdin as u8]);
        bytes.extend(5u32.to_be_bytes());
        bytes.extend(u32::MAX.to_be_bytes());
        let mut dec = Decoder::new();
        dec.push(&bytes);
        assert_eq!(
            dec.next_frame(),
            Some(Err(DecodeError::Oversized {
                len: u32::MAX,
                session: 5
            }))
        );
        // 8 MiB of its "payload" arrive and are dropped as they come.
        for _ in 0..128 {
            dec.push(&[0xAA; 64 << 10]);
            assert_eq!(dec.next_frame(), None);
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn unknown_kind_and_version_are_reported_then_skipped() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend([VERSION, 200]);
        bytes.extend(9u32.to_be_bytes());
        bytes.extend(3u32.to_be_bytes());
        bytes.extend(b"abc");
        bytes.extend(MAGIC);
        bytes.extend([9, Kind::Open as u8]);
        bytes.extend(4u32.to_be_bytes());
        bytes.extend(0u32.to_be_bytes());
        bytes.extend(encode(Kind::Ping, 2, b""));
        let mut dec = Decoder::new();
        dec.push(&bytes);
        let got = all(&mut dec);
        assert_eq!(
            got,
            vec![
                Err(DecodeError::UnknownKind {
                    kind: 200,
                    session: 9
                }),
                Err(DecodeError::Version {
                    version: 9,
                    session: 4
                }),
                Ok(Frame::new(Kind::Ping, 2, vec![])),
            ]
        );
    }

    #[test]
    fn garbage_is_resynchronised_on_the_next_magic() {
        let mut bytes = b"hello world, not a frame".to_vec();
        bytes.extend(encode(Kind::Pong, 3, b"x"));
        let mut dec = Decoder::new();
        dec.push(&bytes);
        let got = all(&mut dec);
        assert!(
            matches!(got[0], Err(DecodeError::Garbage { skipped: 24 })),
            "{got:?}"
        );
        assert_eq!(got[1], Ok(Frame::new(Kind::Pong, 3, b"x".to_vec())));
    }

    /// A bounded fuzz run in every `cargo test`: random and mutated frames
    /// never panic, never make the decoder hold more than one maximal frame
    /// plus one push, and valid frames after garbage are still found.
    #[test]
    fn random_and_mutated_input_never_panics_and_stays_bounded() {
        let mut rng = Rng(0x1915_2026);
        let valid: Vec<u8> = (0..50u32)
            .flat_map(|i| encode(Kind::Stdout, i, &vec![i as u8; (i * 97) as usize]))
            .collect();
        for round in 0..2000 {
            let mut input = if round % 2 == 0 {
                let len = rng.below(4096);
                (0..len).map(|_| rng.byte()).collect::<Vec<u8>>()
            } else {
                let mut v = valid.clone();
                for _ in 0..1 + rng.below(19) {
                    let i = rng.below(v.len());
                    v[i] = rng.byte();
                }
                let cut = rng.below(v.len());
                v.truncate(cut);
                v
            };
            // A valid frame at the end must always be recovered unless the
            // prefix left an oversized skip or an incomplete frame pending.
            input.extend(encode(Kind::Pong, 77, b"end"));
            let mut dec = Decoder::new();
            let mut pos = 0;
            while pos < input.len() {
                let n = (1 + rng.below(512)).min(input.len() - pos);
                dec.push(&input[pos..pos + n]);
                pos += n;
                while let Some(r) = dec.next_frame() {
                    if let Ok(f) = r {
                        assert!(f.payload.len() <= MAX_PAYLOAD as usize);
                    }
                }
                assert!(dec.buffered() <= HEADER_LEN + MAX_PAYLOAD as usize + 512);
            }
        }
    }
}
