//! Framing, as COCOON frames its TCP streams: each frame is
//! `len: u32 LE, seqno: i32 LE, body` where `len` counts the body only and
//! `seqno` counts frames from 0 in each direction. A receiver checks every
//! seqno (a dropped, repeated or reordered frame ends the connection), and
//! lengths below 4 (no room for a constructor id) or above 16 MiB are
//! protocol errors, checked before any buffer is allocated for the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The smallest legal frame body: one TL constructor id.
pub const MIN_FRAME_LEN: usize = 4;
/// The largest legal frame body: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Bytes in front of every body: the length and the seqno.
pub const FRAME_HEADER_LEN: usize = 8;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is below [`MIN_FRAME_LEN`].
    #[error("frame length {0} is below the minimum of {MIN_FRAME_LEN} bytes")]
    TooShort(usize),
    /// The length prefix (or an outgoing body) exceeds [`MAX_FRAME_LEN`].
    #[error("frame length {0} exceeds the maximum of {MAX_FRAME_LEN} bytes")]
    TooLong(usize),
    /// The frame's seqno is not the next one of this direction.
    #[error("bad frame seqno: expected {expected}, got {got}")]
    BadSeqno {
        /// The seqno this side expected.
        expected: i32,
        /// The seqno the peer sent.
        got: i32,
    },
    /// The connection closed in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Incomplete(usize),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A `tokio_util` codec for the frames of one connection; items are frame
/// bodies. It keeps both directions' seqnos, so use one codec per connection
/// (`FrameCodec::default()` starts both at 0).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec {
    in_seqno: i32,
    out_seqno: i32,
}

impl FrameCodec {
    /// The seqno the next incoming frame must carry.
    pub fn in_seqno(&self) -> i32 {
        self.in_seqno
    }

    /// The seqno the next outgoing frame will carry.
    pub fn out_seqno(&self) -> i32 {
        self.out_seqno
    }
}

/// Splits one frame off the front of `buf` if it is complete, checking that
/// it carries seqno `expected`; the pure function behind [`FrameCodec`] (and
/// the fuzz target).
pub fn split_frame(buf: &mut BytesMut, expected: i32) -> Result<Option<BytesMut>, FrameError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    check_len(len)?;
    if buf.len() < FRAME_HEADER_LEN + len {
        buf.reserve(FRAME_HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let got = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if got != expected {
        return Err(FrameError::BadSeqno { expected, got });
    }
    buf.advance(FRAME_HEADER_LEN);
    Ok(Some(buf.split_to(len)))
}

/// Appends one frame with `seqno` to `dst`.
pub fn put_frame(body: &[u8], seqno: i32, dst: &mut BytesMut) -> Result<(), FrameError> {
    check_len(body.len())?;
    dst.reserve(FRAME_HEADER_LEN + body.len());
    dst.put_u32_le(body.len() as u32);
    dst.put_i32_le(seqno);
    dst.put_slice(body);
    Ok(())
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len < MIN_FRAME_LEN {
        Err(FrameError::TooShort(len))
    } else if len > MAX_FRAME_LEN {
        Err(FrameError::TooLong(len))
    } else {
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let frame = split_frame(src, self.in_seqno)?;
        if frame.is_some() {
            self.in_seqno = self.in_seqno.wrapping_add(1);
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Incomplete(src.len())),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        put_frame(body, self.out_seqno, dst)?;
        self.out_seqno = self.out_seqno.wrapping_add(1);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&body[..], dst)
    }
}

impl Encoder<Vec<u8>> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Vec<u8>, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&body[..], dst)
    }
}
