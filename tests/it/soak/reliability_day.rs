//! The reliability day: the shipped binary in standalone mode (its own scheduler and queue
//! consumer), Azurite, and the Graph simulator on a clock that runs 300 times faster than real
//! time (`DAY_CLOCK_FACTOR`), shared with the binary through `ACCELERATED_CLOCK`, run a tenant day
//! under every fault the product promises to survive. Afterwards the tables must hold every call
//! record exactly once at its latest version (row by row and document by document, against the
//! simulator's tenant), every report row exactly once, and nothing else; a consumer that polled the
//! read API's feeds in small pages all day must have received every row; no message may be left
//! on the poison queue; and the health check must read `ok`.
//!
//! The faults: 5 % `429` (whole and fractional `Retry-After`), 1 % `503`/`504`, slow and cut
//! responses, 5 % duplicated, 2 % dropped and reordered notifications, a 30-minute webhook outage,
//! the subscription deleted on Graph's side, a `reauthorizationRequired` event, the token endpoint
//! failing for 40 s, storage refusing every request for a minute, and the handler killed
//! (SIGKILL) three times at random points and restarted. Meanwhile every bad input the app has a
//! rule for is sent three times over.
//!
//! Real durations stay real: the storage outage, the token outage, Graph's throttling windows
//! and `Retry-After`, leases and the feed's settle time. Tenant durations (availability, report
//! lateness, schedules, the webhook outage) pass on the fast clock.
//!
//! `DAY_CALLS` (5,000) and `DAY_DAYS` (1) scale it: `docs/RELIABILITY.md` has the command for a
//! tenant week. The run's figures are written to `target/reliability-day.md`.
//!
//! `DAY_DELIVERY=eventGrid` runs the day with Event Grid delivery (`NOTIFICATION_DELIVERY`): the
//! simulator's partner topic writes each event into the queue (alternately base64 and plain text),
//! the webhook outage becomes an Event Grid outage, and the bad input expects the webhooks' `404`
//! and adds forged events to the queue. CI runs it on a shorter day (`scripts/test.sh`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use support::HandlerProcess;
use support::bad_input::{KEY, cases, check, send};
use support::counting_proxy::start_proxy;
use support::event_grid::Encoding;
use support::fetch::{Tables, azurite_queue, azurite_table, served};
use support::graph::{binary_env, start_sim};
use support::proxy::{Mode, ToggleProxy};
use table_storage::{Entity, Query};
use teams_cdr_functions::clock::AcceleratedClock;
use teams_cdr_functions::config::{CALLRECORD_QUEUE, TableNames};
use teams_cdr_sim::{
    Endpoint, Faults, Outcome, RetryAfter, RunningSim, SimClock, SimConfig, TenantSpec,
};
use time::OffsetDateTime;

/// The day's size and speed, from the environment.
struct Plan {
    calls: usize,
    days: i64,
    factor: f64,
    seed: u64,
    event_grid: bool,
}

impl Plan {
    fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_owned())
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{name} is not a number"))
        };
        Self {
            calls: var("DAY_CALLS", "5000") as usize,
            days: var("DAY_DAYS", "1") as i64,
            factor: var("DAY_CLOCK_FACTOR", "300"),
            seed: var("DAY_SEED", "20261129") as u64,
            event_grid: std::env::var("DAY_DELIVERY").is_ok_and(|v| v == "eventGrid"),
        }
    }

    /// Tenant time that passes in `real`.
    fn tenant(&self, real: Duration) -> time::Duration {
        time::Duration::seconds_f64(real.as_secs_f64() * self.factor)
    }
}

