//! `tracing` set-up: one JSON line per event on stdout, which the Functions host collects.
//!
//! `RUST_LOG` sets the filter (default `info`, with the Azure SDK's own chatter at `warn`). An error
//! goes into a log line with its causes, through [`error_chain`].

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str =
    "info,azure_core=warn,azure_identity=warn,azure_storage_queue=warn,typespec_client_core=warn";

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so tests
/// can call it from every test.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .try_init();
}

/// Installs a subscriber that writes to the test harness's captured output, only when `TEST_LOG`
/// is set (as in zero-to-production's `spawn_app`).
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        let _already_set = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

// One statement of how an error chain reads on a log line, shared with the storage client crate.
pub(crate) use table_storage::error_chain;
