//! Asking a peer over HTTP/1.1 in TLS 1.3: one connection per exchange (a round, a watch),
//! reused for its requests. The TLS handshake proves the peer's device key (the one pinned
//! in the address, if any) and ours. Nothing a peer does can hang the caller: connecting
//! (TLS handshake included), each request (response body included) and the whole exchange
//! have deadlines, and a response is refused if it announces or sends more than the
//! largest message, or more than the largest honest reply to its request
//! ([`crate::sync::wire::Request::largest_reply`]).

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::time::{timeout, timeout_at};
use tokio_rustls::TlsConnector;

use super::path;
use super::tls::{self, TlsIdentity};
use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::sync::address::PeerAddr;
use crate::sync::wire::ErrorReply;
use crate::sync::Limits;

/// A connection to the peer at one address, for one exchange that ends by a deadline;
/// blocking calls on the engine's runtime (rounds run on their caller's thread).
pub(in crate::sync) struct PeerConnection<'a> {
    runtime: &'a Runtime,
    link: Link,
}

impl<'a> PeerConnection<'a> {
    /// A connection (opened at the first request) to `addr`, as `identity`, for an
    /// exchange that must end within `limits.round_deadline`.
    pub(in crate::sync) fn new(
        runtime: &'a Runtime,
        addr: &PeerAddr,
        identity: &TlsIdentity,
        limits: &Limits,
    ) -> Self {
        PeerConnection {
            runtime,
            link: Link::new(addr.clone(), identity.clone(), limits.clone()),
        }
    }

    /// The peer's device id, proven in the TLS handshake (connecting first if needed).
    pub(in crate::sync) fn peer(&mut self) -> Result<PublicKey> {
        self.runtime.block_on(self.link.peer())
    }

    /// The limits the connection was made with (the round's, however they change since).
    pub(in crate::sync) fn limits(&self) -> &Limits {
        &self.link.limits
    }

    /// POSTs `body` to `endpoint` and returns the reply's body, of at most `largest` bytes
    /// (see [`Link::post`]).
    pub(in crate::sync) fn post(
        &mut self,
        endpoint: &str,
        body: Vec<u8>,
        largest: usize,
    ) -> Result<Vec<u8>> {
        self.runtime
            .block_on(self.link.post(endpoint, body, largest))
    }
}

/// The asynchronous side of a connection to a peer, owning everything it needs: a task on
/// the engine's runtime can keep one (background watches do) without borrowing the engine.
pub(in crate::sync) struct Link {
    addr: PeerAddr,
    identity: TlsIdentity,
    limits: Limits,
    deadline: Instant,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The device key the peer proved on the last connection.
    peer: Option<PublicKey>,
}

impl Link {
    /// A link (connected at the first request) to `addr`, as `identity`, for an exchange
    /// that must end within `limits.round_deadline`.
    pub(in crate::sync) fn new(addr: PeerAddr, identity: TlsIdentity, limits: Limits) -> Link {
        let deadline = Instant::now() + limits.round_deadline;
        Link {
            addr,
            identity,
            limits,
            deadline,
            sender: None,
            peer: None,
        }
    }

    /// Starts a new exchange on the same connection: its deadline counts from now.
    pub(in crate::sync) fn renew(&mut self) {
        self.deadline = Instant::now() + self.limits.round_deadline;
    }

    /// The peer's device id, proven in the TLS handshake (connecting first if needed).
    pub(in crate::sync) async fn peer(&mut self) -> Result<PublicKey> {
        if let Some(peer) = self.peer {
            return Ok(peer);
        }
        self.connected().await?;
        self.peer
            .ok_or_else(|| Error::Internal("connected without a peer identity".into()))
    }

