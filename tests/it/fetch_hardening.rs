//! The fetch's failure modes found by an adversarial read (issue 9), each driven through the host
//! emulator against Azurite and the Graph simulator: no record loops, vanishes or doubles.

use serde_json::json;
use std::collections::BTreeSet;
use support::fetch::{
    FetchApp, fixture_json, int64, record_row, record_version, served, sim_record, spawn_fetch_app,
    stored,
};
use support::graph::{sim_config, sim_start, start_sim};
use table_storage::{EdmValue, Entity, WriteMode};
use teams_cdr_functions::config::{Config, RunMode};
use teams_cdr_functions::{App, AppOptions};
use teams_cdr_sim::SimConfig;
use teams_cdr_sim::tenant::CallRecord;

/// A record of `n` sessions (pages of 60 in the simulator), from the documented payload.
fn many_sessions(id: &str, n: usize) -> CallRecord {
    let fixture = fixture_json("callrecord-get-expand-sessions-segments.json");
    let sessions = (0..n)
        .map(|i| {
            let mut s = fixture["sessions"][0].clone();
            s["id"] = json!(format!("s-{i:04}"));
            s
        })
        .collect();
    sim_record(id, fixture, sessions, Vec::new())
}

fn string(entity: &Entity, name: &str) -> Option<String> {
    match entity.properties.get(name) {
        Some(EdmValue::String(s)) => Some(s.clone()),
        None => None,
        other => panic!("{name}: {other:?}"),
    }
}

/// Writes a state row for `id` as a writer holding the record until `until` leaves it.
async fn hold_lease(app: &FetchApp, id: &str, until: time::OffsetDateTime) {
    app.tables.bodies.ensure_exists().await.unwrap();
    let row = Entity::new(id, "state")
        .with("WritingVersion", EdmValue::Int64(1))
        .with("WritingDays", EdmValue::String(String::new()))
        .with("LeaseUntil", EdmValue::DateTime(until))
        .with("LeaseOwner", EdmValue::String("someone-else".into()));
    app.tables
        .bodies
        .upsert(&row, WriteMode::Replace)
        .await
        .unwrap();
}

#[tokio::test]
async fn graphs_placeholder_dates_are_stored_as_absent_and_the_record_is_stored() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000001";
    let mut base = fixture_json("callrecord-get-expand-sessions-segments.json");
    base["endDateTime"] = json!("0001-01-01T00:00:00Z");
    let mut session = base["sessions"][0].clone();
    session["startDateTime"] = json!("0001-01-01T00:00:00Z");
    sim.insert_record(sim_record(id, base, vec![session], Vec::new()));
    let app = spawn_fetch_app(sim, |_, _| {}).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain_advancing(time::Duration::minutes(10)).await;

    assert_eq!(run.failures, 0, "the invocation failed: {run:?}");
    let row = record_row(&app, id).await;
    assert!(!row.properties.contains_key("EndDateTime"), "{row:?}");
    assert!(!row.properties.contains_key("DurationSeconds"), "{row:?}");
    assert!(row.properties.contains_key("StartDateTime"));
    let sessions = app.store.session_rows(id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].properties.contains_key("StartDateTime"));
    assert_eq!(
        stored(&app, id).await,
        served(&app.sim.tenant().records[id])
    );
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
}

#[tokio::test]
async fn text_longer_than_table_storage_allows_is_cut_in_its_column_and_kept_whole_in_the_document()
{
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000002";
    let base = fixture_json("callrecord-get-expand-sessions-segments.json");
    let mut session = base["sessions"][0].clone();
    let long = "é".repeat(40_000);
    session["caller"]["userAgent"]["headerValue"] = json!(long);
    sim.insert_record(sim_record(id, base, vec![session], Vec::new()));
    let app = spawn_fetch_app(sim, |_, _| {}).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0, "{run:?}");
    let sessions = app.store.session_rows(id).await.unwrap();
    let agent = string(&sessions[0], "CallerUserAgent").unwrap();
    assert_eq!(agent.chars().count(), 4096);
    assert_eq!(
        stored(&app, id).await["sessions"][0]["caller"]["userAgent"]["headerValue"],
        json!(long)
    );
}

#[tokio::test]
async fn a_lease_that_never_ends_is_waited_for_within_the_failure_horizon_then_given_up() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000003";
    sim.insert_record(many_sessions(id, 1));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    hold_lease(&app, id, time::macros::datetime!(9000-01-01 00:00 UTC)).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain_advancing(time::Duration::days(1)).await;

    assert_eq!(run.failures, 0);
    let failures = app.app_state_rows("FetchFailure").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        string(&failures[0], "Reason").as_deref(),
        Some("keptFailing")
    );
    // Each round came back for the lease, not for the record's pages.
    assert!(app.sim.ledger().count_for_record(id) <= 3);
}

