//! `tcp.Packet`: the envelope of every frame. A connection carries one-way
//! messages (`Packet`), request/response pairs (`Query` answered by
//! `QueryAnswer` or `QueryError` with the same id), keep-alives
//! (`Ping`/`Pong`) and sub-stream setup (`Connect`/`Connected`).

use tl_proto::{TlRead, TlWrite};

/// One frame's worth of protocol: `tcp.Packet` from the scheme.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum TcpPacket {
    /// Keep-alive request; the peer answers `Pong` with the same id.
    #[tl(id = "tcp.ping")]
    Ping {
        /// Echoed back in the pong.
        id: u64,
    },
    /// Keep-alive answer.
    #[tl(id = "tcp.pong")]
    Pong {
        /// The id of the ping being answered.
        id: u64,
    },
    /// A one-way message (a TL object of the role protocol).
    #[tl(id = "tcp.packet")]
    Packet {
        /// The serialized inner message.
        data: Vec<u8>,
    },
    /// The successful answer to a `Query`.
    #[tl(id = "tcp.queryAnswer")]
    QueryAnswer {
        /// The query's id.
        id: u64,
        /// The serialized answer.
        data: Vec<u8>,
    },
    /// The failed answer to a `Query`.
    #[tl(id = "tcp.queryError")]
    QueryError {
        /// The query's id.
        id: u64,
        /// An error code (HTTP-like: 400 bad request, 500 internal, ...).
        code: i32,
        /// A human-readable reason (UTF-8 text).
        message: Vec<u8>,
    },
    /// A request that expects exactly one `QueryAnswer` or `QueryError`.
    #[tl(id = "tcp.query")]
    Query {
        /// Chosen by the sender, unique among its open queries.
        id: u64,
        /// The serialized request (a TL function).
        data: Vec<u8>,
    },
    /// The acceptance of a `Connect`.
    #[tl(id = "tcp.connected")]
    Connected {
        /// The id from the `Connect`.
        id: u64,
    },
    /// Opens a logical session on the connection.
    #[tl(id = "tcp.connect")]
    Connect {
        /// Chosen by the sender.
        id: u64,
    },
}

impl TcpPacket {
    /// The packet's TL name (`tcp.ping`, …), for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TcpPacket::Ping { .. } => "tcp.ping",
            TcpPacket::Pong { .. } => "tcp.pong",
            TcpPacket::Packet { .. } => "tcp.packet",
            TcpPacket::QueryAnswer { .. } => "tcp.queryAnswer",
            TcpPacket::QueryError { .. } => "tcp.queryError",
            TcpPacket::Query { .. } => "tcp.query",
            TcpPacket::Connected { .. } => "tcp.connected",
            TcpPacket::Connect { .. } => "tcp.connect",
        }
    }
}
