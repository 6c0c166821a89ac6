//! Benchmark of the notification intake: the real handler binary (release build) in custom-handler
//! mode against Azurite, driven on loopback by a bounded load generator.
//!
//! Run with `cargo bench --bench intake`. It prints a Markdown table for `docs/BENCHMARKS.md`:
//! cold start (process start → first answer to `GET /`), idle and peak RSS, and for collections of 1,
//! 10 and 100 notifications: notifications/s and p50/p99 latency to the `202`. As a machine-independent
//! reference it also measures a direct queue write from this process to the same Azurite, and reports
//! the handler's latency as a ratio of it. Every notification is checked to be on the queue afterwards.
//! Request counts and concurrency are fixed, so a run is bounded in time.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use futures::StreamExt as _;
use std::time::{Duration, Instant};

use support::{CLIENT_STATE, TENANT_ID, azurite, collection_of};
use teams_cdr_functions::{CallRecordJob, QueueStore, StorageAuth, StorageRetry};

const COLD_STARTS: usize = 20;
/// (items per collection, collections posted, concurrent posters)
const LOADS: [(usize, usize, usize); 4] =
    [(1, 2000, 8), (10, 400, 8), (100, 120, 1), (100, 120, 4)];
/// Queue writes in flight per collection, as in the handler (`ENQUEUE_CONCURRENCY`).
const BATCH_CONCURRENCY: usize = 32;

struct Handler {
    child: tokio::process::Child,
    base: String,
}

