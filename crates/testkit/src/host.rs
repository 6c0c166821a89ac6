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

/// What the emulated queue trigger did while draining a queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueRun {
    /// Invocations sent (deliveries, retries included).
    pub invocations: usize,
    /// Invocations the handler failed (non-2xx, or no answer).
    pub failures: usize,
    /// Messages moved to the poison queue after `max_dequeue_count` failed deliveries.
    pub poisoned: usize,
}

/// The queue trigger's side of the host: receive a message, invoke the function with it, delete it
/// on 2xx, leave it for redelivery otherwise, and move it to `{queue}-poison` once it has failed
/// `max_dequeue_count` times (host.json `maxDequeueCount`).
pub struct QueueTrigger<'a> {
    pub host: &'a HostEmulator,
    pub function: &'a str,
    pub binding: &'a str,
    pub queue: &'a teams_cdr_functions::QueueStore,
    pub poison: &'a teams_cdr_functions::QueueStore,
    pub max_dequeue_count: u32,
    /// How long a failed message stays hidden before redelivery (host.json `visibilityTimeout`;
    /// short in tests).
    pub visibility_secs: u32,
}

impl QueueTrigger<'_> {
    /// Delivers one batch of visible messages (up to `batch`, concurrently, as the host does with
    /// `batchSize`). Returns how many messages were received.
    pub async fn deliver_once(&self, batch: u8, run: &mut QueueRun) -> usize {
        let messages = self
            .queue
            .receive(batch, self.visibility_secs.max(1))
            .await
            .expect("receive from the queue");
        let received = messages.len();
        let results = futures::future::join_all(messages.iter().map(|m| self.deliver(m))).await;
        for (message, ok) in messages.iter().zip(results) {
            run.invocations += 1;
            if ok {
                self.queue.delete(message).await.expect("delete message");
            } else {
                run.failures += 1;
                if message.dequeue_count >= self.max_dequeue_count {
                    let text = decode_text(&message.text);
                    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                    self.poison.send_json(&body, 0).await.expect("poison queue");
                    self.queue.delete(message).await.expect("delete message");
                    run.poisoned += 1;
                }
            }
        }
        received
    }

    async fn deliver(&self, message: &teams_cdr_functions::ReceivedMessage) -> bool {
        let text = delivered_text(&message.text);
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let payload = queue_invocation(&QueueDelivery {
            function: self.function,
            binding: self.binding,
            text: &text,
            id: &message.id,
            pop_receipt: &message.pop_receipt,
            dequeue_count: message.dequeue_count,
            insertion_time: &fmt(now),
            expiration_time: &fmt(now + time::Duration::days(7)),
            next_visible_time: &fmt(now + time::Duration::seconds(30)),
            utc_now: &fmt(now),
            rand_guid: &new_invocation_id(),
        });
        match tokio::time::timeout(
            Duration::from_secs(120),
            self.host
                .client
                .post(format!("{}/{}", self.host.base, self.function))
                .header("X-Azure-Functions-InvocationId", new_invocation_id())
                .header("X-Azure-Functions-HostVersion", HOST_VERSION)
                .json(&payload)
                .send(),
        )
        .await
        {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }

    /// Delivers until the queue has been empty (no visible and no hidden message) twice in a row,
    /// calling `between` before each round (tests advance a simulated clock there). Gives up after
    /// `limit`.
    pub async fn drain(&self, limit: Duration, mut between: impl FnMut()) -> QueueRun {
        let mut run = QueueRun::default();
        let started = Instant::now();
        let mut empty_rounds = 0;
        while empty_rounds < 2 {
            assert!(
                started.elapsed() < limit,
                "queue not drained after {limit:?}: {run:?}"
            );
            between();
            if self.deliver_once(16, &mut run).await == 0 {
                if self.queue.approximate_count().await.expect("queue count") == 0 {
                    empty_rounds += 1;
                } else {
                    empty_rounds = 0;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                empty_rounds = 0;
            }
        }
        run
    }
}

/// The message text as the host hands it to the function: base64-decoded (host.json
/// `messageEncoding: base64`).
/// A timer-trigger invocation exactly as the real host sent it
/// (`functions/timer-trigger.request.real-capture.host-4.24.4.4.json`), `IsPastDue` set as asked.
pub fn timer_invocation(past_due: bool) -> Value {
    let mut payload: Value = serde_json::from_str(&super::fixture(
        "functions/timer-trigger.request.real-capture.host-4.24.4.4.json",
    ))
    .unwrap();
    payload["Data"]["timer"]["IsPastDue"] = json!(past_due);
    payload
}

/// The message text as the host hands it to the function under this repository's `host.json`:
/// as stored with `messageEncoding: none`, base64-decoded with `base64`.
pub fn delivered_text(stored: &str) -> String {
    static ENCODING: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let encoding = ENCODING.get_or_init(|| {
        let path = super::repository_root().join("host.json");
        let host: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        host["extensions"]["queues"]["messageEncoding"]
            .as_str()
            .unwrap_or("base64")
            .to_owned()
    });
    if encoding == "none" {
        stored.to_owned()
    } else {
        decode_text(stored)
    }
}

/// A message's text decoded from base64 where it is base64 (our jobs), else as stored.
pub fn decode_text(stored: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| stored.to_owned())
}