/// Events a forger could write into the queue (with Event Grid delivery): a wrong client state, a
/// foreign tenant, another event type, in both encodings, for a call record of no tenant.
fn forged_events() -> Vec<String> {
    let id = "0badbad0-0000-4000-8000-000000000001";
    let event = |kind: &str, client_state: &str, tenant: &str| {
        serde_json::json!({
            "id": format!("forged-{kind}-{tenant}"),
            "source": format!("/tenants/{tenant}/applications/x"),
            "specversion": "1.0",
            "type": kind,
            "data": {
                "changeType": "created",
                "clientState": client_state,
                "resource": format!("communications/callRecords/{id}"),
                "resourceData": {"id": id, "@odata.type": "#Microsoft.Graph.callRecord"},
                "subscriptionId": "forged",
                "tenantId": tenant
            }
        })
        .to_string()
    };
    let created = "Microsoft.Graph.CallRecordCreated";
    [
        event(created, "a-guessed-client-state", support::TENANT_ID),
        event(
            created,
            support::CLIENT_STATE,
            "00000000-0000-4000-8000-000000000099",
        ),
        event(
            "Microsoft.Graph.UserUpdated",
            support::CLIENT_STATE,
            support::TENANT_ID,
        ),
    ]
    .into_iter()
    .flat_map(|e| [Encoding::Base64.encode(&e), Encoding::Plain.encode(&e)])
    .collect()
}

/// Midnight of the first simulated day.
fn day_start() -> OffsetDateTime {
    time::macros::datetime!(2026-11-20 00:00 UTC)
}

/// The rows of a table of this binary's Azurite (read with the account key, not through the
/// proxies the app uses, so that they count only the app's requests).
async fn rows(table: &str) -> Vec<Entity> {
    azurite_table(table)
        .query_all(&Query::new())
        .await
        .unwrap_or_default()
}

/// The keys of a table's rows and the given columns only: Azurite is single-threaded, and whole
/// `CallRecords` rows (with their documents' first pages) polled every few seconds slow the day.
async fn keys(table: &str, columns: &[&str]) -> Vec<Entity> {
    azurite_table(table)
        .query_all(&Query::new().select(columns.iter().copied()))
        .await
        .unwrap_or_default()
}

/// What the consumer has received from the feeds.
#[derive(Default)]
struct Received {
    /// Call record id → the highest version received.
    records: HashMap<String, i64>,
    pstn: BTreeSet<String>,
    direct_routing: BTreeSet<String>,
    pages: u64,
    failed_polls: u64,
}

