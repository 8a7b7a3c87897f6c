//! Validator identity on the wire: self-signed certificates and pinned-key verifiers.
//!
//! Each validator presents an X.509 certificate self-signed with its Ed25519 validator
//! key. There is no CA and no hostname check: both sides (mutual TLS) read the Ed25519
//! key out of the peer certificate's SubjectPublicKeyInfo and accept it only if it is a
//! genesis validator's key other than their own, *during* the handshake, then check the
//! TLS 1.3 handshake signature with it (ring's algorithms, Ed25519 only), which proves
//! the peer holds the private key. A dialler also names the validator it expects in the
//! TLS server name (`r<id>.stele`), so a valid validator at the wrong address is refused
//! too. Session resumption is off: every connection is a full mutual authentication.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use stele_crypto::{KeyPair, PublicKey};
use stele_types::{ReplicaId, ValidatorSet};

use crate::metrics::{Metrics, RejectReason};
use crate::ALPN;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why an identity could not be built or a peer's identity was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot build a TLS certificate from validator key {key}: {reason}")]
    Certificate { key: PublicKey, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
    #[error("peer certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error(
        "peer certificate key is not Ed25519: expected a 44-byte Ed25519 \
         SubjectPublicKeyInfo, found {found_len} bytes starting {found_prefix}"
    )]
    NotEd25519 {
        found_len: usize,
        found_prefix: String,
    },
    #[error("peer sent a chain of {0} certificates, expected one self-signed certificate")]
    Chain(usize),
    #[error("peer key {0} is not in the genesis validator set")]
    UnknownKey(PublicKey),
    #[error("peer presents our own key {0}")]
    OwnKey(PublicKey),
    #[error("dialled validator {expected} but the peer holds the key of validator {found}")]
    WrongPeer {
        expected: ReplicaId,
        found: ReplicaId,
    },
    #[error("connection has no peer certificate")]
    NoPeerCertificate,
}

impl IdentityError {
    fn reason(&self) -> RejectReason {
        match self {
            IdentityError::UnknownKey(_) => RejectReason::UnknownKey,
            IdentityError::OwnKey(_) => RejectReason::SelfKey,
            IdentityError::WrongPeer { .. } => RejectReason::WrongPeer,
            _ => RejectReason::BadCertificate,
        }
    }
}

/// The Ed25519 key in a certificate's SubjectPublicKeyInfo.
pub fn ed25519_key_of(cert: &CertificateDer<'_>) -> Result<PublicKey, IdentityError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let spki = parsed.subject_public_key_info();
    let bytes: &[u8] = spki.as_ref();
    let not_ed25519 = || IdentityError::NotEd25519 {
        found_len: bytes.len(),
        found_prefix: bytes.iter().take(12).map(|b| format!("{b:02x}")).collect(),
    };
    let key = bytes
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or_else(not_ed25519)?;
    let key: [u8; 32] = key.try_into().map_err(|_| not_ed25519())?;
    Ok(PublicKey(key))
}

/// Our certificate (self-signed with the validator key) and the key in rustls' form.
pub fn self_signed(
    key: &KeyPair,
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), IdentityError> {
    let err = |reason: String| IdentityError::Certificate {
        key: key.public(),
        reason,
    };
    let pem = key.to_pem();
    let kp = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("stele validator {}", key.public()),
    );
    let cert = params.self_signed(&kp).map_err(|e| err(e.to_string()))?;
    let der = PrivatePkcs8KeyDer::from(kp.serialize_der());
    let cert = cert.der().clone();
    debug_assert_eq!(ed25519_key_of(&cert).ok(), Some(key.public()));
    Ok((cert, der))
}

/// The TLS server name under which validator `id` is dialled.
pub fn server_name(id: ReplicaId) -> String {
    format!("r{}.stele", id.0)
}

fn expected_id(name: &ServerName<'_>) -> Option<ReplicaId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    let id = dns.as_ref().strip_prefix('r')?.strip_suffix(".stele")?;
    id.parse::<u16>().ok().map(ReplicaId)
}

