//! The sync listener: HTTP/1.1 in TLS 1.3 on tokio, rustls and hyper, with every resource a
//! stranger could make it hold bounded ([`Limits`]).
//!
//! - Connections: counted per address and in all; over the address's cap, or over the
//!   listener's when no idle connection may be closed to make room for it
//!   (`addresses.rs`), a connection is closed at once, before any TLS work. No thread per
//!   connection: each is a task.
//! - TLS handshakes: each counts as a request of its address (rate and in-flight share) and
//!   must end within `idle_timeout`; the client must prove a device key.
//! - Request heads: at most `max_header_bytes`, within `idle_timeout` of the connection
//!   opening or of the previous response (slow or idle clients are closed).
//! - Bodies: a `Content-Length` is required and checked against `max_message_bytes` before
//!   anything is read (so no allocation follows an announced size); the bytes are reserved
//!   from the listener-wide `max_buffered_bytes`, read within `body_timeout` into one buffer,
//!   and the count must match. A reply's bytes are reserved from the same budget once it is
//!   made, and stay reserved until it is written or its connection is gone.
//! - Rate and concurrency: each address has a token bucket and an in-flight share; handlers
//!   run on the runtime's bounded blocking pool, at most `max_requests_in_flight` at once.
//! - Writes: a client that stops reading its response is cut off after `body_timeout`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout, Sleep};
use tokio_rustls::TlsAcceptor;

use super::addresses::{Activity, Address, Addresses, Refusal};
use super::tls::{self, TlsIdentity};
use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::sync::budget::{ByteBudget, Room};
use crate::sync::handlers::{self, Endpoint};
use crate::sync::wire::{self, ErrorReply};
use crate::sync::{Limits, SyncEngine};

/// A bound listener, serving until [`Listener::stop`] or until its engine is gone.
pub(in crate::sync) struct Listener {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Disconnected once the accept loop has ended and closed the listening socket.
    closed: std::sync::mpsc::Receiver<()>,
    shared: Arc<Shared>,
}

/// What an engine's listeners refused since it started, over all of them (stopped ones
/// too): for its stats.
#[derive(Default)]
pub(in crate::sync) struct Refusals {
    /// Requests answered `MNEMO_STATUS_BUSY` (a limit of the listener, its address's share,
    /// or of what the request asked for, was reached).
    busy: AtomicU64,
    /// Connections closed at accept or before their TLS handshake because the listener or
    /// their address was at a limit.
    connections: AtomicU64,
}

