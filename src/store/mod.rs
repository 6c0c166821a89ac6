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
use azure_core::http::StatusCode;
use secrecy::{SecretSlice, SecretString};

/// A storage operation that failed, coarse enough for callers to decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist (and was not created for us).
    #[error("not found in storage")]
    NotFound,
    /// Storage refused our credential (401/403): a configuration or role-assignment problem.
    #[error("storage refused the credential (HTTP {0})")]
    Unauthorized(u16),
    /// Storage is unreachable, slow, throttling or failing: worth trying again later.
    #[error("storage is unavailable")]
    Transient(#[source] azure_core::Error),
    /// Anything else: a bug or a request storage will never accept.
    #[error("storage request failed")]
    Fatal(#[source] azure_core::Error),
}

impl StoreError {
    pub(crate) fn from_sdk(err: azure_core::Error) -> Self {
        match err.http_status() {
            Some(StatusCode::NotFound) => Self::NotFound,
            Some(s @ (StatusCode::Unauthorized | StatusCode::Forbidden)) => {
                Self::Unauthorized(u16::from(s))
            }
            Some(s) if is_transient_status(u16::from(s)) => Self::Transient(err),
            Some(_) => Self::Fatal(err),
            // No HTTP status: connection refused, timeout, DNS, TLS, token endpoint down.
            None => Self::Transient(err),
        }
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