/// Checks peer certificates against the genesis validator set, on both sides.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    set: Arc<ValidatorSet>,
    local: ReplicaId,
    algorithms: WebPkiSupportedAlgorithms,
    metrics: Arc<Metrics>,
}

impl PeerVerifier {
    /// Maps the peer's certificate to a validator id, or refuses it (counted).
    fn identify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        expected: Option<ReplicaId>,
    ) -> Result<ReplicaId, rustls::Error> {
        let checked = (|| {
            if !intermediates.is_empty() {
                return Err(IdentityError::Chain(intermediates.len() + 1));
            }
            let key = ed25519_key_of(end_entity)?;
            let id = self.set.id_of(&key).ok_or(IdentityError::UnknownKey(key))?;
            if id == self.local {
                return Err(IdentityError::OwnKey(key));
            }
            match expected {
                Some(e) if e != id => Err(IdentityError::WrongPeer {
                    expected: e,
                    found: id,
                }),
                _ => Ok(id),
            }
        })();
        checked.map_err(|e| {
            self.metrics.reject(e.reason());
            tracing::warn!(local = %self.local, error = %e, "peer certificate refused");
            let cert_error = match e {
                IdentityError::UnknownKey(_) | IdentityError::OwnKey(_) => {
                    CertificateError::ApplicationVerificationFailure
                }
                IdentityError::WrongPeer { .. } => CertificateError::NotValidForName,
                _ => CertificateError::BadEncoding,
            };
            rustls::Error::InvalidCertificate(cert_error)
        })
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // We always dial under `server_name(id)`; anything else is a bug of ours, and
        // refusing is the safe answer.
        let Some(expected) = expected_id(server_name) else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        };
        self.identify(end_entity, intermediates, Some(expected))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only; the config offers no TLS 1.2.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.identify(end_entity, intermediates, None)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// QUIC crypto configurations for validator `local` holding `key`.
pub(crate) fn quic_configs(
    key: &KeyPair,
    set: Arc<ValidatorSet>,
    local: ReplicaId,
    metrics: Arc<Metrics>,
) -> Result<
    (
        quinn::crypto::rustls::QuicServerConfig,
        quinn::crypto::rustls::QuicClientConfig,
    ),
    IdentityError,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PeerVerifier {
        set,
        local,
        algorithms: provider.signature_verification_algorithms,
        metrics,
    });
    let (cert, pkcs8) = self_signed(key)?;
    let tls = |e: rustls::Error| IdentityError::Tls(e.to_string());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(pkcs8.clone_key()))
        .map_err(tls)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    server.max_early_data_size = 0;

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(tls)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_early_data = false;

    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    Ok((server, client))
}

/// The validator at the other end of an established connection. The verifiers have
/// already refused anyone else; this maps the accepted certificate back to its id.
pub(crate) fn peer_id(
    conn: &quinn::Connection,
    set: &ValidatorSet,
) -> Result<ReplicaId, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoPeerCertificate)?;
    let cert = certs.first().ok_or(IdentityError::NoPeerCertificate)?;
    let key = ed25519_key_of(cert)?;
    set.id_of(&key).ok_or(IdentityError::UnknownKey(key))
}

/// A stateless-reset key derived from the validator key, so that a restarted validator
/// resets its peers' stale connections at once instead of leaving them to time out.
pub(crate) fn reset_key(key: &KeyPair) -> ring::hmac::Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"stele/transport/stateless-reset/v1");
    ctx.update(key.to_pem().as_bytes());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_validator_key() {
        let key = KeyPair::from_seed([5; 32]);
        let (cert, _) = self_signed(&key).unwrap();
        assert_eq!(ed25519_key_of(&cert).unwrap(), key.public());
    }

    #[test]
    fn garbage_certificate_is_an_error_not_a_panic() {
        for bytes in [vec![], vec![0x30], vec![0xff; 100]] {
            assert!(ed25519_key_of(&CertificateDer::from(bytes)).is_err());
        }
    }

    #[test]
    fn server_names_round_trip() {
        for id in [0u16, 7, 255] {
            let name = ServerName::try_from(server_name(ReplicaId(id))).unwrap();
            assert_eq!(expected_id(&name), Some(ReplicaId(id)));
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert_eq!(expected_id(&other), None);
    }
}
