//! TLS for a listener from PEM files: the server certificate chain and key, and with a client
//! CA, mutual TLS: a client must present a certificate that CA signed. Used by the MQTT
//! listener (`listener.tls`) and the Kafka listener (`log.embedded.kafka_tls`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The PEM files of one listener's TLS.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
    pub client_ca_file: Option<&'a Path>,
}

/// Builds the acceptor; each error names the config key (under `key`, e.g. `listener.tls`)
/// and the file.
pub fn acceptor(files: TlsFiles<'_>, key: &str) -> Result<TlsAcceptor, String> {
    let TlsFiles {
        cert_file,
        key_file,
        client_ca_file,
    } = files;
    let certs = certificates(cert_file).map_err(|e| format!("{key}.cert_file: {e}"))?;
    let private_key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "{key}.key_file: {}: no usable private key ({e})",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{key}: {e}"))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file).map_err(|e| format!("{key}.client_ca_file: {e}"))? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{key}.client_ca_file: {}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{key}.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, private_key)
        .map_err(|e| format!("{key}: the certificate and key do not go together: {e}"))?;
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
