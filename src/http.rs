//! The one outgoing HTTP client configuration, shared by every Azure SDK pipeline of ours (storage,
//! managed identity) and the Graph client (its calls and its token requests): rustls with the
//! platform's trusted roots plus the certificates of `EXTRA_CA_CERTS_FILE`, and bounded connect and
//! request times.
//!
//! Why not `SSL_CERT_FILE`: on Linux the platform verifier reads that standard variable itself and
//! then trusts *only* the file's certificates, so an admin who names a bundle holding just the
//! company's TLS-inspection CA would lose the public roots Azure's endpoints need.

use std::path::Path;
use std::time::Duration;

/// The longest one request may take, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    http_client_with_timeout(extra_ca, REQUEST_TIMEOUT)
}

/// [`http_client`] whose requests may take at most `timeout` (storage's
/// `STORAGE_REQUEST_TIMEOUT_SECONDS`).
///
/// # Errors
/// [`HttpSetupError`] when the CA bundle cannot be read or parsed.
pub fn http_client_with_timeout(
    extra_ca: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(50));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(HttpSetupError::CaFile)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(HttpSetupError::CaPem)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(HttpSetupError::Client)
}

// How error text loses its URL queries (a query can hold a SAS or a validation token) is stated
// once, in the storage client crate, and used for Graph's error text too.
pub(crate) use table_storage::redact_url_queries;
