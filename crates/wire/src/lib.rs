//! The off-chain protocol of the network.
//!
//! Every party (client, proxy, worker) talks to the others over one kind of
//! connection: a TCP socket that first solves a proof-of-work challenge
//! ([`pow`]), then runs mutual RA-TLS (the `cocoon-tee` crate), then carries
//! length-prefixed frames ([`frame`]) each holding one TL-serialized
//! [`tcp::TcpPacket`]. Queries and answers inside those packets are again TL
//! objects: [`client`], [`proxy`] and [`worker`] hold the messages of each role,
//! [`common`] the ones they share.
//!
//! The constructor ids are computed at compile time from `src/cocoon.tl`,
//! exactly as TL does (CRC32 of the normalized definition), so they match the
//! reference network's.
//!
//! Architecture invariant: this crate does no I/O of its own beyond the
//! generic `AsyncRead`/`AsyncWrite` of the PoW handshake; it never opens
//! sockets, and no decoder here panics on any input.
#![forbid(unsafe_code)]

pub mod answer;
pub mod client;
pub mod common;
pub mod decode;
pub mod frame;
pub mod pow;
pub mod proxy;
pub mod tcp;
pub mod worker;

pub use decode::{decode, decode_packet, encode, DecodeError};
pub use frame::{FrameCodec, FrameError, MAX_FRAME_LEN, MIN_FRAME_LEN};
pub use tcp::TcpPacket;
/// The TL traits every message implements (for generic senders and receivers).
pub use tl_proto::{TlRead, TlWrite};

/// The highest protocol version of the reference (`client.runQueryEx` and the `…Ex` answers
/// with timings).
pub const PROTO_REFERENCE_MAX: i32 = 2;
/// Our protocol version: the reference's 2 plus `proxy.cancelQuery`. Peers announce it as
/// their `max_proto_version`; a reference peer settles on 2 and never gets a cancel.
pub const PROTO_WITH_CANCEL: i32 = 3;

/// A 256-bit value as TL's `int256` (request ids, hashes, keys).
pub type Int256 = [u8; 32];
