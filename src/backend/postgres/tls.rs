//! TLS for PostgreSQL connections: the driver's connector traits (`MakeTlsConnect`,
//! `TlsConnect`, `TlsStream` of tokio-postgres) over tokio-rustls, and the check of the
//! server's certificate that each `sslmode` asks for.
//!
//! - no `sslrootcert` (`prefer`, `require`): any certificate is accepted. The session is
//!   encrypted, but the server is not authenticated.
//! - `sslrootcert`, any mode but `verify-full`: the certificate must lead to one in the file
//!   (a chain to a CA there, or the very certificate, for a self-signed server), within its
//!   validity period.
//! - `verify-full`: that, and the URL's host must be among the certificate's
//!   subjectAltName entries (DNS name or IP address; its common name is not read).
//!
//! SCRAM authentication gets `tls-server-end-point` channel binding from the server's
//! certificate (see `cert.rs`), so a man in the middle that terminates TLS is detected by a
//! server offering SCRAM-SHA-256-PLUS even when the certificate is not checked.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;

use super::cert;
use super::options::SslMode;
use crate::error::{Error, Result};

/// The driver's TLS connector for one URL: makes a [`RustlsConnect`] per host it tries.
pub(super) struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    /// Said with a refused certificate: the mode and the root file.
    policy: Arc<str>,
}

impl MakeRustlsConnect {
    /// The connector for `mode`, trusting the certificates of the PEM file `root_cert` when
    /// given (read now). [`Error::InvalidArgument`] when the file cannot be read or holds no
    /// usable certificate.
    pub(super) fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect> {
        let trust = root_cert.map(Trust::load).transpose()?;
        let policy = match root_cert {
            Some(path) => format!("sslmode={mode}, sslrootcert {}", path.display()),
            None => format!("sslmode={mode}"),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier {
            trust,
            check_name: mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS configuration: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // What libpq sends (PostgreSQL 17 requires it for direct TLS; older servers ignore it).
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect {
            config: Arc::new(config),
            policy: policy.into(),
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Never fails: a host that is no DNS name or IP address (a Unix socket's is empty) has
    /// its TLS handshake refused, so the server's refusal of TLS still comes first there.
    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        Ok(RustlsConnect {
            connector: TlsConnector::from(self.config.clone()),
            name: ServerName::try_from(host.to_string()).ok(),
            policy: self.policy.clone(),
        })
    }
}

/// A TLS handshake with one host.
pub(super) struct RustlsConnect {
    connector: TlsConnector,
    name: Option<ServerName<'static>>,
    policy: Arc<str>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        match self.name {
            Some(name) => Handshake::Running {
                connect: Box::new(self.connector.connect(name, stream)),
                policy: self.policy,
            },
            None => Handshake::NoName,
        }
    }
}

/// The future of a TLS handshake.
pub(super) enum Handshake<S> {
    /// The handshake under way, and what to say if the certificate is refused.
    Running {
        connect: Box<tokio_rustls::Connect<S>>,
        policy: Arc<str>,
    },
    /// No name to check the certificate against: fails at once.
    NoName,
}

impl<S> Future for Handshake<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<RustlsStream<S>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handshake::Running { connect, policy } => Pin::new(&mut **connect)
                .poll(cx)
                .map_ok(RustlsStream)
                .map_err(|e| explain(e, policy)),
            Handshake::NoName => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the host is no DNS name or IP address to check the certificate against",
            ))),
        }
    }
}

/// Says which rule refused the server's certificate (other failures pass unchanged).
fn explain(e: io::Error, policy: &str) -> io::Error {
    let hint = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            " (no certificate of the sslrootcert file issued it)"
        }
        Some(rustls::Error::InvalidCertificate(_)) => "",
        _ => return e,
    };
    io::Error::new(
        e.kind(),
        format!("the server's certificate is refused ({policy}): {e}{hint}"),
    )
}

/// A TLS session with the server.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|server| cert::tls_server_end_point(server))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// The certificates of an `sslrootcert` file.
#[derive(Debug)]
struct Trust {
    roots: RootCertStore,
    /// The same certificates as given: a server presenting one of them is trusted as it is.
    certs: Vec<CertificateDer<'static>>,
}

impl Trust {
    fn load(path: &Path) -> Result<Trust> {
        let pem = std::fs::read(path).map_err(|e| {
            Error::invalid(format!(
                "cannot read the sslrootcert file {}: {e}",
                path.display()
            ))
        })?;
        Trust::from_pem(&pem).map_err(|why| {
            Error::invalid(format!("the sslrootcert file {}: {why}", path.display()))
        })
    }

    fn from_pem(pem: &[u8]) -> std::result::Result<Trust, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("malformed PEM: {e}"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (BEGIN CERTIFICATE)".into());
        }
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("a certificate cannot be used: {e}"))?;
        }
        Ok(Trust { roots, certs })
    }
}

