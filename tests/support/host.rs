//! A stand-in for the Azure Functions host, speaking the documented custom-handler protocol to the
//! handler: the readiness probe, HTTP requests proxied as they came (`enableProxyingHttpRequest`,
//! with the host's headers added), and invocation payloads for non-HTTP triggers in the shape the real
//! host sends (see `tests/fixtures/functions/SOURCES.md`: binding-data strings JSON-encoded a second
//! time, numbers as strings). It is written from the protocol, not from the handler's code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

pub const HOST_VERSION: &str = "4.1037.0.0";

pub struct HostEmulator {
    base: String,
    client: reqwest::Client,
}

static INVOCATIONS: AtomicU64 = AtomicU64::new(1);

/// A fresh invocation id in the GUID form the host uses.
pub fn new_invocation_id() -> String {
    let n = INVOCATIONS.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff,
        n
    )
}

impl HostEmulator {
    /// A host in front of the handler listening at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Probes `GET /` until the handler gives any HTTP answer, as the host does after starting it.
    /// Returns how long that took.
    pub async fn wait_ready(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self
                .client
                .get(format!("{}/", self.base))
                .send()
                .await
                .is_ok()
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "handler not ready after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Proxies an HTTP request to a function route (`/api/...`), adding the host's headers.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path_and_query}", self.base))
            .header("X-Azure-Functions-InvocationId", new_invocation_id())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        request.send().await.expect("handler did not answer")
    }

    /// Sends an invocation payload to `POST /{function}`, as the host does for non-HTTP triggers.
    pub async fn invoke(&self, function: &str, payload: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/{function}", self.base))
            .header("X-Azure-Functions-InvocationId", new_invocation_id())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .json(payload)
            .send()
            .await
            .expect("handler did not answer")
    }
}

/// What the host knows about a dequeued message.
pub struct QueueDelivery<'a> {
    pub function: &'a str,
    pub binding: &'a str,
    /// The message text after the host's base64 decoding.
    pub text: &'a str,
    pub id: &'a str,
    pub pop_receipt: &'a str,
    pub dequeue_count: u32,
    pub insertion_time: &'a str,
    pub expiration_time: &'a str,
    pub next_visible_time: &'a str,
    pub utc_now: &'a str,
    pub rand_guid: &'a str,
}

/// The invocation payload of a queue trigger, as the real host builds it
/// (`ScriptInvocationContextExtensions`): every binding-data value that is not a date is
/// `JsonConvert.SerializeObject`-ed, so strings arrive quoted and numbers as strings; top-level
/// scalar properties of a JSON message become binding data too.
pub fn queue_invocation(d: &QueueDelivery<'_>) -> Value {
    let encode = |v: &Value| Value::String(v.to_string());
    let mut metadata = Map::new();
    if let Ok(Value::Object(props)) = serde_json::from_str::<Value>(d.text) {
        // The real capture promotes the scalar properties only (its `listings` array is absent).
        for (k, v) in props {
            if !matches!(v, Value::Object(_) | Value::Array(_)) {
                metadata.insert(k, encode(&v));
            }
        }
    }
    metadata.insert(
        "DequeueCount".into(),
        Value::String(d.dequeue_count.to_string()),
    );
    metadata.insert("ExpirationTime".into(), json!(d.expiration_time));
    metadata.insert("Id".into(), encode(&json!(d.id)));
    metadata.insert("InsertionTime".into(), json!(d.insertion_time));
    metadata.insert("NextVisibleTime".into(), json!(d.next_visible_time));
    metadata.insert("PopReceipt".into(), encode(&json!(d.pop_receipt)));
    metadata.insert(
        "sys".into(),
        json!({"MethodName": d.function, "UtcNow": d.utc_now, "RandGuid": d.rand_guid}),
    );
    json!({
        "Data": { d.binding: encode(&json!(d.text)) },
        "Metadata": metadata,
    })
}
