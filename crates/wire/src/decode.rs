//! Strict TL decoding: a typed error for every malformed input, and no
//! trailing bytes allowed (a message is exactly one TL object).

use tl_proto::{TlError, TlRead, TlWrite};

use crate::tcp::TcpPacket;

/// Why a TL object could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of an object.
    #[error("truncated {what}: the input ended in the middle of the object")]
    Truncated {
        /// The type that was being decoded.
        what: &'static str,
    },
    /// A constructor id that the type (or one of its boxed fields, a `Bool`
    /// included) does not have.
    #[error("unknown constructor in {what} (the object starts with 0x{id:08x})")]
    UnknownConstructor {
        /// The type that was being decoded.
        what: &'static str,
        /// The first four bytes of the input, little-endian (0 if fewer):
        /// the outer constructor, which is the unknown one unless a nested
        /// field's was.
        id: u32,
    },
    /// A field held a value its type does not allow (bad padding, a bool that
    /// is neither boolTrue nor boolFalse, ...).
    #[error("malformed {what}: a field holds an invalid value")]
    Malformed {
        /// The type that was being decoded.
        what: &'static str,
    },
    /// The object decoded but bytes were left over after it.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// The type that was being decoded.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
}

/// Decodes exactly one `T` from `bytes`, naming `T` in any error.
pub fn decode<'a, T: TlRead<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let what = short_type_name::<T>();
    let mut rest = bytes;
    let value = T::read_from(&mut rest).map_err(|e| match e {
        TlError::UnexpectedEof => DecodeError::Truncated { what },
        TlError::UnknownConstructor => DecodeError::UnknownConstructor {
            what,
            id: bytes
                .first_chunk::<4>()
                .map(|b| u32::from_le_bytes(*b))
                .unwrap_or(0),
        },
        TlError::InvalidData => DecodeError::Malformed { what },
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// Serializes a TL object.
pub fn encode<T: TlWrite>(value: &T) -> Vec<u8> {
    tl_proto::serialize(value)
}

/// Decodes the payload of one frame as a [`TcpPacket`]: the entry point for
/// every byte that arrives from a peer.
pub fn decode_packet(frame: &[u8]) -> Result<TcpPacket, DecodeError> {
    decode(frame)
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // "cocoon_wire::tcp::TcpPacket" -> "TcpPacket"; generic args are kept whole.
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}
