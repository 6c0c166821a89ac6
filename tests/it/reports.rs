//! `PullReports` through the host emulator's timer invocation, against Azurite and the Graph
//! simulator: every PSTN and Direct Routing row exactly once, late rows included, money exact.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::fetch::spawn_fetch_app;
use support::graph::{sim_config, sim_start, start_sim};
use support::reports::{
    all_rows, checkpoint, direct_routing_row, fast_limits, find, insert, int64, prop, pstn_row,
    reports_app, row_keys,
};
use table_storage::EdmValue;
use teams_cdr_sim::SimConfig;
use teams_cdr_sim::tenant::graph_time;

#[tokio::test]
async fn documented_rows_are_stored_with_their_edm_types_and_exact_money() {
    let app = reports_app(sim_config(0)).await;
    let start = sim_start() - time::Duration::days(2);
    let visible = start;
    let ids = [
        "5e3b0d5a-0000-4000-8000-000000000001",
        "5e3b0d5a-0000-4000-8000-000000000002",
    ];
    for (id, charge) in ids.iter().zip(["0.0190", "12345678.901234567"]) {
        insert(
            &app.sim,
            false,
            start,
            visible,
            &pstn_row(id, start, charge),
        );
    }
    // The documented Direct Routing row, and a failed attempt.
    for (id, failed) in [
        ("5e3b0d5a-0000-4000-8000-0000000000d1", false),
        ("5e3b0d5a-0000-4000-8000-0000000000d2", true),
    ] {
        let row = direct_routing_row(id, start, failed).to_string();
        insert(&app.sim, true, start, visible, &row);
    }

    assert_eq!(app.pull_reports().await, 200);

    let pstn = all_rows(&app.tables.pstn).await;
    assert_eq!(row_keys(&pstn), ids.to_vec());
    let exact = find(&pstn, ids[0]);
    assert_eq!(
        prop(exact, "charge"),
        Some(&EdmValue::String("0.0190".into()))
    );
    assert_eq!(
        prop(find(&pstn, ids[1]), "charge"),
        Some(&EdmValue::String("12345678.901234567".into()))
    );
    assert_eq!(prop(exact, "duration"), Some(&EdmValue::Int32(219)));
    assert!(matches!(
        prop(exact, "startDateTime"),
        Some(EdmValue::DateTime(_))
    ));
    assert_eq!(
        prop(exact, "currency"),
        Some(&EdmValue::String("USD".into()))
    );
    assert_eq!(
        prop(exact, "Direction"),
        Some(&EdmValue::String("inbound".into()))
    );
    assert!(prop(exact, "destinationContext").is_none());
    // A PSTN row is a connected call, talking for its `duration`.
    assert_eq!(
        prop(exact, "Outcome"),
        Some(&EdmValue::String("answered".into()))
    );
    assert_eq!(prop(exact, "TalkSeconds"), Some(&EdmValue::Double(219.0)));

    let dr = all_rows(&app.tables.direct_routing).await;
    let answered = find(&dr, "5e3b0d5a-0000-4000-8000-0000000000d1");
    let failed = find(&dr, "5e3b0d5a-0000-4000-8000-0000000000d2");
    assert!(
        prop(answered, "failureDateTime").is_none(),
        "sentinel stored"
    );
    assert!(prop(failed, "startDateTime").is_none(), "sentinel stored");
    assert_eq!(prop(failed, "finalSipCode"), Some(&EdmValue::Int32(487)));
    assert_eq!(prop(answered, "RingSeconds"), Some(&EdmValue::Double(4.0)));
    assert_eq!(prop(failed, "RingSeconds"), Some(&EdmValue::Double(9.0)));
    assert_eq!(
        prop(answered, "Outcome"),
        Some(&EdmValue::String("answered".into()))
    );
    assert_eq!(prop(answered, "TalkSeconds"), Some(&EdmValue::Double(5.0)));
    // 487 Request Terminated: the caller hung up while it rang.
    assert_eq!(
        prop(failed, "Outcome"),
        Some(&EdmValue::String("unanswered".into()))
    );
    assert_eq!(prop(failed, "TalkSeconds"), Some(&EdmValue::Double(0.0)));
    // Both filed under the invite's day, the failed one included.
    let day = format!("{}", start.date());
    assert_eq!(failed.partition_key, day);
    assert_eq!(answered.partition_key, day);

    let cp = checkpoint(&app, "pstn").await;
    assert_eq!(int64(&cp, "RowsStored"), 2);
    assert!(matches!(prop(&cp, "Through"), Some(EdmValue::DateTime(_))));
}

