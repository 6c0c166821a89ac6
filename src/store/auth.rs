//! Where the app's storage credential comes from: the configured one ([`StorageCredential`]) turned
//! into the running [`StorageAuth`] of the `table_storage` crate, which signs and sends it.

use std::sync::Arc;

use azure_core::http::Transport;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use table_storage::StorageAuth;

use crate::config::StorageCredential;

/// Why the storage credential could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the managed identity credential")]
pub(crate) struct IdentitySetupError(#[source] azure_core::Error);

/// Turns the configured credential into the running one. A managed identity is built here, with our
/// transport, so its token requests get the same TLS settings and time limits.
///
/// # Errors
/// [`IdentitySetupError`] when the managed-identity credential cannot be created.
pub(crate) fn storage_auth(
    credential: &StorageCredential,
    client: &reqwest::Client,
) -> Result<StorageAuth, IdentitySetupError> {
    Ok(match credential {
        StorageCredential::SharedKey { account, key } => StorageAuth::SharedKey {
            account: account.clone(),
            key: key.clone(),
        },
        StorageCredential::Sas(sas) => StorageAuth::Sas(sas.clone()),
        StorageCredential::ManagedIdentity { client_id } => {
            let mut options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            options.client_options.transport = Some(Transport::new(Arc::new(client.clone())));
            StorageAuth::Token(
                ManagedIdentityCredential::new(Some(options)).map_err(IdentitySetupError)?,
            )
        }
    })
}
