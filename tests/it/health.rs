//! The health check against Azurite, the Graph simulator and the host emulator: the verdict follows
//! what the functions record (no subscription → failing, everything fresh → ok, poison messages or
//! rejected notifications → degraded, an expired subscription → failing), the anonymous route says
//! only the verdict, and the details need a key in standalone mode.

use std::time::Duration;

use serde_json::Value;
use support::fetch::{FetchApp, spawn_fetch_app};
use support::graph::{sim_config, start_sim};
use support::lifecycle::{eventually, spawn_subscribing_app, when};
use support::{CLIENT_STATE, TENANT_ID};
use teams_cdr_functions::config::RunMode;
use teams_cdr_sim::SimConfig;

fn tenant_sim(calls: usize) -> SimConfig {
    let mut config = sim_config(calls);
    config.tenant.tenant_id = TENANT_ID.to_owned();
    config
}

async fn get(app: &FetchApp, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", app.host.base()));
    if let Some(key) = key {
        request = request.header("x-functions-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn details(app: &FetchApp) -> Value {
    get(app, "/api/health/details", None).await.1
}

fn codes(details: &Value) -> Vec<String> {
    details["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

/// Posts a notification collection as Graph does, through the host; the status.
async fn notify(app: &FetchApp, collection: String) -> u16 {
    app.host
        .forward(
            reqwest::Method::POST,
            "/api/notifications",
            Some("application/json"),
            collection,
        )
        .await
        .status()
        .as_u16()
}

/// A time the health details give (RFC 3339).
fn time_of(value: &serde_json::Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// An app whose every timer has run once against a quiet tenant.
async fn fresh_app(calls: usize) -> FetchApp {
    let app = spawn_subscribing_app(start_sim(tenant_sim(calls)).await, |_, options| {
        options.health_verdict_ttl = Duration::ZERO;
    })
    .await;
    for timer in ["MaintainSubscription", "PullReports", "Reconcile"] {
        assert_eq!(app.run_timer(timer).await, 200, "{timer}");
    }
    app
}

#[tokio::test]
async fn health_is_failing_without_a_subscription_and_ok_once_everything_ran() {
    let app = spawn_subscribing_app(start_sim(tenant_sim(0)).await, |_, options| {
        options.health_verdict_ttl = Duration::ZERO;
    })
    .await;
    let (status, body) = get(&app, "/api/health", None).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("failing")));
    assert!(codes(&details(&app).await).contains(&"subscriptionMissing".to_owned()));

    for timer in ["MaintainSubscription", "PullReports", "Reconcile"] {
        assert_eq!(app.run_timer(timer).await, 200, "{timer}");
    }
    let (status, body) = get(&app, "/api/health", None).await;
    // Anonymous callers learn the verdict and nothing else.
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    let details = details(&app).await;
    assert_eq!(details["status"], "ok");
    assert!(codes(&details).is_empty(), "{details}");
    // What it was reached from is what happened: the subscription Graph holds, and the runs of
    // just now.
    let subscriptions = app.sim.subscriptions();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    assert_eq!(details["subscription"]["id"], subscriptions[0].id.as_str());
    assert_eq!(
        time_of(&details["subscription"]["expires"]),
        subscriptions[0].expiration
    );
    assert_eq!(details["queue"]["poison"], 0);
    let now = app.sim.clock().now();
    let just_now = |at: &serde_json::Value| {
        let at = time_of(at);
        assert!(
            at <= now && now - at < time::Duration::minutes(1),
            "{at} is not just before {now}"
        );
    };
    just_now(&details["reconcile"]["lastSuccessAt"]);
    let reports = details["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for report in reports {
        just_now(&report["lastSuccessAt"]);
    }
    // Nothing secret in it.
    assert!(!details.to_string().contains(CLIENT_STATE));
}

#[tokio::test]
async fn poison_messages_and_rejected_notifications_degrade_and_an_expired_subscription_fails() {
    let app = fresh_app(0).await;
    let app = &app;
    assert_eq!(details(app).await["status"], "ok");

    // A notification signed with another client state (a redeployment's new secret).
    let forged = support::callrecord_notification(
        "7b1f0c7e-1d2a-4e5f-9a8b-0c1d2e3f4a5b",
        "an-old-client-state",
        TENANT_ID,
    );
    assert_eq!(notify(app, forged).await, 202);
    eventually(Duration::from_secs(10), || async move {
        let codes = codes(&details(app).await);
        when(codes == ["notificationsRejected"], codes)
    })
    .await
    .expect("the forged notification is reported");
    assert_eq!(get(app, "/api/health", None).await.1["status"], "degraded");

    // A message the host gave up on.
    app.poison
        .send_json(&app.job("0a0b0c0d-0000-4000-8000-000000000001"), 0)
        .await
        .unwrap();
    let after = details(app).await;
    assert_eq!(after["queue"]["poison"], 1);
    assert!(codes(&after).contains(&"poisonMessages".to_owned()));
    assert_eq!(after["status"], "degraded");

    // Three days without a renewal: the subscription has expired.
    app.sim.clock().advance(time::Duration::hours(72));
    let (status, body) = get(app, "/api/health", None).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("failing")));
    assert_eq!(codes(&details(app).await)[0], "subscriptionExpired");
}

#[tokio::test]
async fn the_last_notification_and_the_last_record_stored_are_reported() {
    let app = fresh_app(1).await;
    let app = &app;
    let id = app.tenant_ids()[0].clone();
    let notification = support::callrecord_notification(&id, CLIENT_STATE, TENANT_ID);
    assert_eq!(notify(app, notification).await, 202);
    // The sweep queued the record too: the copy that meets the first writer's lease waits for it.
    app.drain_advancing(time::Duration::minutes(6)).await;
    eventually(Duration::from_secs(10), || async move {
        let d = details(app).await;
        let marks = (
            d["lastNotificationAt"].clone(),
            d["lastRecordStoredAt"].clone(),
        );
        when(marks.0.is_string() && marks.1.is_string(), marks)
    })
    .await
    .expect("both activity marks are written");
}

#[tokio::test]
async fn health_details_need_a_key_in_standalone_mode_and_the_summary_does_not() {
    let app = spawn_fetch_app(start_sim(tenant_sim(0)).await, |config, options| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec!["the-right-key".to_owned().into()];
        options.health_verdict_ttl = Duration::ZERO;
    })
    .await;
    let (status, body) = get(&app, "/api/health", None).await;
    assert!(matches!(status, 200 | 503), "{status}");
    assert!(body["status"].is_string());
    assert_eq!(get(&app, "/api/health/details", None).await.0, 401);
    assert_eq!(get(&app, "/api/health/details", Some("wrong")).await.0, 401);
    assert_eq!(
        get(&app, "/api/health/details?code=wrong", None).await.0,
        401
    );
    let (status, body) = get(&app, "/api/health/details", Some("the-right-key")).await;
    assert!(matches!(status, 200 | 503), "{status}");
    assert!(body["findings"].is_array());
    let (status, _) = get(&app, "/api/health/details?code=the-right-key", None).await;
    assert!(matches!(status, 200 | 503), "{status}");
}