#[tokio::test]
async fn rows_published_1_30_and_70_hours_after_their_call_are_stored_by_later_runs() {
    let app = reports_app(sim_config(0)).await;
    let t0 = sim_start();
    let late = [
        (1, "5e3b0d5a-0000-4000-8000-00000000aa01"),
        (30, "5e3b0d5a-0000-4000-8000-00000000aa30"),
        (70, "5e3b0d5a-0000-4000-8000-00000000aa70"),
    ];
    for (hours, id) in late {
        let start = t0 - time::Duration::minutes(20);
        let row = pstn_row(id, start, "0.0100");
        insert(
            &app.sim,
            false,
            start,
            t0 + time::Duration::hours(hours),
            &row,
        );
    }
    // A run every two hours for three and a half days (the timer's every 15 minutes would do the
    // same, with more runs).
    let mut stored_at = std::collections::BTreeMap::new();
    for step in 0..=42 {
        assert_eq!(app.pull_reports().await, 200);
        let rows = all_rows(&app.tables.pstn).await;
        for row in rows {
            stored_at.entry(row.row_key.clone()).or_insert(step * 2);
        }
        app.sim.clock().advance(time::Duration::hours(2));
    }
    for (hours, id) in late {
        let at = stored_at
            .get(id)
            .unwrap_or_else(|| panic!("{hours} h late row lost"));
        assert!(*at >= hours, "{id} stored before it was published");
        // Within a day of its publication (the deep pull's cadence).
        assert!(
            *at <= hours + 26,
            "{id} published at {hours} h, stored at {at} h"
        );
    }
    assert_eq!(stored_at.len(), 3);
}

#[tokio::test]
async fn rows_exactly_on_window_edges_are_stored_with_both_bound_semantics() {
    let app = reports_app(sim_config(0)).await;
    let now = app.sim.clock().now();
    let midnight = now.replace_time(time::Time::MIDNIGHT);
    let mut edges = vec![
        midnight,
        midnight - time::Duration::DAY,
        now.replace_nanosecond(0).unwrap(),
    ];
    edges.push(now - time::Duration::days(30) + time::Duration::seconds(1));
    let mut expected = BTreeSet::new();
    for (n, at) in edges.iter().enumerate() {
        let id = format!("5e3b0d5a-0000-4000-8000-0000000ed0{n:02}");
        insert(
            &app.sim,
            false,
            *at,
            *at - time::Duration::hours(1),
            &pstn_row(&id, *at, "0.0"),
        );
        insert(
            &app.sim,
            true,
            *at,
            *at - time::Duration::hours(1),
            &direct_routing_row(&id, *at, n % 2 == 0).to_string(),
        );
        expected.insert(id);
    }
    assert_eq!(app.pull_reports().await, 200);
    // The row exactly at the run's end is the next run's (exclusive end for Direct Routing).
    app.sim.clock().advance(time::Duration::minutes(15));
    assert_eq!(app.pull_reports().await, 200);

    let expected: Vec<String> = expected.into_iter().collect();
    assert_eq!(row_keys(&all_rows(&app.tables.pstn).await), expected);
    assert_eq!(
        row_keys(&all_rows(&app.tables.direct_routing).await),
        expected
    );
}