impl Handler {
    async fn start() -> (Self, Duration) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let child = tokio::process::Command::new(support::handler_binary())
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("GRAPH_TENANT_ID", TENANT_ID)
            .env("NOTIFICATION_CLIENT_STATE", CLIENT_STATE)
            .env("AzureWebJobsStorage", azurite().connection_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("handler starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        // The host's readiness probe: any answer counts.
        while client.get(format!("{base}/")).send().await.is_err() {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        (Self { child, base }, started.elapsed())
    }

    /// (current RSS, peak RSS) in KiB, from /proc.
    fn rss_kib(&self) -> (u64, u64) {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs `total` operations with `concurrency` workers; returns each latency and the wall time.
async fn bounded_load<F, Fut>(total: usize, concurrency: usize, op: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (w..total).step_by(concurrency) {
                let t = Instant::now();
                op(i).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let wall = started.elapsed();
    all.sort();
    (all, wall)
}

/// Counts the messages on the queue; received messages stay hidden for 10 minutes, so each is
/// counted once.
async fn count_messages(queue: &QueueStore) -> usize {
    let mut n = 0;
    loop {
        let batch = queue.receive(32, 600).await.unwrap();
        if batch.is_empty() {
            return n;
        }
        n += batch.len();
    }
}

fn reader(name: &str) -> QueueStore {
    use base64::Engine as _;
    QueueStore::new(
        &azurite().queue_endpoint,
        name,
        &StorageAuth::SharedKey {
            account: support::azurite::ACCOUNT.to_owned(),
            key: base64::engine::general_purpose::STANDARD
                .decode(support::azurite::ACCOUNT_KEY)
                .unwrap()
                .into(),
        },
        teams_cdr_functions::http_client(None).unwrap(),
        // Azurite (one Node.js thread) can stall under this load: be patient, it is not the subject.
        StorageRetry {
            max_retries: 5,
            initial_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(60),
        },
    )
    .unwrap()
}

fn row(name: &str, notifications: usize, wall: Duration, lat: &[Duration], reference: &[Duration]) {
    println!(
        "| {name} | {:.0} | {} | {} | {:.2} | {:.2} |",
        notifications as f64 / wall.as_secs_f64(),
        ms(percentile(lat, 50)),
        ms(percentile(lat, 99)),
        percentile(lat, 50).as_secs_f64() / percentile(reference, 50).as_secs_f64(),
        percentile(lat, 99).as_secs_f64() / percentile(reference, 99).as_secs_f64(),
    );
}

async fn run() {
    // Cold start, and the idle footprint right after it. One start first, not counted: it only
    // measures loading the binary into the page cache.
    drop(Handler::start().await);
    let mut cold = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..COLD_STARTS {
        let (handler, took) = Handler::start().await;
        cold.push(took);
        idle_rss.push(handler.rss_kib().0);
    }
    cold.sort();
    idle_rss.sort_unstable();

    let (handler, _) = Handler::start().await;
    let queue = reader("callrecord-ids");
    let client = reqwest::Client::new();
    let direct = reader(&support::unique_name("direct"));
    direct.ensure_exists().await.unwrap();
    let job = CallRecordJob {
        id: "reference".into(),
        change_type: "created".into(),
        tenant_id: TENANT_ID.into(),
        subscription_id: "s".into(),
        received_at: time::OffsetDateTime::now_utc(),
        attempt: 0,
        not_before: None,
        repair: false,
    };
    let write_batch = |n: usize| {
        let direct = direct.clone();
        let job = job.clone();
        move |_| {
            let writes: Vec<_> = (0..n)
                .map(|_| {
                    let direct = direct.clone();
                    let job = job.clone();
                    async move { direct.send_json(&job, 0).await.unwrap() }
                })
                .collect();
            async move {
                futures::stream::iter(writes)
                    .buffer_unordered(BATCH_CONCURRENCY)
                    .collect::<Vec<()>>()
                    .await;
            }
        }
    };

    // Reference A: single direct queue writes from this process, same Azurite, 8 concurrent.
    let (single_lat, single_wall) = bounded_load(2000, 8, write_batch(1)).await;
    // Reference B: 100-message batches written directly, 32 in flight, one batch at a time: what a
    // 100-item collection costs Azurite alone.
    let (batch_lat, batch_wall) = bounded_load(120, 1, write_batch(100)).await;

    println!(
        "| load | notifications/s | p50 ms | p99 ms | p50 / reference p50 | p99 / reference p99 |"
    );
    println!("|---|---|---|---|---|---|");
    row(
        "reference A: direct single queue writes, 8 concurrent",
        2000,
        single_wall,
        &single_lat,
        &single_lat,
    );
    row(
        &format!(
            "reference B: direct 100-message batches, {BATCH_CONCURRENCY} writes in flight, 1 batch at a time"
        ),
        12_000,
        batch_wall,
        &batch_lat,
        &batch_lat,
    );
    for (batch, (items, posts, concurrency)) in LOADS.into_iter().enumerate() {
        let bodies: Vec<String> = (0..posts)
            .map(|p| {
                let ids: Vec<String> = (0..items).map(|i| format!("b{batch}-p{p}-i{i}")).collect();
                collection_of(&ids)
            })
            .collect();
        let bodies = std::sync::Arc::new(bodies);
        let (lat, wall) = bounded_load(posts, concurrency, {
            let client = client.clone();
            let base = handler.base.clone();
            move |i| {
                let client = client.clone();
                let url = format!("{base}/api/notifications");
                let body = bodies[i].clone();
                async move {
                    let response = client.post(url).body(body).send().await.unwrap();
                    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
                }
            }
        })
        .await;
        assert_eq!(
            count_messages(&queue).await,
            items * posts,
            "every notification is on the queue"
        );
        // 1-item collections compare with single writes, larger ones with the direct batches.
        let (reference, name) = if items == 1 {
            (&single_lat, "A")
        } else {
            (&batch_lat, "B")
        };
        row(
            &format!(
                "handler: {items}-item collections × {posts}, {concurrency} concurrent (vs {name})"
            ),
            items * posts,
            wall,
            &lat,
            reference,
        );
    }
    let (_, peak) = handler.rss_kib();
    println!();
    println!(
        "cold start (process start → first answer to GET /), {COLD_STARTS} starts: p50 {} ms, p90 {} ms, max {} ms",
        ms(percentile(&cold, 50)),
        ms(percentile(&cold, 90)),
        ms(*cold.last().unwrap())
    );
    println!(
        "idle RSS after start: p50 {:.1} MiB; peak RSS over the whole load: {:.1} MiB",
        idle_rss[idle_rss.len() / 2] as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

fn main() {
    support::bench_main("intake", 1, run);
}
