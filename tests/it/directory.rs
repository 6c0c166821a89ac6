//! `SyncDirectory` through the host emulator's timer invocation, against Azurite and the Graph
//! simulator's users delta query: the first full sync in pages, incremental syncs of what changed,
//! a delta link Graph no longer accepts, a run cut short; and the department and cost centre that
//! report rows and call-record sessions get from it, before and after a user moves.

use std::time::Duration;

use serde_json::json;
use support::fetch::FetchApp;
use support::graph::{sim_config, sim_start};
use support::reports::{all_rows, find, insert, prop, pstn_row, reports_app_with};
use table_storage::{EdmValue, Entity};
use teams_cdr_sim::{Endpoint, SimConfig};

/// A tenant of `users` users, served `page` to a delta page, and an app with the sync on.
async fn directory_app(
    users: usize,
    page: usize,
    tweak: impl FnOnce(&mut teams_cdr_functions::config::Config),
) -> FetchApp {
    let mut config = sim_config(0);
    config.tenant.users = users;
    config.users_delta_page = page;
    reports_app_with(SimConfig { ..config }, move |config| {
        config.directory.enabled = true;
        tweak(config);
    })
    .await
}

async fn sync_row(app: &FetchApp) -> Entity {
    app.tables
        .app_state
        .get("DirectorySync", "users")
        .await
        .unwrap()
        .expect("the sync's AppState row")
}

fn text<'a>(row: &'a Entity, name: &str) -> Option<&'a str> {
    row.get_str(name)
}

/// The `Users` rows of one user: its current row and its versions, oldest first.
async fn user_rows(app: &FetchApp, id: &str) -> (Entity, Vec<Entity>) {
    let rows: Vec<Entity> = all_rows(&app.tables.users)
        .await
        .into_iter()
        .filter(|r| r.partition_key == id)
        .collect();
    let current = rows
        .iter()
        .find(|r| r.row_key == "current")
        .unwrap_or_else(|| panic!("no current row for {id}; rows: {rows:?}"))
        .clone();
    let versions = rows
        .into_iter()
        .filter(|r| r.row_key != "current")
        .collect();
    (current, versions)
}

#[tokio::test]
async fn the_first_sync_pages_through_every_user_and_a_move_changes_only_later_calls() {
    let app = directory_app(7, 3, |_| {}).await;
    let tenant = app.sim.tenant();
    let user = &tenant.users[0];

    // The first sync: every user, in three pages, then the delta link.
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), 3);
    let state = sync_row(&app).await;
    assert_eq!(text(&state, "NextLink"), Some(""));
    assert!(text(&state, "DeltaLink").is_some_and(|l| l.contains("$deltatoken=")));
    assert_eq!(state.get_i64("Users"), Some(7));
    let (current, versions) = user_rows(&app, &user.id).await;
    assert_eq!(text(&current, "UserPrincipalName"), Some(user.upn.as_str()));
    assert_eq!(text(&current, "Department"), user.department.as_deref());
    assert_eq!(text(&current, "CostCenter"), user.cost_center.as_deref());
    assert_eq!(text(&current, "Division"), user.division.as_deref());
    assert_eq!(
        text(&current, "UsageLocation"),
        user.usage_location.as_deref()
    );
    assert_eq!(text(&current, "CompanyName"), Some("Contoso"));
    assert_eq!(current.get_bool("Removed"), Some(false));
    assert_eq!(versions.len(), 1, "{versions:?}");

    // A call before the move.
    let before = sim_start() - time::Duration::minutes(50);
    let row = pstn_row("5e3b0d5a-0000-4000-8000-000000000011", before, "0.10")
        .replace(&tenant_user_id_of_template(), &user.id);
    insert(&app.sim, false, before, before, &row);
    assert_eq!(app.pull_reports().await, 200);
    let pstn = all_rows(&app.tables.pstn).await;
    let first = find(&pstn, "5e3b0d5a-0000-4000-8000-000000000011");
    assert_eq!(text(first, "Department"), user.department.as_deref());
    assert_eq!(text(first, "CostCenter"), user.cost_center.as_deref());

    // The user moves; an hour later the sync sees it, in one page of one user.
    assert!(
        app.sim
            .set_user_property(&user.id, "department", json!("Legal"))
    );
    assert!(
        app.sim
            .set_user_property(&user.id, "employeeOrgData.costCenter", json!("CC-9000"))
    );
    app.sim.clock().advance(time::Duration::hours(1));
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), 4);
    let (current, versions) = user_rows(&app, &user.id).await;
    assert_eq!(text(&current, "Department"), Some("Legal"));
    assert_eq!(text(&current, "CostCenter"), Some("CC-9000"));
    assert_eq!(text(&current, "Division"), user.division.as_deref(), "kept");
    assert_eq!(versions.len(), 2, "{versions:?}");

    // A call after the sync saw the move; the pull reads the earlier call again (its look-back)
    // too.
    app.sim.clock().advance(time::Duration::minutes(10));
    let after = app.sim.clock().now() - time::Duration::minutes(5);
    let row = pstn_row("5e3b0d5a-0000-4000-8000-000000000012", after, "0.20")
        .replace(&tenant_user_id_of_template(), &user.id);
    insert(&app.sim, false, after, after, &row);
    assert_eq!(app.pull_reports().await, 200);
    let pstn = all_rows(&app.tables.pstn).await;
    let first = find(&pstn, "5e3b0d5a-0000-4000-8000-000000000011");
    assert_eq!(
        text(first, "Department"),
        user.department.as_deref(),
        "an earlier call keeps the department of its time"
    );
    let second = find(&pstn, "5e3b0d5a-0000-4000-8000-000000000012");
    assert_eq!(text(second, "Department"), Some("Legal"));
    assert_eq!(
        prop(second, "CostCenter"),
        Some(&EdmValue::String("CC-9000".into()))
    );

    // The read API's feed serves both columns in its default layout, and each row once: the
    // re-read of the earlier call, unchanged, did not log it again.
    app.sim.clock().advance(time::Duration::minutes(6));
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/pstncalls?format=csv&limit=100",
            app.host.base()
        ))
        .header("x-functions-key", "any")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (record, department) in rows
        .iter()
        .zip([user.department.as_deref().unwrap(), "Legal"])
    {
        assert_eq!(&record[column("Department")], department, "{text}");
    }
    assert_eq!(&rows[1][column("CostCenter")], "CC-9000");

    // Nothing changed since: the next sync reads one page and writes nothing.
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), 5);
    assert_eq!(sync_row(&app).await.get_i64("LastChanged"), Some(0));
}

