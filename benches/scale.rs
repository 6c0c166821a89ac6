//! Benchmark of reconciliation at a large tenant: a day of 300,000 calls, 10 % of whose
//! notifications were lost (their records are not stored; the other 90 % are, as the fetch leaves
//! them), on the simulator's clock moved 5 minutes at a time with a `Reconcile` run after each
//! step, until the last hour of the day has had its last pass. Graph's list limit (40 requests /
//! 20 s) and per-app limit are enforced on both sides at the same scale as the clock: the clock is
//! not real, so every limit, and the run's budget, is divided by `SCALE_FACTOR` (20 unless set).
//!
//! Storage is Azurite, but not Azurite's time. Azurite answers a `$filter` query by scanning its
//! whole table, some 0.8 s at 270,000 rows, which the factor would turn into 16 tenant seconds a
//! query. So the benchmark runs on one thread with tokio's clock, which every part reads (the
//! app's budget and rate limiter, the simulator's windows), stopped while a storage request is
//! with Azurite (`StorageTime::Modelled`), and moved instead by `SCALE_STORAGE_MS` tenant
//! milliseconds a request (20 unless set). That figure is an assumption: Microsoft documents no
//! latency for Table storage ("fast, but no upper bounds"). The real time Azurite took is printed
//! beside it.
//!
//! Run with `cargo bench --bench scale` (about 35 minutes here; `SCALE_CALLS` for another size). It
//! runs the day twice: with the default budget (240 s) and with the smallest one (30 s), and fails
//! unless every unstored call was queued both times (`SCALE_BUDGETS=240` runs one day, at that
//! budget). It prints Markdown for `docs/BENCHMARKS.md`:
//! list requests per call over the day, the longest sweep against its budget (tenant seconds:
//! real seconds times the factor), storage requests per call listed, and the process's peak RSS
//! (simulator, app and benchmark together).
//!
//! What it does not run: the fetches themselves (300,000 fetches through Azurite would take hours on
//! two cores; `cargo bench --bench fetch` measures one fetch's requests), nor the notifications.

