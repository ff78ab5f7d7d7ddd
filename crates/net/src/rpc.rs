//! Queries and one-way messages over a [`Connection`], both directions at once.
//!
//! [`Peer::spawn`] splits a connection into a writer task (one FIFO of outgoing packets) and a
//! reader task that answers pings, resolves the answers to our queries by id, runs the peer's
//! queries through a [`QueryHandler`] (each in its own task, so a slow one never blocks the
//! connection) and hands one-way packets to a [`PacketHandler`]. Because everything leaves
//! through one FIFO, a handler's one-way packets (streamed answer parts) always arrive before
//! its final answer.
//!
//! Each connection is bounded, so a peer that misbehaves costs its own connection, never the
//! process: at most [`Limits::queries_in_flight`] of its queries run at once (one more is
//! answered 429 at once), and when more than [`Limits::queued_bytes`] wait to be written to it
//! (it sends queries or pings but does not read the answers) the connection is closed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_tee::PeerIdentity;
use cocoon_wire::TcpPacket;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Connection;

/// What one connection may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The peer's queries running at once; one more is refused with 429.
    pub queries_in_flight: usize,
    /// Bytes waiting to be written to the peer; past this the connection is closed.
    pub queued_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queries_in_flight: 256,
            queued_bytes: 16 << 20,
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The connection closed before the answer came.
    #[error("connection closed")]
    Closed,
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer's answer is not the message expected.
    #[error("peer answered with an undecodable message: {0}")]
    Malformed(String),
    /// More than [`Limits::queued_bytes`] waited to be written: the peer does not read, and
    /// the connection was closed.
    #[error("the peer does not read: over {0} bytes waited to be written; connection closed")]
    Backlog(usize),
    /// The peer answered with an error.
    #[error("peer error {code}: {message}")]
    Remote {
        /// HTTP-like code.
        code: i32,
        /// The peer's reason.
        message: String,
    },
}

impl RpcError {
    /// An error to answer a query with.
    pub fn remote(code: i32, message: impl Into<String>) -> Self {
        RpcError::Remote {
            code,
            message: message.into(),
        }
    }
}

/// A boxed future of a query's answer.
pub type AnswerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RpcError>> + Send>>;
/// Runs one query from the peer: gets the peer handle (to stream parts) and the query bytes.
pub type QueryHandler = Arc<dyn Fn(Peer, Vec<u8>) -> AnswerFuture + Send + Sync>;
/// Takes one one-way packet from the peer. Must not block: route it and return.
pub type PacketHandler = Arc<dyn Fn(&Peer, Vec<u8>) + Send + Sync>;

/// Where a query's answer goes.
type Waiter = oneshot::Sender<Result<Vec<u8>, RpcError>>;

/// A handler for a side that answers no queries (clients): every query gets a 400.
pub fn no_queries() -> QueryHandler {
    Arc::new(|_: Peer, _: Vec<u8>| -> AnswerFuture {
        Box::pin(async { Err(RpcError::remote(400, "this side answers no queries")) })
    })
}

struct Inner {
    tx: mpsc::UnboundedSender<(TcpPacket, usize)>,
    /// Bytes in `tx` not yet written (bounded by `limits.queued_bytes`).
    queued: AtomicUsize,
    /// The peer's queries running now (bounded by `limits.queries_in_flight`).
    running: AtomicUsize,
    limits: Limits,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Waiter>>,
    identity: PeerIdentity,
    addr: Option<std::net::SocketAddr>,
    closed: watch::Receiver<bool>,
    close_tx: watch::Sender<bool>,
}

