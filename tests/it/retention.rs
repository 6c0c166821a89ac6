//! `Purge` against Azurite and the host emulator: exactly the rows of calls older than the
//! retention go, a record's sessions and document with it, `AppState` is untouched, and a run that
//! died half-way is finished by the next.

use serde_json::json;
use support::fetch::{FetchApp, fixture_json, sim_record, spawn_fetch_app};
use support::graph::{sim_config, start_sim};
use support::lifecycle::spawn_subscribing_app;
use support::utc_day as day;
use table_storage::{EdmValue, Entity, TableStore};
use time::format_description::well_known::Rfc3339;

async fn keys(app: &FetchApp, table: &TableStore) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = app
        .rows(table)
        .await
        .into_iter()
        .map(|e| (e.partition_key, e.row_key))
        .collect();
    keys.sort();
    keys
}

/// A record whose call started `ago` before the tenant's now, served by the simulator.
fn recent_record(app: &FetchApp, id: &str, ago: time::Duration) {
    let now = app.sim.clock().now();
    let mut base = fixture_json("callrecord-get-basic.json");
    base["startDateTime"] = json!((now - ago).format(&Rfc3339).unwrap());
    base["endDateTime"] = json!(
        (now - ago + time::Duration::minutes(5))
            .format(&Rfc3339)
            .unwrap()
    );
    let sessions = fixture_json("callrecord-sessions-list.json")["value"]
        .as_array()
        .unwrap()
        .clone();
    let mut record = sim_record(id, base, sessions, Vec::new());
    // Graph keeps a record 30 days from its call: the simulator's own times must be recent too.
    record.start = now - ago;
    record.end = now - ago + time::Duration::minutes(5);
    record.versions[0].issued_at = now - time::Duration::minutes(1);
    app.sim.insert_record(record);
}

async fn pstn_rows(table: &TableStore, partition: &str, n: usize) {
    table.ensure_exists().await.unwrap();
    for i in 0..n {
        let row = Entity::new(partition, format!("row-{i:04}"))
            .with("charge", EdmValue::String("0.0190".into()));
        table
            .upsert(&row, table_storage::WriteMode::Replace)
            .await
            .unwrap();
    }
}

/// The `AppState` row of the last purge.
async fn purge_status(app: &FetchApp) -> Entity {
    app.tables
        .app_state
        .get("Purge", "status")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn purge_deletes_exactly_the_rows_older_than_the_retention_and_nothing_in_app_state() {
    let app = spawn_subscribing_app(start_sim(sim_config(4)).await, |_, _| {}).await;
    let old_ids = app.tenant_ids();
    app.enqueue_ids(&old_ids).await;
    app.drain().await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    assert_eq!(keys(&app, &app.tables.records).await.len(), 4);
    let old_day = day(app.sim.clock().now() - time::Duration::hours(6));

    // 91 days on, with a call of yesterday stored and report rows of both ages.
    app.sim.clock().advance(time::Duration::days(91));
    let recent = "0c4a1d2b-3e5f-4a6b-8c7d-9e0f1a2b3c4d";
    recent_record(&app, recent, time::Duration::days(1));
    app.enqueue_ids(&[recent.to_owned()]).await;
    app.drain().await;
    let now = app.sim.clock().now();
    let recent_day = day(now - time::Duration::days(1));
    pstn_rows(&app.tables.pstn, &old_day, 150).await;
    pstn_rows(&app.tables.pstn, &recent_day, 3).await;
    pstn_rows(&app.tables.direct_routing, &old_day, 2).await;
    // The cutoff day itself is kept, and so are rows without a start time (their age is unknown).
    let cutoff_day = day(now - time::Duration::days(90));
    pstn_rows(&app.tables.direct_routing, &cutoff_day, 1).await;
    pstn_rows(&app.tables.direct_routing, "0001-01-01", 1).await;
    let app_state_before = keys(&app, &app.tables.app_state).await;

    // The read API's log holds a copy of each of the five records, four appended 91 days ago.
    let feed = support::fetch::azurite_table(&app.names.feed);
    let logged = |rows: Vec<Entity>| {
        let mut ids: Vec<String> = rows
            .iter()
            .map(|e| e.get_str("CallRecordId").unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(logged(app.rows(&feed).await).len(), 5);

    assert_eq!(app.run_timer("Purge").await, 200);

    // Only the copy appended within the retention is left in the log.
    assert_eq!(logged(app.rows(&feed).await), [recent.to_owned()]);
    assert_eq!(
        keys(&app, &app.tables.records).await,
        [(recent_day.clone(), recent.to_owned())]
    );
    let sessions = keys(&app, &app.tables.sessions).await;
    assert!(!sessions.is_empty() && sessions.iter().all(|(pk, _)| pk == recent));
    let bodies = keys(&app, &app.tables.bodies).await;
    assert!(!bodies.is_empty() && bodies.iter().all(|(pk, _)| pk == recent));
    let pstn = keys(&app, &app.tables.pstn).await;
    assert_eq!(pstn.len(), 3);
    assert!(pstn.iter().all(|(pk, _)| *pk == recent_day));
    assert_eq!(
        keys(&app, &app.tables.direct_routing).await,
        [
            ("0001-01-01".to_owned(), "row-0000".to_owned()),
            (cutoff_day.clone(), "row-0000".to_owned()),
        ]
    );
    // AppState keeps every row (the purge adds its own status row).
    let app_state_after: Vec<_> = keys(&app, &app.tables.app_state)
        .await
        .into_iter()
        .filter(|(pk, _)| pk != "Purge")
        .collect();
    assert_eq!(app_state_after, app_state_before);
    let status = purge_status(&app).await;
    assert_eq!(status.get_i64("LastDeletedCallRecords"), Some(4));
    assert_eq!(status.get_i64("LastDeletedReportRows"), Some(152));
    assert!(status.get_datetime("LastSuccessAt").is_some());

    // A second run finds nothing to do.
    assert_eq!(app.run_timer("Purge").await, 200);
    let status = purge_status(&app).await;
    assert_eq!(status.get_i64("LastDeletedCallRecords"), Some(0));
    assert_eq!(status.get_i64("LastDeletedReportRows"), Some(0));
}

#[tokio::test]
async fn a_purge_that_died_half_way_is_finished_by_the_next_run() {
    let app = spawn_fetch_app(start_sim(sim_config(3)).await, |_, _| {}).await;
    let ids = app.tenant_ids();
    app.enqueue_ids(&ids).await;
    app.drain().await;
    app.sim.clock().advance(time::Duration::days(91));
    // As a run that died after deleting one record's sessions and half of another's document,
    // before their summary rows.
    for row in app.rows(&app.tables.sessions).await {
        if row.partition_key == ids[0] {
            app.tables
                .sessions
                .delete(&row.partition_key, &row.row_key, None)
                .await
                .unwrap();
        }
    }
    let bodies: Vec<Entity> = app
        .rows(&app.tables.bodies)
        .await
        .into_iter()
        .filter(|row| row.partition_key == ids[1])
        .collect();
    app.tables
        .bodies
        .delete(&bodies[0].partition_key, &bodies[0].row_key, None)
        .await
        .unwrap();

    assert_eq!(app.run_timer("Purge").await, 200);
    assert!(app.rows(&app.tables.records).await.is_empty());
    assert!(app.rows(&app.tables.sessions).await.is_empty());
    assert!(app.rows(&app.tables.bodies).await.is_empty());
}
