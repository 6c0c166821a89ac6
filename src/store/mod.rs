//! Azure Storage behind our own types: the only module of the app that knows the storage SDK, and
//! what the app keeps in its queue and tables. Its stores speak the `table_storage` crate's
//! entities; `app` builds them from that crate's clients, and `api` pages with its cursor type and
//! page size.
//!
//! - [`queue`]: the call-record queue (send, receive, delete), with the message encoding the Functions
//!   queue trigger expects.
//! - The Table storage client (entities, queries, entity-group transactions, the shared pipeline
//!   and the authentication of every storage request) is the workspace crate `table_storage`, since
//!   the 1.x SDK has no table crate; the modules here use it, and the queue client its pipeline.
//! - [`auth`]: which credential the configuration names (an account key, a SAS, a managed
//!   identity), turned into the crate's `StorageAuth`.
//! - [`callrecords`], [`feed`], [`reports`], [`users`], [`health`], [`lifecycle`], [`purge`]: the app's tables
//!   and their write protocols; [`columns`]: what their rows share; [`app_state`]: the layout of the
//!   `AppState` table and the one ETag lease.
//!
//! Callers branch on [`StoreError`], never on SDK errors.

pub(crate) mod app_state;
pub(crate) mod auth;
pub(crate) mod callrecords;
pub(crate) mod columns;
pub(crate) mod feed;
pub(crate) mod health;
pub(crate) mod lifecycle;
pub(crate) mod purge;
pub(crate) mod queue;
pub(crate) mod reports;
pub(crate) mod users;

use tokio::sync::OnceCell;

// The storage client's types, as the rest of the app names them (`crate::store::StoreError`).
pub(crate) use table_storage::SdkFailure;
use table_storage::TableStore;
pub use table_storage::{BatchFailure, StorageAuth, StoreError};

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
