//! What a storage operation can fail with, coarse enough for callers to branch on, and the text of a
//! failure made safe to log: every URL's query string (where a SAS travels) is removed.
//!
//! It owns the classification of HTTP statuses and SDK errors into [`StoreError`]; it must not
//! decide what a caller does about them (retry, give up, answer 503).

use azure_core::error::ErrorKind;

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
    /// The entity (or table) already exists, or the request conflicts with its state (HTTP 409).
    #[error("the entity already exists in storage")]
    Conflict,
    /// The entity changed since it was read: its ETag no longer matches `If-Match` (HTTP 412).
    #[error("the entity changed since it was read (ETag mismatch)")]
    PreconditionFailed,
    /// Rejected before anything was sent: a key, property, entity or batch breaks a Table service
    /// rule. The text says which rule, and never holds property values or credentials.
    #[error("invalid storage request: {0}")]
    InvalidInput(String),
    /// Operation `index` (0-based, in the order given) of an entity-group transaction failed, so
    /// none of the batch was written.
    #[error("operation {index} of the batch failed ({kind})")]
    BatchFailed {
        index: usize,
        kind: BatchFailure,
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

/// Why one operation of an entity-group transaction failed, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFailure {
    /// 409: an inserted entity already exists.
    Conflict,
    /// 412: an `If-Match` ETag did not match.
    PreconditionFailed,
    /// 404: an updated (or deleted, with an ETag) entity does not exist.
    NotFound,
    /// Any other 4xx (e.g. 400 for a property the service refused), with its status.
    Rejected(u16),
}

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str("conflict"),
            Self::PreconditionFailed => f.write_str("precondition failed"),
            Self::NotFound => f.write_str("not found"),
            Self::Rejected(status) => write!(f, "rejected with HTTP {status}"),
        }
    }
}

/// What the SDK said went wrong, with every URL's query string removed: transport errors quote the
/// request URL, and ours carry a SAS signature.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SdkFailure(String);

impl SdkFailure {
    /// The error and its causes on one line, redacted.
    pub fn new(err: &(dyn std::error::Error + 'static)) -> Self {
        Self(redact_url_queries(&error_chain(err)))
    }

    /// A failure described in our own words (still redacted, in case the text quotes a URL).
    pub fn text(what: impl std::fmt::Display) -> Self {
        Self(redact_url_queries(&what.to_string()))
    }
}

impl StoreError {
    /// The error for a failure of an SDK call (a client of the storage SDK, or our pipeline).
    pub fn from_sdk(err: azure_core::Error) -> Self {
        match err.http_status() {
            Some(status) => Self::from_status(u16::from(status), SdkFailure::new(&err)),
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

    /// The error for an HTTP error status, described by `detail`.
    pub fn from_status(status: u16, detail: SdkFailure) -> Self {
        match status {
            401 | 403 => Self::Unauthorized { status, detail },
            404 => Self::NotFound,
            409 => Self::Conflict,
            412 => Self::PreconditionFailed,
            s if is_transient_status(s) => Self::Transient(detail),
            _ => Self::Fatal(detail),
        }
    }

    /// A refusal that another try of the same request cannot change: one of the Table service's
    /// rules (checked before sending, or answered with a 4xx), or a request storage never accepts.
    /// Retrying these only keeps the work cycling; callers give it up with the reason instead.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::InvalidInput(_)
                | Self::Fatal(_)
                | Self::BatchFailed {
                    kind: BatchFailure::Rejected(_),
                    ..
                }
        )
    }

    /// [`StoreError::Fatal`] described in our own words (redacted).
    pub fn fatal(what: impl std::fmt::Display) -> Self {
        Self::Fatal(SdkFailure::text(what))
    }

    /// [`StoreError::InvalidInput`]: a rule broken before anything was sent.
    pub fn invalid(what: impl Into<String>) -> Self {
        Self::InvalidInput(what.into())
    }
}

/// Storage statuses worth another try: request timeout, throttling (`503 ServerBusy`, `429`), and
/// the server-side failures the storage services document as temporary
/// (<https://learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes>).
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// An error and its causes on one line (`outer: cause: root cause`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replaces the query string of every `http(s)://` URL in `text` with `?REDACTED`: HTTP client errors
/// quote the request URL, and a query can hold a SAS or other credentials.
pub fn redact_url_queries(text: &str) -> String {
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
