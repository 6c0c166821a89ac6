//! A simulated month of reports (100,000 PSTN and 50,000 Direct Routing rows) pulled through the
//! host emulator's timer invocations: every row exactly once. The full suite runs it in a process
//! of its own, so that its Azurite holds only its rows: shared with the other report tests, the
//! month ran 2 to 5 times slower.

use serde_json::Value;
use support::graph::{sim_config, sim_start};
use support::reports::{all_rows, reports_app, row_keys, same_ids, through};
use teams_cdr_sim::tenant::ReportRow;
use time::OffsetDateTime;

#[tokio::test]
#[ignore = "soak test (minutes): scripts/test.sh runs it in a process of its own"]
async fn a_month_of_100_000_pstn_and_50_000_direct_routing_rows_is_stored_exactly_once() {
    let mut config = sim_config(0);
    config.tenant.start = sim_start() - time::Duration::days(29);
    config.tenant.span = time::Duration::days(28);
    config.tenant.pstn_rows = 100_000;
    config.tenant.direct_routing_rows = 50_000;
    config.tenant.report_delay = time::Duration::minutes(1);
    let app = reports_app(config).await;

    // The back-fill takes more than one run's budget; runs go on from the checkpoint, each
    // advancing it, until it is past the last row of each report. (How many runs that takes
    // depends on the machine: each row is written twice, to its table and to the read API's log.
    // The plan itself completes only when one run re-reads the whole deep look-back within its
    // budget, which on a busy machine never happens: waiting for it made this test run into its
    // cap of 120 runs; docs/DEVELOPMENT.md says more.)
    let last_start = |rows: &[ReportRow]| rows.iter().map(|r| r.start).max().unwrap();
    let ends = {
        let tenant = app.sim.tenant();
        (last_start(&tenant.pstn), last_start(&tenant.direct_routing))
    };
    let past_the_end =
        |through: Option<OffsetDateTime>, end: OffsetDateTime| through.is_some_and(|t| t > end);
    let started = std::time::Instant::now();
    let mut progress = (None, None);
    let mut runs_without_progress = 0;
    for run in 1.. {
        assert_eq!(app.pull_reports().await, 200);
        let now = (
            through(&app, "pstn").await,
            through(&app, "directRouting").await,
        );
        eprintln!(
            "run {run}, {:.1?}: stored through {now:?}",
            started.elapsed()
        );
        if past_the_end(now.0, ends.0) && past_the_end(now.1, ends.1) {
            break;
        }
        runs_without_progress = if now == progress {
            runs_without_progress + 1
        } else {
            0
        };
        assert!(
            runs_without_progress < 3,
            "three runs in a row advanced neither checkpoint: stored through {now:?} after run \
             {run}, the last rows start at {ends:?}"
        );
        progress = now;
    }

    let tenant = app.sim.tenant();
    let ids = |rows: &[ReportRow]| -> Vec<String> {
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r.json.get()).unwrap();
                v["id"].as_str().unwrap().to_ascii_lowercase()
            })
            .collect();
        ids.sort();
        ids
    };
    let expected_pstn = ids(&tenant.pstn);
    let expected_dr = ids(&tenant.direct_routing);
    assert_eq!(expected_pstn.len(), 100_000);
    let pstn = all_rows(&app.tables.pstn).await;
    let dr = all_rows(&app.tables.direct_routing).await;
    // Row keys are unique in a table, so equal sorted lists mean every row exactly once.
    same_ids("PstnCalls", &row_keys(&pstn), &expected_pstn);
    same_ids("DirectRoutingCalls", &row_keys(&dr), &expected_dr);
    eprintln!("150,000 rows stored in {:?}", started.elapsed());
    let pages = app.sim.ledger().requests().len();
    assert!(pages >= 150, "{pages} Graph requests for 150 pages of rows");
    assert_eq!(app.sim.ledger().count_status(429), 0);
}
