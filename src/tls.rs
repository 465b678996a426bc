//! PEM files to rustls client configurations: Kafka (mutual TLS or server-only TLS),
//! PostgreSQL (a CA file or the web PKI roots), and the web sites being checked.
//!
//! This module owns reading certificates and keys. It must never log key material, and
//! never build a configuration that skips server verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug)]
/// A PEM file that cannot be used; the message names the file and what to fix.
pub enum TlsError {
    /// The file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The file holds no private key.
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate rustls refuses.
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The key does not fit the certificate, or is refused.
    KeyRejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        detail: String,
    },
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::NoCertificate { path } => write!(
                f,
                "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"): check the file name and order",
                path.display()
            ),
            TlsError::BadPem { path, what, detail } => {
                write!(
                    f,
                    "{} is not a valid PEM {what} file: {detail}",
                    path.display()
                )
            }
            TlsError::NoKey { path } => write!(
                f,
                "{} holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\", RSA or EC): use the service.key file",
                path.display()
            ),
            TlsError::BadCa { path, detail } => {
                write!(
                    f,
                    "{} is not a usable CA certificate: {detail}",
                    path.display()
                )
            }
            TlsError::KeyRejected { cert, key, detail } => write!(
                f,
                "the key {} does not fit the certificate {} ({detail}): use the service.cert and service.key downloaded together",
                key.display(),
                cert.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The one crypto provider of this program (ring; never aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => {
                return Err(TlsError::BadPem {
                    path: path.into(),
                    what: "certificate",
                    detail: e.to_string(),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.into() },
        // Never echo the file's content: it is a secret.
        other => TlsError::BadPem {
            path: path.into(),
            what: "private key",
            detail: other.to_string(),
        },
    })
}

/// Trust roots: the certificates of `ca_file`, or the web PKI roots when None.
pub(crate) fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => add_ca_file(&mut roots, path)?,
    }
    Ok(roots)
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.into(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// The web PKI roots and the certificates of `extra` (`CK_SITE_CA`, `CK_ALERT_CA`): for
/// servers on the public internet that may also be on a private CA.
pub(crate) fn web_roots_and(extra: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = root_store(None)?;
    if let Some(path) = extra {
        add_ca_file(&mut roots, path)?;
    }
    Ok(roots)
}

/// A client certificate and its key, as Aiven hands them out (`service.cert`, `service.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client certificate (Aiven's `service.cert`).
    pub cert: PathBuf,
    /// Its private key (Aiven's `service.key`).
    pub key: PathBuf,
}

/// A verifying client config. `identity` adds a client certificate (mutual TLS).
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let roots = root_store(ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::BadCa {
            path: PathBuf::new(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let chain = load_certs(&id.cert)?;
            let key = load_key(&id.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::KeyRejected {
                    cert: id.cert.clone(),
                    key: id.key.clone(),
                    detail: e.to_string(),
                })
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path() {
        let err = load_certs(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_certificate_is_not_a_key() {
        let dir = std::env::temp_dir().join(format!("checksite-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-key.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("no PEM private key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
