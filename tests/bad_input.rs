//! Every bad input the app has a rule for, sent all at once while a standalone instance is busy
//! storing a tenant's calls (notified by the simulator through the real webhook, fetched by the
//! app's own queue consumer): each gets its documented answer, and none of them changes what is
//! stored. Once the workload has settled, the tables hold exactly the tenant's records, the queues
//! are empty, nothing was given up on, and no backfill or reprocess was recorded.

// Test code panics on purpose.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::fetch::FetchApp;
use support::graph::{sim_config, start_sim};
use support::lifecycle::{eventually, spawn_subscribing_app};
use support::{CLIENT_STATE, TENANT_ID, callrecord_notification};
use teams_cdr_functions::config::RunMode;

const KEY: &str = "bad-input-key";

/// One bad request and the status it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    key: Option<&'static str>,
    body: String,
    status: u16,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    key: Option<&'static str>,
    body: impl Into<String>,
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        key,
        body: body.into(),
        status,
    }
}

fn cases() -> Vec<Case> {
    let id = "2f1a1100-b174-40a0-aba7-0b405e01ed92";
    let notification = |state: &str, tenant: &str| callrecord_notification(id, state, tenant);
    let hostile_resource = notification(CLIENT_STATE, TENANT_ID).replace(
        &format!("communications/callRecords/{id}"),
        "communications/callRecords/..%2F..%2Fsubscriptions",
    );
    let hostile_id = notification(CLIENT_STATE, TENANT_ID).replace(id, "a\\u0000b/../c");
    let generic = support::fixture("graph/change-notification-generic-message.json")
        .replace("secretClientValue", CLIENT_STATE)
        .replace("84bd8158-6d4d-4958-8b9f-9d6445542f95", TENANT_ID);
    let oversized = format!(
        "{{\"value\":[],\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 1)
    );
    let lifecycle_foreign = support::fixture("graph/lifecycle-reauthorizationrequired.json")
        .replace("{secret client state}", CLIENT_STATE);
    let post = Method::POST;
    let get = Method::GET;
    let many_ids: Vec<String> = (0..1001)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    vec![
        // The webhooks (anonymous): bad bodies are refused; bad items are accepted and dropped,
        // so that Graph does not retry them.
        case(
            "malformed notification",
            post.clone(),
            "/api/notifications",
            None,
            "{",
            400,
        ),
        case(
            "oversized notification",
            post.clone(),
            "/api/notifications",
            None,
            oversized,
            413,
        ),
        case(
            "not a collection",
            post.clone(),
            "/api/notifications",
            None,
            "[1,2]",
            400,
        ),
        case(
            "wrong client state",
            post.clone(),
            "/api/notifications",
            None,
            notification("an-old-client-state", TENANT_ID),
            202,
        ),
        case(
            "foreign tenant",
            post.clone(),
            "/api/notifications",
            None,
            notification(CLIENT_STATE, "00000000-0000-0000-0000-000000000001"),
            202,
        ),
        case(
            "hostile resource",
            post.clone(),
            "/api/notifications",
            None,
            hostile_resource,
            202,
        ),
        case(
            "hostile id",
            post.clone(),
            "/api/notifications",
            None,
            hostile_id,
            202,
        ),
        case(
            "not a call record",
            post.clone(),
            "/api/notifications",
            None,
            generic,
            202,
        ),
        case(
            "malformed lifecycle event",
            post.clone(),
            "/api/lifecycle",
            None,
            "{",
            400,
        ),
        case(
            "lifecycle event of a foreign subscription",
            post.clone(),
            "/api/lifecycle",
            None,
            lifecycle_foreign,
            202,
        ),
        // Keys.
        case(
            "read API without a key",
            get.clone(),
            "/api/v1/callrecords",
            None,
            "",
            401,
        ),
        case(
            "read API, wrong key",
            get.clone(),
            "/api/v1/callrecords",
            Some("wrong"),
            "",
            401,
        ),
        case(
            "health details without a key",
            get.clone(),
            "/api/health/details",
            None,
            "",
            401,
        ),
        case(
            "backfill without a key",
            post.clone(),
            "/api/ops/backfill?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            None,
            "",
            401,
        ),
        case(
            "reprocess, wrong key",
            post.clone(),
            "/api/ops/reprocess",
            Some("wrong"),
            json!([id]).to_string(),
            401,
        ),
        case(
            "timer run, wrong key",
            post.clone(),
            "/admin/functions/Purge",
            Some("wrong"),
            "",
            401,
        ),
        case(
            "timer run, unknown function",
            post.clone(),
            "/admin/functions/Nothing",
            Some(KEY),
            "",
            404,
        ),
        // Read API parameters.
        case(
            "limit 0",
            get.clone(),
            "/api/v1/pstncalls?limit=0",
            Some(KEY),
            "",
            400,
        ),
        case(
            "unknown format",
            get.clone(),
            "/api/v1/pstncalls?format=xml",
            Some(KEY),
            "",
            400,
        ),
        case(
            "from after to",
            get.clone(),
            "/api/v1/pstncalls?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "forged cursor",
            get.clone(),
            "/api/v1/callrecords?cursor=e30.AAAAAAAAAAAAAAAAAAAAAA",
            Some(KEY),
            "",
            400,
        ),
        case(
            "not an id",
            get,
            "/api/v1/callrecords/..%2F..%2Fx",
            Some(KEY),
            "",
            400,
        ),
        case(
            "other method",
            post.clone(),
            "/api/v1/callrecords",
            Some(KEY),
            "{}",
            405,
        ),
        // Admin ranges and ids.
        case(
            "backfill to before from",
            post.clone(),
            "/api/ops/backfill?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "backfill of the future",
            post.clone(),
            "/api/ops/backfill?from=2099-01-01T00:00:00Z&to=2099-01-02T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "backfill without a range",
            post.clone(),
            "/api/ops/backfill",
            Some(KEY),
            "",
            400,
        ),
        case(
            "reprocess of no ids",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            "[]",
            400,
        ),
        case(
            "reprocess of a non-id",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            "[\"../x\"]",
            400,
        ),
        case(
            "reprocess of 1,001 ids",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            json!(many_ids).to_string(),
            400,
        ),
        case(
            "reprocess, malformed",
            post,
            "/api/ops/reprocess",
            Some(KEY),
            "{",
            400,
        ),
    ]
}

