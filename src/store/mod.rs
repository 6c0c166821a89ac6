//! Azure Storage behind our own types: the only module that knows the storage SDK.
//!
//! - [`queue`]: the call-record queue (send, receive, delete), with the message encoding the Functions
//!   queue trigger expects.
//! - [`auth`]: how requests are authenticated: a SAS signed from an account key (connection strings,
//!   Azurite), a SAS given in the connection string, or a bearer token from a managed identity.
//!
//! Callers branch on [`StoreError`], never on SDK errors.

pub(crate) mod auth;
pub(crate) mod queue;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use secrecy::{SecretSlice, SecretString};

/// A storage operation that failed, coarse enough for callers to decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist (and was not created for us).
    #[error("not found in storage")]
    NotFound,
    /// Storage refused our credential (401/403): a configuration or role-assignment problem. The
    /// detail holds storage's error code (`AuthorizationPermissionMismatch`, …), which says which.
    #[error("storage refused the credential (HTTP {status})")]
    Unauthorized {
        status: u16,
        #[source]
        detail: SdkFailure,
    },
    /// Storage is unreachable, slow, throttling or failing: worth trying again later.
    #[error("storage is unavailable")]
    Transient(#[source] SdkFailure),
    /// Anything else: a bug or a request storage will never accept.
    #[error("storage request failed")]
    Fatal(#[source] SdkFailure),
}

/// What the SDK said went wrong, with every URL's query string removed: transport errors quote the
/// request URL, and ours carry a SAS signature.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SdkFailure(String);

impl SdkFailure {
    pub(crate) fn new(err: &(dyn std::error::Error + 'static)) -> Self {
        Self(redact_url_queries(&error_chain(err)))
    }
}

/// An error and its causes on one line (`outer: cause: root cause`).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replaces the query string of every `http(s)://` URL in `text` with `?REDACTED`.
fn redact_url_queries(text: &str) -> String {
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
        let end = url_and_more
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(url_and_more.len());
        let url = &url_and_more[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?REDACTED");
            }
            None => out.push_str(url),
        }
        rest = &url_and_more[end..];
    }
    out.push_str(rest);
    out
}

impl StoreError {
    pub(crate) fn from_sdk(err: azure_core::Error) -> Self {
        match err.http_status() {
            Some(StatusCode::NotFound) => Self::NotFound,
            Some(s @ (StatusCode::Unauthorized | StatusCode::Forbidden)) => Self::Unauthorized {
                status: u16::from(s),
                detail: SdkFailure::new(&err),
            },
            Some(s) if is_transient_status(u16::from(s)) => Self::Transient(SdkFailure::new(&err)),
            Some(_) => Self::Fatal(SdkFailure::new(&err)),
            // No HTTP status. Connection refused, timeouts, resets and a token endpoint that is down
            // pass; a request the SDK refuses to build (e.g. a token over http://) never will.
            None => match err.kind() {
                ErrorKind::Connection | ErrorKind::Io | ErrorKind::Credential => {
                    Self::Transient(SdkFailure::new(&err))
                }
                _ => Self::Fatal(SdkFailure::new(&err)),
            },
        }
    }

    pub(crate) fn fatal(what: impl std::fmt::Display) -> Self {
        Self::Fatal(SdkFailure(redact_url_queries(&what.to_string())))
    }
}

fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// How storage requests are authenticated.
#[derive(Clone)]
pub enum StorageAuth {
    /// Sign an account SAS with this key (account name and key from a connection string).
    SharedKey {
        account: String,
        key: SecretSlice<u8>,
    },
    /// Append this SAS (without the leading `?`) to every request.
    Sas(SecretString),
    /// Send a bearer token for `https://storage.azure.com/.default` (HTTPS only).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SharedKey { .. } => "SharedKey(..)",
            Self::Sas(_) => "Sas(..)",
            Self::Token(_) => "Token(..)",
        })
    }
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
}
