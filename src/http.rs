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

/// Statuses worth another try, for Graph and storage alike: request timeout, throttling, and the
/// server-side failures both document as temporary
/// (<https://learn.microsoft.com/graph/errors#http-status-codes>).
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Replaces the query string of every `http(s)://` URL in `text` with `?REDACTED`: HTTP client errors
/// quote the request URL, and a query can hold a SAS or other credentials.
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
        let url_and_more = &rest[start..];
        // A path may hold `'`, `(`, `)` and `,` (table entity URLs do), so only a space or a quote
        // ends it; the query string, form-encoded, cannot hold those and ends at the first of them.
        let path_end = url_and_more
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '?'))
            .unwrap_or(url_and_more.len());
        out.push_str(&url_and_more[..path_end]);
        let after_path = &url_and_more[path_end..];
        rest = match after_path.strip_prefix('?') {
            Some(query_and_more) => {
                out.push_str("?REDACTED");
                let query_end = query_and_more
                    .find(|c: char| {
                        c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '<' | '>' | ',')
                    })
                    .unwrap_or(query_and_more.len());
                &query_and_more[query_end..]
            }
            None => after_path,
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_queries_are_redacted_from_error_text() {
        let text = "error sending request for url (http://127.0.0.1:1/acct/q/messages?sv=2021&sig=abc%3D): \
                    connection refused; see https://learn.microsoft.com/x and https://h/p?token=t";
        let redacted = redact_url_queries(text);
        assert_eq!(
            redacted,
            "error sending request for url (http://127.0.0.1:1/acct/q/messages?REDACTED): \
             connection refused; see https://learn.microsoft.com/x and https://h/p?REDACTED"
        );
    }

    #[test]
    fn url_queries_are_redacted_after_table_entity_paths() {
        let text = "error sending request for url (http://127.0.0.1:1/acct/T(PartitionKey='p',RowKey='a''b')?sv=1&sig=abc%3D): refused";
        assert_eq!(
            redact_url_queries(text),
            "error sending request for url (http://127.0.0.1:1/acct/T(PartitionKey='p',RowKey='a''b')?REDACTED): refused"
        );
        let text = "url (http://h/a/T()?$filter=x%20eq%201&sig=s) and http://h/$batch?sig=s";
        assert_eq!(
            redact_url_queries(text),
            "url (http://h/a/T()?REDACTED) and http://h/$batch?REDACTED"
        );
    }
}
