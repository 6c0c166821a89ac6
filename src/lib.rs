//! Teams CDR Functions: collects Microsoft Teams call data from Microsoft Graph into the customer's own
//! Azure Storage, as an Azure Functions custom handler (or a standalone process for local runs).
//!
//! The map of the crate, one concern a module. Dependencies point inwards and no circle runs
//! between top-level modules (`tests/it/architecture.rs` checks both):
//! `domain` ← the adapters `graph`, `store` ← the workflows `functions`, `api` ← `app`.
//! - `domain`: pure logic without IO (which notification items are accepted, what a queue job says,
//!   the typed views of Graph's call-record payloads and how they flatten into rows, who may write
//!   which version, when a failed fetch is retried, the health rules, timer schedules). It imports
//!   nothing else of the crate.
//! - [`config`]: every setting, read once at start-up by [`config::Config::from_env`]; secrets stay
//!   [`secrecy::SecretString`] and never reach a log line. `docs/SETTINGS.md` documents exactly
//!   these settings (a unit test).
//! - [`clock`]: where the app reads the time (tests pass the Graph simulator's clock).
//! - `graph`: Microsoft Graph behind [`GraphClient`]: the credential (managed identity or client
//!   secret), the one retry policy, the client-side rate limiter; the only module that knows Graph's
//!   authentication and throttling rules; reading a call record completely (every page) as bytes.
//! - `store`: Azure Storage behind our own types: the call-record queue, the call-record tables and
//!   their write protocol, the report tables, the read API's log, the `AppState` table
//!   (`store::app_state`: its rows and the one lease). The only module that knows the storage SDK.
//! - [`table_storage`] (a crate of this workspace that knows nothing of the app): the Azure Table
//!   storage client, the storage pipeline and SAS signing, and [`StoreError`].
//! - `host`: the custom-handler side of the Functions host protocol (readiness, invocation ids, the
//!   invocation payloads), and standalone mode's stand-ins for the host's queue trigger and timers.
//! - `services`: what the handlers can reach (`Services`, with the substates `Auth` and `ReadApi`
//!   that handlers needing less take through axum's `FromRef`).
//! - `auth`: the one place that checks function keys (standalone mode) and app roles.
//! - `functions`: one file per Azure Function, and `functions::FUNCTIONS`, the one registry of them
//!   from which the router, the standalone admin API and scheduler, and the `handlers/` test derive.
//! - `api`: the read API (`ReadApi`), its formats, cursors and OpenAPI document.
//! - `error`: the one place where errors become HTTP answers.
//! - [`app`]: building the services from the configuration, the router, and the two run modes
//!   (custom handler behind the Functions host, `standalone` without it).
//! - `random`: the one source of randomness (tokens, jitter).
//! - [`http`]: the outgoing HTTP client every Azure pipeline uses (TLS roots, time limits).
//! - [`telemetry`]: `tracing` set-up, one JSON line per event on stdout for the Functions host, and
//!   how an error is written into a log line.

mod api;
pub mod app;
mod auth;
pub mod clock;
pub mod config;
mod domain;
mod error;
mod functions;
mod graph;
mod host;
pub mod http;
mod random;
mod services;
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
