//! The one outgoing HTTP client configuration, shared by every Azure SDK pipeline of ours (storage,
//! managed identity) and, later, the Graph client: rustls with the platform's trusted roots plus the
//! certificates of `EXTRA_CA_CERTS_FILE`, and bounded connect and request times.
//!
//! Why not `SSL_CERT_FILE`: on Linux the platform verifier reads that standard variable itself and
//! then trusts *only* the file's certificates, so an admin who names a bundle holding just the
//! company's TLS-inspection CA would lose the public roots Azure's endpoints need.

use std::path::Path;
use std::time::Duration;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read the CA bundle named by EXTRA_CA_CERTS_FILE")]
    CaFile(#[source] std::io::Error),
    #[error("the CA bundle named by EXTRA_CA_CERTS_FILE holds no usable PEM certificate")]
    CaPem(#[source] reqwest::Error),
    #[error("cannot build the HTTPS client")]
    Client(#[source] reqwest::Error),
}

/// The HTTP client, trusting the certificates in `extra_ca` (a PEM bundle) on top of the platform's.
///
/// # Errors
/// [`HttpSetupError`] when the CA bundle cannot be read or parsed.
pub fn http_client(extra_ca: Option<&Path>) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(50));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(HttpSetupError::CaFile)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(HttpSetupError::CaPem)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(HttpSetupError::Client)
}
