//! TLS for the simulated Director: a freshly generated CA and a server certificate for
//! the listen address, `localhost` and 127.0.0.1, or PEM files the user supplies.
//! rustls runs on the `ring` provider, passed explicitly so no process-wide default
//! provider is needed.

use super::SimError;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::sync::Arc;

/// PEM texts of a server: its certificate chain, its key, and the CA clients pin.
#[derive(Debug, Clone)]
pub struct Pem {
    pub chain: String,
    pub key: String,
    pub ca: String,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Tls(format!("{what}: {e}"))
}

/// Generates a CA and a server certificate signed by it, valid for `ip`, 127.0.0.1
/// and `localhost`.
///
/// # Errors
/// [`SimError::Tls`] when rcgen fails.
pub fn generate(ip: IpAddr) -> Result<Pem, SimError> {
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "anvil sim bosh CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_err("CA certificate", e))?;

    let key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "anvil sim bosh");
    let localhost = "localhost"
        .to_string()
        .try_into()
        .map_err(|e| tls_err("SAN", e))?;
    params.subject_alt_names = vec![SanType::DnsName(localhost), SanType::IpAddress(ip)];
    let loopback = IpAddr::from([127, 0, 0, 1]);
    if ip != loopback {
        params.subject_alt_names.push(SanType::IpAddress(loopback));
    }
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| tls_err("server certificate", e))?;
    Ok(Pem {
        chain: format!("{}{}", cert.pem(), ca.pem()),
        key: key.serialize_pem(),
        ca: ca.pem(),
    })
}

/// A rustls server configuration (HTTP/1.1) from PEM texts.
///
/// # Errors
/// [`SimError::Tls`] when the PEM does not hold a certificate and a matching key.
pub fn server_config(chain: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, SimError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(SimError::Tls("certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| tls_err("key PEM", e))?;
    // The config below names its provider; installing ring as the process default too
    // keeps any other rustls user in the process from panicking for want of one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
