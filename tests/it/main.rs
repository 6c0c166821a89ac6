//! The app's integration tests: one binary, a module per area, against the real parts (Azurite on
//! free loopback ports, the Graph simulator, the host emulator, the shipped handler binary where a
//! test needs a process). Helpers live in the `teams-cdr-testkit` crate (`crates/testkit`), named
//! `support` here and shared with the benchmarks.
//!
//! The two soak tests (`soak::`) are `#[ignore]`d, so that `cargo test` and the fast tier
//! (`scripts/test.sh --fast`) leave them out; the full suite (`scripts/test.sh`) runs each of them
//! in a process of its own, after the rest, so that its Azurite holds only its data and nothing
//! else competes for the two cores (docs/TESTING.md).

// Test code panics on purpose: a failed set-up or assertion is a failed test.
#![allow(clippy::unwrap_used)]

mod api_contract;
mod architecture;
mod bad_input;
mod bench_clock;
mod crash;
mod directory;
mod event_grid;
mod fetch;
mod fetch_hardening;
mod graph_client;
mod handlers;
mod health;
mod notifications;
mod read_api;
mod reconcile;
mod reports;
mod retention;
mod soak;
mod storage_identity;
mod subscription;