#[tokio::test]
async fn a_duplicate_that_meets_another_writers_lease_reads_one_page_and_comes_back_later() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000004";
    // Four session pages and a participant page when read completely.
    sim.insert_record(many_sessions(id, 200));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let now = app.sim.clock().now();
    hold_lease(&app, id, now + time::Duration::minutes(5)).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    let mut run = support::host::QueueRun::default();
    assert_eq!(app.trigger().deliver_once(1, &mut run).await, 1);

    assert_eq!(run.failures, 0);
    assert_eq!(app.sim.ledger().count_for_record(id), 1);
    let back = app.queue.receive(32, 1).await.unwrap();
    assert_eq!(back.len(), 1, "the job is back on the queue");
    let job: teams_cdr_functions::CallRecordJob =
        serde_json::from_str(&support::host::decode_text(&back[0].text)).unwrap();
    assert_eq!(job.attempt, 1, "a busy put-back counts as an attempt");
    assert!(job.not_before.unwrap() >= now + time::Duration::minutes(5));
}

#[tokio::test]
async fn a_record_whose_participants_v2_is_not_served_is_stored_with_its_own_participants() {
    for status in [400, 404, 501] {
        let sim = start_sim(SimConfig {
            participants_v2_unsupported: Some(status),
            ..sim_config(0)
        })
        .await;
        let id = "7b0e0000-0000-4000-8000-000000000005";
        let legacy = fixture_json("callrecord-get-basic-legacy-organizer-participants.json");
        sim.insert_record(sim_record(id, legacy.clone(), Vec::new(), Vec::new()));
        let app = spawn_fetch_app(sim, |_, _| {}).await;

        app.enqueue_ids(&[id.to_owned()]).await;
        let run = app.drain().await;

        assert_eq!(run.failures, 0, "HTTP {status}");
        assert!(
            app.app_state_rows("FetchFailure").await.is_empty(),
            "HTTP {status}: given up"
        );
        let row = record_row(&app, id).await;
        assert_eq!(
            string(&row, "ParticipantsSource").as_deref(),
            Some("participants"),
            "HTTP {status}"
        );
        assert_eq!(
            row.properties.get("ParticipantCount"),
            Some(&EdmValue::Int32(2))
        );
        let document = stored(&app, id).await;
        assert!(document.get("participants_v2").is_none(), "HTTP {status}");
        assert_eq!(document["participants"], legacy["participants"]);
    }
}

#[tokio::test]
async fn a_lease_shorter_than_the_longest_storage_write_is_refused_at_start_up() {
    let azurite = support::azurite();
    let vars = [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
        ("GRAPH_TENANT_ID", support::TENANT_ID),
        ("NOTIFICATION_CLIENT_STATE", support::CLIENT_STATE),
        ("AzureWebJobsStorage", &azurite.connection_string()),
        ("CALLRECORD_WRITE_LEASE_SECONDS", "2"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(RunMode::CustomHandler, vars).unwrap();
    let Err(refused) = App::build_with(config, AppOptions::default()).await else {
        panic!("a 2 s lease was accepted")
    };
    let message = format!("{refused:#}");
    assert!(
        message.contains("CALLRECORD_WRITE_LEASE_SECONDS is 2 s")
            && message.contains("92 s")
            && message.contains("STORAGE_REQUEST_TIMEOUT_SECONDS"),
        "{message}"
    );
}

/// The row keys of a record's body parts.
async fn body_keys(app: &FetchApp, id: &str) -> BTreeSet<String> {
    app.rows(&app.tables.bodies)
        .await
        .into_iter()
        .filter(|e| e.partition_key == id && e.row_key != "state")
        .map(|e| e.row_key)
        .collect()
}

#[tokio::test]
async fn rewriting_the_same_version_writes_new_body_keys_so_a_reader_never_joins_two_writes() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000006";
    sim.insert_record(many_sessions(id, 120));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    app.enqueue_ids(&[id.to_owned()]).await;
    app.drain().await;
    let first = body_keys(&app, id).await;
    assert!(!first.is_empty());

    let mut repair = app.job(id);
    repair.repair = true;
    app.enqueue(&repair).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    let second = body_keys(&app, id).await;
    assert!(!second.is_empty());
    assert!(
        first.is_disjoint(&second),
        "the rewrite reused keys: {first:?} / {second:?}"
    );
    assert_eq!(
        stored(&app, id).await,
        served(&app.sim.tenant().records[id])
    );
}

#[tokio::test]
async fn a_failure_row_left_by_a_crash_after_the_commit_goes_with_the_next_delivery() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000007";
    sim.insert_record(many_sessions(id, 1));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    app.enqueue_ids(&[id.to_owned()]).await;
    app.drain().await;
    // What a crash between the commit and the clearing of an earlier failure leaves: the failure
    // row, and the mark on the state row that says one exists.
    let failure = Entity::new("FetchFailure", id)
        .with("CallRecordId", EdmValue::String(id.to_owned()))
        .with("Reason", EdmValue::String("neverAvailable".into()));
    app.tables
        .app_state
        .upsert(&failure, WriteMode::Replace)
        .await
        .unwrap();
    let mark = Entity::new(id, "state").with("Failed", EdmValue::String("neverAvailable".into()));
    app.tables
        .bodies
        .upsert(&mark, WriteMode::Merge)
        .await
        .unwrap();

    // A duplicate notification: skipped after one request, and the failure row goes with it.
    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
    let state = app.tables.bodies.get(id, "state").await.unwrap().unwrap();
    assert_eq!(string(&state, "Failed").as_deref(), Some(""));
}

