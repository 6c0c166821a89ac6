//! Teams CDR Functions: collects Microsoft Teams call data from Microsoft Graph into the customer's own
//! Azure Storage, as an Azure Functions custom handler (or a standalone process for local runs).
//!
//! The map of the crate, one concern a module; dependencies point from the edges inwards:
//! - [`config`]: every setting, read once at start-up by [`config::Config::from_env`]; secrets stay
//!   [`secrecy::SecretString`] and never reach a log line.
//! - [`app`]: the axum router (the forwarded HTTP functions), building the shared state, and the two
//!   run modes (custom handler behind the Functions host, `standalone` without it).
//! - `state`: what every function handler can reach (`AppState`); `functions` read it, `app`
//!   builds it, so neither depends on the other through it.
//! - [`clock`]: where the app reads the time (tests pass the Graph simulator's clock).
//! - `host`: the custom-handler side of the Functions host protocol (readiness, invocation ids, the
//!   invocation payloads of queue triggers).
//! - `functions`: one file per Azure Function: decode the request, call the domain, encode the answer.
//!   No storage or Graph details live there.
//! - `domain`: pure logic without IO (which notification items are accepted, what a queue job says,
//!   the typed views of Graph's call-record payloads and how they flatten into rows, who may write
//!   which version, when a failed fetch is retried). It imports no other module of the crate but
//!   `clock`-free helpers of its own.
//! - `graph`: Microsoft Graph behind [`GraphClient`]: the credential (managed identity or client
//!   secret), the one retry policy, the client-side rate limiter; the only module that knows Graph's
//!   authentication and throttling rules; reading a call record completely (every page) as bytes.
//! - `store`: Azure Storage behind our own types (the call-record queue, the call-record tables and
//!   their write protocol); the only module that knows the storage SDK.
//! - [`table_storage`] (a crate of this workspace, knowing nothing of the app): our Azure Table
//!   storage client, the storage pipeline and SAS signing, and [`StoreError`]; used by `store`, by
//!   `app` and `api` for the table and entity types they hand over, and by `error`/`http` for its
//!   error-text helpers.
//! - `error`: the one place where errors become HTTP status codes.
//! - `random`: the app's one source of randomness (tokens, jitter).
//! - [`http`]: the outgoing HTTP client every Azure pipeline uses (TLS roots, time limits).
//! - [`telemetry`]: `tracing` set-up, one JSON line per event on stdout for the Functions host.

mod api;
pub mod app;
pub mod clock;
pub mod config;
mod domain;
mod error;
mod functions;
mod graph;
mod host;
pub mod http;
mod random;
mod state;
mod store;
pub mod telemetry;

pub use app::App;
pub use app::AppOptions;
pub use domain::fetch::FetchPolicy;
pub use domain::job::CallRecordJob;
pub use domain::reports::ReportSettings;
pub use functions::{HttpFunction, InvocationFunction};
pub use graph::{
    GraphClient, GraphError, GraphOptions, GraphResponse, RateKey, RateLimit, RateLimits,
    RetryPolicy,
};
pub use http::http_client;
pub use store::callrecords::CallRecordStore;
pub use store::feed::{Appended, Dataset as FeedDataset, FeedStore};
pub use store::queue::{QueueStore, ReceivedMessage};
pub use store::{BatchFailure, StorageAuth, StoreError};
pub use table_storage::StorageRetry;
