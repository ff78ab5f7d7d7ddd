//! Length-prefixed framing: each frame is a 4-byte little-endian length
//! followed by that many bytes of TL. Lengths below 4 (no room for a
//! constructor id) or above 16 MiB are protocol errors, checked before any
//! buffer is allocated for the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The smallest legal frame body: one TL constructor id.
pub const MIN_FRAME_LEN: usize = 4;
/// The largest legal frame body: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is below [`MIN_FRAME_LEN`].
    #[error("frame length {0} is below the minimum of {MIN_FRAME_LEN} bytes")]
    TooShort(usize),
    /// The length prefix (or an outgoing body) exceeds [`MAX_FRAME_LEN`].
    #[error("frame length {0} exceeds the maximum of {MAX_FRAME_LEN} bytes")]
    TooLong(usize),
    /// The connection closed in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Incomplete(usize),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A `tokio_util` codec for the frames; items are frame bodies.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

/// Splits one frame off the front of `buf` if it is complete; the pure
/// function behind [`FrameCodec`] (and the fuzz target).
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    check_len(len)?;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len)))
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
        split_frame(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match split_frame(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Incomplete(src.len())),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        check_len(body.len())?;
        dst.reserve(4 + body.len());
        dst.put_u32_le(body.len() as u32);
        dst.put_slice(body);
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