impl Refusals {
    /// Requests answered busy so far.
    pub(in crate::sync) fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Connections refused so far.
    pub(in crate::sync) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long [`Listener::stop_and_wait`] waits for the listening socket to close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every connection of one listener shares.
struct Shared {
    engine: Weak<SyncEngine>,
    tls: TlsAcceptor,
    limits: Limits,
    addresses: Arc<Addresses>,
    in_flight: Semaphore,
    /// The body budget (`max_buffered_bytes`): request bodies while read and handled,
    /// replies until written.
    buffered: ByteBudget,
    refusals: Arc<Refusals>,
    /// Told when the listener stops: watches then answer at once, so their connections
    /// close with the others rather than a watch timeout later.
    stopped: watch::Receiver<bool>,
}

impl Listener {
    /// Binds `addr` and starts accepting on `runtime`, proving `identity` to clients and
    /// counting what it refuses in `refusals`.
    pub(in crate::sync) fn start(
        runtime: &tokio::runtime::Runtime,
        addr: &str,
        identity: &TlsIdentity,
        engine: Weak<SyncEngine>,
        limits: Limits,
        refusals: Arc<Refusals>,
    ) -> Result<Listener> {
        let tls = TlsAcceptor::from(identity.server_config()?);
        let socket = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        let bound = socket
            .local_addr()
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(socket)
                .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?
        };
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            engine,
            tls,
            in_flight: Semaphore::new(limits.max_requests_in_flight),
            // Rounded up, as what a body asks for is: the budget holds a body of its size.
            buffered: ByteBudget::new(limits.max_buffered_bytes),
            addresses: Addresses::new(limits.clone()),
            limits,
            refusals,
            stopped: stopped.clone(),
        });
        let (closing, closed) = std::sync::mpsc::channel::<()>();
        let serving = shared.clone();
        runtime.spawn(async move {
            // The socket is closed when the loop returns (it owns the listener).
            accept_loop(listener, serving, stopped).await;
            drop(closing);
        });
        Ok(Listener {
            addr: bound,
            stop,
            closed,
            shared,
        })
    }

    /// The address bound.
    pub(in crate::sync) fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The address bound, as a socket address.
    pub(in crate::sync) fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it listens on every interface (0.0.0.0 or [::]): an address no peer can use.
    pub(in crate::sync) fn is_wildcard(&self) -> bool {
        self.addr.ip().is_unspecified()
    }

    /// Connections open now.
    pub(in crate::sync) fn open_connections(&self) -> usize {
        self.shared.addresses.open_connections()
    }

    /// Requests being handled now (each holds one of its `max_requests_in_flight` slots).
    pub(in crate::sync) fn requests_in_flight(&self) -> usize {
        self.shared.limits.max_requests_in_flight - self.shared.in_flight.available_permits()
    }

    /// Watches held now.
    pub(in crate::sync) fn watches(&self) -> usize {
        self.shared.addresses.watches()
    }

    /// Stops accepting and closes the listening socket; connections in progress end as
    /// their requests do.
    pub(in crate::sync) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// [`Listener::stop`], then waits (at most [`CLOSE_WAIT`]) until the listening socket
    /// is closed, so that its port may be bound again at once.
    pub(in crate::sync) fn stop_and_wait(self) {
        self.stop();
        let _ = self.closed.recv_timeout(CLOSE_WAIT);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or a connection reset before accept: pause, go on.
                sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.engine.strong_count() == 0 {
            return;
        }
        let _ = stream.set_nodelay(true);
        // A connection over the caps is closed before any TLS work.
        if let Some(guard) = shared.addresses.admit(Address::of(peer.ip())) {
            let stopped = stopped.clone();
            tokio::spawn(serve_connection(stream, shared.clone(), guard, stopped));
        } else {
            Refusals::count(&shared.refusals.connections);
        }
    }
}

/// Serves one connection until it closes or the listener stops: then a handshake under
/// way is dropped, and a connection finishes the request it is handling, if any, and
/// closes.
async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    guard: super::addresses::ConnectionGuard,
    mut stopped: watch::Receiver<bool>,
) {
    let address = guard.address();
    let activity = guard.activity();
    let handshaken = tokio::select! {
        handshaken = handshake(&shared, address, stream) => handshaken,
        () = until_stopped(&mut stopped) => None,
        () = activity.evicted() => None,
    };
    let Some((stream, peer)) = handshaken else {
        return;
    };
    let io = TokioIo::new(stream);
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |request| {
            let (shared, activity) = (shared.clone(), activity.clone());
            async move {
                activity.busy();
                Ok::<_, std::convert::Infallible>(
                    respond(&shared, address, peer, request, activity).await,
                )
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192))
        .max_header_size(shared.limits.max_header_bytes)
        // A client that closes its sending side after a request still gets the reply.
        .half_close(true)
        .keep_alive(true);
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let stopped_or_evicted = async {
        tokio::select! {
            // Also when the listener is dropped without a stop (the sender gone).
            () = until_stopped(&mut stopped) => {}
            // Evicted while idle: closed at once (a request begun meanwhile is finished).
            () = activity.evicted() => {}
        }
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stopped_or_evicted => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    drop(guard);
}

/// Returns once the listener is stopped, or dropped.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await.map(drop);
}

/// The TLS handshake of a new connection, as one request of its address: the stream and
/// the device key the client proved, or `None` (the connection is dropped) if the address
/// is over its share, the handshake fails or it takes longer than `idle_timeout`.
async fn handshake(
    shared: &Shared,
    address: Address,
    stream: TcpStream,
) -> Option<(tokio_rustls::server::TlsStream<WriteDeadline>, PublicKey)> {
    let Ok(_slot) = shared.addresses.begin_request(address) else {
        Refusals::count(&shared.refusals.connections);
        return None;
    };
    let stream = WriteDeadline::new(stream, shared.limits.body_timeout);
    let stream = timeout(shared.limits.idle_timeout, shared.tls.accept(stream))
        .await
        .ok()?
        .ok()?;
    let peer = tls::peer_device(stream.get_ref().1).ok()?;
    Some((stream, peer))
}