/// One side of a live connection. Cheap to clone; the connection lives while the peer keeps it
/// open or until [`Peer::close`].
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Peer {
    /// Starts the reader and writer tasks of `conn`, under the default [`Limits`].
    pub fn spawn(conn: Connection, on_query: QueryHandler, on_packet: PacketHandler) -> Peer {
        Self::spawn_with(conn, on_query, on_packet, Limits::default())
    }

    /// Starts the reader and writer tasks of `conn` under `limits`.
    pub fn spawn_with(
        conn: Connection,
        on_query: QueryHandler,
        on_packet: PacketHandler,
        limits: Limits,
    ) -> Peer {
        let Connection {
            framed,
            peer,
            peer_addr,
            keepalive,
        } = conn;
        let (mut sink, mut stream) = framed.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<(TcpPacket, usize)>();
        let (close_tx, closed) = watch::channel(false);
        let me = Peer {
            inner: Arc::new(Inner {
                tx,
                queued: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                limits,
                next_id: AtomicU64::new(1),
                pending: Mutex::new(HashMap::new()),
                identity: peer,
                addr: peer_addr,
                closed,
                close_tx,
            }),
        };
        // Writer: drains the FIFO until the channel or the socket closes, or the connection is
        // closed (at once, even in the middle of a write to a peer that does not read).
        let writer = me.clone();
        tokio::spawn(async move {
            let mut closed = writer.inner.closed.clone();
            let queued = &writer.inner.queued;
            tokio::select! {
                _ = async {
                    while let Some((p, size)) = rx.recv().await {
                        // Queue everything already waiting, then flush once: a streamed
                        // answer's parts leave in few TLS records and syscalls.
                        queued.fetch_sub(size, Ordering::Relaxed);
                        if sink.feed(cocoon_wire::encode(&p)).await.is_err() {
                            return;
                        }
                        for _ in 0..256 {
                            let Ok((p, size)) = rx.try_recv() else { break };
                            queued.fetch_sub(size, Ordering::Relaxed);
                            if sink.feed(cocoon_wire::encode(&p)).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                } => {}
                _ = wait_closed(&mut closed) => {}
            }
            // A last flush and a clean close for a peer that reads; one that does not gets no
            // more of our time.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), SinkExt::<Vec<u8>>::close(&mut sink))
                    .await;
            writer.shutdown();
        });
        // Reader; it also keeps the link alive (see `Keepalive`): the silence timers restart
        // with every frame received.
        let reader = me.clone();
        tokio::spawn(async move {
            let mut closed = reader.inner.closed.clone();
            let mut ping_sent = false;
            let mut last_heard = tokio::time::Instant::now();
            loop {
                let ping_at = match keepalive.ping_after {
                    Some(after) if !ping_sent => Some(last_heard + after),
                    _ => None,
                };
                let fail_at = last_heard + keepalive.fail_after;
                let wake_at = ping_at.map_or(fail_at, |p| p.min(fail_at));
                let frame = tokio::select! {
                    f = stream.next() => f,
                    _ = wait_closed(&mut closed) => break,
                    _ = tokio::time::sleep_until(wake_at) => {
                        if tokio::time::Instant::now() >= fail_at {
                            tracing::info!(
                                "peer {:?} silent for {:?}: dropping the link",
                                reader.inner.addr,
                                keepalive.fail_after
                            );
                            break;
                        }
                        ping_sent = true;
                        let _ = reader.push(TcpPacket::Ping { id: next_ping_id() });
                        continue;
                    }
                };
                last_heard = tokio::time::Instant::now();
                ping_sent = false;
                let packet = match frame {
                    Some(Ok(bytes)) => match cocoon_wire::decode_packet(&bytes) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(
                                "peer {:?} sent an undecodable packet: {e}",
                                reader.inner.addr
                            );
                            break;
                        }
                    },
                    Some(Err(e)) => {
                        tracing::debug!("connection {:?} ended: {e}", reader.inner.addr);
                        break;
                    }
                    None => break,
                };
                match packet {
                    TcpPacket::Ping { id } => {
                        let _ = reader.push(TcpPacket::Pong { id });
                    }
                    TcpPacket::Pong { .. }
                    | TcpPacket::Connect { .. }
                    | TcpPacket::Connected { .. } => {}
                    TcpPacket::Packet { data } => on_packet(&reader, data),
                    TcpPacket::QueryAnswer { id, data } => reader.resolve(id, Ok(data)),
                    TcpPacket::QueryError { id, code, message } => reader.resolve(
                        id,
                        Err(RpcError::Remote {
                            code,
                            message: String::from_utf8_lossy(&message).into_owned(),
                        }),
                    ),
                    TcpPacket::Query { id, data } => {
                        let running = &reader.inner.running;
                        let cap = reader.inner.limits.queries_in_flight;
                        if running.fetch_add(1, Ordering::Relaxed) >= cap {
                            running.fetch_sub(1, Ordering::Relaxed);
                            let _ = reader.push(TcpPacket::QueryError {
                                id,
                                code: 429,
                                message: format!(
                                    "{cap} of this connection's queries already run; retry when one ends"
                                )
                                .into_bytes(),
                            });
                            continue;
                        }
                        let peer = reader.clone();
                        let fut = on_query(peer.clone(), data);
                        tokio::spawn(async move {
                            let answer = match fut.await {
                                Ok(data) => TcpPacket::QueryAnswer { id, data },
                                Err(RpcError::Remote { code, message }) => TcpPacket::QueryError {
                                    id,
                                    code,
                                    message: message.into_bytes(),
                                },
                                Err(e) => TcpPacket::QueryError {
                                    id,
                                    code: 500,
                                    message: e.to_string().into_bytes(),
                                },
                            };
                            peer.inner.running.fetch_sub(1, Ordering::Relaxed);
                            let _ = peer.push(answer);
                        });
                    }
                }
            }
            reader.shutdown();
        });
        me
    }

    /// Queues `packet` for the writer, unless the bytes waiting would pass
    /// [`Limits::queued_bytes`]: then the peer is not reading and the connection is closed.
    fn push(&self, packet: TcpPacket) -> Result<(), RpcError> {
        let size = packet_size(&packet);
        let limit = self.inner.limits.queued_bytes;
        let before = self.inner.queued.fetch_add(size, Ordering::Relaxed);
        if before + size > limit && before > 0 {
            self.inner.queued.fetch_sub(size, Ordering::Relaxed);
            if !self.is_closed() {
                tracing::warn!(
                    "peer {:?} does not read: over {limit} bytes wait for it; closing the connection",
                    self.inner.addr
                );
                self.shutdown();
            }
            return Err(RpcError::Backlog(limit));
        }
        self.inner.tx.send((packet, size)).map_err(|_| {
            self.inner.queued.fetch_sub(size, Ordering::Relaxed);
            RpcError::Closed
        })
    }

    fn resolve(&self, id: u64, result: Result<Vec<u8>, RpcError>) {
        let waiter = self.inner.pending.lock().remove(&id);
        if let Some(w) = waiter {
            let _ = w.send(result);
        }
    }

    fn shutdown(&self) {
        let _ = self.inner.close_tx.send(true);
        let pending: Vec<_> = self.inner.pending.lock().drain().collect();
        for (_, w) in pending {
            let _ = w.send(Err(RpcError::Closed));
        }
    }

    /// Sends a query and waits for its answer.
    pub async fn query(&self, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, RpcError> {
        if self.is_closed() {
            return Err(RpcError::Closed);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, tx);
        if let Err(e) = self.push(TcpPacket::Query { id, data }) {
            self.inner.pending.lock().remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => {
                self.inner.pending.lock().remove(&id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// Sends the TL function `request` and decodes its answer as `T`.
    pub async fn request<T>(
        &self,
        request: &impl cocoon_wire::TlWrite,
        timeout: Duration,
    ) -> Result<T, RpcError>
    where
        T: for<'a> cocoon_wire::TlRead<'a>,
    {
        let bytes = self.query(cocoon_wire::encode(request), timeout).await?;
        cocoon_wire::decode(&bytes).map_err(|e| RpcError::Malformed(e.to_string()))
    }

    /// Sends a one-way message.
    pub fn send(&self, data: Vec<u8>) -> Result<(), RpcError> {
        self.push(TcpPacket::Packet { data })
    }

    /// Bytes waiting to be written to the peer now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// The peer's verified identity.
    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.identity
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Resolves when the connection ends.
    pub async fn closed(&self) {
        let mut c = self.inner.closed.clone();
        wait_closed(&mut c).await;
    }

    /// Ends the connection (pending queries fail with [`RpcError::Closed`]).
    pub fn close(&self) {
        self.shutdown();
    }
}

/// About what `packet` takes in the queue: its payload plus a frame's worth of overhead.
fn packet_size(packet: &TcpPacket) -> usize {
    const OVERHEAD: usize = 32;
    OVERHEAD
        + match packet {
            TcpPacket::Packet { data }
            | TcpPacket::Query { data, .. }
            | TcpPacket::QueryAnswer { data, .. } => data.len(),
            TcpPacket::QueryError { message, .. } => message.len(),
            _ => 0,
        }
}

fn next_ping_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn wait_closed(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
