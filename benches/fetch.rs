//! Benchmark of `FetchCallRecord`: the app against Azurite and the Graph simulator with 80 ms of
//! latency on every Graph request, driven by the host emulator's queue trigger.
//!
//! Run with `cargo bench --bench fetch`. It prints Markdown for `docs/BENCHMARKS.md`:
//! - records stored per second with 1 and with 16 concurrent invocations;
//! - Graph requests per record, next to the minimum (1 + extra session pages + participant pages);
//! - storage requests per record (counted by a proxy in front of Azurite);
//! - the release binary's peak RSS while it stores a meeting of 2,000 sessions and 1,000
//!   participants, next to the size of that meeting's JSON.
//!
//! Every stored record is checked against the simulator's. Counts are fixed, so a run is bounded.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::counting_proxy::start_proxy;
use support::fetch::{Tables, azurite_queue, spawn_fetch_app};
use support::graph::{binary_env, sim_config, start_sim};
use support::host::{HostEmulator, QueueRun, QueueTrigger};
use support::{HandlerProcess, azurite};
use teams_cdr_sim::SimClock;

const SMALL_RECORDS: usize = 64;
const SEQUENTIAL: usize = 16;
const GRAPH_LATENCY: Duration = Duration::from_millis(80);

async fn deliver_until_empty(trigger: &QueueTrigger<'_>, batch: u8) -> QueueRun {
    let mut run = QueueRun::default();
    loop {
        if trigger.deliver_once(batch, &mut run).await == 0 {
            if trigger.queue.approximate_count().await.unwrap() == 0 {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// VmHWM and VmRSS of a process, in KiB.
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

async fn run() {
    // Part 1: throughput and request counts, in-process, storage behind a counting proxy.
    let mut config = sim_config(SMALL_RECORDS);
    config.clock = SimClock::real();
    config.tenant.start = time::OffsetDateTime::now_utc() - time::Duration::hours(8);
    config.faults.slow_rate = 1.0;
    config.faults.slow_by = GRAPH_LATENCY;
    let sim = start_sim(config).await;
    let (table_proxy, table_requests) = start_proxy(&azurite().table_endpoint).await;
    let (queue_proxy, queue_requests) = start_proxy(&azurite().queue_endpoint).await;
    let app = spawn_fetch_app(sim, |config, options| {
        config.storage.table_endpoint = table_proxy.parse().unwrap();
        config.storage.queue_endpoint = queue_proxy.parse().unwrap();
        options.clock = Arc::new(teams_cdr_functions::clock::SystemClock);
        config.fetch.max_queue_delay = Duration::from_secs(7 * 24 * 3600);
    })
    .await;
    let ids = app.tenant_ids();
    let tenant = app.sim.tenant();
    let minimum = |id: &String| {
        let v = tenant.records[id].versions.last().unwrap();
        1 + v.sessions.len().saturating_sub(1) / 60 + v.participants.len().div_ceil(130).max(1)
    };

    println!("## Call-record fetch (`cargo bench --bench fetch`)\n");
    println!(
        "| load | records | seconds | records/s | Graph requests/record | minimum | storage requests/record (table + queue) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut offset = 0;
    for (label, count, batch) in [
        ("1 invocation at a time", SEQUENTIAL, 1u8),
        (
            "16 concurrent invocations",
            SMALL_RECORDS - SEQUENTIAL,
            16u8,
        ),
    ] {
        let slice = &ids[offset..offset + count];
        offset += count;
        // The table warm-up (create-if-missing) is not part of the figure.
        if label.starts_with('1') {
            app.enqueue_ids(&slice[..1]).await;
            deliver_until_empty(&app.trigger(), 1).await;
        }
        let slice = if label.starts_with('1') {
            &slice[1..]
        } else {
            slice
        };
        let graph_before = app.sim.ledger().requests().len();
        let tables_before = table_requests.load(Ordering::Relaxed);
        let queue_before = queue_requests.load(Ordering::Relaxed);
        app.enqueue_ids(slice).await;
        let started = Instant::now();
        let run = deliver_until_empty(&app.trigger(), batch).await;
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(run.failures, 0, "{run:?}");
        for id in slice {
            assert!(
                app.store.document(id).await.unwrap().is_some(),
                "{id} stored"
            );
        }
        let n = slice.len() as f64;
        let graph = (app.sim.ledger().requests().len() - graph_before) as f64 / n;
        let min = slice.iter().map(minimum).sum::<usize>() as f64 / n;
        let tables = (table_requests.load(Ordering::Relaxed) - tables_before) as f64 / n;
        let queue = (queue_requests.load(Ordering::Relaxed) - queue_before) as f64 / n;
        println!(
            "| {label} | {} | {elapsed:.2} | {:.1} | {graph:.2} | {min:.2} | {:.2} ({tables:.2} + {queue:.2}) |",
            slice.len(),
            n / elapsed,
            tables + queue
        );
    }

    // Part 2: peak RSS of the release binary storing the largest meeting.
    let mut config = sim_config(0);
    config.clock = SimClock::real();
    config.tenant.start = time::OffsetDateTime::now_utc() - time::Duration::hours(8);
    config.tenant.big_meetings = vec![(2000, 1000)];
    let sim = start_sim(config).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    // This benchmark has an Azurite of its own: the binary's default queue and tables are free.
    let queue_name = teams_cdr_functions::config::CALLRECORD_QUEUE;
    let env = binary_env(&sim, &[("RUST_LOG", "warn")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let handler = HandlerProcess::start(&env).await;
    let pid = handler.pid();
    let jobs = azurite_queue(queue_name).await;
    let poison = azurite_queue(&format!("{queue_name}-poison")).await;
    let (_, idle) = memory_kib(pid);
    jobs.send_json(&app.job(&id), 0).await.unwrap();
    let host = HostEmulator::new(handler.host.base());
    let trigger = QueueTrigger {
        host: &host,
        function: "FetchCallRecord",
        binding: "job",
        queue: &jobs,
        poison: &poison,
        max_dequeue_count: 5,
        visibility_secs: 60,
    };
    let started = Instant::now();
    let run = deliver_until_empty(&trigger, 1).await;
    let elapsed = started.elapsed();
    let (peak, _) = memory_kib(pid);
    handler.stop().await;
    assert_eq!(run.failures, 0);
    let store = Tables::of(&teams_cdr_functions::config::TableNames::default()).store();
    let json = store.document(&id).await.unwrap().unwrap().len() as f64 / 1024.0;
    println!();
    println!("| 2,000-session / 1,000-participant meeting | value |");
    println!("|---|---|");
    println!(
        "| stored in | {:.1} s ({} Graph requests) |",
        elapsed.as_secs_f64(),
        sim.ledger().count_for_record(&id)
    );
    println!("| its merged JSON | {json:.0} KiB |");
    println!(
        "| handler RSS idle → peak | {:.1} MiB → {:.1} MiB |",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("| peak RSS / JSON size | {:.2} |", peak as f64 / json);
    println!(
        "| (peak − idle) / JSON size | {:.2} |",
        (peak - idle) as f64 / json
    );
}

fn main() {
    support::bench_main("fetch", 2, run);
}
