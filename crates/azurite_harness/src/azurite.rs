//! The real Azurite storage emulator (npm package pinned in the workspace root's `package.json`),
//! started by the tests themselves: in memory, on free loopback ports, in a working directory of its
//! own, one process per test binary. Tests isolate their data with unique queue and table names.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use url::Url;

/// Azurite's documented development account.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const HOW_TO_INSTALL: &str = "Azurite is needed for these tests. Install the pinned version with `npm ci` in the \
repository root (Node.js 20 or later), or run the README's test command, which does it for you.";

/// A running Azurite. Dropping the test binary closes the guard's stdin, which stops Azurite.
#[derive(Debug)]
pub struct Azurite {
    pub queue_endpoint: Url,
    pub table_endpoint: Url,
    pub blob_endpoint: Url,
    // Kept open for the life of the process: its closing is the stop signal for the guard.
    _guard_stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    // Azurite's working directory: nothing is written there in memory mode, but whatever it might
    // write stays out of the repository and away from other test binaries.
    _dir: tempfile::TempDir,
}

/// The workspace root: the nearest directory above this crate that holds `package-lock.json`, where
/// `npm ci` puts Azurite under `node_modules`. Found from this crate's own (compile-time) directory,
/// so it is the same whichever crate's test binary runs, from whichever working directory.
///
/// # Panics
/// When no such directory exists.
pub(crate) fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("package-lock.json").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no package-lock.json above {}: the harness must live in the workspace. {HOW_TO_INSTALL}",
                here.display()
            )
        })
        .to_path_buf()
}

/// How to start Azurite.
#[derive(Debug, Default)]
pub struct AzuriteOptions<'a> {
    /// Serve HTTPS with this certificate and key, and accept bearer tokens (`--oauth basic`).
    pub tls: Option<(&'a Path, &'a Path)>,
}

impl Azurite {
    /// Starts Azurite and waits until its three services listen.
    ///
    /// # Panics
    /// With [`HOW_TO_INSTALL`] when Node.js or the Azurite package is missing, or when it does not
    /// start within 60 s.
    pub fn start(options: AzuriteOptions<'_>) -> Self {
        let root = workspace_root();
        let guard = Path::new(env!("CARGO_MANIFEST_DIR")).join("azurite-guard.cjs");
        if !root.join("node_modules/.bin/azurite").exists()
            || !root.join("node_modules/azurite/package.json").is_file()
        {
            panic!("{HOW_TO_INSTALL}");
        }
        let mut args: Vec<String> = [
            "--inMemoryPersistence",
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--blobPort",
            "0",
            "--queuePort",
            "0",
            "--tablePort",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Azurite's debug log (every request, and how long each queue GC took): for diagnosing a
        // stalled emulator, never on by default (it grows by hundreds of MB a suite).
        if let Some(path) = std::env::var_os("AZURITE_DEBUG_LOG") {
            args.extend(["--debug".to_owned(), path.to_string_lossy().into_owned()]);
        }
        if let Some((cert, key)) = options.tls {
            args.extend([
                "--cert".to_owned(),
                cert.display().to_string(),
                "--key".to_owned(),
                key.display().to_string(),
                "--oauth".to_owned(),
                "basic".to_owned(),
            ]);
        }
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .unwrap();
        let mut child = Command::new("node")
            .arg(&guard)
            .args(&args)
            // Where the guard finds the `azurite` package.
            .env("AZURITE_HARNESS_ROOT", &root)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` ({e}). {HOW_TO_INSTALL}"));
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");

        // Read the real ports from Azurite's start-up lines; keep draining its output afterwards so
        // it never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut endpoints: [Option<Url>; 3] = [None, None, None];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while endpoints.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "Azurite did not start within 60 s (exit: {:?}). {HOW_TO_INSTALL}",
                    child.try_wait()
                );
            };
            for (i, service) in ["Blob", "Queue", "Table"].iter().enumerate() {
                let marker = format!("Azurite {service} service is successfully listening at ");
                if let Some(rest) = line.strip_prefix(&marker) {
                    let url = Url::parse(&format!("{}/{ACCOUNT}/", rest.trim())).unwrap();
                    endpoints[i] = Some(url);
                }
            }
        }
        let [blob, queue, table] = endpoints.map(Option::unwrap);
        Self {
            queue_endpoint: queue,
            table_endpoint: table,
            blob_endpoint: blob,
            _guard_stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
            _dir: dir,
        }
    }

    /// A connection string with an account SAS instead of the key (queue and table, 1 hour), signed
    /// here independently of any client's own signer.
    pub fn sas_connection_string(&self) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let expiry = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let (sv, ss, srt, sp) = ("2021-08-06", "qt", "sco", "raup");
        let to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{expiry}\n\n\n{sv}\n\n");
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sas = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sv", sv)
            .append_pair("ss", ss)
            .append_pair("srt", srt)
            .append_pair("sp", sp)
            .append_pair("se", &expiry)
            .append_pair("sig", &sig)
            .finish();
        format!(
            "QueueEndpoint={};TableEndpoint={};SharedAccessSignature={sas}",
            self.queue_endpoint, self.table_endpoint
        )
    }

    /// A connection string with the account key and explicit endpoints, as an admin would write it.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol={};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};QueueEndpoint={};TableEndpoint={};BlobEndpoint={}",
            self.queue_endpoint.scheme(),
            self.queue_endpoint,
            self.table_endpoint,
            self.blob_endpoint
        )
    }
}
