//! A simulated month of reports (100,000 PSTN and 50,000 Direct Routing rows) pulled through the
//! host emulator's timer invocations: every row exactly once. The full suite runs it in a process
//! of its own, so that its Azurite holds only its rows: shared with the other report tests, the
//! month ran 2 to 5 times slower.

use serde_json::Value;
use support::graph::{sim_config, sim_start};
use support::reports::{all_rows, complete, reports_app, row_keys, same_ids};
use teams_cdr_sim::tenant::ReportRow;

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

    // The back-fill takes more than one run's budget; runs go on from the checkpoint.
    let started = std::time::Instant::now();
    // Each row is written twice (its table and the read API's log): about 18 runs of 8 s here.
    for run in 1..=120 {
        assert_eq!(app.pull_reports().await, 200);
        eprintln!("run {run} ended at {:.1?}", started.elapsed());
        if complete(&app, "pstn").await && complete(&app, "directRouting").await {
            break;
        }
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
