//! TLS 1.3 under sync, where each side is its Ed25519 device key. Both sides present a
//! self-signed device certificate ([`super::certificate`]) and prove its key with the
//! handshake signature; neither trusts names, issuers or dates. A client may expect one
//! device id (a pinned address, a ticket) and refuses any other. Sessions are never
//! resumed, so every connection proves both keys afresh.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureAlgorithm, SignatureScheme,
};

use super::certificate::{certificate_key, device_certificate};
use crate::crypto::{KeyRing, PublicKey};
use crate::error::{Error, Result};

/// The application protocol both sides name (ALPN), so no other protocol is mistaken
/// for sync.
const ALPN: &[u8] = b"mnemo-sync/1";
/// The server name a client sends: peers are told apart by key, not by name.
const SERVER_NAME: &str = "mnemo";

/// A device's TLS identity: its certificate and a signer that asks the key ring.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    certified: Arc<CertifiedKey>,
}

impl TlsIdentity {
    /// The identity of `key`, held by `keys` (the device's key ring).
    pub fn new(keys: Arc<dyn KeyRing>, key: PublicKey) -> Result<TlsIdentity> {
        let certificate = device_certificate(&*keys, &key)?;
        let signing = Arc::new(DeviceKey { keys, key });
        Ok(TlsIdentity {
            certified: Arc::new(CertifiedKey::new(
                vec![CertificateDer::from(certificate)],
                signing,
            )),
        })
    }

    /// The configuration of a listener: TLS 1.3, a device certificate required of every
    /// client, no session resumption.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_setup)?
            .with_client_cert_verifier(Arc::new(DeviceVerifier { expected: None }))
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// The configuration of a client that accepts the server's device key if it is
    /// `expected` (any device key when `None`).
    pub fn client_config(&self, expected: Option<PublicKey>) -> Result<Arc<ClientConfig>> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DeviceVerifier { expected }))
            .with_client_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// The name a client gives in its hello.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// The device id the other side of an established connection proved.
pub fn peer_device(connection: &CommonState) -> Result<PublicKey> {
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| certificate_key(cert))
        .ok_or_else(|| Error::Network("the peer proved no device key".into()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls12_unused() -> rustls::Error {
    rustls::Error::General("sync speaks TLS 1.3 only".into())
}

fn tls_setup(e: rustls::Error) -> Error {
    Error::Internal(format!("TLS configuration: {e}"))
}

impl rustls::server::ResolvesServerCert for TlsIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for TlsIdentity {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        schemes
            .contains(&SignatureScheme::ED25519)
            .then(|| self.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Signs handshakes with the device key, through the key ring (the key never leaves it).
struct DeviceKey {
    keys: Arc<dyn KeyRing>,
    key: PublicKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("key", &self.key).finish()
    }
}

impl SigningKey for DeviceKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| -> Box<dyn Signer> {
                Box::new(DeviceKey {
                    keys: self.keys.clone(),
                    key: self.key,
                })
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for DeviceKey {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        self.keys
            .sign(&self.key, message)
            .map(|signature| signature.to_vec())
            .map_err(|e| rustls::Error::General(format!("signing the handshake: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Accepts a peer's certificate for its Ed25519 key alone (and only `expected`, if set),
/// and checks the handshake signature with that key.
#[derive(Debug)]
struct DeviceVerifier {
    expected: Option<PublicKey>,
}

impl DeviceVerifier {
    fn check(&self, certificate: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
        let key = certificate_key(certificate).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        match self.expected {
            Some(expected) if expected != key => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(()),
        }
    }

    fn signature(
        message: &[u8],
        certificate: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(bad());
        }
        let key = certificate_key(certificate).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let signature: [u8; 64] = dss.signature().try_into().map_err(|_| bad())?;
        key.verify(message, &signature).map_err(|_| bad())?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for DeviceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_unused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for DeviceVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_unused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
