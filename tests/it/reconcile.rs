//! Reconciliation that keeps its place, against Azurite, the Graph simulator and the host emulator:
//! each hour of call starts gets the passes of `RECONCILE_PASS_HOURS` and no more, a run cut short
//! by its budget is continued by the next ones, and a fresh deployment owes passes for its whole
//! look-back.

use std::collections::BTreeSet;
use std::time::Duration;

use support::TENANT_ID;
use support::fetch::{FetchApp, spawn_fetch_app};
use support::graph::{sim_config, sim_start, start_sim};
use support::lifecycle::{eventually, when};
use teams_cdr_functions::{RateLimit, RateLimits};
use teams_cdr_sim::{Endpoint, Limits, SimConfig};

/// A tenant of `calls` calls started 03:00–06:00, the app's tenant; now is 09:00.
fn tenant(calls: usize) -> SimConfig {
    let mut config = sim_config(calls);
    config.tenant.tenant_id = TENANT_ID.to_owned();
    config
}

/// An app whose list limit (both sides) lets a test's many runs through in seconds.
async fn fast_listing_app(
    mut sim: SimConfig,
    tweak: impl FnOnce(&mut teams_cdr_functions::config::Config),
) -> FetchApp {
    sim.limits = Limits {
        list: teams_cdr_sim::Limit {
            requests: 100_000,
            ..Limits::default().list
        },
        ..Limits::default()
    };
    let client = RateLimits {
        list: RateLimit {
            requests: 100_000,
            window: Duration::from_secs(20),
        },
        ..RateLimits::default()
    };
    spawn_fetch_app(start_sim(sim).await, move |config, options| {
        options.graph_limits = Some(client);
        tweak(config);
    })
    .await
}

/// One `Reconcile` run; what it listed and whether it finished what was owed.
async fn reconcile(app: &FetchApp) -> (i64, bool) {
    assert_eq!(app.run_timer("Reconcile").await, 200);
    let row = app
        .reconcile_row()
        .await
        .expect("the sweep recorded itself");
    let complete = row
        .get_datetime("LastSuccessAt")
        .zip(row.get_datetime("LastRunAt"))
        .is_some_and(|(success, run)| success == run);
    (row.get_i64("LastListed").unwrap_or(0), complete)
}

/// The hours that still owe a pass, as `hour: passes had`.
async fn hours_owing(app: &FetchApp) -> Vec<String> {
    app.app_state_rows("ReconcileHour")
        .await
        .into_iter()
        .map(|row| format!("{}: {}", row.row_key, row.get_i32("Passes").unwrap_or(-1)))
        .collect()
}

#[tokio::test]
async fn each_hour_is_listed_at_its_scheduled_passes_and_no_more() {
    const CALLS: usize = 240;
    let app = fast_listing_app(tenant(CALLS), |_| {}).await;
    let clock = app.sim.clock();
    let start = sim_start();
    let mut listed = 0;
    // Tenant time after 09:00 at which a run happens, and the calls listed by then: the calls
    // started 03:00–06:00 are owed their first pass at once (their hours ended 3 hours ago or
    // more), their second 26 hours after their hour ended (06:00–08:00 the next day).
    let checkpoints = [
        (0, CALLS),
        (1, CALLS),
        (12, CALLS),
        (20, CALLS),
        (23, 2 * CALLS),
        (30, 2 * CALLS),
        (52, 2 * CALLS),
    ];
    for (hours, expected) in checkpoints {
        clock.advance(start + time::Duration::hours(hours) - clock.now());
        let (run, complete) = reconcile(&app).await;
        assert!(
            complete,
            "at +{hours} h the run did not finish what was owed"
        );
        listed += run;
        assert_eq!(
            listed,
            i64::try_from(expected).unwrap(),
            "calls listed by +{hours} h; hours owing: {:?}",
            hours_owing(&app).await
        );
    }
    // Every hour of those calls had both its passes, and its row is gone.
    let owing = hours_owing(&app).await;
    assert!(
        owing.iter().all(|h| h.as_str() > "2026-11-20T06"),
        "{owing:?}"
    );
    // Each run queued what was not stored; the calls were never fetched, so each pass queued all.
    let queued: BTreeSet<String> = app.take_queued_ids().await.into_iter().collect();
    assert_eq!(queued, app.tenant_ids().into_iter().collect());
}