#[tokio::test]
async fn two_pulls_at_once_one_works_one_skips_and_the_tables_are_as_after_one() {
    let mut config = sim_config(0);
    config.tenant.start = sim_start() - time::Duration::days(3);
    config.tenant.span = time::Duration::days(2);
    config.tenant.pstn_rows = 5_000;
    config.tenant.direct_routing_rows = 2_000;
    config.tenant.report_delay = time::Duration::minutes(1);
    let a = reports_app(config).await;
    let names = a.names.clone();
    let (_, client_limits) = fast_limits();
    let b = spawn_fetch_app(a.sim.clone(), move |config, options| {
        config.tables = names;
        options.graph_limits = Some(client_limits);
    })
    .await;

    let (ra, rb) = tokio::join!(a.pull_reports(), b.pull_reports());
    assert_eq!((ra, rb), (200, 200));

    // Counted once: only one pull stored what is there (on a busy machine, one run's budget may
    // not reach the end of the 7,000 rows; what it stored, it stored alone).
    let pstn = all_rows(&a.tables.pstn).await.len();
    let direct_routing = all_rows(&a.tables.direct_routing).await.len();
    assert!(pstn > 0, "the pull that worked stored nothing");
    assert_eq!(
        int64(&checkpoint(&a, "pstn").await, "RowsStored"),
        i64::try_from(pstn).unwrap()
    );
    assert_eq!(
        int64(&checkpoint(&a, "directRouting").await, "RowsStored"),
        i64::try_from(direct_routing).unwrap()
    );
    // And the runs after it store the rest, each row once.
    for _ in 0..10 {
        let stored = (
            all_rows(&a.tables.pstn).await.len(),
            all_rows(&a.tables.direct_routing).await.len(),
        );
        if stored == (5_000, 2_000) {
            break;
        }
        assert_eq!(a.pull_reports().await, 200);
    }
    assert_eq!(all_rows(&a.tables.pstn).await.len(), 5_000);
    assert_eq!(all_rows(&a.tables.direct_routing).await.len(), 2_000);
}

#[tokio::test]
async fn bad_rows_are_counted_and_the_rest_of_the_page_is_stored() {
    let app = reports_app(sim_config(0)).await;
    let start = sim_start() - time::Duration::hours(5);
    let good = pstn_row("5e3b0d5a-0000-4000-8000-0000000000b1", start, "0.5");
    let no_id = pstn_row("x", start, "0.5").replace("\"id\":\"x\",", "");
    let bad_money = pstn_row("5e3b0d5a-0000-4000-8000-0000000000b2", start, "0.5")
        .replace("\"charge\":0.5", "\"charge\":\"lots\"");
    let bad_date = pstn_row("5e3b0d5a-0000-4000-8000-0000000000b3", start, "0.5")
        .replace(&graph_time(start + time::Duration::minutes(3)), "soon");
    // More properties than a Table entity may have (252): refused before anything is sent.
    let extra: String = (0..260).map(|n| format!(",\"extra{n}\":{n}")).collect();
    let too_wide = pstn_row("5e3b0d5a-0000-4000-8000-0000000000b4", start, "0.5").replacen(
        '{',
        &format!("{{\"first\":0{extra},"),
        1,
    );
    for row in [&good, &no_id, &bad_money, &bad_date, &too_wide] {
        insert(&app.sim, false, start, start, row);
    }

    assert_eq!(app.pull_reports().await, 200);
    let first = checkpoint(&app, "pstn").await;
    assert_eq!(int64(&first, "BadRows"), 4, "each bad row once: {first:?}");
    assert_eq!(
        app.pull_reports().await,
        200,
        "a bad row does not fail later runs"
    );

    let rows = all_rows(&app.tables.pstn).await;
    assert_eq!(
        row_keys(&rows),
        vec!["5e3b0d5a-0000-4000-8000-0000000000b1"]
    );
    let cp = checkpoint(&app, "pstn").await;
    // Outside the second run's look-back: not read, not counted again.
    assert_eq!(int64(&cp, "BadRows"), 4);
    let Some(EdmValue::String(last)) = prop(&cp, "LastBadRow") else {
        panic!("{cp:?}")
    };
    assert!(!last.contains("lots") && !last.contains("soon"), "{last}");
}