async fn send(app: &FetchApp, case: &Case) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(
            case.method.clone(),
            format!("{}{}", app.host.base(), case.path),
        )
        .header("content-type", "application/json")
        .body(case.body.clone());
    if let Some(key) = case.key {
        request = request.header("x-functions-key", key);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn every_bad_input_at_once_during_a_busy_run_gets_its_answer_and_changes_nothing() {
    let app = spawn_subscribing_app(start_sim(sim_config(40)).await, |config, _| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec![KEY.to_owned().into()];
    })
    .await;
    // The subscription is made at start-up; then the tenant's records become available and are
    // notified, enqueued and fetched by the app on its own.
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.subscription_row()
                .await
                .is_some_and(|r| r.get_str("SubscriptionId").is_some_and(|s| !s.is_empty()))
        })
        .await,
        "the app subscribed itself"
    );
    app.sim.clock().advance(time::Duration::hours(1));

    // Every bad input, all at once, three times over, while the app works.
    let cases = cases();
    let sends = (0..3).flat_map(|_| cases.iter().map(|c| send(&app, c)));
    let answers = futures::future::join_all(sends).await;
    for (case, (status, body)) in cases.iter().cycle().zip(&answers) {
        assert_eq!(*status, case.status, "{}: {body}", case.what);
        for secret in [
            CLIENT_STATE,
            KEY,
            "AccountKey",
            "devstoreaccount1",
            "127.0.0.1",
        ] {
            assert!(!body.contains(secret), "{}: {body}", case.what);
        }
        if *status >= 400 {
            let error: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(error["error"]["code"].is_string(), "{}: {body}", case.what);
        }
    }

    // The workload settles: exactly the tenant's records are stored, nothing else.
    let expected: BTreeSet<String> = app.tenant_ids().into_iter().collect();
    let settled = eventually(Duration::from_secs(90), || async {
        let stored: BTreeSet<String> = app
            .rows(&app.tables.records)
            .await
            .into_iter()
            .map(|e| e.row_key)
            .collect();
        stored == expected && app.queue.approximate_count().await.unwrap() == 0
    })
    .await;
    assert!(settled, "every record stored, and nothing but them");
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
