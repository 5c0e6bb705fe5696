//! TLS client configurations (rustls with the ring provider) and what their errors mean to a
//! user.
//!
//! Three kinds of trust: the webpki roots (default), a PEM bundle (`tls_ca_file`, a private CA;
//! it replaces the roots, as curl's `--cacert` does), or anything (`tls_skip_verify`). Verified
//! configs wrap rustls' verifier only to say "self-signed" when that is what failed, instead of
//! webpki's `UnknownIssuer` or `CaUsedAsEndEntity`.
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, OtherError, RootCertStore,
    SignatureScheme,
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies certificates against the webpki roots. ALPN: HTTP/1.1 only.
pub(crate) fn verifying() -> Result<ClientConfig, Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    with_roots(roots)
}

/// Why a CA bundle cannot be used.
pub(crate) fn ca_bundle(path: &Path) -> Result<ClientConfig, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("certificate #{} is not valid PEM: {e}", i + 1))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate #{} cannot be a trust anchor: {e}", i + 1))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    with_roots(roots).map_err(|e| e.to_string())
}

fn with_roots(roots: RootCertStore) -> Result<ClientConfig, Error> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::General(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamesSelfSigned(inner)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any certificate (for `tls_skip_verify`), but still checks handshake signatures, so
/// the connection is at least encrypted to whoever holds the presented key.
pub(crate) fn insecure() -> Result<ClientConfig, Error> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The marker error a verifier returns for a self-signed certificate it does not trust.
#[derive(Debug)]
struct SelfSigned;

impl std::fmt::Display for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("self-signed certificate")
    }
}

impl std::error::Error for SelfSigned {}

/// Is `cert` signed by itself (issuer = subject)? Unparseable: no.
fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert).is_ok_and(|c| c.issuer() == c.subject())
}

/// rustls' webpki verifier, with its chain errors for a lone self-signed certificate renamed.
#[derive(Debug)]
struct NamesSelfSigned(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NamesSelfSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                // webpki says UnknownIssuer for a self-signed leaf, and CaUsedAsEndEntity for a
                // self-signed CA certificate served as the leaf (what `openssl req -x509` makes).
                Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::Other(_),
                ) if intermediates.is_empty() && is_self_signed(end_entity) => {
                    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                        SelfSigned,
                    ))))
                }
                e => e,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A handshake error as a user should read it: what is wrong and what to do about it.
pub(crate) fn describe(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return format!("TLS handshake: {e}");
    };
    match tls {
        Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let expected = expected.to_str();
            let valid_for = if presented.is_empty() {
                "no name".to_string()
            } else {
                presented.join(", ")
            };
            format!(
                "hostname mismatch: the certificate is valid for {valid_for}, not {expected:?} \
                 (set tls_server_name to verify another name)"
            )
        }
        Error::InvalidCertificate(CertificateError::NotValidForName) => {
            "hostname mismatch: the certificate is not valid for this host \
             (set tls_server_name to verify another name)"
                .into()
        }
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
            if inner.is::<SelfSigned>() =>
        {
            "self-signed certificate (trust it with tls_ca_file, or set tls_skip_verify)".into()
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate signed by an unknown authority (for a private CA, set tls_ca_file)".into()
        }
        other => format!("TLS handshake: {other}"),
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
