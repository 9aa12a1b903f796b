//! The rustls server configuration for Herald's own listener (`server.tls_cert`,
//! `server.tls_key`; issue #11).
//!
//! In: the two PEM file paths. Out: a `rustls::ServerConfig` on the ring provider, TLS 1.3 and
//! 1.2 only, ALPN `http/1.1` (the server is built with hyper's http1 only, so offering `h2`
//! would be a lie), or a `ConfigError` naming the key and the file: unreadable, no PEM block of
//! the right kind, or a key that does not fit the certificate. It never logs key material.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::ConfigError;

/// Reads the certificate chain and key and builds the server configuration.
pub fn server_config(cert_path: &str, key_path: &str) -> Result<Arc<ServerConfig>, ConfigError> {
    let cert_pem = read("server.tls_cert", cert_path)?;
    let key_pem = read("server.tls_key", key_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Invalid { key: "server.tls_cert", message: format!("{cert_path}: not a PEM certificate chain: {e}") })?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid { key: "server.tls_cert", message: format!("{cert_path}: holds no PEM CERTIFICATE block") });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ConfigError::Invalid {
        key: "server.tls_key",
        message: format!("{key_path}: holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::Invalid { key: "server.tls_cert", message: format!("TLS set-up: {e}") })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Invalid {
            key: "server.tls_key",
            message: format!("{key_path} does not fit the certificate in {cert_path}, or is unsupported: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path)).map_err(|e| ConfigError::Invalid { key, message: format!("cannot read {path}: {e}") })
}
