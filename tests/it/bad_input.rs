//! Every bad input the app has a rule for, sent all at once while a standalone instance is busy
//! storing a tenant's calls (notified by the simulator through the real webhook, fetched by the
//! app's own queue consumer): each gets its documented answer, and none of them changes what is
//! stored. Once the workload has settled, the tables hold exactly the tenant's records, the queues
//! are empty, nothing was given up on, and no backfill or reprocess was recorded.

use std::collections::BTreeSet;
use std::time::Duration;

use support::bad_input::{KEY, cases, check, send};
use support::graph::{sim_config, start_sim};
use support::lifecycle::{eventually, spawn_subscribing_app, when};
use teams_cdr_functions::config::RunMode;

#[tokio::test]
async fn every_bad_input_at_once_during_a_busy_run_gets_its_answer_and_changes_nothing() {
    let app = spawn_subscribing_app(start_sim(sim_config(40)).await, |config, _| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec![KEY.to_owned().into()];
    })
    .await;
    // The subscription is made at start-up; then the tenant's records become available and are
    // notified, enqueued and fetched by the app on its own.
    eventually(Duration::from_secs(20), || async {
        let row = app.subscription_row().await;
        when(
            row.as_ref()
                .is_some_and(|r| r.get_str("SubscriptionId").is_some_and(|s| !s.is_empty())),
            row,
        )
    })
    .await
    .expect("the app subscribed itself");
    app.sim.clock().advance(time::Duration::hours(1));

    // Every bad input, all at once, three times over, while the app works.
    let cases = cases();
    let sends = (0..3).flat_map(|_| cases.iter().map(|c| send(app.host.base(), c)));
    let answers = futures::future::join_all(sends).await;
    for (case, (status, body)) in cases.iter().cycle().zip(&answers) {
        check(case, *status, body);
    }

    // The workload settles: exactly the tenant's records are stored, nothing else.
    let expected: BTreeSet<String> = app.tenant_ids().into_iter().collect();
    eventually(Duration::from_secs(90), || async {
        let stored: BTreeSet<String> = app
            .rows(&app.tables.records)
            .await
            .into_iter()
            .map(|e| e.row_key)
            .collect();
        let queued = app.queue.approximate_count().await.unwrap();
        let missing = expected.difference(&stored).count();
        let extra = stored.difference(&expected).count();
        when(
            missing == 0 && extra == 0 && queued == 0,
            format!("{missing} records missing, {extra} not the tenant's, {queued} queued"),
        )
    })
    .await
    .expect("every record stored, and nothing but them");
    assert_eq!(app.poison.approximate_count().await.unwrap(), 0);
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
    assert!(
        app.app_state_rows("ReconcileWindow")
            .await
            .iter()
            .all(|w| w.get_str("Reason") != Some("backfill")),
        "no backfill was recorded"
    );
    let sessions = app.rows(&app.tables.sessions).await;
    assert!(sessions.iter().all(|s| expected.contains(&s.partition_key)));
    let bodies = app.rows(&app.tables.bodies).await;
    assert!(bodies.iter().all(|b| expected.contains(&b.partition_key)));
    // The rejected items were counted, per reason.
    let rejected: BTreeSet<String> = app
        .app_state_rows("NotificationRejected")
        .await
        .into_iter()
        .map(|r| r.row_key)
        .collect();
    for reason in ["notification-client_state", "notification-tenant"] {
        assert!(rejected.contains(reason), "{reason}: {rejected:?}");
    }
}
