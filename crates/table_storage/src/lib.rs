//! A small Azure Table storage client on the Azure SDK for Rust's `azure_core` HTTP pipeline.
//!
//! The 1.x Azure SDK for Rust has a queue crate but no table crate, so this crate makes the Table
//! service's REST calls itself, through the same pipeline pieces (transport, retries, SAS or
//! bearer-token authentication) an SDK storage client is built from. It owns the Table service's
//! wire format and rules; it knows nothing of what its callers store.
//!
//! - [`TableStore`]: one table: create it, point reads and writes of [`Entity`]s with optimistic
//!   concurrency ([`ETag`], [`WriteMode`]), paged [`Query`]s ([`Page`], [`Continuation`]) and
//!   entity-group transactions ([`BatchOp`], at most [`MAX_BATCH_OPERATIONS`] each).
//! - [`filter`]: `$filter` expressions with their literals quoted and escaped.
//! - [`StorageAuth`]: how requests are authenticated: an account SAS signed from an account key
//!   ([`SasPolicy`]), a SAS given as it is, or a bearer token from any `azure_core` credential.
//! - [`pipeline`] and [`client_parts`]: the pipeline pieces, shared with SDK clients (a
//!   `QueueClient`), so that every storage client of a program retries ([`StorageRetry`]) and
//!   authenticates the same way.
//! - [`StoreError`]: what callers branch on, never SDK errors; every failure text has the query
//!   strings of its URLs removed ([`redact_url_queries`]), since a SAS travels there.
//!
//! Limits the service enforces (key characters and sizes, property names, types and sizes, entity
//! and batch sizes, `$top`) are checked before anything is sent, and refused with
//! [`StoreError::InvalidInput`] saying which rule was broken.
//!
//! REST reference: <https://learn.microsoft.com/rest/api/storageservices/table-service-rest-api>.

mod auth;
mod error;
mod pipeline;
mod table;

pub use auth::{SasPolicy, StorageAuth};
pub use error::{
    BatchFailure, SdkFailure, StoreError, error_chain, is_transient_status, redact_url_queries,
};
pub use pipeline::{ClientParts, StorageRetry, client_parts, pipeline};
pub use table::entity::{
    ETag, EdmValue, Entity, forbidden_in_key, format_datetime, validate_property_name,
};
pub use table::{
    BatchOp, Continuation, MAX_BATCH_OPERATIONS, MAX_PAGE_SIZE, Page, Query, TableStore, WriteMode,
    filter,
};

// The README's example is compiled by `cargo test -p table_storage --doc`, so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
