//! Test-only support for code that talks to Azure Storage: the real Azurite emulator started by the
//! test binary itself, a throw-away test CA for HTTPS, and a test token credential. It depends on no
//! crate of this workspace, so the storage client crate and the app test against the same harness.
//!
//! - [`Azurite`]: one emulator process, on free loopback ports chosen by Azurite, in memory, in its
//!   own working directory, stopped when the test binary exits (through `azurite-guard.cjs`).
//!   [`azurite`] and [`azurite_tls`] start one per test binary on first use.
//! - [`TestCa`]: a CA and a leaf certificate for `127.0.0.1`/`localhost`, as PEM files.
//! - [`TestCredential`] and [`unsigned_jwt`]: bearer tokens HTTPS Azurite (`--oauth basic`) accepts.
//! - [`free_port`], [`unique_name`], [`unique_table_name`]: isolation between tests.
// Test helpers panic on purpose: a failed set-up is a failed test.
#![allow(clippy::unwrap_used)]

mod azurite;
mod identity;
mod tls;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub use azurite::{ACCOUNT, ACCOUNT_KEY, Azurite, AzuriteOptions};
pub use identity::{STORAGE_AUDIENCE, TestCredential, unsigned_jwt};
pub use tls::TestCa;

/// The Azurite of this test binary (plain HTTP, shared-key/SAS auth), started on first use.
pub fn azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Azurite> = OnceLock::new();
    AZURITE.get_or_init(|| Azurite::start(AzuriteOptions::default()))
}

/// The Azurite of a test binary that needs HTTPS and bearer tokens (`--oauth basic`), with the test
/// CA that signed its certificate.
#[derive(Debug)]
pub struct TlsAzurite {
    pub ca: TestCa,
    pub azurite: Azurite,
}

/// This test binary's [`TlsAzurite`], started on first use.
pub fn azurite_tls() -> &'static TlsAzurite {
    static AZURITE: OnceLock<TlsAzurite> = OnceLock::new();
    AZURITE.get_or_init(|| {
        let ca = TestCa::new();
        let azurite = Azurite::start(AzuriteOptions {
            tls: Some((&ca.cert_pem, &ca.key_pem)),
        });
        TlsAzurite { ca, azurite }
    })
}

/// A free loopback port for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A queue name no other test uses (3–63 lower-case letters, digits and dashes).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A table name no other test uses: table names allow only letters and digits (3–63, starting with
/// a letter), so not [`unique_name`]'s dashes.
pub fn unique_table_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric()),
        "table name prefix {prefix:?} must be letters and digits"
    );
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() <= 63, "table name {name} is too long");
    name
}
