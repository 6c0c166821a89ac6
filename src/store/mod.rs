//! Azure Storage behind our own types: the only module that knows the storage SDK.
//!
//! - [`queue`]: the call-record queue (send, receive, delete), with the message encoding the Functions
//!   queue trigger expects.
//! - [`table`]: one Azure Table (entities, queries, entity-group transactions), our own small client
//!   on the SDK's HTTP pipeline, since the 1.x SDK has no table crate.
//! - [`auth`]: how requests are authenticated: a SAS signed from an account key (connection strings,
//!   Azurite), a SAS given in the connection string, or a bearer token from a managed identity.
//! - [`pipeline`]: the transport, retry options and authentication every storage client shares.
//!
//! Callers branch on [`StoreError`], never on SDK errors.

pub(crate) mod app_state;
pub(crate) mod auth;
pub(crate) mod callrecords;
pub(crate) mod columns;
pub(crate) mod feed;
pub(crate) mod health;
pub(crate) mod lifecycle;
pub(crate) mod pipeline;
pub(crate) mod purge;
pub(crate) mod queue;
pub(crate) mod reports;
pub(crate) mod table;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use secrecy::{SecretSlice, SecretString};

use tokio::sync::OnceCell;

use crate::telemetry::error_chain;
use table::TableStore;

/// Creates the missing ones among `tables`, once per `cell` (so once per process and store):
/// Bicep creates every table in Azure, Azurite starts empty. A failure leaves the cell empty, so
/// the next call tries again.
///
/// # Errors
/// When storage fails or refuses.
pub(crate) async fn ensure_once(
    cell: &OnceCell<()>,
    tables: &[&TableStore],
) -> Result<(), StoreError> {
    cell.get_or_try_init(|| async {
        for table in tables {
            table.ensure_exists().await?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .map(|_| ())
}
use crate::http::{is_transient_status, redact_url_queries};

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
    pub(crate) fn new(err: &(dyn std::error::Error + 'static)) -> Self {
        Self(redact_url_queries(&error_chain(err)))
    }

    /// A failure described in our own words (still redacted, in case the text quotes a URL).
    pub(crate) fn text(what: impl std::fmt::Display) -> Self {
        Self(redact_url_queries(&what.to_string()))
    }
}

impl StoreError {
    pub(crate) fn from_sdk(err: azure_core::Error) -> Self {
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
    pub(crate) fn from_status(status: u16, detail: SdkFailure) -> Self {
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
    pub(crate) fn is_permanent(&self) -> bool {
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

    pub(crate) fn fatal(what: impl std::fmt::Display) -> Self {
        Self::Fatal(SdkFailure::text(what))
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::InvalidInput(what.into())
    }
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
