//! TLS for the MQTT link, device and app alike: the edge of the data path
//! where bytes leave the machine. rustls with the *ring* provider (no
//! OpenSSL, no C toolchain beyond what `ring` builds, the same stack on any
//! Linux), handed to rumqttc as a ready `ClientConfig`.
//!
//! What a deployment needs, and nothing else:
//! - the broker's CA (a PEM file; without one, the system's roots), so a
//!   device talks to its own broker and not to whoever answers;
//! - optionally a client certificate and key (PEM), the way brokers such as
//!   AWS IoT Core and Mosquitto with `require_certificate` identify devices.
//!
//! The server name checked is the configured broker host (a DNS name or an
//! IP address, which then must be in the certificate's SANs). Everything is
//! read and checked once, up front, so a wrong path or a key that does not
//! parse is a clear start-up error, not a reconnect loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

/// `[broker.tls]` in `relay.toml`; `--tls-ca/--tls-cert/--tls-key` in the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// CA certificate(s) of the broker, PEM. Default: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain, PEM (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// Client private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub client_key: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {message}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{what} {} holds no certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("tls: client_cert and client_key go together (only one is set)")]
    HalfClientIdentity,
    #[error("tls: no CA given and no usable system root certificates")]
    NoRoots,
    #[error("tls: {0}")]
    Rustls(String),
}

impl TlsFiles {
    /// The rustls configuration these files describe (see the module doc).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = self.roots()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "client certificate")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                    what: "client key",
                    path: key.clone(),
                    message: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Rustls(e.to_string()))?
            }
            _ => return Err(TlsError::HalfClientIdentity),
        };
        Ok(Arc::new(config))
    }

    /// The rumqttc transport: TLS with [`TlsFiles::client_config`].
    pub fn transport(&self) -> Result<rumqttc::Transport, TlsError> {
        let config = self.client_config()?;
        Ok(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in certificates(ca, "CA file")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A broken system certificate is not ours to fail on.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsError::NoRoots);
                }
            }
        }
        Ok(roots)
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |message: String| TlsError::Read {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_needs_its_key() {
        let files = TlsFiles {
            ca: None,
            client_cert: Some("cert.pem".into()),
            client_key: None,
        };
        assert!(matches!(
            files.client_config(),
            Err(TlsError::HalfClientIdentity) | Err(TlsError::NoRoots)
        ));
    }

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            ca: Some(dir.path().join("nope.pem")),
            ..TlsFiles::default()
        };
        let error = missing.client_config().unwrap_err().to_string();
        assert!(
            error.contains("cannot read CA file") && error.contains("nope.pem"),
            "{error}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca: Some(empty),
            ..TlsFiles::default()
        };
        let error = files.client_config().unwrap_err().to_string();
        assert!(error.contains("holds no certificate"), "{error}");
    }
}
