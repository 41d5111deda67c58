//! The listener's TLS: the server certificate and key (PEM), and with `client_ca_file`,
//! mutual TLS: a device must present a certificate that CA signed.

use crate::config::ListenerTlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor; each error names the key and the file.
pub fn acceptor(config: &ListenerTlsConfig) -> Result<TlsAcceptor, String> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err("listener.tls: cert_file and key_file are needed".into());
    };
    let certs = certificates(cert_file).map_err(|e| format!("listener.tls.cert_file: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "listener.tls.key_file: {}: no usable private key ({e})",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("listener.tls: {e}"))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in
                certificates(ca_file).map_err(|e| format!("listener.tls.client_ca_file: {e}"))?
            {
                roots.add(cert).map_err(|e| {
                    format!("listener.tls.client_ca_file: {}: {e}", ca_file.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("listener.tls.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("listener.tls: the certificate and key do not go together: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match certs.is_empty() {
        true => Err(format!("{}: no PEM certificate in it", path.display())),
        false => Ok(certs),
    }
}
