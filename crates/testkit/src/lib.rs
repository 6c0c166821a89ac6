//! What the app's integration tests (`tests/it`) and benchmarks (`benches/`) share, so that they
//! set up the real parts the same way: Azurite (from `azurite_harness`, shared with the
//! `table_storage` crate's tests), the host emulator, the Graph simulator set up for a test, test
//! TLS and identities, proxies that count or refuse, the bad inputs, and `spawn_app()`, which runs
//! the real app on port 0 with its own queue and tables. The tests name this crate `support`.
//!
//! Test-only: its helpers panic on purpose, since a failed set-up is a failed test.
#![allow(clippy::unwrap_used)]

pub mod azurite;
pub mod bad_input;
pub mod counting_proxy;
pub mod event_grid;
pub mod fetch;
pub mod graph;
pub mod host;
pub mod identity;
pub mod lifecycle;
pub mod proxy;
pub mod reports;
pub mod tls;

use std::time::Duration;

use base64::Engine as _;
use table_storage::{Entity, Query, TableStore};
use teams_cdr_functions::config::{Config, RunMode};
use teams_cdr_functions::{
    App, AppOptions, CallRecordJob, QueueStore, StorageAuth, StorageRetry, StoreError,
};
use url::Url;

// Azurite, the test CA and the isolation helpers are shared with the `table_storage` crate's tests.
use azurite::Azurite;
pub use azurite_harness::{
    TlsAzurite, azurite, azurite_tls, free_port, unique_name, unique_table_name,
};
use host::HostEmulator;

pub const TENANT_ID: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
pub const CLIENT_STATE: &str = "s3cr3t-Client-State-7f9c";

