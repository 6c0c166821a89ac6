//! Azurite for the app's tests: the launcher lives in the `azurite_harness` crate, shared with the
//! `table_storage` crate's tests; this keeps the paths the tests and benches name
//! (`support::azurite::ACCOUNT`, …).

pub use azurite_harness::{ACCOUNT, ACCOUNT_KEY, Azurite, AzuriteOptions};