/// The documented PSTN row's `userId`, which the tests replace with a tenant user's.
fn tenant_user_id_of_template() -> String {
    support::reports::pstn_template()["userId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_delta_link_graph_no_longer_accepts_starts_a_full_sync_that_writes_only_what_differs() {
    let app = directory_app(5, 2, |_| {}).await;
    let tenant = app.sim.tenant();
    assert_eq!(app.sync_directory().await, 200);
    let full = app.sim.ledger().count(Endpoint::UsersDelta);
    assert_eq!(full, 3);

    // Seven days pass without a sync (Graph's tokens expire), and one user moves meanwhile.
    app.sim.expire_delta_tokens();
    assert!(
        app.sim
            .set_user_property(&tenant.users[1].id, "department", json!("Legal"))
    );
    assert_eq!(app.sync_directory().await, 200);
    // The refused delta link, then the three pages of a full sync again.
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), full + 4);
    assert_eq!(app.sim.ledger().count_status(400), 1);
    let state = sync_row(&app).await;
    assert_eq!(
        state.get_i64("LastChanged"),
        Some(1),
        "only the user who moved"
    );
    assert!(state.get_datetime("LastRestartAt").is_some());
    assert!(state.get_datetime("LastFullSyncAt").is_some());
    let (current, versions) = user_rows(&app, &tenant.users[1].id).await;
    assert_eq!(text(&current, "Department"), Some("Legal"));
    assert_eq!(versions.len(), 2);

    // And from its new delta link on, incremental again.
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), full + 5);
}

#[tokio::test]
async fn a_sync_cut_short_by_its_budget_goes_on_from_its_page_and_reads_none_twice() {
    let app = directory_app(7, 3, |config| config.directory.budget = Duration::ZERO).await;
    // Each run reads one page and keeps the next link.
    for run in 1..=2 {
        assert_eq!(app.sync_directory().await, 200);
        let state = sync_row(&app).await;
        assert!(
            text(&state, "NextLink").is_some_and(|l| l.contains("$skiptoken=")),
            "run {run}: {state:?}"
        );
        assert!(text(&state, "LastError").is_some_and(|e| e.contains("budget")));
        assert_eq!(text(&state, "DeltaLink"), Some(""), "no sync has completed");
    }
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(
        app.sim.ledger().count(Endpoint::UsersDelta),
        3,
        "each page once"
    );
    let state = sync_row(&app).await;
    assert_eq!(text(&state, "NextLink"), Some(""));
    assert!(text(&state, "DeltaLink").is_some_and(|l| l.contains("$deltatoken=")));
    assert_eq!(state.get_i64("Users"), Some(7));
    assert_eq!(text(&state, "LastError"), Some(""));
    assert!(
        state.get_datetime("LastFullSyncAt").is_some(),
        "a full read over three runs is a full sync"
    );
}

