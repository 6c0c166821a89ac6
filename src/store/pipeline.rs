//! The HTTP pipeline every storage client shares: our transport, the retry options and how requests
//! are authenticated, so the queue and table clients cannot drift apart.
//!
//! The queue client hands the pieces to the SDK's `QueueClient`; the table client (which has no SDK)
//! builds an `azure_core` [`Pipeline`] from the same pieces with [`pipeline`].

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, Pipeline, RetryOptions, Transport, Url,
};

use super::auth::SasPolicy;
use super::{StorageAuth, StoreError};

/// The scope of storage bearer tokens (Azure Storage and Azurite `--oauth basic` accept it).
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How a storage client retries within one call. The webhook must answer Graph within 3 s, so
/// in-process retries only cover blips; longer outages are covered by Graph's own redelivery.
#[derive(Debug, Clone, Copy)]
pub struct StorageRetry {
    pub max_retries: u32,
    pub initial_delay: std::time::Duration,
    pub max_elapsed: std::time::Duration,
}

impl Default for StorageRetry {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_delay: std::time::Duration::from_millis(100),
            max_elapsed: std::time::Duration::from_secs(2),
        }
    }
}

/// What a storage client is built from: client options (transport, retries and, for a SAS, the
/// policy that appends it) and, for identity-based access, the token credential.
pub(crate) struct ClientParts {
    pub(crate) options: ClientOptions,
    pub(crate) credential: Option<Arc<dyn TokenCredential>>,
}

/// The options and credential for a storage client that sends through `http` and retries per `retry`.
pub(crate) fn client_parts(
    auth: &StorageAuth,
    http: reqwest::Client,
    retry: StorageRetry,
) -> ClientParts {
    let mut options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: to_time(retry.initial_delay),
            max_retries: retry.max_retries,
            max_total_elapsed: to_time(retry.max_elapsed),
            // Never wait longer between two tries than the whole call may take.
            max_delay: to_time(retry.max_elapsed),
        }),
        ..Default::default()
    };
    let credential = match auth {
        StorageAuth::SharedKey { account, key } => {
            options
                .per_call_policies
                .push(Arc::new(SasPolicy::signed(account.clone(), key.clone())));
            None
        }
        StorageAuth::Sas(sas) => {
            options
                .per_call_policies
                .push(Arc::new(SasPolicy::fixed(sas.clone())));
            None
        }
        StorageAuth::Token(credential) => Some(credential.clone()),
    };
    ClientParts {
        options,
        credential,
    }
}

/// A ready pipeline for requests to `endpoint`, authenticated per `auth`: the same pieces the queue
/// client's SDK pipeline is made of, with the bearer-token policy the storage SDK adds itself.
///
/// # Errors
/// [`StoreError::Fatal`] for a bearer token over anything but `https://` (the token would travel in
/// clear text; the SDK refuses the same).
pub(crate) fn pipeline(
    endpoint: &Url,
    auth: &StorageAuth,
    http: reqwest::Client,
    retry: StorageRetry,
) -> Result<Pipeline, StoreError> {
    let parts = client_parts(auth, http, retry);
    let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
    if let Some(credential) = parts.credential {
        if endpoint.scheme() != "https" {
            return Err(StoreError::fatal(format!(
                "{endpoint} must use https for a bearer token"
            )));
        }
        per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
            credential,
            [STORAGE_SCOPE],
        )));
    }
    Ok(Pipeline::new(
        option_env!("CARGO_PKG_NAME"),
        option_env!("CARGO_PKG_VERSION"),
        parts.options,
        Vec::new(),
        per_try,
        None,
    ))
}

fn to_time(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}