// A benchmark that cannot set up has nothing to measure: panicking is its error report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use support::counting_proxy::{StorageTime, start_proxy_keeping_posts, start_proxy_with};
use support::fetch::{FetchApp, sim_record, spawn_fetch_app};
use support::graph::{sim_config, sim_start, start_sim};
use support::host::{decode_text, timer_invocation};
use support::utc_day as day;
use table_storage::{BatchOp, EdmValue, Entity, WriteMode};
use teams_cdr_functions::{CallRecordJob, RateLimit, RateLimits};
use teams_cdr_sim::{Endpoint, Limit, Limits, RunningSim};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn main() {
    support::bench_main_on_one_thread("scale", run);
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator: the day is the same on every run.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One call of the day: id, start, and whether its record is stored.
struct Call {
    id: String,
    start: OffsetDateTime,
    stored: bool,
}

/// The day: 70 % of the calls in 8 business hours, the rest over the other 16; calls of 1–30
/// minutes, 1 % meetings of 2–8 hours; each record published 0–150 minutes after its call ended.
fn day_of_calls(sim: &RunningSim, calls: usize, day_start: OffsetDateTime) -> Vec<Call> {
    let mut dice = Dice(0x5eed_2026_1204);
    let mut out = Vec::with_capacity(calls);
    for n in 0..calls {
        let business = dice.below(10) < 7;
        let second = if business {
            8 * 3600 + dice.below(8 * 3600)
        } else {
            let s = dice.below(16 * 3600);
            if s < 8 * 3600 { s } else { s + 8 * 3600 }
        };
        let start = day_start + time::Duration::seconds(i64::try_from(second).unwrap());
        let minutes = if dice.below(100) == 0 {
            120 + dice.below(360)
        } else {
            1 + dice.below(30)
        };
        let end = start + time::Duration::minutes(i64::try_from(minutes).unwrap());
        let published = end + time::Duration::minutes(i64::try_from(dice.below(151)).unwrap());
        let id = format!("{:08x}-0000-4000-8000-{n:012}", dice.next() as u32);
        let base = json!({
            "id": id,
            "version": 1,
            "type": "peerToPeer",
            "startDateTime": start.format(&Rfc3339).unwrap(),
            "endDateTime": end.format(&Rfc3339).unwrap(),
            "lastModifiedDateTime": published.format(&Rfc3339).unwrap(),
        });
        let mut record = sim_record(&id, base, Vec::new(), Vec::new());
        record.start = start;
        record.end = end;
        record.versions[0].issued_at = published;
        sim.insert_record(record);
        out.push(Call {
            id,
            start,
            stored: dice.below(10) != 0,
        });
    }
    out
}

/// Writes the `CallRecords` rows of the stored calls, as the fetch leaves them (the columns the
/// sweep reads).
async fn store(app: &FetchApp, calls: &[Call]) {
    // The app creates its tables on first use; these rows come first.
    app.tables.records.ensure_exists().await.unwrap();
    let mut by_day: std::collections::BTreeMap<String, Vec<Entity>> = Default::default();
    for call in calls.iter().filter(|c| c.stored) {
        let row = Entity::new(day(call.start), &call.id)
            .with("Version", EdmValue::Int64(1))
            .with("StartDateTime", EdmValue::DateTime(call.start));
        by_day.entry(day(call.start)).or_default().push(row);
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
}

/// What one day measured.
struct Day {
    budget_seconds: u64,
    runs: usize,
    list_requests: usize,
    throttled: usize,
    listed: i64,
    longest_tenant_seconds: f64,
    cut_short: usize,
    storage_requests: u64,
    queue_requests: u64,
    /// Real time the app's storage requests waited on Azurite, summed over requests (those in flight
    /// together each count), so it can exceed the real time of the day; not tenant time.
    azurite_seconds: f64,
    queued: usize,
    /// Messages sent: a call listed unstored by two passes is queued twice (the fetch is
    /// idempotent).
    messages: usize,
    unstored: usize,
    seconds: f64,
}

async fn one_day(
    calls_per_day: usize,
    factor: u32,
    budget_seconds: u64,
    storage_per_request: Duration,
) -> Day {
    let scaled = |d: Duration| d / factor;
    let mut config = sim_config(0);
    config.limits = Limits {
        list: Limit {
            requests: 40,
            window: scaled(Duration::from_secs(20)),
        },
        per_app: Limit {
            requests: 1500,
            window: scaled(Duration::from_secs(20)),
        },
        ..Limits::default()
    };
    let sim = start_sim(config).await;
    let day_start = sim_start();
    let calls = day_of_calls(&sim, calls_per_day, day_start);
    let modelled = StorageTime::Modelled {
        per_request: scaled(storage_per_request),
    };
    let table_proxy = start_proxy_with(&support::azurite().table_endpoint, modelled).await;
    let queue_proxy = start_proxy_keeping_posts(&support::azurite().queue_endpoint, modelled).await;
    let (table_url, queue_url) = (table_proxy.url.clone(), queue_proxy.url.clone());
    let client = RateLimits {
        list: RateLimit {
            requests: 40,
            window: scaled(Duration::from_secs(20)),
        },
        call_records_app: RateLimit {
            requests: 1500,
            window: scaled(Duration::from_secs(20)),
        },
        margin: scaled(Duration::from_millis(500)),
        ..RateLimits::default()
    };
    let budget = scaled(Duration::from_secs(budget_seconds));
    let app = spawn_fetch_app(sim, move |config, options| {
        config.storage.table_endpoint = table_url.parse().unwrap();
        config.storage.queue_endpoint = queue_url.parse().unwrap();
        config.subscription.reconcile_budget = budget;
        options.graph_limits = Some(client);
    })
    .await;
    store(&app, &calls).await;
    let unstored: BTreeSet<String> = calls
        .iter()
        .filter(|c| !c.stored)
        .map(|c| c.id.clone())
        .collect();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let table_requests = table_proxy.requests.clone();
    let queue_requests = queue_proxy.requests.clone();
    let storage_before = table_requests.load(Ordering::SeqCst);
    let queue_before = queue_requests.load(Ordering::SeqCst);
    let waited_before = table_proxy.waited() + queue_proxy.waited();
    let started = Instant::now();
    let mut queued = BTreeSet::new();
    let mut messages = 0;
    let (mut runs, mut listed, mut cut_short, mut longest) = (0, 0, 0, 0.0f64);
    // The day, then 27 hours more: the last hour's last pass is due 26 hours after it ends.
    let steps = (24 + 27) * 12;
    for _ in 0..steps {
        app.sim.clock().advance(time::Duration::minutes(5));
        // tokio's clock: stopped while storage answers, moved by the modelled time instead.
        let run_started = tokio::time::Instant::now();
        let response = http
            .post(format!("{}/Reconcile", app.host.base()))
            .json(&timer_invocation(false))
            .send()
            .await
            .unwrap();
        let took = run_started.elapsed().as_secs_f64() * f64::from(factor);
        let status = response.status();
        assert!(
            status.is_success(),
            "run {runs}: {status} {}",
            response.text().await.unwrap_or_default()
        );
        runs += 1;
        longest = longest.max(took);
        if std::env::var_os("SCALE_TRACE").is_some() {
            eprintln!(
                "run {runs}: {took:.1} tenant s, storage {}, list {}, 429 {}",
                table_requests.load(Ordering::SeqCst),
                app.sim.ledger().count(Endpoint::ListCallRecords),
                app.sim.ledger().count_status(429),
            );
        }
        let row = app
            .tables
            .app_state
            .get("Reconcile", "status")
            .await
            .unwrap()
            .unwrap();
        listed += row.get_i64("LastListed").unwrap_or(0);
        if row.get_datetime("LastSuccessAt") != row.get_datetime("LastRunAt") {
            cut_short += 1;
        }
        // What the queue took, as it passed the proxy: receiving from Azurite's queue once it held
        // tens of thousands of hidden messages took longer than the run.
        for body in queue_proxy.take_posted() {
            queued.insert(job_id(&body));
            messages += 1;
        }
    }
    // The benchmark's own reads went to Azurite directly, not through the proxies.
    let storage_requests = table_requests.load(Ordering::SeqCst) - storage_before;
    let queue_requests = queue_requests.load(Ordering::SeqCst) - queue_before;
    let azurite_seconds =
        (table_proxy.waited() + queue_proxy.waited() - waited_before).as_secs_f64();
    // The proxy saw every message the queue holds, and no other.
    let held = app.queue.approximate_count().await.unwrap();
    assert_eq!(
        held,
        u64::try_from(messages).unwrap(),
        "messages in the queue"
    );
    let missing: Vec<&String> = unstored.difference(&queued).take(5).collect();
    assert!(
        missing.is_empty(),
        "budget {budget_seconds} s: {} of {} unstored calls never queued, e.g. {missing:?}",
        unstored.difference(&queued).count(),
        unstored.len()
    );
    let stored_queued = queued.difference(&unstored).count();
    assert_eq!(stored_queued, 0, "stored calls queued");
    Day {
        budget_seconds,
        runs,
        list_requests: app.sim.ledger().count(Endpoint::ListCallRecords),
        throttled: app.sim.ledger().count_status(429),
        listed,
        longest_tenant_seconds: longest,
        cut_short,
        storage_requests,
        queue_requests,
        azurite_seconds,
        queued: queued.len(),
        messages,
        unstored: unstored.len(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The call-record id of a Put Message body (`<QueueMessage><MessageText>…</MessageText>…`).
fn job_id(body: &[u8]) -> String {
    let body = std::str::from_utf8(body).unwrap();
    let text = body
        .split_once("<MessageText>")
        .and_then(|(_, rest)| rest.split_once("</MessageText>"))
        .map(|(text, _)| text)
        .unwrap_or_else(|| panic!("not a queue message: {body}"));
    let job: CallRecordJob = serde_json::from_str(&decode_text(text)).unwrap();
    job.id
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

async fn run() {
    let calls = usize::try_from(env_number("SCALE_CALLS", 300_000)).unwrap();
    let factor = u32::try_from(env_number("SCALE_FACTOR", 20)).unwrap();
    let storage_ms = env_number("SCALE_STORAGE_MS", 20);
    let storage = Duration::from_millis(storage_ms);
    println!("## A day of {calls} calls (`cargo bench --bench scale`)\n");
    println!(
        "Clock and limits at {factor}x; a `Reconcile` run every 5 tenant minutes over the day and the 27 hours after it; 10 % of the calls unstored; each storage request taken as {storage_ms} ms of tenant time (the clock stopped while Azurite answered).\n"
    );
    println!(
        "| budget | runs | list requests | per call | `429` | calls listed | longest sweep (tenant s) | runs cut short | table requests per call listed | queue messages | queue requests | Azurite s (summed over requests) | unstored | queued | real s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let budgets: Vec<u64> = std::env::var("SCALE_BUDGETS").map_or_else(
        |_| vec![240, 30],
        |v| v.split(',').map(|b| b.trim().parse().unwrap()).collect(),
    );
    // Each day's row as it ends.
    for budget in budgets {
        let d = one_day(calls, factor, budget, storage).await;
        #[allow(clippy::cast_precision_loss)]
        let row = format!(
            "| {} s | {} | {} | {:.3} | {} | {} | {:.0} | {} | {:.4} | {} | {} | {:.0} | {} | {} | {:.0} |",
            d.budget_seconds,
            d.runs,
            d.list_requests,
            d.list_requests as f64 / calls as f64,
            d.throttled,
            d.listed,
            d.longest_tenant_seconds,
            d.cut_short,
            d.storage_requests as f64 / d.listed.max(1) as f64,
            d.messages,
            d.queue_requests,
            d.azurite_seconds,
            d.unstored,
            d.queued,
            d.seconds,
        );
        println!("{row}");
    }
    if let Some(mib) = peak_rss_mib() {
        println!(
            "\nPeak RSS of the benchmark process (simulator holding the day, app, benchmark): {mib} MiB."
        );
    }
}