#[tokio::test]
async fn a_sweep_cut_short_behind_a_slow_list_is_continued_by_the_next_runs_until_every_unstored_call_is_queued()
 {
    const CALLS: usize = 900;
    let mut sim = tenant(CALLS);
    // Every list page takes 400 ms, and a run may list for 3 s: a run gets through about seven
    // pages, of the 15 that the three hours of calls fill and the 23 empty hours before them.
    sim.faults.slow_rate = 1.0;
    sim.faults.slow_by = Duration::from_millis(400);
    let app = fast_listing_app(sim, |config| {
        config.subscription.reconcile_budget = Duration::from_secs(3);
    })
    .await;
    let mut queued = Vec::new();
    let mut runs = 0;
    let (mut listed, mut relisted) = (0, 0);
    loop {
        runs += 1;
        assert!(
            runs <= 40,
            "still not done after 40 runs: {} of {CALLS} queued, hours owing {:?}",
            queued.iter().collect::<BTreeSet<_>>().len(),
            hours_owing(&app).await
        );
        let (run, complete) = reconcile(&app).await;
        listed += run;
        relisted += app
            .reconcile_row()
            .await
            .and_then(|row| row.get_i64("LastRelisted"))
            .expect("the sweep counts what it lists again");
        queued.extend(app.take_queued_ids().await);
        if complete {
            break;
        }
    }
    assert!(runs > 3, "the budget never cut a run short ({runs} runs)");
    let queued: BTreeSet<String> = queued.into_iter().collect();
    assert_eq!(
        queued,
        app.tenant_ids().into_iter().collect::<BTreeSet<_>>()
    );
    // A run cut short is continued where it stopped: the only calls listed twice are those of a
    // slice the budget ran out in (none where every slice was sized to fit). How many that is
    // depends on how busy this machine is, so it is counted, not bounded.
    let calls = i64::try_from(CALLS).unwrap();
    assert_eq!(
        listed - relisted,
        calls,
        "listed {listed}, of which {relisted} in slices cut short, for {calls} calls in {runs} runs"
    );
}

#[tokio::test]
async fn a_fresh_deployment_owes_a_pass_for_every_hour_of_its_look_back() {
    let app = fast_listing_app(tenant(0), |_| {}).await;
    let (listed, complete) = reconcile(&app).await;
    assert_eq!((listed, complete), (0, true));
    // 26 hours of rows, 07:00 yesterday to 08:00: the hours that ended 3 hours ago or more had
    // their first pass (23 of them), the 3 newest wait for it.
    let owing = hours_owing(&app).await;
    assert_eq!(owing.len(), 26, "{owing:?}");
    assert_eq!(owing[0], "2026-11-19T07:00:00.0000000Z: 1");
    assert_eq!(owing[22], "2026-11-20T05:00:00.0000000Z: 1");
    assert_eq!(
        &owing[23..],
        [
            "2026-11-20T06:00:00.0000000Z: 0",
            "2026-11-20T07:00:00.0000000Z: 0",
            "2026-11-20T08:00:00.0000000Z: 0"
        ]
    );
    assert_eq!(app.sim.ledger().count(Endpoint::ListCallRecords), 23);
}

#[tokio::test]
async fn a_backfill_too_dense_for_one_run_is_listed_in_slices_that_fit_until_it_is_done() {
    const CALLS: usize = 900;
    let mut sim = tenant(CALLS);
    // As above: a run gets through about seven pages. The seven hours asked for hold 15 pages;
    // listed whole, as spans once were (in six-hour slices), they would never fit a run.
    sim.faults.slow_rate = 1.0;
    sim.faults.slow_by = Duration::from_millis(400);
    let app = fast_listing_app(sim, |config| {
        config.subscription.reconcile_budget = Duration::from_secs(3);
        // Only the backfill finds the calls (03:00–06:00): the hours' look-back is the last one.
        config.subscription.reconcile_passes = vec![Duration::from_secs(3600)];
    })
    .await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/ops/backfill?from=2026-11-20T01:00:00Z&to=2026-11-20T08:00:00Z",
            app.host.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The backfill starts a sweep of its own; the runs below follow it.
    let app = &app;
    eventually(Duration::from_secs(20), || async move {
        let row = app.reconcile_row().await;
        when(row.is_some(), format!("sweep status: {row:?}"))
    })
    .await
    .expect("the backfill's own sweep recorded itself");
    let mut queued = app.take_queued_ids().await;
    let (mut runs, mut listed) = (
        1,
        app.reconcile_row()
            .await
            .unwrap()
            .get_i64("LastListed")
            .unwrap_or(0),
    );
    while !app.app_state_rows("ReconcileWindow").await.is_empty() {
        runs += 1;
        assert!(
            runs <= 40,
            "the backfill still waits after 40 runs: {:?}; {} of {CALLS} queued",
            app.app_state_rows("ReconcileWindow").await,
            queued.iter().collect::<BTreeSet<_>>().len()
        );
        listed += reconcile(app).await.0;
        queued.extend(app.take_queued_ids().await);
    }
    assert!(runs > 2, "the budget never cut a run short ({runs} runs)");
    let queued: BTreeSet<String> = queued.into_iter().collect();
    assert_eq!(
        queued,
        app.tenant_ids().into_iter().collect::<BTreeSet<_>>()
    );
    // A span starts without knowing how dense it is (the hours before it were empty): each run
    // that the budget cuts short lists at most one budget's pages again, here half the span.
    let calls = i64::try_from(CALLS).unwrap();
    assert!(listed < calls * 3, "listed {listed} for {calls} calls");
}
