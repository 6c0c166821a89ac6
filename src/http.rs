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
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(50));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(HttpSetupError::CaFile)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(HttpSetupError::CaPem)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(HttpSetupError::Client)
}

/// Replaces the query string of every `http(s)://` URL in `text` with `?REDACTED`: HTTP client errors
/// quote the request URL, and a query can hold a SAS or other credentials. (The storage module has
/// its own copy from before this one; they can be merged.)
pub(crate) fn redact_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let next_url = |s: &str| {
        [s.find("http://"), s.find("https://")]
            .into_iter()
            .flatten()
            .min()
    };
    while let Some(start) = next_url(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(url.len());
        match url[..end].find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?REDACTED");
            }
            None => out.push_str(&url[..end]),
        }
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}
