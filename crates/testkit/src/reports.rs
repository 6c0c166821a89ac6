//! Report-pull test helpers: an app whose Graph limits let a month of reports through in seconds,
//! report rows built from the documented ones (as JSON text, so that money keeps its digits), and
//! readers of the tables and checkpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use table_storage::{EdmValue, Entity, Query, TableStore};
use teams_cdr_functions::{RateLimit, RateLimits};
use teams_cdr_sim::tenant::{NO_DATE, ReportRow, graph_time};
use teams_cdr_sim::{Limits, RunningSim, SimConfig};
use time::OffsetDateTime;

use super::fetch::{FetchApp, fixture_json, spawn_fetch_app};
use super::graph::start_sim;

/// Limits far above Graph's, on both sides, so that a month of reports takes seconds, not minutes.
pub fn fast_limits() -> (Limits, RateLimits) {
    let mut sim = Limits::default();
    sim.per_report.requests = 100_000;
    let client = RateLimits {
        report: RateLimit {
            requests: 100_000,
            window: Duration::from_secs(60),
        },
        ..RateLimits::default()
    };
    (sim, client)
}

pub async fn reports_app(config: SimConfig) -> FetchApp {
    reports_app_with(config, |_| {}).await
}

/// [`reports_app`], after `tweak` has adjusted the app's configuration.
pub async fn reports_app_with(
    config: SimConfig,
    tweak: impl FnOnce(&mut teams_cdr_functions::config::Config),
) -> FetchApp {
    let (sim_limits, client_limits) = fast_limits();
    let sim = start_sim(SimConfig {
        limits: sim_limits,
        ..config
    })
    .await;
    spawn_fetch_app(sim, move |config, options| {
        options.graph_limits = Some(client_limits);
        // The host emulator waits 30 s for an answer: a long back-fill goes on over several runs.
        config.reports.run_budget = Duration::from_secs(8);
        tweak(config);
    })
    .await
}

pub fn pstn_template() -> Value {
    fixture_json("getpstncalls-response.json")["value"][0].clone()
}

pub fn direct_routing_template() -> Value {
    fixture_json("getdirectroutingcalls-response.json")["value"][0].clone()
}

/// A PSTN row from the documented one, started at `start`, as JSON text: the charge goes in as
/// text, since a `Value` number would pass through a float.
pub fn pstn_row(id: &str, start: OffsetDateTime, charge: &str) -> String {
    let mut row = pstn_template();
    row["id"] = json!(id);
    row["startDateTime"] = json!(graph_time(start));
    row["endDateTime"] = json!(graph_time(start + time::Duration::minutes(3)));
    let text = row.to_string();
    assert!(text.contains("\"charge\":0.0,"), "{text}");
    text.replace("\"charge\":0.0,", &format!("\"charge\":{charge},"))
}

/// A Direct Routing row from the documented one, invited at `invite`; `failed` makes it an attempt
/// that was never answered.
pub fn direct_routing_row(id: &str, invite: OffsetDateTime, failed: bool) -> Value {
    let mut row = direct_routing_template();
    row["id"] = json!(id);
    row["inviteDateTime"] = json!(graph_time(invite));
    if failed {
        row["startDateTime"] = json!(NO_DATE);
        row["failureDateTime"] = json!(graph_time(invite + time::Duration::seconds(9)));
        row["endDateTime"] = json!(NO_DATE);
        row["duration"] = json!(0);
        row["successfulCall"] = json!(false);
        row["finalSipCode"] = json!(487);
    } else {
        // Answered after 4 s, connected for the documented row's 5 s.
        let start = invite + time::Duration::seconds(4);
        row["startDateTime"] = json!(graph_time(start));
        row["endDateTime"] = json!(graph_time(start + time::Duration::seconds(5)));
        row["failureDateTime"] = json!(NO_DATE);
    }
    row
}

/// Serves `row` (raw JSON text, so that numbers keep their form) from `at`, filed under `start`.
pub fn insert(
    sim: &RunningSim,
    direct_routing: bool,
    start: OffsetDateTime,
    visible: OffsetDateTime,
    row: &str,
) {
    let value: Value = serde_json::from_str(row).unwrap();
    let mut report_row = ReportRow::new(start, visible, &value);
    report_row.json = serde_json::value::RawValue::from_string(row.to_owned())
        .unwrap()
        .into();
    sim.insert_report_row(direct_routing, report_row);
}

pub async fn all_rows(table: &TableStore) -> Vec<Entity> {
    table.query_all(&Query::new()).await.unwrap_or_default()
}

pub fn row_keys(rows: &[Entity]) -> Vec<String> {
    let mut keys: Vec<String> = rows.iter().map(|e| e.row_key.clone()).collect();
    keys.sort();
    keys
}

pub fn find<'a>(rows: &'a [Entity], id: &str) -> &'a Entity {
    rows.iter()
        .find(|e| e.row_key == id)
        .unwrap_or_else(|| panic!("{id} not stored"))
}

pub fn prop<'a>(row: &'a Entity, name: &str) -> Option<&'a EdmValue> {
    row.properties.get(name)
}

pub async fn checkpoint(app: &FetchApp, report: &str) -> Entity {
    app.tables
        .app_state
        .get("ReportCheckpoint", report)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no checkpoint for {report}"))
}

/// How far `report`'s checkpoint says everything is stored (`None`: nothing yet).
pub async fn through(app: &FetchApp, report: &str) -> Option<OffsetDateTime> {
    match prop(&checkpoint(app, report).await, "Through") {
        Some(EdmValue::DateTime(t)) => Some(*t),
        _ => None,
    }
}

/// Equal id lists, or a short report of the difference (the lists are long).
pub fn same_ids(table: &str, stored: &[String], expected: &[String]) {
    let stored_set: BTreeSet<&String> = stored.iter().collect();
    let expected_set: BTreeSet<&String> = expected.iter().collect();
    let missing: Vec<_> = expected_set.difference(&stored_set).take(5).collect();
    let extra: Vec<_> = stored_set.difference(&expected_set).take(5).collect();
    assert!(
        stored == expected,
        "{table}: {} stored, {} expected; missing {missing:?}…, extra {extra:?}…",
        stored.len(),
        expected.len()
    );
}

pub fn int64(row: &Entity, name: &str) -> i64 {
    match prop(row, name) {
        Some(EdmValue::Int64(n)) => *n,
        other => panic!("{name}: {other:?}"),
    }
}
