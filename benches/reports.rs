//! Benchmark of `PullReports`: the ingest of 100,000 PSTN rows from the Graph simulator into
//! Azurite.
//!
//! Run with `cargo bench --bench reports`. It prints Markdown for `docs/BENCHMARKS.md`:
//! - rows stored per second by a pull (Graph pages, conversion, writes), in-process, with Graph's
//!   report limit lifted on both sides so that the app, not the limiter, is measured;
//! - storage requests per 100 rows (counted by a proxy in front of Azurite), checkpoint included;
//! - the same rows written again as transactions of 100 and as one upsert per row, and the ratio;
//! - the release binary's peak RSS for a pull of 10,000 and of 100,000 rows (Graph's real limit of
//!   50 requests per 60 s applies there: that part takes a few minutes).
//!
//! Every row is checked to be stored. Counts are fixed, so a run is bounded.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use support::counting_proxy::start_proxy;
use support::fetch::{azurite_table, spawn_fetch_app};
use support::graph::{binary_env, sim_config, start_sim};
use support::host::timer_invocation;
use support::{HandlerProcess, azurite, unique_table_name};
use table_storage::{BatchOp, Entity, Query, WriteMode};
use teams_cdr_functions::{RateLimit, RateLimits};
use teams_cdr_sim::{Limits, SimClock};

const ROWS: usize = 100_000;
const SINGLE_ROWS: usize = 5_000;

/// VmHWM of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// `rows` PSTN rows over the last `days` days, on real time.
fn month(rows: usize, days: i64) -> teams_cdr_sim::SimConfig {
    let mut config = sim_config(0);
    config.clock = SimClock::real();
    let now = time::OffsetDateTime::now_utc();
    config.tenant.start = now - time::Duration::days(days + 1);
    config.tenant.span = time::Duration::days(days);
    config.tenant.pstn_rows = rows;
    config.tenant.report_delay = time::Duration::minutes(1);
    config
}

/// Runs `PullReports` until both reports are complete, posting straight to the handler (no 30 s
/// answer limit). Returns the runs it took.
async fn pull_until_done(base: &str, app_state: &table_storage::TableStore) -> usize {
    let client = reqwest::Client::new();
    for run in 1..=10 {
        let status = client
            .post(format!("{base}/PullReports"))
            .json(&timer_invocation(false))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
        let row = app_state
            .get("ReportCheckpoint", "pstn")
            .await
            .unwrap()
            .unwrap();
        if row.get_str("LastError") == Some("") {
            return run;
        }
    }
    panic!("the pull did not complete in 10 runs");
}

