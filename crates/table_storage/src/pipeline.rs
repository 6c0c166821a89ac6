//! The HTTP pipeline every storage client shares: the caller's transport, the retry options and how
//! requests are authenticated, so a queue client and the table client cannot drift apart.
//!
//! A client of the storage SDK (e.g. `azure_storage_queue`'s `QueueClient`) is built from
//! [`client_parts`]; the table client (which has no SDK) builds an `azure_core` [`Pipeline`] from the
//! same pieces with [`pipeline`].

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, Pipeline, RetryOptions, Transport, Url,
};

use crate::auth::{SasPolicy, StorageAuth};
use crate::error::StoreError;

/// The scope of storage bearer tokens (Azure Storage and Azurite `--oauth basic` accept it).
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How a storage client retries within one call: exponentially from `initial_delay`, at most
/// `max_retries` times and never past `max_elapsed` in all. The defaults only cover blips (a caller
/// that must answer within seconds cannot wait out an outage); longer outages are for the caller's
/// own redelivery.
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
#[derive(Debug)]
pub struct ClientParts {
    pub options: ClientOptions,
    pub credential: Option<Arc<dyn TokenCredential>>,
}

/// The options and credential for a storage client that sends through `http` and retries per `retry`.
pub fn client_parts(auth: &StorageAuth, http: reqwest::Client, retry: StorageRetry) -> ClientParts {
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

/// A ready pipeline for requests to `endpoint`, authenticated per `auth`: the same pieces an SDK
/// client's pipeline is made of ([`client_parts`]), with the bearer-token policy the storage SDK
/// adds itself.
///
/// # Errors
/// [`StoreError::Fatal`] for a bearer token over anything but `https://` (the token would travel in
/// clear text; the SDK refuses the same).
pub fn pipeline(
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