#[tokio::test]
async fn a_record_without_a_version_is_refreshed_when_graph_modifies_it_later() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-000000000008";
    let fixture = fixture_json("callrecord-get-expand-sessions-segments.json");
    let version = |modified: &str, sessions: usize, issued: time::OffsetDateTime| {
        let mut v = record_version(
            id,
            1,
            fixture.clone(),
            vec![fixture["sessions"][0].clone(); sessions],
            Vec::new(),
            issued,
        );
        let base = v.base.as_object_mut().unwrap();
        base.remove("version");
        base.insert("lastModifiedDateTime".into(), json!(modified));
        v
    };
    let mut later = version(
        "2026-11-27T10:30:00Z",
        1,
        sim_start() + time::Duration::minutes(10),
    );
    later.version = 2; // the simulator's order; Graph sends no version
    later.base["sessions_note"] = json!("modified");
    sim.insert_record(CallRecord {
        id: id.to_owned(),
        start: sim_start() - time::Duration::hours(2),
        end: sim_start() - time::Duration::hours(1),
        versions: vec![
            version(
                "2026-11-27T10:00:00Z",
                1,
                sim_start() - time::Duration::minutes(30),
            ),
            later,
        ],
    });
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    app.enqueue_ids(&[id.to_owned()]).await;
    app.drain().await;
    assert!(stored(&app, id).await.get("sessions_note").is_none());

    app.sim.clock().advance(time::Duration::minutes(15));
    let mut updated = app.job(id);
    updated.change_type = "updated".into();
    app.enqueue(&updated).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    let document = stored(&app, id).await;
    assert_eq!(document["sessions_note"], json!("modified"));
    assert_eq!(
        document["lastModifiedDateTime"],
        json!("2026-11-27T10:30:00Z")
    );
    assert_eq!(int64(&record_row(&app, id).await, "Version"), 0);
}

#[tokio::test]
async fn every_message_the_app_writes_outlives_the_longest_retry_horizon() {
    let mut config = sim_config(0);
    config.tenant.call_records = 1;
    config.tenant.start = sim_start() - time::Duration::minutes(20);
    config.tenant.span = time::Duration::minutes(1);
    config.tenant.availability_delay = (time::Duration::minutes(60), time::Duration::minutes(60));
    let sim = start_sim(config).await;
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let id = app.tenant_ids()[0].clone();
    app.enqueue_ids(&[id]).await;
    let mut run = support::host::QueueRun::default();
    app.trigger().deliver_once(1, &mut run).await;

    // Not yet available: put back, and the message written for it never expires.
    let back = app.queue.receive(32, 1).await.unwrap();
    assert_eq!(back.len(), 1);
    let expires = back[0].expires_at.expect("an expiry time");
    assert!(
        expires > time::OffsetDateTime::now_utc() + time::Duration::days(60),
        "expires {expires}"
    );
}

#[tokio::test]
async fn ids_differing_only_in_case_are_one_record_read_and_written_under_one_key() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-00000000000a";
    sim.insert_record(many_sessions(id, 200));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let upper = id.to_ascii_uppercase();
    let requests =
        || app.sim.ledger().count_for_record(id) + app.sim.ledger().count_for_record(&upper);
    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain().await;
    assert_eq!(run.failures, 0);
    let first = requests();

    // The same record spelt in upper case (another notification, an admin's list): known at the
    // first page, as it is under one key.
    app.enqueue_ids(std::slice::from_ref(&upper)).await;
    let run = app.drain().await;
    assert_eq!(run.failures, 0);

    assert_eq!(requests() - first, 1);
    let rows: Vec<Entity> = app.rows(&app.tables.records).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].row_key, id);
    let states: Vec<Entity> = app
        .rows(&app.tables.bodies)
        .await
        .into_iter()
        .filter(|e| e.row_key == "state")
        .collect();
    assert_eq!(states.len(), 1, "one state row: {states:?}");
    assert_eq!(app.store.session_rows(id).await.unwrap().len(), 200);
}

#[tokio::test]
async fn a_session_that_does_not_read_is_counted_and_the_rest_of_the_record_is_stored() {
    let sim = start_sim(sim_config(0)).await;
    let id = "7b0e0000-0000-4000-8000-00000000000b";
    let base = fixture_json("callrecord-get-expand-sessions-segments.json");
    let good = base["sessions"][0].clone();
    let mut odd = good.clone();
    odd["id"] = json!("odd");
    odd["modalities"] = json!("audio"); // a string where Graph documents a list
    sim.insert_record(sim_record(id, base, vec![good, odd], Vec::new()));
    let app = spawn_fetch_app(sim, |_, _| {}).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
    let row = record_row(&app, id).await;
    assert_eq!(
        row.properties.get("UnreadableSessions"),
        Some(&EdmValue::Int32(1))
    );
    assert_eq!(app.store.session_rows(id).await.unwrap().len(), 1);
    assert_eq!(
        stored(&app, id).await["sessions"].as_array().unwrap().len(),
        2
    );
}
