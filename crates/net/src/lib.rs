//! Connections between parties, in the order they are built:
//!
//! 1. TCP (the worker or client dials; the proxy listens),
//! 2. proof of work (`cocoon_wire::pow`): the listener makes the dialer pay
//!    before any costly step,
//! 3. mutual RA-TLS (`cocoon_tee::tls`): each side verifies the other's
//!    attestation under its policy,
//! 4. frames of TL `tcp.Packet`s (`cocoon_wire::frame`, with COCOON's seqnos),
//!    opened as COCOON opens them: the dialer sends `tcp.connect` and waits
//!    for the listener's `tcp.connected` before anything else.
//!
//! [`accept`] and [`connect`] do steps 2–4 and return a [`Connection`] that
//! knows its peer's verified identity. Every step has a deadline. Once
//! established, a link is kept alive as COCOON keeps it (see [`Keepalive`]).
#![forbid(unsafe_code)]

pub mod identity;
pub mod rpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cocoon_tee::{AttestError, PeerIdentity, Verifier};
use cocoon_wire::pow::{self, PowError};
use cocoon_wire::{DecodeError, FrameCodec, FrameError, TcpPacket};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::codec::Framed;

/// How long the proof of work plus TLS handshake may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The hardest proof of work (bits) a dialer agrees to do by default: a proxy asking more is
/// refused instead of keeping a worker or client busy for minutes.
pub const DEFAULT_MAX_POW_DIFFICULTY: u32 = 28;

/// Why a connection could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TCP failed.
    #[error("connection to {addr} failed: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The proof-of-work exchange failed.
    #[error(transparent)]
    Pow(#[from] PowError),
    /// The peer's attestation was refused by this side's policy.
    #[error("peer attestation refused: {0}")]
    Attestation(AttestError),
    /// The TLS handshake failed for another reason (including the peer
    /// refusing our attestation).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The handshake took too long.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// Framing failed (oversized frame, connection cut mid-frame, i/o).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame did not hold a valid packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The peer opened the link with something other than the
    /// `tcp.connect` / `tcp.connected` exchange.
    #[error("link opening refused: {0}")]
    Opening(String),
}

/// How an established link is kept alive, as COCOON keeps it: the dialer
/// sends one `tcp.ping` after `ping_after` without receiving anything, and a
/// side that has received nothing for `fail_after` drops the link (the
/// reference: dialers ping after 10 s and give up after 20 s; listeners give
/// up after 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence after which this side sends a ping (`None`: it never pings).
    pub ping_after: Option<Duration>,
    /// Silence after which this side drops the link.
    pub fail_after: Duration,
}

impl Keepalive {
    /// The reference dialer's timers.
    pub const DIALER: Keepalive = Keepalive {
        ping_after: Some(Duration::from_secs(10)),
        fail_after: Duration::from_secs(20),
    };
    /// The reference listener's timers.
    pub const LISTENER: Keepalive = Keepalive {
        ping_after: None,
        fail_after: Duration::from_secs(60),
    };
}

fn tls_error(e: std::io::Error) -> NetError {
    match cocoon_tee::tls::attest_error(&e) {
        Some(a) => NetError::Attestation(a.clone()),
        None => NetError::Tls(e),
    }
}

/// An established, attested connection carrying TL packets.
pub struct Connection {
    framed: Framed<TlsStream<TcpStream>, FrameCodec>,
    peer: PeerIdentity,
    peer_addr: Option<SocketAddr>,
    keepalive: Keepalive,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer_addr", &self.peer_addr)
            .field("peer_tee", &self.peer.tee)
            .finish()
    }
}

impl Connection {
    /// The peer's verified identity.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Replaces the keepalive timers (tests use short ones).
    pub fn with_keepalive(mut self, keepalive: Keepalive) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &TcpPacket) -> Result<(), NetError> {
        self.framed.send(cocoon_wire::encode(packet)).await?;
        Ok(())
    }

    /// Receives one packet; `None` when the peer closed cleanly.
    pub async fn recv(&mut self) -> Result<Option<TcpPacket>, NetError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(frame) => Ok(Some(cocoon_wire::decode_packet(&frame?)?)),
        }
    }

    /// Flushes and closes the connection.
    pub async fn close(mut self) -> Result<(), NetError> {
        SinkExt::<Vec<u8>>::close(&mut self.framed).await?;
        Ok(())
    }
}