#[tokio::test]
async fn standalone_admin_route_runs_pull_reports_only_with_a_key() {
    let (sim_limits, client_limits) = fast_limits();
    let sim = start_sim(SimConfig {
        limits: sim_limits,
        ..sim_config(0)
    })
    .await;
    let app = spawn_fetch_app(sim, move |config, options| {
        config.mode = teams_cdr_functions::config::RunMode::Standalone;
        config.read_api_keys = vec!["k-one".to_owned().into(), "k-two".to_owned().into()];
        options.graph_limits = Some(client_limits);
    })
    .await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", app.host.base());
    let post = |path: &str, key: Option<&str>| {
        let mut request = client.post(url(path));
        if let Some(key) = key {
            request = request.header("x-functions-key", key);
        }
        request.send()
    };

    for (case, response) in [
        ("no key", post("/admin/functions/PullReports", None).await),
        (
            "wrong key",
            post("/admin/functions/PullReports", Some("k-three")).await,
        ),
        (
            "wrong code",
            post("/admin/functions/PullReports?code=k-on", None).await,
        ),
    ] {
        let response = response.unwrap();
        assert_eq!(response.status(), 401, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Unauthorized", "{case}");
    }
    assert!(
        app.tables
            .app_state
            .get("ReportCheckpoint", "pstn")
            .await
            .ok()
            .flatten()
            .is_none(),
        "a refused request ran nothing"
    );
    let unknown = post("/admin/functions/NoSuchFunction", Some("k-one"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let get = client
        .get(url("/admin/functions/PullReports"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);

    let by_header = post("/admin/functions/PullReports", Some("k-two"))
        .await
        .unwrap();
    assert_eq!(by_header.status(), 202);
    let by_code = post("/admin/functions/pullreports?code=k-one", None)
        .await
        .unwrap();
    assert_eq!(by_code.status(), 202);
    // The run goes on after the answer, as the host's does: its checkpoint appears.
    let started = std::time::Instant::now();
    while app
        .tables
        .app_state
        .get("ReportCheckpoint", "directRouting")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never happened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_admin_route_is_not_served_behind_the_host() {
    let app = reports_app(sim_config(0)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/admin/functions/PullReports", app.host.base()))
        .header("x-functions-key", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "the host serves its own admin API");
}

#[tokio::test]
async fn a_deep_re_read_cut_short_by_the_budget_goes_on_where_it_stopped_until_it_completes() {
    let (sim_limits, client_limits) = fast_limits();
    let sim = start_sim(SimConfig {
        limits: sim_limits,
        ..sim_config(0)
    })
    .await;
    let app = spawn_fetch_app(sim, move |config, options| {
        options.graph_limits = Some(client_limits);
        config.reports.settings.backfill = Duration::from_secs(24 * 3600);
        // A budget spent before it starts: every run reads exactly one window.
        config.reports.run_budget = Duration::ZERO;
    })
    .await;
    let t0 = sim_start();
    // A row two and a half days old that Graph publishes only after the back-fill: the deep
    // re-read (96 hours back) is what finds it.
    let late = "5e3b0d5a-0000-4000-8000-0000000de001";
    let start = t0 - time::Duration::hours(60);
    insert(&app.sim, false, start, t0, &pstn_row(late, start, "0.0200"));
    app.sim.clock().advance(time::Duration::minutes(1));

    let deep_done = |row: &table_storage::Entity| row.get_datetime("LastDeepAt").is_some();
    let mut runs = 0;
    loop {
        runs += 1;
        assert_eq!(app.pull_reports().await, 200);
        let cp = checkpoint(&app, "pstn").await;
        if deep_done(&cp) {
            break;
        }
        assert!(
            runs < 12,
            "the deep re-read never completed: after {runs} runs the checkpoint is {cp:?}"
        );
    }
    // Two runs for the back-fill's two windows and one for the day since, then the deep re-read's
    // five windows (96 hours back from 09:01 cut at midnights), one a run: it went on each time.
    assert_eq!(runs, 7, "runs until the deep re-read completed");
    let cp = checkpoint(&app, "pstn").await;
    assert_eq!(cp.get_str("DeepNextFrom"), Some(""));
    assert!(row_keys(&all_rows(&app.tables.pstn).await).contains(&late.to_owned()));
    // Each window was read once: nothing started over.
    assert_eq!(
        app.sim.ledger().count(teams_cdr_sim::Endpoint::PstnCalls),
        runs
    );
}
