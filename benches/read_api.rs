//! Benchmark of the read API: 100,000 PSTN rows read through the feed in pages of 5,000, as JSON
//! and as CSV, from the release binary (custom-handler mode, Azurite of its own).
//!
//! Run with `cargo bench --bench read_api`. It prints Markdown for `docs/BENCHMARKS.md`: rows per
//! second and the handler's peak RSS after the first 20,000 rows and after all 100,000 (the peak is
//! reset between formats): a response is streamed a storage page at a time, so the peak must not
//! grow with the rows read. Every row is checked to arrive exactly once. Last, the same rows read
//! straight from the table by the bench process (no API), as the floor the API is compared with.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::Value;
use support::HandlerProcess;
use support::fetch::azurite_table;
use support::graph::{binary_env, sim_config, start_sim};
use table_storage::{EdmValue, Entity};
use teams_cdr_functions::config::TableNames;
use teams_cdr_functions::{FeedDataset, FeedStore};
use time::OffsetDateTime;

const ROWS: usize = 100_000;
const PAGE: usize = 5_000;

/// A clock an hour behind: the rows are long settled when the bench reads them.
#[derive(Debug)]
struct HourAgo;

impl teams_cdr_functions::clock::Clock for HourAgo {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() - time::Duration::hours(1)
    }
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the process's peak RSS to its current RSS (Linux: `5` to `clear_refs`).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// A PSTN row with every documented column, as the pull stores it.
fn pstn_bench_row(n: usize, start: OffsetDateTime) -> Entity {
    let id = format!("9c4f0000-0000-4000-8000-{n:012}");
    let at = start + time::Duration::seconds(i64::try_from(n).unwrap());
    let text = |s: &str| EdmValue::String(s.to_owned());
    Entity::new(support::utc_day(at), id.clone())
        .with("id", text(&id))
        .with("callId", text(&format!("1234{n:08}")))
        .with("userId", text("db03c14b-06eb-4189-939b-7cbf3a20ba27"))
        .with("userPrincipalName", text("richard.malk@contoso.com"))
        .with("userDisplayName", text("Richard Malk"))
        .with("startDateTime", EdmValue::DateTime(at))
        .with(
            "endDateTime",
            EdmValue::DateTime(at + time::Duration::seconds(185)),
        )
        .with("duration", EdmValue::Int32(185))
        .with("charge", text("0.0190"))
        .with("connectionCharge", text("0.0"))
        .with("currency", text("USD"))
        .with("callType", text("user_out"))
        .with("calleeNumber", text("+1425555****"))
        .with("callerNumber", text("+1206555****"))
        .with("usageCountryCode", text("US"))
        .with("tenantCountryCode", text("US"))
        .with("destinationContext", text("Domestic"))
        .with("destinationName", text("United States"))
        .with("licenseCapability", text("MCOPSTNU"))
        .with("inventoryType", text("Subscriber"))
        .with("operator", text("Microsoft"))
        .with("callDurationSource", text("microsoft"))
        .with("Direction", text("outbound"))
        .with("SourceHash", text("0123456789abcdef0123456789abcdef"))
}

async fn seed() {
    let names = TableNames::default();
    let feed = FeedStore::new(
        azurite_table(&names.feed),
        azurite_table(&names.app_state),
        [
            (FeedDataset::CallRecords, azurite_table(&names.call_records)),
            (FeedDataset::PstnCalls, azurite_table(&names.pstn_calls)),
            (
                FeedDataset::DirectRoutingCalls,
                azurite_table(&names.direct_routing_calls),
            ),
        ],
        azurite_table(&names.sessions),
        Arc::new(HourAgo),
        Duration::from_secs(300),
    );
    let start = OffsetDateTime::now_utc() - time::Duration::days(1);
    let batches: Vec<Vec<Entity>> = (0..ROWS)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|chunk| chunk.iter().map(|n| pstn_bench_row(*n, start)).collect())
        .collect();
    stream::iter(batches.into_iter().map(|rows| {
        let feed = feed.clone();
        async move { feed.append(FeedDataset::PstnCalls, &rows).await }
    }))
    .buffer_unordered(8)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
}

/// Reads the whole feed in `format`; the rows' ids, and the peak RSS after the first 20,000 rows.
async fn read_all(base: &str, format: &str, pid: u32) -> (Vec<String>, u64, Duration) {
    let client = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut ids = Vec::with_capacity(ROWS);
    let mut early_peak = 0;
    let started = Instant::now();
    loop {
        let mut url = format!("{base}/api/v1/pstncalls?limit={PAGE}&format={format}");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.extend(url::form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let more = response.headers()["x-more"] == "true";
        cursor = Some(
            response.headers()["x-next-cursor"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let body = response.text().await.unwrap();
        if format == "csv" {
            let mut reader = csv::Reader::from_reader(body.as_bytes());
            for record in reader.records() {
                ids.push(record.unwrap()[0].to_owned());
            }
        } else {
            let page: Value = serde_json::from_str(&body).unwrap();
            for item in page["items"].as_array().unwrap() {
                ids.push(item["id"].as_str().unwrap().to_owned());
            }
        }
        if early_peak == 0 && ids.len() >= 20_000 {
            early_peak = memory_kib(pid).0;
        }
        if !more {
            return (ids, early_peak, started.elapsed());
        }
    }
}

async fn run() {
    let sim = start_sim(sim_config(0)).await;
    let seeding = Instant::now();
    seed().await;
    let seeded = seeding.elapsed();
    let env = binary_env(&sim, &[("RUST_LOG", "warn")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let handler = HandlerProcess::start(&env).await;
    let pid = handler.pid();
    let base = handler.host.base().to_owned();
    let (_, idle) = memory_kib(pid);
    println!(
        "seeded {ROWS} feed entries in {:.1} s; handler idle RSS {:.1} MiB",
        seeded.as_secs_f64(),
        idle as f64 / 1024.0
    );
    println!();
    println!(
        "| format | rows | pages | seconds | rows/s | peak RSS after 20,000 rows | peak RSS after 100,000 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for format in ["json", "csv"] {
        reset_peak(pid);
        let (ids, early, elapsed) = read_all(&base, format, pid).await;
        let (peak, _) = memory_kib(pid);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), ROWS, "{format}: every row once");
        assert_eq!(unique.len(), ROWS, "{format}: no row twice");
        println!(
            "| {format} | {} | {} | {:.1} | {:.0} | {:.1} MiB | {:.1} MiB |",
            ids.len(),
            ROWS.div_ceil(PAGE),
            elapsed.as_secs_f64(),
            ids.len() as f64 / elapsed.as_secs_f64(),
            early as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    // The floor: the same rows read straight from the table, 1,000 a request, no API.
    let table = azurite_table(&TableNames::default().feed);
    let started = Instant::now();
    let raw = table
        .query_all(&table_storage::Query::new().filter({
            use table_storage::filter::{Op, and, cmp};
            and(
                cmp("PartitionKey", Op::Ge, "pstncalls-"),
                cmp("PartitionKey", Op::Lt, "pstncalls."),
            )
        }))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(raw.len(), ROWS);
    println!(
        "| raw table scan (no API) | {} | | {:.1} | {:.0} | | |",
        raw.len(),
        elapsed.as_secs_f64(),
        raw.len() as f64 / elapsed.as_secs_f64()
    );
    handler.stop().await;
}

fn main() {
    support::bench_main("read_api", 2, run);
}