/// Binds a listener; a failure names the address and what it was for ("cannot listen on
/// 127.0.0.1:8043 for clients: Address already in use").
pub async fn listen(addr: SocketAddr, what: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}"))
    })
}

/// Listener side: proof of work at `difficulty` bits, then RA-TLS.
pub async fn accept(
    mut tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    verifier: &Verifier,
    difficulty: u32,
    timeout: Duration,
) -> Result<Connection, NetError> {
    let peer_addr = tcp.peer_addr().ok();
    // Small request/answer packets: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let work = async {
        pow::server_handshake(&mut tcp, difficulty).await?;
        TlsAcceptor::from(tls).accept(tcp).await.map_err(tls_error)
    };
    tokio::time::timeout(timeout, async {
        let stream = work.await?;
        let mut conn = established(
            TlsStream::Server(stream),
            verifier,
            peer_addr,
            Keepalive::LISTENER,
        )?;
        conn.answer_opening().await?;
        Ok(conn)
    })
    .await
    .map_err(|_| NetError::Timeout(timeout))?
}

/// Dialer side: connect, solve the proof of work if it is at most
/// `max_difficulty` bits, then RA-TLS.
pub async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    verifier: &Verifier,
    max_difficulty: u32,
    timeout: Duration,
) -> Result<Connection, NetError> {
    let work = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| NetError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        pow::client_handshake(&mut tcp, max_difficulty).await?;
        TlsConnector::from(tls)
            .connect(cocoon_tee::tls::server_name(), tcp)
            .await
            .map_err(tls_error)
    };
    tokio::time::timeout(timeout, async {
        let stream = work.await?;
        let mut conn = established(
            TlsStream::Client(stream),
            verifier,
            Some(addr),
            Keepalive::DIALER,
        )?;
        conn.open().await?;
        Ok(conn)
    })
    .await
    .map_err(|_| NetError::Timeout(timeout))?
}

impl Connection {
    /// Dialer: `tcp.connect` with a random id, then the peer's `tcp.connected`.
    async fn open(&mut self) -> Result<(), NetError> {
        let id = rand_id();
        // In TLS 1.3 the listener judges our certificate after our side of the handshake is
        // done: a refusal shows up here, as the link closing before `tcp.connected`.
        let refused = |why: String| {
            NetError::Opening(format!(
                "the peer closed the link before tcp.connected ({why}); it may have refused \
                 our certificate under its attestation policy"
            ))
        };
        self.send(&TcpPacket::Connect { id })
            .await
            .map_err(|e| refused(e.to_string()))?;
        match self.recv().await {
            Ok(Some(TcpPacket::Connected { .. })) => Ok(()),
            Ok(Some(other)) => Err(NetError::Opening(format!(
                "expected tcp.connected, got {}",
                other.name()
            ))),
            Ok(None) => Err(refused("end of stream".into())),
            Err(e) => Err(refused(e.to_string())),
        }
    }

    /// Listener: the dialer's `tcp.connect`, answered with `tcp.connected`.
    async fn answer_opening(&mut self) -> Result<(), NetError> {
        match self.recv().await? {
            Some(TcpPacket::Connect { id }) => self.send(&TcpPacket::Connected { id }).await,
            Some(other) => Err(NetError::Opening(format!(
                "expected tcp.connect, got {}",
                other.name()
            ))),
            None => Err(NetError::Opening("closed before tcp.connect".into())),
        }
    }
}

fn rand_id() -> u64 {
    let mut b = [0u8; 8];
    // An id only pairs connect with connected: a failed RNG may leave it 0.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Wraps a finished handshake: reads the peer's verified identity (a cache
/// hit, the handshake verified it) and frames the stream.
fn established(
    stream: TlsStream<TcpStream>,
    verifier: &Verifier,
    peer_addr: Option<SocketAddr>,
    keepalive: Keepalive,
) -> Result<Connection, NetError> {
    let peer = cocoon_tee::tls::peer_identity(verifier, stream.get_ref().1)
        .map_err(NetError::Attestation)?;
    Ok(Connection {
        framed: Framed::new(stream, FrameCodec::default()),
        peer,
        peer_addr,
        keepalive,
    })
}