/// Handles one request; every refusal is an [`ErrorReply`] with its status. The
/// connection's `activity` is marked idle once the reply is written (or dropped).
async fn respond(
    shared: &Shared,
    address: Address,
    peer: PublicKey,
    request: Request<Incoming>,
    activity: Arc<Activity>,
) -> Response<Full<Bytes>> {
    let response = |code, body, close| response(code, until_written(body, activity), close);
    match handle(shared, address, peer, request).await {
        Ok(body) => response(StatusCode::OK, body, false),
        Err(e) => {
            if matches!(e, Error::Busy(_)) {
                Refusals::count(&shared.refusals.busy);
            }
            let code = http_status(&e);
            let body = ErrorReply {
                status: e.status().code(),
                message: e.to_string(),
            }
            .encode();
            // After a refused body, the connection is not reused: unread bytes may follow.
            response(
                code,
                Bytes::from(body),
                code != StatusCode::NOT_FOUND && code != StatusCode::FORBIDDEN,
            )
        }
    }
}

/// `body`, marking the connection's `activity` idle when hyper lets go of it: once it is
/// written, or the connection is gone. A connection writing a reply is not closed to make
/// room for another.
fn until_written(body: Bytes, activity: Arc<Activity>) -> Bytes {
    Bytes::from_owner(UntilWritten { body, activity })
}

/// See [`until_written`].
struct UntilWritten {
    body: Bytes,
    activity: Arc<Activity>,
}

impl AsRef<[u8]> for UntilWritten {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for UntilWritten {
    fn drop(&mut self) {
        self.activity.idle();
    }
}

fn response(code: StatusCode, body: Bytes, close: bool) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/octet-stream");
    if close {
        builder = builder.header(CONNECTION, "close");
    }
    builder
        .body(Full::new(body))
        .expect("a static response is well formed")
}

/// The HTTP status that carries an error (the body says the mnemo status).
fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidArgument(_) | Error::Network(_) | Error::Corrupt(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::PermissionDenied(_) | Error::AuthFailed => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The reply to one request: a handler's, counted against the body budget (see
/// [`counted`]), or a watch's position.
async fn handle(
    shared: &Shared,
    address: Address,
    peer: PublicKey,
    request: Request<Incoming>,
) -> Result<Bytes> {
    let (held, watch, engine) = {
        let _request_guard = shared.addresses.begin_request(address).map_err(|refusal| {
            Error::Busy(match refusal {
                Refusal::Rate => "server busy: too many requests from this address".into(),
                Refusal::InFlight => {
                    "server busy: too many requests in flight from this address".into()
                }
            })
        })?;
        if request.method() != Method::POST {
            return Err(Error::invalid("sync requests are POSTs"));
        }
        let endpoint = Endpoint::from_path(request.uri().path())
            .ok_or_else(|| Error::NotFound(format!("no sync endpoint {}", request.uri().path())))?;
        let length = announced_length(&request, shared.limits.max_message_bytes)?;
        let _reserved = shared
            .buffered
            .take_within(length, shared.limits.queue_timeout, || {
                "server busy: too many request bodies in memory".into()
            })
            .await?;
        let body = read_body(request.into_body(), length, shared.limits.body_timeout).await?;
        let _slot = timeout(shared.limits.queue_timeout, shared.in_flight.acquire())
            .await
            .map_err(|_| Error::Busy("server busy: every request slot stayed taken".into()))?
            .map_err(|_| Error::Internal("the request slots were closed".into()))?;
        let engine = shared
            .engine
            .upgrade()
            .ok_or_else(|| Error::Network("the sync engine is shutting down".into()))?;
        if endpoint != Endpoint::Watch {
            let reply = on_pool(move || handlers::dispatch(&engine, &peer, endpoint, body));
            let reply = reply.await?;
            drop((_reserved, _slot));
            return counted(shared, reply).await;
        }
        let held = shared
            .addresses
            .begin_watch(address)
            .ok_or_else(|| Error::Busy("server busy: too many watches; poll instead".into()))?;
        let admitting = engine.clone();
        let watch = on_pool(move || handlers::admit_watch(&admitting, &body)).await?;
        // The engine is not held while waiting: dropping it ends the listener.
        (held, watch, Arc::downgrade(&engine))
    };
    Ok(Bytes::from(wait(shared, held, watch, engine).await))
}

/// A reply's bytes with their share of the body budget: the room is given back when the
/// bytes are dropped, which hyper does once it has written them (or the connection is
/// gone), so a client that does not read its replies holds budget, not unbounded memory.
/// [`Error::Busy`] if the budget has no room within `queue_timeout`.
async fn counted(shared: &Shared, reply: Vec<u8>) -> Result<Bytes> {
    let budget = &shared.buffered;
    let room = budget
        .take_within(
            reply.len().min(budget.bytes()),
            shared.limits.queue_timeout,
            || "server busy: too many replies in memory".into(),
        )
        .await?;
    Ok(Bytes::from_owner(CountedReply { reply, _room: room }))
}

/// See [`counted`].
struct CountedReply {
    reply: Vec<u8>,
    _room: Room,
}

impl AsRef<[u8]> for CountedReply {
    fn as_ref(&self) -> &[u8] {
        &self.reply
    }
}

/// Runs a handler on the runtime's bounded blocking pool.
async fn on_pool<T: Send + 'static>(
    handler: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(handler)
        .await
        .map_err(|e| Error::Internal(format!("a sync handler failed: {e}")))?
}

