//! The throw-away test CA (`TestCa`): it lives in the `azurite_harness` crate; this keeps the path
//! the tests name (`support::tls::TestCa`).

pub use azurite_harness::TestCa;