#[tokio::test]
async fn a_run_that_died_after_writing_users_makes_readers_read_the_table_again() {
    let app = directory_app(3, 10, |_| {}).await;
    assert_eq!(app.sync_directory().await, 200);
    let before = sync_row(&app).await.get_i64("Revision").unwrap();
    // As a run that crashed would leave it: its lease not released.
    let mut crashed = table_storage::Entity::new("DirectorySync", "users");
    crashed.set("LeaseOwner", EdmValue::String("a-dead-run".into()));
    crashed.set("LeaseUntil", EdmValue::DateTime(app.sim.clock().now()));
    app.tables
        .app_state
        .upsert(&crashed, table_storage::WriteMode::Merge)
        .await
        .unwrap();
    assert_eq!(app.sync_directory().await, 200);
    let after = sync_row(&app).await;
    assert_eq!(
        after.get_i64("LastChanged"),
        Some(0),
        "nothing new to write"
    );
    assert_eq!(
        after.get_i64("Revision"),
        Some(before + 1),
        "readers must not keep what they read before the crash"
    );
    assert_eq!(text(&after, "LeaseOwner"), Some(""));
}

#[tokio::test]
async fn a_removed_user_is_marked_and_keeps_its_departments() {
    let app = directory_app(4, 10, |_| {}).await;
    let tenant = app.sim.tenant();
    let gone = &tenant.users[2];
    assert_eq!(app.sync_directory().await, 200);
    assert!(app.sim.remove_user(&gone.id));
    assert_eq!(app.sync_directory().await, 200);
    let (current, versions) = user_rows(&app, &gone.id).await;
    assert_eq!(current.get_bool("Removed"), Some(true));
    assert_eq!(text(&current, "Department"), gone.department.as_deref());
    assert_eq!(versions.len(), 1);
    assert_eq!(sync_row(&app).await.get_i64("Users"), Some(3));
}

#[tokio::test]
async fn call_record_sessions_get_the_department_of_their_caller_and_callee() {
    let mut config = sim_config(3);
    config.tenant.users = 4;
    let app = reports_app_with(config, |config| config.directory.enabled = true).await;
    assert_eq!(app.sync_directory().await, 200);
    let tenant = app.sim.tenant();
    let ids = app.tenant_ids();
    app.enqueue_ids(&ids).await;
    app.drain().await;
    let sessions = all_rows(&app.tables.sessions).await;
    assert!(!sessions.is_empty());
    let department_of = |id: &str| {
        tenant
            .users
            .iter()
            .find(|u| u.id == id)
            .and_then(|u| u.department.clone())
    };
    for session in &sessions {
        for end in ["Caller", "Callee"] {
            let Some(id) = text(session, &format!("{end}Id")) else {
                continue;
            };
            assert_eq!(
                text(session, &format!("{end}Department")).map(str::to_owned),
                department_of(id),
                "{end} {id} of {}",
                session.row_key
            );
        }
    }
    assert!(
        sessions
            .iter()
            .any(|s| text(s, "CallerDepartment").is_some()),
        "no session names a tenant user"
    );
}

#[tokio::test]
async fn with_the_sync_off_nothing_is_read_and_rows_have_no_department() {
    let mut config = sim_config(0);
    config.tenant.users = 3;
    let app = reports_app_with(config, |_| {}).await;
    assert_eq!(app.sync_directory().await, 200);
    assert_eq!(app.sim.ledger().count(Endpoint::UsersDelta), 0);
    assert!(
        app.tables
            .app_state
            .get("DirectorySync", "users")
            .await
            .ok()
            .flatten()
            .is_none()
    );
    let start = sim_start() - time::Duration::hours(1);
    let user = &app.sim.tenant().users[0];
    let row = pstn_row("5e3b0d5a-0000-4000-8000-000000000021", start, "0.10")
        .replace(&tenant_user_id_of_template(), &user.id);
    insert(&app.sim, false, start, start, &row);
    assert_eq!(app.pull_reports().await, 200);
    let pstn = all_rows(&app.tables.pstn).await;
    let stored = find(&pstn, "5e3b0d5a-0000-4000-8000-000000000021");
    assert!(prop(stored, "Department").is_none());
    assert!(prop(stored, "CostCenter").is_none());
}
