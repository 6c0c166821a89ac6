//! Benchmark of `Reconcile`: a fresh deployment's first sweep, which owes a pass for every hour of
//! its look-back, for a tenant with 10,000 calls a day (26 hours of calls, 10,800 records), against
//! the Graph simulator with Graph's real list limit (40 requests per 20 s, on both sides) and
//! Azurite. (`cargo bench --bench scale` measures a whole day of a large tenant.)
//!
//! Run with `cargo bench --bench reconcile` (about 4 minutes). It prints Markdown for
//! `docs/BENCHMARKS.md`: for a sweep that finds nothing stored (every record queued) and for one that
//! finds everything stored (nothing queued), the list requests, `429`s, wall time, storage
//! queries and records queued; and the list requests a day that follow. Every figure is checked
//! against what the sweep must have done, so a run that measures the wrong thing fails.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use support::counting_proxy::start_proxy;
use support::fetch::{fixture_json, sim_record, spawn_fetch_app};
use support::graph::{sim_config, sim_start, start_sim};
use support::host::timer_invocation;
use support::utc_day as day;
use table_storage::{BatchOp, EdmValue, Entity, WriteMode};
use teams_cdr_sim::Endpoint;
use time::format_description::well_known::Rfc3339;

/// 10,000 calls a day over 26 hours.
const RECORDS: usize = 10_800;

fn main() {
    support::bench_main("reconcile", 2, run);
}

async fn run() {
    let sim = start_sim(sim_config(0)).await;
    let now = sim_start();
    // Small records, spread evenly over the look-back: the sweep reads only ids and versions.
    let base = fixture_json("callrecord-get-basic.json");
    let mut starts = Vec::with_capacity(RECORDS);
    for n in 0..RECORDS {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let start = now - time::Duration::hours(26)
            + time::Duration::seconds(i64::try_from(n).unwrap() * 26 * 3600 / RECORDS as i64);
        let mut base = base.clone();
        base["startDateTime"] = json!(start.format(&Rfc3339).unwrap());
        let mut record = sim_record(&id, base, Vec::new(), Vec::new());
        record.start = start;
        record.end = start + time::Duration::minutes(2);
        record.versions[0].issued_at = start;
        sim.insert_record(record);
        starts.push((id, start));
    }
    let (table_proxy, table_requests) = start_proxy(&support::azurite().table_endpoint).await;
    let app = spawn_fetch_app(sim, |config, _| {
        config.storage.table_endpoint = table_proxy.parse().unwrap();
        // The whole look-back in one sweep, whatever this machine's speed; every hour of it owes
        // its first pass an hour after it ended, so two hours on, all 26 are due.
        config.subscription.reconcile_budget = std::time::Duration::from_secs(900);
        config.subscription.reconcile_passes = vec![
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(28 * 3600),
        ];
    })
    .await;
    app.sim.clock().advance(time::Duration::hours(2));

    let sweep = |label: &'static str| {
        let app = &app;
        let table_requests = &table_requests;
        async move {
            let lists = app.sim.ledger().count(Endpoint::ListCallRecords);
            let throttled = app.sim.ledger().count_status(429);
            let queries = table_requests.load(Ordering::SeqCst);
            let started = Instant::now();
            // Straight to the handler: a sweep at Graph's list limit outlasts the host
            // emulator's client timeout.
            let status = reqwest::Client::new()
                .post(format!("{}/Reconcile", app.host.base()))
                .json(&timer_invocation(false))
                .send()
                .await
                .unwrap()
                .status();
            let seconds = started.elapsed().as_secs_f64();
            assert!(status.is_success(), "{label}: {status}");
            let row = app
                .tables
                .app_state
                .get("Reconcile", "status")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.get_str("LastError"), Some(""), "{label}");
            (
                app.sim.ledger().count(Endpoint::ListCallRecords) - lists,
                app.sim.ledger().count_status(429) - throttled,
                seconds,
                table_requests.load(Ordering::SeqCst) - queries,
                row.get_i64("LastListed").unwrap(),
                row.get_i64("LastEnqueued").unwrap(),
            )
        }
    };

    // Nothing stored: every record is queued.
    let cold = sweep("nothing stored").await;
    assert_eq!(cold.4, RECORDS as i64, "every record listed");
    assert_eq!(cold.5, RECORDS as i64, "every record queued");
    assert_eq!(app.queue.approximate_count().await.unwrap(), RECORDS as u64);

    // Everything stored (as the fetch would leave the `CallRecords` rows): nothing is queued.
    let mut by_day: std::collections::BTreeMap<String, Vec<Entity>> = Default::default();
    for (id, start) in &starts {
        let row = Entity::new(day(*start), id)
            .with("Version", EdmValue::Int64(1))
            .with("StartDateTime", EdmValue::DateTime(*start));
        by_day.entry(day(*start)).or_default().push(row);
    }
    for (partition, rows) in by_day {
        for chunk in rows.chunks(100) {
            let ops = chunk
                .iter()
                .map(|e| BatchOp::Upsert(e.clone(), WriteMode::Replace))
                .collect();
            app.tables.records.batch(&partition, ops).await.unwrap();
        }
    }
    // A fresh deployment again (no hours had their pass), on the stored rows.
    for row in app
        .tables
        .app_state
        .query_all(&table_storage::Query::new())
        .await
        .unwrap()
    {
        if row.partition_key == "ReconcileHour" || row.row_key == "frontier" {
            app.tables
                .app_state
                .delete(&row.partition_key, &row.row_key, None)
                .await
                .unwrap();
        }
    }
    let warm = sweep("everything stored").await;
    assert_eq!(warm.5, 0, "nothing queued when everything is stored");

    println!("## Reconciliation (`cargo bench --bench reconcile`)\n");
    println!(
        "| first sweep, 26 h of {RECORDS} records | list requests | `429` | seconds | table requests | queued |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, (lists, throttled, seconds, queries, _, queued)) in
        [("nothing stored", cold), ("everything stored", warm)]
    {
        println!("| {label} | {lists} | {throttled} | {seconds:.0} | {queries} | {queued} |");
    }
    println!(
        "\nList requests a day with two passes: about {} (Graph allows 40 per 20 s: {:.0} s of listing a day).",
        warm.0 * 2 * 24 / 26,
        (warm.0 * 2 * 24 / 26) as f64 / 2.0
    );
}