/// The consumer rules: a feed read once and then not for `CONSUMER_STALE_DAYS` is degraded
/// (`consumerStale`), and so is a consumer whose cursor stands at rows stored more than
/// `RETENTION_DAYS` − 7 days ago (`consumerBehindRetention`); a consumer that has read everything
/// stands at the present however old its last row is.
#[tokio::test]
async fn a_consumer_that_stops_reading_or_falls_behind_the_retention_degrades_health() {
    let app = fresh_app(0).await;
    let app = &app;
    let start = support::graph::sim_start() - time::Duration::hours(2);
    for n in 0..5 {
        let id = format!("5e3b0d5a-0000-4000-8000-{n:012}");
        support::reports::insert(
            &app.sim,
            false,
            start,
            start,
            &support::reports::pstn_row(&id, start, "0.0190"),
        );
    }
    assert_eq!(app.pull_reports().await, 200);
    app.sim.clock().advance(time::Duration::seconds(301));
    let consumer = |details: &Value| {
        details["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["feed"] == "pstncalls")
            .cloned()
    };
    // Never read: no consumer, no rule.
    assert!(consumer(&details(app).await).is_none());

    // One page of one row: the consumer stands at that row.
    let read_up_to = |limit: u32, cursor: Option<String>| async move {
        let mut path = format!("/api/v1/pstncalls?limit={limit}");
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.extend(url::form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let (status, page) = get(app, &path, None).await;
        assert_eq!(status, 200);
        page["cursor"].as_str().unwrap().to_owned()
    };
    let read = |cursor: Option<String>| read_up_to(1, cursor);
    let cursor = read(None).await;
    eventually(Duration::from_secs(10), || async {
        let consumer = consumer(&details(app).await);
        when(
            consumer
                .as_ref()
                .is_some_and(|c| c["lastReadAt"].is_string()),
            consumer,
        )
    })
    .await
    .expect("the consumer's read is marked");
    assert!(!codes(&details(app).await).contains(&"consumerStale".to_owned()));

    // Four days without a read.
    app.sim.clock().advance(time::Duration::days(4));
    assert!(codes(&details(app).await).contains(&"consumerStale".to_owned()));
    let cursor = read(Some(cursor)).await;
    eventually(Duration::from_secs(10), || async {
        let codes = codes(&details(app).await);
        when(!codes.contains(&"consumerStale".to_owned()), codes)
    })
    .await
    .expect("a read clears consumerStale");
    assert!(!codes(&details(app).await).contains(&"consumerBehindRetention".to_owned()));

    // 80 more days, and the consumer is still at rows stored 84 days ago: within 7 days of the
    // 90-day retention.
    app.sim.clock().advance(time::Duration::days(80));
    let cursor = read(Some(cursor)).await;
    eventually(Duration::from_secs(10), || async {
        let codes = codes(&details(app).await);
        when(codes.contains(&"consumerBehindRetention".to_owned()), codes)
    })
    .await
    .expect("a consumer near the retention is reported");
    // Another consumer (its own key), which reads everything, is watched apart: its reading does
    // not hide the first one, which is still behind.
    let other = reqwest::Client::new()
        .get(format!("{}/api/v1/pstncalls?limit=100", app.host.base()))
        .header("x-functions-key", "the-second-consumer")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    eventually(Duration::from_secs(10), || async {
        let consumers = details(app).await["consumers"].clone();
        when(consumers.as_array().unwrap().len() == 2, consumers)
    })
    .await
    .expect("two consumers are watched");
    assert!(codes(&details(app).await).contains(&"consumerBehindRetention".to_owned()));

    // Reading the rest brings it to the present: the rule clears. (A read mark is written at most
    // once a minute per instance and feed.)
    app.sim.clock().advance(time::Duration::minutes(2));
    let _ = read_up_to(100, Some(cursor)).await;
    eventually(Duration::from_secs(10), || async {
        let codes = codes(&details(app).await);
        when(
            !codes.contains(&"consumerBehindRetention".to_owned())
                && !codes.contains(&"consumerStale".to_owned()),
            codes,
        )
    })
    .await
    .expect("reading the rest clears both rules");
}