    /// POSTs `body` to `endpoint` and returns the reply's body. A refusal by the peer comes
    /// back as the error it reported ([`Error::from_peer`]); a timeout, a broken connection or
    /// a reply of more than `largest` bytes (or the largest message) as [`Error::Network`],
    /// the oversized one refused before more than that is read. After an error the
    /// connection is dropped.
    pub(in crate::sync) async fn post(
        &mut self,
        endpoint: &str,
        body: Vec<u8>,
        largest: usize,
    ) -> Result<Vec<u8>> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Network(format!(
                "{}: the round took longer than {} s",
                self.addr,
                self.limits.round_deadline.as_secs()
            )));
        }
        let limit = left.min(self.limits.request_timeout);
        let largest = largest.min(self.limits.max_message_bytes);
        let outcome = match timeout(limit, self.exchange(endpoint, body, largest)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Network(format!(
                "{}: no complete reply within {} ms",
                self.addr,
                limit.as_millis()
            ))),
        };
        if outcome.is_err() {
            self.sender = None;
        }
        outcome.and_then(|(status, bytes)| self.reply(status, bytes))
    }

    async fn exchange(
        &mut self,
        endpoint: &str,
        body: Vec<u8>,
        max: usize,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let addr = self.addr.host_port.clone();
        let addr = &addr;
        let network =
            |what: &str, e: &dyn std::fmt::Display| Error::Network(format!("{addr}: {what}: {e}"));
        let sender = self.connected().await?;
        sender
            .ready()
            .await
            .map_err(|e| network("the connection closed", &e))?;
        let request = Request::post(path(endpoint))
            .header(HOST, addr)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Internal(format!("building a sync request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| network("sending the request", &e))?;
        let status = response.status();
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(Error::Network(format!(
                "{addr}: reply too large (more than {max} bytes for this request)"
            )));
        }
        let bytes = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| network("reading the reply", &e))?
            .to_bytes();
        // Not copied: the reply's one buffer becomes the vector.
        Ok((status, Vec::from(bytes)))
    }

    /// The open connection, connecting first if there is none: TCP, then a TLS handshake
    /// in which the peer proves its device key (the pinned one, if the address has one,
    /// else, once a device answered, that one: a connection made again mid-round never
    /// talks to another device), both within `connect_timeout`; a timeout names the step
    /// that ran out of time.
    async fn connected(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(self.sender.as_mut().expect("checked above"));
        }
        let expected = self.addr.device.or(self.peer);
        let deadline = tokio::time::Instant::now() + self.limits.connect_timeout;
        let addr = self.addr.host_port.clone();
        let addr = &addr;
        let network = |e: &dyn std::fmt::Display| Error::Network(format!("{addr}: {e}"));
        let stream = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Network(format!("{addr}: connecting timed out")))?
            .map_err(|e| network(&e))?;
        let _ = stream.set_nodelay(true);
        let connector = TlsConnector::from(self.identity.client_config(expected)?);
        let stream = timeout_at(deadline, connector.connect(tls::server_name(), stream))
            .await
            .map_err(|_| Error::Network(format!("{addr}: the TLS handshake timed out")))?
            .map_err(|e| match (e.kind(), expected) {
                // Before any proof was asked for: not a sign of another device answering.
                (
                    std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe,
                    _,
                ) => Error::Network(format!(
                    "{addr}: the peer closed the connection during the TLS handshake \
                         (a listener does so at its connection limits): {e}"
                )),
                (_, Some(expected)) => Error::Network(format!(
                    "{addr}: the peer did not prove device id {expected} ({e})"
                )),
                (_, None) => Error::Network(format!("{addr}: TLS handshake failed: {e}")),
            })?;
        let peer = tls::peer_device(stream.get_ref().1)?;
        if expected.is_some_and(|expected| expected != peer) {
            return Err(Error::Network(format!(
                "{addr}: the peer proved device id {peer}, not the one expected"
            )));
        }
        self.peer = Some(peer);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(self.limits.max_header_bytes.max(8192))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| network(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    fn reply(&self, status: StatusCode, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        match ErrorReply::decode(&bytes) {
            Ok(reply) => Err(Error::from_peer(reply.status, &reply.message)),
            Err(_) => Err(Error::Network(format!(
                "{}: HTTP status {}",
                self.addr.host_port,
                status.as_u16()
            ))),
        }
    }
}