async fn run() {
    // Part 1: throughput and storage requests, in-process, storage behind a counting proxy.
    let mut sim_limits = Limits::default();
    sim_limits.per_report.requests = 1_000_000;
    let sim = start_sim(teams_cdr_sim::SimConfig {
        limits: sim_limits,
        ..month(ROWS, 28)
    })
    .await;
    let (table_proxy, table_requests) = start_proxy(&azurite().table_endpoint).await;
    let app = spawn_fetch_app(sim, |config, options| {
        config.storage.table_endpoint = table_proxy.parse().unwrap();
        options.clock = Arc::new(teams_cdr_functions::clock::SystemClock);
        options.graph_limits = Some(RateLimits {
            report: RateLimit {
                requests: 1_000_000,
                window: Duration::from_secs(60),
            },
            ..RateLimits::default()
        });
    })
    .await;
    let started = Instant::now();
    let runs = pull_until_done(app.host.base(), &app.tables.app_state).await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = table_requests.load(Ordering::Relaxed) as f64;
    let rows = app.tables.pstn.query_all(&Query::new()).await.unwrap();
    assert_eq!(rows.len(), ROWS, "every row stored once");
    let graph = app.sim.ledger().requests().len();

    // The same rows written again into fresh tables: in transactions of 100 (what the pull does,
    // without Graph), and one upsert per row; one request at a time, then four.
    let sample: Vec<Entity> = rows
        .into_iter()
        .take(SINGLE_ROWS)
        .map(|mut e| {
            e.etag = None;
            e
        })
        .collect();
    let mut by_partition: std::collections::BTreeMap<String, Vec<Entity>> = Default::default();
    for e in &sample {
        by_partition
            .entry(e.partition_key.clone())
            .or_default()
            .push(e.clone());
    }
    let mut rates = Vec::new();
    for in_flight in [1, 4] {
        let batched = azurite_table(&unique_table_name("b"));
        batched.ensure_exists().await.unwrap();
        let batches: Vec<(String, Vec<BatchOp>)> = by_partition
            .iter()
            .flat_map(|(pk, rows)| {
                rows.chunks(100).map(move |c| {
                    let ops = c
                        .iter()
                        .cloned()
                        .map(|e| BatchOp::Upsert(e, WriteMode::Replace));
                    (pk.clone(), ops.collect())
                })
            })
            .collect();
        let t = Instant::now();
        futures::stream::iter(batches.into_iter().map(|(pk, ops)| {
            let table = batched.clone();
            async move { table.batch(&pk, ops).await }
        }))
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
        let batch_rate = SINGLE_ROWS as f64 / t.elapsed().as_secs_f64();
        let single = azurite_table(&unique_table_name("s"));
        single.ensure_exists().await.unwrap();
        let t = Instant::now();
        futures::stream::iter(sample.iter().cloned().map(|e| {
            let table = single.clone();
            async move { table.upsert(&e, WriteMode::Replace).await }
        }))
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
        let single_rate = SINGLE_ROWS as f64 / t.elapsed().as_secs_f64();
        rates.push((in_flight, batch_rate, single_rate));
    }

    println!("## Report pulls (`cargo bench --bench reports`)\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| pull of {ROWS} PSTN rows (Graph pages, conversion, writes) | {elapsed:.1} s in {runs} run(s): **{:.0} rows/s** |",
        ROWS as f64 / elapsed
    );
    println!(
        "| Graph requests | {graph} ({:.2} per 1,000 rows) |",
        graph as f64 * 1000.0 / ROWS as f64
    );
    println!(
        "| storage requests per 100 rows (checkpoint, table creation included) | **{:.3}** |",
        requests * 100.0 / ROWS as f64
    );
    for (in_flight, batch_rate, single_rate) in rates {
        println!(
            "| {SINGLE_ROWS} of those rows again, {in_flight} request(s) in flight: transactions of 100 / one upsert per row | {batch_rate:.0} / {single_rate:.0} rows/s = **{:.1} ×** |",
            batch_rate / single_rate
        );
    }

    // Part 2: peak RSS of the release binary, 10,000 then 100,000 rows (Graph's real limits).
    println!();
    println!("| release binary, one pull | rows | peak RSS |");
    println!("|---|---|---|");
    let names = teams_cdr_functions::config::TableNames::default();
    let app_state = azurite_table(&names.app_state);
    // The same density (about 3,600 rows a day, so every page is full), 10 times the rows.
    for (rows, days) in [(10_000, 3), (ROWS, 28)] {
        let sim = start_sim(month(rows, days)).await;
        let env = binary_env(&sim, &[("RUST_LOG", "warn")]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for report in ["pstn", "directRouting"] {
            let _ = app_state.delete("ReportCheckpoint", report, None).await;
        }
        let handler = HandlerProcess::start(&env).await;
        let pid = handler.pid();
        let t = Instant::now();
        pull_until_done(handler.host.base(), &app_state).await;
        let peak = peak_kib(pid);
        handler.stop().await;
        println!(
            "| {rows} rows in {:.0} s | {rows} | {:.1} MiB |",
            t.elapsed().as_secs_f64(),
            peak as f64 / 1024.0
        );
    }
}

fn main() {
    support::bench_main("reports", 2, run);
}