/// A UC-Analytics stand-in: polls the three feeds in pages of 50 from the first moment to the
/// last, through restarts and outages (a failed poll is tried again, from the same cursor).
async fn consume(base: String, received: Arc<Mutex<Received>>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut cursors: [Option<String>; 3] = [None, None, None];
    let datasets = ["callrecords", "pstncalls", "directroutingcalls"];
    while !stop.load(Ordering::Relaxed) {
        let mut more_anywhere = false;
        for (i, dataset) in datasets.iter().enumerate() {
            let mut url = format!("{base}/api/v1/{dataset}?limit=50");
            if let Some(cursor) = &cursors[i] {
                url.push_str("&cursor=");
                url.extend(url::form_urlencoded::byte_serialize(cursor.as_bytes()));
            }
            let page = match client.get(&url).header("x-functions-key", KEY).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            let mut received = received.lock().unwrap();
            let Some(page) = page else {
                received.failed_polls += 1;
                continue;
            };
            received.pages += 1;
            for item in page["items"].as_array().unwrap() {
                match i {
                    0 => {
                        let id = item["CallRecordId"].as_str().unwrap().to_owned();
                        let version = item["Version"].as_i64().unwrap();
                        let seen = received.records.entry(id).or_default();
                        *seen = (*seen).max(version);
                    }
                    1 => {
                        received
                            .pstn
                            .insert(item["id"].as_str().unwrap().to_lowercase());
                    }
                    _ => {
                        received
                            .direct_routing
                            .insert(item["id"].as_str().unwrap().to_lowercase());
                    }
                }
            }
            cursors[i] = page["cursor"].as_str().map(str::to_owned);
            more_anywhere |= page["more"].as_bool().unwrap();
        }
        if !more_anywhere {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// What the simulated tenant holds once every version has been issued: call record id → latest
/// version, and the ids of its report rows.
struct Ledger {
    records: BTreeMap<String, i64>,
    pstn: BTreeSet<String>,
    direct_routing: BTreeSet<String>,
    /// When the last record version or report row became visible (tenant time).
    last_issue: OffsetDateTime,
    sessions: usize,
    largest_meeting: usize,
}

fn ledger(sim: &RunningSim) -> Ledger {
    let tenant = sim.tenant();
    let ids = |rows: &[teams_cdr_sim::tenant::ReportRow]| {
        rows.iter()
            .map(|r| r.value()["id"].as_str().unwrap().to_lowercase())
            .collect::<BTreeSet<_>>()
    };
    let last_version = |r: &teams_cdr_sim::tenant::CallRecord| r.versions.last().unwrap().clone();
    Ledger {
        records: tenant
            .records
            .values()
            .map(|r| (r.id.clone(), last_version(r).version as i64))
            .collect(),
        pstn: ids(&tenant.pstn),
        direct_routing: ids(&tenant.direct_routing),
        last_issue: tenant
            .records
            .values()
            .map(|r| last_version(r).issued_at)
            .chain(tenant.pstn.iter().map(|r| r.visible_at))
            .chain(tenant.direct_routing.iter().map(|r| r.visible_at))
            .max()
            .unwrap(),
        sessions: tenant
            .records
            .values()
            .map(|r| last_version(r).sessions.len())
            .sum(),
        largest_meeting: tenant
            .records
            .values()
            .map(|r| last_version(r).sessions.len())
            .max()
            .unwrap_or(0),
    }
}

/// Call record id → stored version, from the `CallRecords` table.
async fn stored_versions() -> BTreeMap<String, i64> {
    keys("CallRecords", &["Version"])
        .await
        .into_iter()
        .map(|e| {
            let version = match e.properties.get("Version") {
                Some(table_storage::EdmValue::Int64(v)) => *v,
                Some(table_storage::EdmValue::Int32(v)) => i64::from(*v),
                other => panic!("{}: Version {other:?}", e.row_key),
            };
            (e.row_key, version)
        })
        .collect()
}

/// One handler life after another: SIGKILL, then a new process on the same port.
struct Handler {
    port: u16,
    env: Vec<(&'static str, String)>,
    process: Option<HandlerProcess>,
    /// What the processes printed, and their peak resident memory.
    printed: String,
    peak_rss_kib: u64,
}

impl Handler {
    async fn start(&mut self) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.process = Some(HandlerProcess::start_standalone(self.port, &env).await);
    }

    async fn kill(&mut self) {
        let process = self.process.take().unwrap();
        self.peak_rss_kib = self.peak_rss_kib.max(process.peak_rss_kib());
        self.printed.push_str(&process.stop().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test (minutes): scripts/test.sh runs it in a process of its own"]
async fn a_tenant_day_under_faults_loses_nothing_and_doubles_nothing() {
    let plan = Plan::from_env();
    let d = day_start();
    let span = time::Duration::days(plan.days);
    let token_outage = (
        d + time::Duration::hours(10),
        d + time::Duration::hours(10) + plan.tenant(Duration::from_secs(40)),
    );

    // The tenant: calls all day (meetings of 10–200 sessions among them, and one of 2,000),
    // records available 0–150 minutes after the call, a tenth re-issued 30 minutes to 6 hours later.
    let clock_start = d - time::Duration::minutes(30);
    let mut config = SimConfig {
        port: 0,
        clock: SimClock::accelerated(clock_start, plan.factor),
        tenant: TenantSpec {
            seed: plan.seed,
            tenant_id: support::TENANT_ID.to_owned(),
            users: 200,
            call_records: plan.calls,
            start: d,
            span,
            big_meetings: vec![(2000, 400), (61, 30), (64, 45)],
            availability_delay: (time::Duration::ZERO, time::Duration::minutes(150)),
            updated_share: 0.1,
            pstn_rows: 1500 * plan.days as usize,
            direct_routing_rows: 1000 * plan.days as usize,
            direct_routing_failure_share: 0.2,
            report_delay: time::Duration::minutes(30),
        },
        faults: Faults {
            throttle_rate: 0.05,
            retry_after: RetryAfter::Seconds(1),
            retry_after_alternate: Some(RetryAfter::Fractional(0.75)),
            unavailable_rate: 0.01,
            slow_rate: 0.01,
            slow_by: Duration::from_millis(1500),
            reset_rate: 0.005,
            token_failure_rate: 0.0,
            token_outages: vec![token_outage],
            duplicate_rate: 0.05,
            drop_rate: 0.02,
            reorder: true,
            delivery_outages: Vec::new(),
        },
        // Tokens live 5.5 minutes: the app asks again every 30 s, so the outage is met.
        token_lifetime: Duration::from_secs(330),
        ..SimConfig::default()
    };
    config.delivery.max_attempts = 10;
    // Event Grid delivery: the partner topic writes into the queue the binary reads, straight to
    // Azurite (Event Grid is not the app's storage traffic), base64 and plain text in turn.
    let event_grid_down = Arc::new(AtomicBool::new(false));
    if plan.event_grid {
        let queue = azurite_queue(CALLRECORD_QUEUE).await;
        let down = Arc::clone(&event_grid_down);
        let turn = Arc::new(std::sync::atomic::AtomicU64::new(0));
        config.event_grid = Some(Arc::new(move |event: String| {
            let (queue, down, turn) = (queue.clone(), Arc::clone(&down), Arc::clone(&turn));
            Box::pin(async move {
                if down.load(Ordering::Relaxed) {
                    return false;
                }
                let encoding = if turn.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    Encoding::Base64
                } else {
                    Encoding::Plain
                };
                queue.send_text(encoding.encode(&event), 0).await.is_ok()
            })
        }));
    }
    // The binary's clock: the simulator's, read from the same real moment.
    let real_start = OffsetDateTime::now_utc();
    let sim = start_sim(config).await;
    let clock = AcceleratedClock::new(clock_start, real_start, plan.factor).unwrap();
    let expected = ledger(&sim);

    // Storage through proxies that count the app's requests and can refuse them.
    let azurite = support::azurite();
    let mut storage = Vec::new();
    let mut endpoints = Vec::new();
    for endpoint in [&azurite.queue_endpoint, &azurite.table_endpoint] {
        let (counting, count) = start_proxy(endpoint).await;
        let counting: url::Url = counting.parse().unwrap();
        let toggle = ToggleProxy::start(
            format!(
                "{}:{}",
                counting.host_str().unwrap(),
                counting.port().unwrap()
            )
            .parse()
            .unwrap(),
        )
        .await;
        endpoints.push(format!("http://{}{}", toggle.addr, endpoint.path()));
        storage.push((toggle, count));
    }
    let storage = Arc::new(storage);
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};QueueEndpoint={};TableEndpoint={}",
        support::azurite::ACCOUNT,
        support::azurite::ACCOUNT_KEY,
        endpoints[0],
        endpoints[1]
    );
    // Graph reaches the webhooks through a proxy that can be taken down.
    let port = support::free_port();
    let webhook = ToggleProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let base = format!("http://127.0.0.1:{port}");

    let delivery = if plan.event_grid {
        let topic = support::event_grid::topic();
        vec![
            ("NOTIFICATION_DELIVERY", "eventGrid".to_owned()),
            ("EVENT_GRID_SUBSCRIPTION_ID", topic.subscription_id),
            ("EVENT_GRID_RESOURCE_GROUP", topic.resource_group),
            ("EVENT_GRID_PARTNER_TOPIC", topic.partner_topic),
            ("EVENT_GRID_LOCATION", topic.location),
        ]
    } else {
        vec![
            (
                "NOTIFICATION_URL",
                format!("http://{}/api/notifications", webhook.addr),
            ),
            (
                "LIFECYCLE_NOTIFICATION_URL",
                format!("http://{}/api/lifecycle", webhook.addr),
            ),
        ]
    };
    let settings = [
        ("ACCELERATED_CLOCK", clock.setting()),
        ("READ_API_KEYS", KEY.to_owned()),
        ("FEED_SETTLE_SECONDS", "30".to_owned()),
        // A crash leaves a record's lease for this long (real time): short, with a storage
        // timeout short enough for start-up to accept it.
        ("CALLRECORD_WRITE_LEASE_SECONDS", "40".to_owned()),
        ("STORAGE_REQUEST_TIMEOUT_SECONDS", "8".to_owned()),
        ("REPORTS_LEASE_SECONDS", "30".to_owned()),
        // Schedules stretched in tenant time: at 300x, Graph's real-time limits on the report
        // and listing endpoints would not let the defaults (15 and 5 minutes) keep up. A sweep
        // every 6 tenant hours lists the hours whose passes fell due (about 1,300 calls, some
        // 20 s at Graph's 40 listings per 20 s), inside the smallest budget the app allows, 30 s:
        // a sweep cut short keeps its place, so a short budget delays and never loses. A sweep
        // killed midway holds the next ones for 1 minute (5 tenant hours).
        ("REPORTS_SCHEDULE", "0 0 * * * *".to_owned()),
        ("RECONCILE_SCHEDULE", "0 0 */6 * * *".to_owned()),
        ("RECONCILE_BUDGET_SECONDS", "30".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let mut env = binary_env(&sim, &[]);
    env.retain(|(k, _)| *k != "AzureWebJobsStorage");
    env.push(("AzureWebJobsStorage", connection));
    env.extend(settings);
    env.extend(delivery);
    let mut handler = Handler {
        port,
        env,
        process: None,
        printed: String::new(),
        peak_rss_kib: 0,
    };
    handler.start().await;

    let received = Arc::new(Mutex::new(Received::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(base.clone(), received.clone(), stop.clone()));

    // Three kills, one at a random point of each third of the day.
    let mut dice = fastrand::Rng::with_seed(plan.seed);
    let third = span.whole_seconds() / 3;
    let mut kills: Vec<OffsetDateTime> = (0..3)
        .map(|i| d + time::Duration::seconds(i * third + dice.i64(600..third)))
        .collect();
    let mut events: Vec<(OffsetDateTime, &str)> = vec![
        (d + time::Duration::hours(4), "webhook down"),
        (
            d + time::Duration::hours(4) + time::Duration::minutes(30),
            "webhook up",
        ),
        (d + time::Duration::hours(6), "subscription deleted"),
        (d + time::Duration::hours(8), "reauthorizationRequired"),
        (d + time::Duration::hours(12), "bad input"),
        (d + time::Duration::hours(18), "storage refuses"),
    ];
    events.extend(kills.iter().map(|t| (*t, "kill")));
    events.sort_by_key(|(t, _)| *t);
    kills.sort();

    let started = Instant::now();
    let mut bad_input = None;
    let mut log = Vec::new();
    for (at, event) in &events {
        while sim.clock().now() < *at {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log.push(format!(
            "{} (real {:.0} s): {event}",
            at.time(),
            started.elapsed().as_secs_f64()
        ));
        eprintln!("reliability day: {}", log.last().unwrap());
        match *event {
            "webhook down" if plan.event_grid => event_grid_down.store(true, Ordering::Relaxed),
            "webhook up" if plan.event_grid => event_grid_down.store(false, Ordering::Relaxed),
            "webhook down" => webhook.set(Mode::Refuse),
            "webhook up" => webhook.set(Mode::Up),
            "subscription deleted" => {
                let id = sim.subscriptions()[0].id.clone();
                assert!(sim.remove_subscription(&id, false).await);
            }
            "reauthorizationRequired" => {
                if let Some(s) = sim.subscriptions().first() {
                    sim.send_lifecycle(&s.id, "reauthorizationRequired").await;
                }
            }
            "bad input" => {
                let base = base.clone();
                if plan.event_grid {
                    // Forged events on the queue: refused and counted, never stored.
                    let queue = azurite_queue(CALLRECORD_QUEUE).await;
                    for forged in forged_events() {
                        queue.send_text(forged, 0).await.unwrap();
                    }
                }
                let event_grid = plan.event_grid;
                bad_input = Some(tokio::spawn(async move {
                    let mut cases = cases();
                    if event_grid {
                        // No webhook in this mode: every request to one is a 404.
                        for case in &mut cases {
                            if case.path.starts_with("/api/notifications")
                                || case.path.starts_with("/api/lifecycle")
                            {
                                case.status = 404;
                            }
                        }
                    }
                    let sends = (0..3).flat_map(|_| cases.iter().map(|c| send(&base, c)));
                    let answers = futures::future::join_all(sends).await;
                    for (case, (status, body)) in cases.iter().cycle().zip(&answers) {
                        check(case, *status, body);
                    }
                    answers.len()
                }));
            }
            "storage refuses" => {
                // A real minute, while the day goes on.
                let storage = storage.clone();
                tokio::spawn(async move {
                    for (toggle, _) in storage.iter() {
                        toggle.set(Mode::Refuse);
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    for (toggle, _) in storage.iter() {
                        toggle.set(Mode::Up);
                    }
                });
            }
            "kill" => {
                handler.kill().await;
                handler.start().await;
            }
            _ => unreachable!(),
        }
    }
    let bad_inputs = bad_input.unwrap().await.unwrap();

    // Every version and report row has been issued; then wait for the app to store them all.
    while sim.clock().now() < expected.last_issue {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let issued = Instant::now();
    let jobs = azurite_queue(CALLRECORD_QUEUE).await;
    let poison = azurite_queue(&format!("{CALLRECORD_QUEUE}-poison")).await;
    let mut settled = None;
    while issued.elapsed() < Duration::from_secs(600) {
        let stored = stored_versions().await;
        let pstn = keys("PstnCalls", &[]).await.len();
        let direct_routing = keys("DirectRoutingCalls", &[]).await.len();
        if stored == expected.records
            && pstn == expected.pstn.len()
            && direct_routing == expected.direct_routing.len()
            && jobs.approximate_count().await.unwrap() == 0
        {
            settled = Some(issued.elapsed());
            break;
        }
        eprintln!(
            "reliability day: {:.0} s after the last issue, {} of {} records at their latest version, \
             {pstn} of {} PSTN and {direct_routing} of {} Direct Routing rows",
            issued.elapsed().as_secs_f64(),
            stored
                .iter()
                .filter(|(id, v)| expected.records.get(*id) == Some(v))
                .count(),
            expected.records.len(),
            expected.pstn.len(),
            expected.direct_routing.len(),
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // The handlers' logs, for a look at what happened (kept whether or not the day passes).
    let logs = format!(
        "{}{}",
        handler.printed,
        handler.process.as_ref().unwrap().printed()
    );
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/../reliability-day.log"),
        &logs,
    );
    let stored = stored_versions().await;
    let missing: Vec<_> = expected
        .records
        .iter()
        .filter(|(id, v)| stored.get(*id) != Some(v))
        .collect();
    assert!(
        settled.is_some(),
        "not settled within 10 minutes of the last issue: {} of {} records at their latest \
         version, e.g. {:?}; {} extra; clock at {}; events: {log:#?}",
        expected.records.len() - missing.len(),
        expected.records.len(),
        &missing[..missing.len().min(10)],
        stored
            .keys()
            .filter(|id| !expected.records.contains_key(*id))
            .count(),
        sim.clock().now(),
    );

    // The consumer receives every row within the feed's settle time.
    support::lifecycle::eventually(Duration::from_secs(120), || async {
        let r = received.lock().unwrap();
        let caught_up = expected
            .records
            .iter()
            .all(|(id, v)| r.records.get(id).is_some_and(|seen| seen >= v))
            && r.records.len() == expected.records.len()
            && r.pstn == expected.pstn
            && r.direct_routing == expected.direct_routing;
        support::lifecycle::when(
            caught_up,
            format!(
                "the consumer received {} of {} records, {} of {} PSTN and {} of {} Direct Routing rows",
                r.records.len(),
                expected.records.len(),
                r.pstn.len(),
                expected.pstn.len(),
                r.direct_routing.len(),
                expected.direct_routing.len()
            ),
        )
    })
    .await
    .expect("the consumer receives every row within the settle time");

    // The health check reads `ok` once the day's alarms have aged out on the tenant clock.
    let client = reqwest::Client::new();
    // Sweeps run every 6 tenant hours and the check wants one within 3, so this spans two cycles.
    support::lifecycle::eventually(Duration::from_secs(180), || {
        let request = client
            .get(format!("{base}/api/health"))
            .header("x-functions-key", KEY)
            .send();
        async move {
            let health: Value = match request.await {
                Ok(answer) => answer.json().await.unwrap_or_default(),
                Err(e) => Value::String(format!("no answer: {e}")),
            };
            support::lifecycle::when(health["status"] == "ok", health)
        }
    })
    .await
    .expect("health reads ok");
    stop.store(true, Ordering::Relaxed);
    consumer.await.unwrap();
    handler.kill().await;

    // Exactly the tenant, row by row and document by document.
    let tables = Tables::of(&TableNames::default());
    let store = tables.store();
    let tenant = sim.tenant();
    let sessions = rows("CallRecordSessions").await;
    let mut session_rows: HashMap<&str, usize> = HashMap::new();
    for s in &sessions {
        *session_rows.entry(s.partition_key.as_str()).or_default() += 1;
    }
    let checked = Instant::now();
    let documents = futures::stream::iter(tenant.records.keys())
        .map(|id| {
            let store = &store;
            async move { (id, store.document(id).await.unwrap()) }
        })
        .buffer_unordered(8)
        .collect::<HashMap<_, _>>()
        .await;
    for (id, record) in &tenant.records {
        let document: Value = serde_json::from_slice(documents[id].as_ref().unwrap()).unwrap();
        assert_eq!(document, served(record), "{id}: the stored document");
        assert_eq!(
            session_rows.get(id.as_str()).copied().unwrap_or(0),
            record.versions.last().unwrap().sessions.len(),
            "{id}: one session row per session"
        );
    }
    assert_eq!(
        session_rows.len(),
        tenant.records.len(),
        "no stray sessions"
    );
    assert_eq!(sessions.len(), expected.sessions);
    let record_rows = keys("CallRecords", &[]).await.len();
    assert_eq!(
        record_rows,
        expected.records.len(),
        "one CallRecords row each"
    );
    let bodies: BTreeSet<String> = keys("CallRecordBodies", &[])
        .await
        .into_iter()
        .map(|b| b.partition_key)
        .collect();
    assert!(
        bodies.iter().eq(expected.records.keys()),
        "a document for each record, and for nothing else"
    );
    let mut report_rows = 0;
    for (table, ids) in [
        ("PstnCalls", &expected.pstn),
        ("DirectRoutingCalls", &expected.direct_routing),
    ] {
        let keys: Vec<String> = keys(table, &[])
            .await
            .into_iter()
            .map(|e| e.row_key)
            .collect();
        let unique: BTreeSet<String> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), unique.len(), "{table}: a row stored twice");
        assert_eq!(&unique, ids, "{table}: exactly the tenant's rows");
        report_rows += keys.len();
    }
    // What the checks above compared, for the figures: anything lost or doubled has failed them.
    let records_lost = expected.records.len() - stored.len().min(expected.records.len());
    let rows_doubled = record_rows + report_rows
        - (expected.records.len() + expected.pstn.len() + expected.direct_routing.len());
    assert_eq!(
        poison.approximate_count().await.unwrap(),
        0,
        "messages on the poison queue"
    );
    let app_state = rows("AppState").await;
    let given_up = app_state
        .iter()
        .filter(|e| e.partition_key == "FetchFailure")
        .count();
    assert_eq!(given_up, 0, "records given up on");

    eprintln!(
        "reliability day: the tables checked in {:.0} s",
        checked.elapsed().as_secs_f64()
    );

    // The figures (docs/RELIABILITY.md).
    let requests = sim.ledger().requests();
    let count = |f: &dyn Fn(&teams_cdr_sim::ledger::Request) -> bool| {
        requests.iter().filter(|r| f(r)).count()
    };
    let record_requests = count(&|r| {
        matches!(
            r.endpoint,
            Endpoint::CallRecord | Endpoint::Sessions | Endpoint::Participants
        )
    });
    let notifications = sim.ledger().notifications();
    let dropped = notifications
        .iter()
        .filter(|n| n.outcome == Outcome::Dropped)
        .count();
    let lost = notifications
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Lost { .. }))
        .count();
    let redelivered = notifications
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Delivered { attempts } if attempts > 1))
        .count();
    let tokens_refused =
        count(&|r| r.endpoint == Endpoint::ManagedIdentityToken && r.status == 503);
    assert!(tokens_refused > 0, "the token outage was never met");
    let storage_requests: u64 = storage.iter().map(|(_, c)| c.load(Ordering::Relaxed)).sum();
    let records = expected.records.len() as f64;
    let retries = handler
        .printed
        .matches("fetch put back on the queue")
        .count();
    let graph_retries = handler
        .printed
        .matches("Graph request failed; retrying")
        .count();
    let rejected = app_state
        .iter()
        .filter(|e| e.partition_key == "NotificationRejected")
        .count();
    let consumed = {
        let r = received.lock().unwrap();
        (r.pages, r.failed_polls)
    };
    let figures = format!(
        "| figure | value |\n|---|---|\n\
         | tenant days, clock factor | {days}, {factor}x |\n\
         | call records (versions re-issued) | {records} ({reissued}) |\n\
         | sessions (largest meeting) | {sessions} ({largest}) |\n\
         | PSTN / Direct Routing rows | {pstn} / {dr} |\n\
         | Graph `429` / `503`+`504` answered | {throttled} / {unavailable} |\n\
         | token requests refused | {tokens} |\n\
         | notifications dropped / lost after retries / delivered after a failed try | {dropped} / {lost} / {redelivered} |\n\
         | bad requests sent (rejection reasons counted) | {bad_inputs} ({rejected}) |\n\
         | handler kills (SIGKILL) | {kills} |\n\
         | Graph requests retried in-process / fetches put back on the queue | {graph_retries} / {retries} |\n\
         | Graph requests per record (all Graph requests) | {per_record:.2} ({graph_total}) |\n\
         | storage requests per record (all) | {storage_per_record:.1} ({storage_requests}) |\n\
         | feed pages read by the consumer (failed polls) | {pages} ({failed_polls}) |\n\
         | real time of the day (to the last issue) | {day:.0} s |\n\
         | time to settle after the last issue | {settle:.1} s |\n\
         | peak RSS of the handler | {rss:.1} MiB |\n\
         | lost / doubled | {records_lost} / {rows_doubled} |\n\
         \nEvents: {events}\n",
        days = plan.days,
        factor = plan.factor,
        reissued = tenant
            .records
            .values()
            .filter(|r| r.versions.len() > 1)
            .count(),
        sessions = expected.sessions,
        largest = expected.largest_meeting,
        pstn = expected.pstn.len(),
        dr = expected.direct_routing.len(),
        throttled = sim.ledger().count_status(429),
        unavailable = count(&|r| {
            matches!(r.status, 503 | 504)
                && !matches!(r.endpoint, Endpoint::Token | Endpoint::ManagedIdentityToken)
        }),
        tokens = tokens_refused,
        per_record = record_requests as f64 / records,
        graph_total =
            count(&|r| !matches!(r.endpoint, Endpoint::Token | Endpoint::ManagedIdentityToken)),
        storage_per_record = storage_requests as f64 / records,
        pages = consumed.0,
        failed_polls = consumed.1,
        day = (issued - started).as_secs_f64(),
        settle = settled.unwrap().as_secs_f64(),
        rss = handler.peak_rss_kib as f64 / 1024.0,
        events = log.join("; "),
        kills = kills.len(),
    );
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/../reliability-day.md"),
        &figures,
    );
    eprintln!("{figures}");
}