/// The `main` of a benchmark: runs `run` on `workers` runtime threads, but only under
/// `cargo bench` (which passes `--bench`); `cargo test --all-targets` builds and starts benches too,
/// and must not spend minutes in them.
pub fn bench_main<F: std::future::Future<Output = ()>>(
    name: &str,
    workers: usize,
    run: impl FnOnce() -> F,
) {
    if !asked_to_run(name) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// Whether `cargo bench` ran this benchmark (`--bench`); `cargo test` runs benches too, and then
/// each says how to run it instead.
fn asked_to_run(name: &str) -> bool {
    let asked = std::env::args().any(|a| a == "--bench");
    if !asked {
        println!("{name} benchmark: run it with `cargo bench --bench {name}`");
    }
    asked
}

/// As [`bench_main`], on a current-thread runtime: the only kind whose clock tokio can stop
/// ([`counting_proxy::StorageTime::Modelled`]). The whole benchmark (simulator, app, proxies) then
/// shares one thread; Azurite still runs in its own process.
pub fn bench_main_on_one_thread<F: std::future::Future<Output = ()>>(
    name: &str,
    run: impl FnOnce() -> F,
) {
    if !asked_to_run(name) {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// The UTC day of `t` as the day-partitioned tables key it (`2026-11-20`).
pub fn utc_day(t: time::OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The handler binary itself, started as the Functions host starts it (custom-handler mode on a
/// free port, only the given environment), with its stdout and stderr kept for inspection.
pub struct HandlerProcess {
    child: tokio::process::Child,
    pub host: HostEmulator,
    /// Everything the process printed so far, read as it comes: a pipe left unread would fill up
    /// and stop the process at its next log line.
    printed: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl HandlerProcess {
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::spawn(&[], "FUNCTIONS_CUSTOMHANDLER_PORT", free_port(), env).await
    }

    /// The binary in standalone mode (`teams-cdr-functions standalone`, its own timers and queue
    /// consumer) on `port`: a restart on the same port is what a webhook sees of a crash.
    pub async fn start_standalone(port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn(&["standalone"], "PORT", port, env).await
    }

    async fn spawn(args: &[&str], port_setting: &str, port: u16, env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncReadExt as _;
        let mut command = tokio::process::Command::new(handler_binary());
        command
            .args(args)
            .env_clear()
            .env(port_setting, port.to_string())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the handler binary starts");
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for mut stream in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let printed = printed.clone();
            readers.push(tokio::spawn(async move {
                let mut buffer = vec![0; 16 * 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    printed
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        let host = HostEmulator::new(format!("http://127.0.0.1:{port}"));
        host.wait_ready(Duration::from_secs(20)).await;
        Self {
            child,
            host,
            printed,
            readers,
        }
    }

    /// The process id (for reading its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Everything the process printed so far.
    pub fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Asks the handler to stop (SIGTERM, as the host and Ctrl-C do) and waits up to `limit` for it
    /// to exit. Returns how long it took (`None`: still running; it is then killed) and everything
    /// it printed.
    pub async fn terminate(mut self, limit: Duration) -> (Option<Duration>, String) {
        let started = std::time::Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = tokio::time::timeout(limit, self.child.wait()).await.is_ok();
        let took = exited.then(|| started.elapsed());
        if !exited {
            self.child.start_kill().unwrap();
            self.child.wait().await.unwrap();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        (took, std::mem::take(&mut *self.printed.lock().unwrap()))
    }

    /// Stops the handler (at once, as a crash would) and returns everything it printed.
    pub async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        std::mem::take(&mut *self.printed.lock().unwrap())
    }
}

/// The Azurite account key, as the tests' own readers authenticate.
pub fn shared_key() -> StorageAuth {
    StorageAuth::SharedKey {
        account: azurite::ACCOUNT.to_owned(),
        key: base64::engine::general_purpose::STANDARD
            .decode(azurite::ACCOUNT_KEY)
            .unwrap()
            .into(),
    }
}

/// The repository's root (the workspace's).
pub fn repository_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The shipped handler binary, as cargo builds it for the tests and benchmarks that run this crate:
/// beside the `deps/` folder the running test or benchmark executable is in.
///
/// # Panics
/// When it is not there (a test run by hand without cargo having built the binary).
pub fn handler_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(format!(
        "teams-cdr-functions{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        binary.is_file(),
        "{} is missing: run the tests through cargo, which builds it",
        binary.display()
    );
    binary
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", repository_root().display());
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The documented call-record notification (`change-notification-callrecords.json`) with its
/// placeholders filled in.
pub fn callrecord_notification(call_id: &str, client_state: &str, tenant: &str) -> String {
    fixture("graph/change-notification-callrecords.json")
        .replace("{Call id}", call_id)
        .replace("{Secret client state}", client_state)
        .replace("{Organization/Tenant id}", tenant)
        .replace("{Subscription id}", "9f4f0e2e-3c1f-4f6a-9d7b-1d2c3b4a5e6f")
}

/// A collection of `ids.len()` valid call-record notifications.
pub fn collection_of(ids: &[String]) -> String {
    let items: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            let one: serde_json::Value =
                serde_json::from_str(&callrecord_notification(id, CLIENT_STATE, TENANT_ID))
                    .unwrap();
            one["value"][0].clone()
        })
        .collect();
    serde_json::json!({ "value": items }).to_string()
}

/// How to set up one app under test.
pub struct Setup {
    /// Where the app sends queue and table requests (Azurite, or a proxy in front of it).
    pub queue_endpoint: Url,
    pub table_endpoint: Url,
    /// Where the test reads the queue: always Azurite itself.
    pub azurite_queue_endpoint: Url,
    /// `AzureWebJobsStorage` (ignored when `options.storage_auth` is set).
    pub connection_string: String,
    pub extra_ca: Option<std::path::PathBuf>,
    pub options: AppOptions,
}

impl Setup {
    /// The app against this binary's Azurite, with a connection string holding the account key.
    pub fn azurite() -> Self {
        Self::against(azurite())
    }

    /// The app against the HTTPS Azurite, authenticating with `auth` (a token credential), trusting
    /// the test CA through `EXTRA_CA_CERTS_FILE`.
    pub fn azurite_tls(auth: StorageAuth) -> Self {
        let tls = azurite_tls();
        let mut setup = Self::against(&tls.azurite);
        setup.extra_ca = Some(tls.ca.ca_pem.clone());
        setup.options.storage_auth = Some(auth);
        setup
    }

    fn against(azurite: &Azurite) -> Self {
        Self {
            queue_endpoint: azurite.queue_endpoint.clone(),
            table_endpoint: azurite.table_endpoint.clone(),
            azurite_queue_endpoint: azurite.queue_endpoint.clone(),
            connection_string: azurite.connection_string(),
            extra_ca: None,
            options: AppOptions {
                // Short waits so that "storage down" tests answer quickly.
                storage_retry: StorageRetry {
                    max_retries: 1,
                    initial_delay: Duration::from_millis(20),
                    max_elapsed: Duration::from_millis(500),
                },
                ..AppOptions::default()
            },
        }
    }
}

/// The real app, served on a free port, with its own queue.
pub struct TestApp {
    pub host: HostEmulator,
    pub queue_name: String,
    /// Reads the app's queue straight from Azurite with the account key (independent of the app's
    /// own credential).
    pub reader: QueueStore,
    /// The app's `AppState` table, read with the account key.
    pub app_state: TableStore,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Setup::azurite()).await
}

pub async fn spawn_app_with(setup: Setup) -> TestApp {
    teams_cdr_functions::telemetry::init_for_tests();
    let queue_name = unique_name("intake");
    let mut vars = vec![
        ("FUNCTIONS_CUSTOMHANDLER_PORT".to_owned(), "0".to_owned()),
        ("GRAPH_TENANT_ID".to_owned(), TENANT_ID.to_owned()),
        (
            "NOTIFICATION_CLIENT_STATE".to_owned(),
            CLIENT_STATE.to_owned(),
        ),
        (
            "AzureWebJobsStorage".to_owned(),
            setup.connection_string.clone(),
        ),
    ];
    if let Some(ca) = &setup.extra_ca {
        vars.push(("EXTRA_CA_CERTS_FILE".to_owned(), ca.display().to_string()));
    }
    let mut config = Config::from_vars(RunMode::CustomHandler, vars).expect("test configuration");
    config.storage.queue_endpoint = setup.queue_endpoint.clone();
    config.storage.table_endpoint = setup.table_endpoint.clone();
    config.notifications.queue = queue_name.clone();
    config.tables = teams_cdr_functions::config::TableNames::with_prefix(&unique_table_name("n"));
    let app_state_table = config.tables.app_state.clone();

    let app = App::build_with(config, setup.options)
        .await
        .expect("app builds");
    let addr = app.local_addr().unwrap();
    tokio::spawn(app.run_until(std::future::pending()));

    let http = teams_cdr_functions::http_client(setup.extra_ca.as_deref()).unwrap();
    let reader = QueueStore::new(
        &setup.azurite_queue_endpoint,
        &queue_name,
        &StorageAuth::SharedKey {
            account: azurite::ACCOUNT.to_owned(),
            key: base64::engine::general_purpose::STANDARD
                .decode(azurite::ACCOUNT_KEY)
                .unwrap()
                .into(),
        },
        http,
        StorageRetry::default(),
    )
    .unwrap();
    let host = HostEmulator::new(format!("http://{addr}"));
    host.wait_ready(Duration::from_secs(10)).await;
    TestApp {
        host,
        queue_name,
        reader,
        app_state: TableStore::new(
            &setup.table_endpoint,
            &app_state_table,
            &shared_key(),
            teams_cdr_functions::http_client(setup.extra_ca.as_deref()).unwrap(),
            StorageRetry::default(),
        )
        .unwrap(),
    }
}

impl TestApp {
    pub async fn post_notification(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.host
            .forward(
                reqwest::Method::POST,
                "/api/notifications",
                Some("application/json"),
                body,
            )
            .await
    }

    /// The `AppState` rows of one partition, once at least `min` are there (they are written in the
    /// background after the answer), or whatever is there after 10 s.
    pub async fn app_state_rows(&self, partition: &str, min: usize) -> Vec<Entity> {
        let started = std::time::Instant::now();
        loop {
            let rows: Vec<_> = self
                .app_state
                .query_all(&Query::new())
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.partition_key == partition)
                .collect();
            if rows.len() >= min || started.elapsed() > Duration::from_secs(10) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The call-record ids of every message on the app's queue (see [`TestApp::drain_queue`]).
    pub async fn enqueued_ids(&self) -> Vec<String> {
        self.drain_queue().await.into_iter().map(|j| j.id).collect()
    }

    /// Every message on the app's queue, decoded as the Functions queue trigger would (base64, then
    /// JSON). Messages stay invisible for five minutes, so each is returned once.
    pub async fn drain_queue(&self) -> Vec<CallRecordJob> {
        let mut jobs = Vec::new();
        loop {
            let batch = match self.reader.receive(32, 300).await {
                Ok(batch) => batch,
                Err(StoreError::NotFound) => return jobs, // never created: nothing was enqueued
                Err(e) => panic!("reading queue {}: {e:?}", self.queue_name),
            };
            if batch.is_empty() {
                return jobs;
            }
            for message in batch {
                let json = base64::engine::general_purpose::STANDARD
                    .decode(&message.text)
                    .unwrap_or_else(|_| panic!("message is not base64: {}", message.text));
                jobs.push(serde_json::from_slice(&json).expect("message is a CallRecordJob"));
            }
        }
    }
}