/// Checks the server's certificate as the `sslmode` and `sslrootcert` ask.
#[derive(Debug)]
struct Verifier {
    /// `None`: no root file, any certificate is accepted.
    trust: Option<Trust>,
    /// `verify-full`: the host must be one the certificate names.
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(trust) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        if trust.certs.iter().any(|c| c == end_entity) {
            // A certificate of the file itself (a self-signed server, which OpenSSL makes
            // a CA by default and webpki would refuse as a server's): trusted as it is,
            // within its dates.
            check_dates(end_entity, now)?;
        } else {
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                &trust.roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Refuses a certificate outside its validity period.
fn check_dates(der: &[u8], now: UnixTime) -> std::result::Result<(), rustls::Error> {
    let (not_before, not_after) = cert::validity(der).ok_or(CertificateError::BadEncoding)?;
    let at =
        |secs: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0) as u64));
    let time = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if time < not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: at(not_before),
        }
        .into());
    }
    if time > not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: at(not_after),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CA: &str = include_str!("testdata/ca.pem");
    const LEAF: &str = include_str!("testdata/localhost-by-ca.pem");
    const SELF_SIGNED: &str = include_str!("testdata/self-signed-localhost.pem");
    const OTHER_CA: &str = include_str!("testdata/other-ca.pem");

    /// 2030-03-17: inside every test certificate's validity.
    fn in_2030() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_900_000_000))
    }

    fn verifier(root: Option<&str>, check_name: bool) -> Verifier {
        Verifier {
            trust: root.map(|pem| Trust::from_pem(pem.as_bytes()).unwrap()),
            check_name,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    fn check(
        v: &Verifier,
        server: &str,
        host: &str,
        now: UnixTime,
    ) -> std::result::Result<(), rustls::Error> {
        let der = CertificateDer::from_pem_slice(server.as_bytes()).unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        v.verify_server_cert(&der, &[], &name, &[], now).map(|_| ())
    }

    fn refused_for(result: std::result::Result<(), rustls::Error>) -> String {
        match result {
            Err(rustls::Error::InvalidCertificate(e)) => format!("{e:?}"),
            other => panic!("expected a refused certificate, got {other:?}"),
        }
    }

    #[test]
    fn without_a_root_anything_goes() {
        let v = verifier(None, false);
        for server in [CA, LEAF, SELF_SIGNED, OTHER_CA] {
            check(&v, server, "anything.example", in_2030()).unwrap();
        }
    }

    #[test]
    fn a_chain_to_the_root_is_needed() {
        for full in [false, true] {
            let v = verifier(Some(CA), full);
            check(&v, LEAF, "localhost", in_2030()).unwrap();
            check(&v, LEAF, "127.0.0.1", in_2030()).unwrap();
            // Not issued by the root (webpki first refuses it as a CA serving as a server).
            refused_for(check(&v, SELF_SIGNED, "localhost", in_2030()));
            let wrong = verifier(Some(OTHER_CA), full);
            assert!(
                refused_for(check(&wrong, LEAF, "localhost", in_2030())).contains("UnknownIssuer")
            );
            let expired = UnixTime::since_unix_epoch(Duration::from_secs(7_000_000_000));
            assert!(refused_for(check(&v, LEAF, "localhost", expired)).contains("Expired"));
        }
    }

    #[test]
    fn only_verify_full_checks_the_name() {
        let ca = verifier(Some(CA), false);
        let full = verifier(Some(CA), true);
        for host in ["db.example", "127.0.0.2", "::1"] {
            check(&ca, LEAF, host, in_2030()).unwrap();
            assert!(refused_for(check(&full, LEAF, host, in_2030())).contains("NotValidForName"));
        }
    }

    #[test]
    fn a_self_signed_server_in_the_file_is_trusted_within_its_dates() {
        let full = verifier(Some(SELF_SIGNED), true);
        check(&full, SELF_SIGNED, "localhost", in_2030()).unwrap();
        assert!(
            refused_for(check(&full, SELF_SIGNED, "db.example", in_2030()))
                .contains("NotValidForName")
        );
        check(
            &verifier(Some(SELF_SIGNED), false),
            SELF_SIGNED,
            "db.example",
            in_2030(),
        )
        .unwrap();
        let before = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        assert!(refused_for(check(&full, SELF_SIGNED, "localhost", before)).contains("NotValidYet"));
        let after = UnixTime::since_unix_epoch(Duration::from_secs(5_000_000_000));
        assert!(refused_for(check(&full, SELF_SIGNED, "localhost", after)).contains("Expired"));
        // One of several certificates of the file.
        let both = format!("{OTHER_CA}{SELF_SIGNED}");
        check(
            &verifier(Some(&both), true),
            SELF_SIGNED,
            "localhost",
            in_2030(),
        )
        .unwrap();
        check(&verifier(Some(&both), true), LEAF, "localhost", in_2030()).unwrap_err();
    }

    #[test]
    fn root_files_must_hold_certificates() {
        assert!(Trust::from_pem(b"")
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(Trust::from_pem(b"hello")
            .unwrap_err()
            .contains("no PEM certificate"));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(Trust::from_pem(key_only)
            .unwrap_err()
            .contains("no PEM certificate"));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Trust::from_pem(garbage).is_err());
        assert_eq!(
            Trust::from_pem(format!("{CA}{OTHER_CA}").as_bytes())
                .unwrap()
                .certs
                .len(),
            2
        );
    }

    #[test]
    fn a_missing_root_file_is_an_invalid_argument() {
        let Err(Error::InvalidArgument(m)) = MakeRustlsConnect::new(
            SslMode::VerifyFull,
            Some(Path::new("/nonexistent/mnemo-root.pem")),
        ) else {
            panic!("a missing file must be refused");
        };
        assert!(m.contains("/nonexistent/mnemo-root.pem"), "{m}");
    }
}