/// Holds an admitted watch, outside every request slot and thread, until the database's
/// position is other than the client's (past it; or before it, as after this storage was
/// restored from a backup, at once), `watch_timeout` passes or the listener stops; answers
/// the position then.
async fn wait(
    shared: &Shared,
    _held: super::addresses::WatchGuard,
    mut watch: handlers::Watch,
    engine: Weak<SyncEngine>,
) -> Vec<u8> {
    let after = watch.after;
    let mut stopped = shared.stopped.clone();
    tokio::select! {
        _ = timeout(
            shared.limits.watch_timeout,
            watch.position.wait_for(|position| *position != after),
        ) => {}
        () = until_stopped(&mut stopped) => {}
    }
    let position = *watch.position.borrow();
    if let Some(engine) = engine.upgrade() {
        engine.end_watch(watch);
    }
    wire::encode_position(position)
}

/// The body length the request announces: required, at most `max` bytes.
fn announced_length(request: &Request<Incoming>, max: usize) -> Result<usize> {
    let length = request
        .headers()
        .get(CONTENT_LENGTH)
        .ok_or_else(|| Error::invalid("a sync request has a Content-Length"))?
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| Error::invalid("malformed Content-Length"))?;
    if length > max as u64 {
        return Err(Error::invalid(format!(
            "sync message too large: {length} bytes announced, at most {max}"
        )));
    }
    Ok(length as usize)
}

/// Reads exactly `length` bytes of body within `limit` time, into one buffer (each chunk
/// hyper read is copied there and let go: the body is held once, not as chunks and a copy).
async fn read_body(body: Incoming, length: usize, limit: std::time::Duration) -> Result<Vec<u8>> {
    let mut body = Limited::new(body, length);
    let mut read = Vec::with_capacity(length);
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Error::invalid(format!("reading the request body: {e}")))?;
            if let Ok(chunk) = frame.into_data() {
                read.extend_from_slice(&chunk);
            }
        }
        Ok::<_, Error>(())
    };
    timeout(limit, reading)
        .await
        .map_err(|_| Error::Network("the request body did not arrive in time".into()))??;
    if read.len() != length {
        return Err(Error::invalid(
            "the request body does not match its Content-Length",
        ));
    }
    Ok(read)
}

/// A stream whose writes fail once one has made no progress for a while: a client that
/// stops reading its responses cannot hold a connection (and its buffers) forever.
struct WriteDeadline {
    stream: TcpStream,
    limit: std::time::Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, limit: std::time::Duration) -> Self {
        WriteDeadline {
            stream,
            limit,
            stalled: None,
        }
    }

    /// Called when a write could not proceed: starts the clock, or fails if it ran out.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = self.limit;
        let clock = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Pending => self.check_stall(cx).map(|r| r.map(|()| 0)),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => self.check_stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
