//! The subscription's life and reconciliation, against Azurite, the Graph simulator and the host
//! emulator: `MaintainSubscription` keeps exactly one subscription, `Lifecycle` acts on Graph's
//! events, `Reconcile` finds what notifications missed, and the admin's `Backfill` and `Reprocess`
//! refuse bad input and unauthenticated callers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::fetch::{FetchApp, sim_record, spawn_fetch_app};
use support::graph::{sim_config, sim_start, start_sim};
use support::lifecycle::{eventually, pass_time, served, spawn_subscribing_app, when};
use support::{CLIENT_STATE, TENANT_ID};
use teams_cdr_functions::config::RunMode;
use teams_cdr_sim::{Endpoint, Outcome, RunningSim, SimConfig};

const SETTLE: Duration = Duration::from_secs(20);

/// A simulator whose tenant is the app's (`sim_config` with the tests' tenant id).
fn tenant_sim(calls: usize) -> SimConfig {
    let mut config = sim_config(calls);
    config.tenant.tenant_id = TENANT_ID.to_owned();
    config
}

async fn subscribed(sim: SimConfig) -> FetchApp {
    let app = spawn_subscribing_app(start_sim(sim).await, |_, _| {}).await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    assert_eq!(app.sim.subscriptions().len(), 1);
    app
}

fn only_subscription(sim: &RunningSim) -> teams_cdr_sim::SubscriptionView {
    let subscriptions = sim.subscriptions();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    subscriptions.into_iter().next().unwrap()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// A subscription made by someone else with the app's identity (an earlier deployment, an admin by
/// hand), straight at the simulator.
async fn subscribe_elsewhere(sim: &RunningSim, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1.0/subscriptions", sim.base_url()))
        .bearer_auth(sim.token())
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Another instance of the deployment whose app is `first`: its tables and its public URLs.
fn same_deployment(first: &FetchApp, config: &mut teams_cdr_functions::config::Config) {
    let base = first.host.base();
    config.tables = first.names.clone();
    config.subscription.notification_url =
        url::Url::parse(&format!("{base}/api/notifications")).ok();
    config.subscription.lifecycle_url = url::Url::parse(&format!("{base}/api/lifecycle")).ok();
}

#[tokio::test]
async fn maintain_subscription_creates_one_subscription_after_graph_validated_both_urls() {
    let app = spawn_subscribing_app(start_sim(tenant_sim(0)).await, |_, _| {}).await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);

    let subscription = only_subscription(&app.sim);
    // The simulator creates a subscription only after both URLs echoed its validation token.
    assert!(
        subscription
            .notification_url
            .ends_with("/api/notifications")
    );
    assert!(
        subscription
            .lifecycle_url
            .as_deref()
            .unwrap()
            .ends_with("/api/lifecycle")
    );
    assert_eq!(subscription.client_state.as_deref(), Some(CLIENT_STATE));
    let life = subscription.expiration - app.sim.clock().now();
    assert!(
        life > time::Duration::minutes(4200) && life <= time::Duration::minutes(4230),
        "{life}"
    );
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 1);

    let row = app.subscription_row().await.unwrap();
    assert_eq!(
        row.get_str("SubscriptionId"),
        Some(subscription.id.as_str())
    );
    let recorded = row.get_datetime("ExpirationDateTime").unwrap();
    assert!((recorded - subscription.expiration).abs() < time::Duration::seconds(1));
    assert_eq!(row.get_str("LastError"), Some(""));
}

#[tokio::test]
async fn a_second_run_renews_the_same_subscription_to_the_maximum() {
    let app = subscribed(tenant_sim(0)).await;
    let app = &app;
    let first = only_subscription(&app.sim);
    app.sim.clock().advance(time::Duration::hours(2));
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);

    let renewed = only_subscription(&app.sim);
    assert_eq!(renewed.id, first.id);
    assert_eq!(
        renewed.expiration - first.expiration,
        time::Duration::hours(2)
    );
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 1);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionRenew), 1);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionDelete), 0);
}

#[tokio::test]
async fn a_subscription_graph_deleted_is_recreated_at_the_next_run_and_its_gap_reconciled() {
    let mut config = tenant_sim(30);
    // Calls over the next two hours: some notified, the rest made while the subscription is gone.
    config.tenant.start = sim_start();
    config.tenant.span = time::Duration::hours(2);
    let app = subscribed(config).await;
    let app = &app;
    let first = only_subscription(&app.sim);

    pass_time(
        &app.sim,
        time::Duration::minutes(50),
        time::Duration::minutes(5),
    )
    .await;
    assert!(app.sim.remove_subscription(&first.id, false).await);
    pass_time(
        &app.sim,
        time::Duration::hours(3),
        time::Duration::minutes(15),
    )
    .await;
    app.drain().await;
    let before = app.stored_ids().await;
    assert!(
        !before.is_empty() && before.len() < 30,
        "some calls must have been notified and some not: {} stored",
        before.len()
    );
    let lists_before = served(&app.sim, Endpoint::ListCallRecords);

    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    let second = only_subscription(&app.sim);
    assert_ne!(second.id, first.id);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 2);
    // The recreation started a sweep of the gap by itself; it ends with no span left waiting.
    eventually(SETTLE, || async move {
        let swept = app.reconcile_row().await.is_some();
        let waiting = app.app_state_rows("ReconcileWindow").await.len();
        when(
            swept && waiting == 0,
            format!("swept: {swept}, {waiting} spans waiting"),
        )
    })
    .await
    .expect("a sweep ran and no span is left waiting");
    assert!(served(&app.sim, Endpoint::ListCallRecords) > lists_before);
    app.drain().await;
    assert_eq!(app.stored_ids().await, sorted(app.tenant_ids()));
}

#[tokio::test]
async fn a_conflict_on_create_is_resolved_by_renewing_the_subscription_that_exists() {
    let app = subscribed(tenant_sim(0)).await;
    let app = &app;
    let first = only_subscription(&app.sim);
    // The listing has not caught up: the app creates, Graph answers 409, the app lists again.
    app.sim.stale_subscription_listings(1);
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);

    let kept = only_subscription(&app.sim);
    assert_eq!(kept.id, first.id);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 2);
    assert_eq!(app.sim.ledger().count_status(409), 1);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionRenew), 1);
    let row = app.subscription_row().await.unwrap();
    assert_eq!(row.get_str("SubscriptionId"), Some(first.id.as_str()));
    // Not a new subscription, so no gap to sweep.
    assert!(app.app_state_rows("ReconcileWindow").await.is_empty());
}

#[tokio::test]
async fn two_instances_maintaining_at_once_leave_one_subscription() {
    let sim = Arc::new(start_sim(tenant_sim(0)).await);
    let a = spawn_subscribing_app(Arc::clone(&sim), |_, _| {}).await;
    assert!(a.sim.subscriptions().is_empty());
    let b = spawn_fetch_app(Arc::clone(&sim), |config, _| same_deployment(&a, config)).await;

    for _ in 0..3 {
        let (sa, sb) = tokio::join!(
            a.run_timer("MaintainSubscription"),
            b.run_timer("MaintainSubscription")
        );
        assert_eq!((sa, sb), (200, 200));
        assert_eq!(sim.subscriptions().len(), 1);
        sim.clock().advance(time::Duration::hours(2));
    }
    assert_eq!(served(&sim, Endpoint::SubscriptionDelete), 0);
}

#[tokio::test]
async fn a_subscription_left_by_an_earlier_deployment_is_replaced() {
    let sim = start_sim(tenant_sim(0)).await;
    let app = spawn_subscribing_app(sim, |_, _| {}).await;
    // An earlier deployment: another notification URL and another client state (the app answers
    // the validation of that URL too: it is the same handler).
    let base = app.host.base().to_owned();
    let created = subscribe_elsewhere(
        &app.sim,
        json!({
            "changeType": "created,updated",
            "resource": "/communications/callRecords",
            "notificationUrl": format!("{base}/api/notifications?deployment=old"),
            "lifecycleNotificationUrl": format!("{base}/api/lifecycle?deployment=old"),
            "expirationDateTime": "2026-11-21T09:00:00Z",
            "clientState": "the-old-client-state",
        }),
    )
    .await;
    assert_eq!(created.status(), 201);
    let old: Value = created.json().await.unwrap();

    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    let now = only_subscription(&app.sim);
    assert_ne!(now.id, old["id"].as_str().unwrap());
    assert_eq!(now.client_state.as_deref(), Some(CLIENT_STATE));
    assert!(now.notification_url.ends_with("/api/notifications"));
    assert_eq!(served(&app.sim, Endpoint::SubscriptionDelete), 1);
}

#[tokio::test]
async fn a_new_client_state_replaces_the_subscription_made_with_the_old_one() {
    let mut config = tenant_sim(0);
    // The listing does not say which client state a subscription has: the app must remember it.
    config.hide_client_state_in_listings = true;
    let sim = Arc::new(start_sim(config).await);
    let before = spawn_subscribing_app(Arc::clone(&sim), |_, _| {}).await;
    assert_eq!(before.run_timer("MaintainSubscription").await, 200);
    let old = only_subscription(&sim);

    // A redeployment with a new secret: same tables, same public URLs.
    let after = spawn_fetch_app(Arc::clone(&sim), |config, _| {
        same_deployment(&before, config);
        config.notifications.client_state = "a-new-client-state-after-redeploy".to_owned().into();
    })
    .await;
    assert_eq!(after.run_timer("MaintainSubscription").await, 200);
    let new = only_subscription(&sim);
    assert_ne!(new.id, old.id);
    assert_eq!(
        new.client_state.as_deref(),
        Some("a-new-client-state-after-redeploy")
    );
    assert_eq!(served(&sim, Endpoint::SubscriptionDelete), 1);
    // Renewed from then on, not replaced again.
    assert_eq!(after.run_timer("MaintainSubscription").await, 200);
    assert_eq!(only_subscription(&sim).id, new.id);
    assert_eq!(served(&sim, Endpoint::SubscriptionCreate), 2);
}

#[tokio::test]
async fn a_subscription_that_cannot_be_deleted_does_not_stop_ours_being_renewed() {
    let app = spawn_subscribing_app(start_sim(tenant_sim(0)).await, |config, _| {
        // One retry of the failing deletion, not four.
        config.graph.max_retries = 1;
    })
    .await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    let ours = only_subscription(&app.sim);
    // Someone's subscription to the same resource with other change types (Graph allows it beside
    // ours), which this deployment does not want.
    let base = app.host.base().to_owned();
    let stray = subscribe_elsewhere(
        &app.sim,
        json!({
            "changeType": "created",
            "resource": "/communications/callRecords",
            "notificationUrl": format!("{base}/api/notifications"),
            "lifecycleNotificationUrl": format!("{base}/api/lifecycle"),
            "expirationDateTime": "2026-11-21T09:00:00Z",
            "clientState": CLIENT_STATE,
        }),
    )
    .await;
    assert_eq!(stray.status(), 201);
    app.sim.fail_subscription_deletes(true);
    app.sim.clock().advance(time::Duration::hours(2));
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    // Ours was renewed first; the stray one's failed deletion is on record.
    assert_eq!(served(&app.sim, Endpoint::SubscriptionRenew), 1);
    let renewed = app
        .sim
        .subscriptions()
        .into_iter()
        .find(|s| s.id == ours.id)
        .unwrap();
    assert_eq!(
        renewed.expiration - ours.expiration,
        time::Duration::hours(2)
    );
    let row = app.subscription_row().await.unwrap();
    assert!(
        row.get_str("LastError")
            .unwrap()
            .contains("could not delete subscription")
    );
    // Once Graph deletes again, the next run removes it and clears the error.
    app.sim.fail_subscription_deletes(false);
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    assert_eq!(only_subscription(&app.sim).id, ours.id);
    assert_eq!(
        app.subscription_row().await.unwrap().get_str("LastError"),
        Some("")
    );
}

#[tokio::test]
async fn a_subscription_whose_client_state_cannot_be_vouched_for_is_replaced() {
    let mut config = tenant_sim(0);
    config.hide_client_state_in_listings = true;
    let app = subscribed(config).await;
    let first = only_subscription(&app.sim);
    // The app's record of it is lost (a new storage account, a wiped table): the listing does not
    // say which client state the subscription carries, so it cannot be kept on trust.
    app.tables
        .app_state
        .delete("Subscription", "callRecords", None)
        .await
        .unwrap();
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    let second = only_subscription(&app.sim);
    assert_ne!(second.id, first.id);
    assert_eq!(second.client_state.as_deref(), Some(CLIENT_STATE));
    assert_eq!(served(&app.sim, Endpoint::SubscriptionDelete), 1);
    // Made by the app now, so kept from then on.
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    assert_eq!(only_subscription(&app.sim).id, second.id);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 2);
}

#[tokio::test]
async fn without_its_urls_maintain_subscription_fails_and_names_the_settings() {
    let app = spawn_fetch_app(start_sim(tenant_sim(0)).await, |_, _| {}).await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 500);
    assert!(app.sim.subscriptions().is_empty());
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 0);
    let row = app.subscription_row().await.unwrap();
    assert!(
        row.get_str("LastError")
            .unwrap()
            .contains("NOTIFICATION_URL and LIFECYCLE_NOTIFICATION_URL")
    );
}

/// When the last sweep ran (`None`: never).
async fn last_sweep(app: &FetchApp) -> Option<time::OffsetDateTime> {
    app.reconcile_row()
        .await
        .and_then(|row| row.get_datetime("LastRunAt"))
}

/// One post of lifecycle events, `(subscription id, event)` each, as Graph sends them.
async fn post_lifecycle_events(app: &FetchApp, events: &[(&str, &str)]) -> u16 {
    let value: Vec<Value> = events
        .iter()
        .map(|(subscription_id, event)| {
            json!({
                "lifecycleEvent": event,
                "subscriptionId": subscription_id,
                "subscriptionExpirationDateTime": "2026-11-23T09:00:00Z",
                "clientState": CLIENT_STATE,
                "tenantId": TENANT_ID,
            })
        })
        .collect();
    let body = json!({ "value": value });
    app.host
        .forward(
            reqwest::Method::POST,
            "/api/lifecycle",
            Some("application/json"),
            body.to_string(),
        )
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn reauthorization_required_is_answered_once_per_ten_minutes_however_often_graph_repeats_it()
{
    let app = subscribed(tenant_sim(0)).await;
    let app = &app;
    let id = only_subscription(&app.sim).id;

    assert_eq!(
        app.sim.send_lifecycle(&id, "reauthorizationRequired").await,
        Some(202)
    );
    eventually(SETTLE, || async move {
        let served = served(&app.sim, Endpoint::SubscriptionReauthorize);
        when(served == 1, served)
    })
    .await
    .expect("SubscriptionReauthorize served 1 times");
    // Graph repeats it: within 10 minutes it costs nothing. A `missed` after it in the same
    // collection is acted on after it (one post's events are acted on in order): once its sweep
    // has run, the repeat has been dealt with.
    app.sim.clock().advance(time::Duration::minutes(5));
    let swept_before = last_sweep(app).await;
    assert_eq!(
        post_lifecycle_events(app, &[(&id, "reauthorizationRequired"), (&id, "missed")]).await,
        202
    );
    eventually(SETTLE, || async move {
        let swept = last_sweep(app).await;
        when(swept != swept_before, swept)
    })
    .await
    .expect("the sweep after the repeat ran");
    assert_eq!(served(&app.sim, Endpoint::SubscriptionReauthorize), 1);
    // After 10 minutes it is answered again.
    app.sim.clock().advance(time::Duration::minutes(6));
    assert_eq!(
        app.sim.send_lifecycle(&id, "reauthorizationRequired").await,
        Some(202)
    );
    eventually(SETTLE, || async move {
        let served = served(&app.sim, Endpoint::SubscriptionReauthorize);
        when(served == 2, served)
    })
    .await
    .expect("SubscriptionReauthorize served 2 times");
    // The subscription lives for days yet: reauthorized, not renewed.
    assert_eq!(served(&app.sim, Endpoint::SubscriptionRenew), 0);
}

#[tokio::test]
async fn reauthorization_required_close_to_expiry_renews_instead() {
    let app = subscribed(tenant_sim(0)).await;
    let app = &app;
    let first = only_subscription(&app.sim);
    app.sim.clock().advance(time::Duration::hours(60));
    assert_eq!(
        app.sim
            .send_lifecycle(&first.id, "reauthorizationRequired")
            .await,
        Some(202)
    );
    eventually(SETTLE, || async move {
        let served = served(&app.sim, Endpoint::SubscriptionRenew);
        when(served == 1, served)
    })
    .await
    .expect("SubscriptionRenew served 1 times");
    assert_eq!(served(&app.sim, Endpoint::SubscriptionReauthorize), 0);
    assert!(only_subscription(&app.sim).expiration > first.expiration);
}

#[tokio::test]
async fn the_simulators_own_reauthorization_events_stop_once_the_app_acts() {
    let mut config = tenant_sim(0);
    // Every subscription is "about to expire": Graph asks at once, then every 10 minutes.
    config.delivery.reauthorization_lead = time::Duration::hours(100);
    let app = subscribed(config).await;
    let app = &app;
    eventually(SETTLE, || async move {
        let served = served(&app.sim, Endpoint::SubscriptionReauthorize);
        when(served == 1, served)
    })
    .await
    .expect("SubscriptionReauthorize served 1 times");
    let posts = app.sim.ledger().webhook_posts();
    // Acted on: Graph does not ask again (unanswered, it would every 10 minutes).
    pass_time(
        &app.sim,
        time::Duration::minutes(35),
        time::Duration::minutes(2),
    )
    .await;
    assert_eq!(app.sim.ledger().webhook_posts(), posts);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionReauthorize), 1);
}

#[tokio::test]
async fn subscription_removed_is_answered_with_a_new_subscription_and_a_sweep() {
    let app = subscribed(tenant_sim(3)).await;
    let app = &app;
    let first = only_subscription(&app.sim);
    assert!(app.sim.remove_subscription(&first.id, true).await);
    eventually(SETTLE, || async move {
        let subscriptions = app.sim.subscriptions().len();
        let swept = app.reconcile_row().await.is_some();
        when(
            subscriptions == 1 && swept,
            format!("{subscriptions} subscriptions, swept: {swept}"),
        )
    })
    .await
    .expect("one new subscription and a sweep");
    assert_ne!(only_subscription(&app.sim).id, first.id);
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 2);
    // The sweep found the tenant's calls, none of which had been stored.
    assert_eq!(app.take_queued_ids().await, sorted(app.tenant_ids()));
}

#[tokio::test]
async fn missed_starts_a_sweep_that_queues_what_is_not_stored() {
    let app = subscribed(tenant_sim(5)).await;
    let app = &app;
    let id = only_subscription(&app.sim).id;
    assert_eq!(app.sim.send_lifecycle(&id, "missed").await, Some(202));
    eventually(SETTLE, || async move {
        let row = app.reconcile_row().await;
        when(row.is_some(), row)
    })
    .await
    .expect("a sweep ran");
    assert_eq!(app.take_queued_ids().await, sorted(app.tenant_ids()));
    assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 1);
}

#[tokio::test]
async fn events_for_another_subscription_or_of_an_unknown_kind_cause_no_graph_request() {
    let app = subscribed(tenant_sim(2)).await;
    let app = &app;
    let ours = only_subscription(&app.sim).id;
    let requests = app.sim.ledger().requests().len();
    let foreign = "0b3c1d2e-0000-4000-8000-00000000abcd";
    // One post, whose events are acted on in order: the last one, ours, is answered with one
    // reauthorization, and once it has been the others have been dealt with.
    let events = [
        (foreign, "reauthorizationRequired"),
        (foreign, "subscriptionRemoved"),
        (foreign, "missed"),
        (ours.as_str(), "somethingGraphAddsLater"),
        // The documentation's own placeholder text.
        (
            ours.as_str(),
            "subscriptionRemoved or missed or reauthorizationRequired",
        ),
        (ours.as_str(), "reauthorizationRequired"),
    ];
    assert_eq!(post_lifecycle_events(app, &events).await, 202);
    eventually(SETTLE, || async move {
        let served = served(&app.sim, Endpoint::SubscriptionReauthorize);
        when(served == 1, served)
    })
    .await
    .expect("our own event is answered");
    let since: Vec<Endpoint> = app.sim.ledger().requests()[requests..]
        .iter()
        .map(|r| r.endpoint)
        .filter(|e| !matches!(e, Endpoint::Token | Endpoint::ManagedIdentityToken))
        .collect();
    assert_eq!(since, [Endpoint::SubscriptionReauthorize]);
    assert!(app.reconcile_row().await.is_none());
    assert!(app.take_queued_ids().await.is_empty());
}

#[tokio::test]
async fn reconcile_queues_exactly_the_records_missing_or_older_than_listed() {
    let app = spawn_fetch_app(start_sim(tenant_sim(12)).await, |_, _| {}).await;
    let ids = sorted(app.tenant_ids());
    app.enqueue_ids(&ids[..6]).await;
    app.drain().await;
    let updated = ids[0].clone();
    let now = app.sim.clock().now();
    assert_eq!(app.sim.reissue(&updated, now, 1), Some(2));

    assert_eq!(app.run_timer("Reconcile").await, 200);
    let jobs = app.take_queued().await;
    let mut expected: Vec<String> = ids[6..].to_vec();
    expected.push(updated);
    assert_eq!(
        sorted(jobs.iter().map(|j| j.id.clone()).collect()),
        sorted(expected)
    );
    assert!(jobs.iter().all(|j| j.change_type == "reconcile"));
    let row = app.reconcile_row().await.unwrap();
    assert_eq!(row.get_i64("LastListed"), Some(12));
    assert_eq!(row.get_i64("LastEnqueued"), Some(7));
    assert!(row.get_datetime("LastSuccessAt").is_some());

    // Once they are stored, a second run queues nothing.
    for job in &jobs {
        app.enqueue(job).await;
    }
    app.drain().await;
    assert_eq!(app.run_timer("Reconcile").await, 200);
    assert!(app.take_queued_ids().await.is_empty());
    let row = app.reconcile_row().await.unwrap();
    assert_eq!(row.get_i64("LastEnqueued"), Some(0));
    assert_eq!(app.stored_ids().await, ids);
}

#[tokio::test]
async fn a_record_given_up_on_is_tried_again_by_reconcile_and_stored() {
    let app = spawn_fetch_app(start_sim(tenant_sim(0)).await, |config, _| {
        config.fetch.policy.not_found_horizon = Duration::from_secs(3600);
        // The record's call lies outside the look-back: only the given-up retry can find it.
        config.subscription.reconcile_passes = vec![Duration::from_secs(3600)];
    })
    .await;
    let id = "6a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    app.enqueue_ids(&[id.to_owned()]).await;
    app.drain_advancing(time::Duration::minutes(20)).await;
    assert_eq!(app.app_state_rows("FetchFailure").await.len(), 1);

    // Graph has it after all.
    let base = support::fetch::fixture_json("callrecord-get-basic.json");
    app.sim
        .insert_record(sim_record(id, base, Vec::new(), Vec::new()));
    assert_eq!(app.run_timer("Reconcile").await, 200);
    let jobs = app.take_queued().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].id.as_str(), jobs[0].change_type.as_str()),
        (id, "retry")
    );
    app.enqueue(&jobs[0]).await;
    app.drain().await;
    assert_eq!(app.stored_ids().await, [id]);
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
    assert_eq!(app.run_timer("Reconcile").await, 200);
    assert!(app.take_queued_ids().await.is_empty());
}

#[tokio::test]
async fn notifications_graph_never_sent_are_found_by_reconcile() {
    const CALLS: usize = 120;
    let mut config = tenant_sim(CALLS);
    config.tenant.start = sim_start();
    config.tenant.span = time::Duration::hours(1);
    config.faults.drop_rate = 0.10;
    let app = subscribed(config).await;
    let app = &app;
    // Calls of up to an hour in the first hour, available up to 30 minutes after they end; their
    // hour's first pass is due 3 hours after it ends.
    pass_time(
        &app.sim,
        time::Duration::hours(4),
        time::Duration::minutes(5),
    )
    .await;
    eventually(SETTLE, || async move {
        let notified = app.sim.ledger().notifications().len();
        when(notified == CALLS, notified)
    })
    .await
    .expect("every call notified");
    let dropped = app
        .sim
        .ledger()
        .notifications()
        .iter()
        .filter(|n| n.outcome == Outcome::Dropped)
        .count();
    assert!(dropped >= 5, "{dropped} notifications dropped");
    app.drain().await;
    assert_eq!(app.stored_ids().await.len(), CALLS - dropped);

    assert_eq!(app.run_timer("Reconcile").await, 200);
    let row = app.reconcile_row().await.unwrap();
    assert_eq!(
        row.get_i64("LastEnqueued"),
        Some(i64::try_from(dropped).unwrap())
    );
    app.drain().await;
    assert_eq!(app.stored_ids().await, sorted(app.tenant_ids()));
}

async fn post(app: &FetchApp, path_and_query: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path_and_query}", app.host.base()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("x-functions-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const RANGE: &str = "from=2026-11-20T01:00:00Z&to=2026-11-20T08:00:00Z";

#[tokio::test]
async fn backfill_and_reprocess_need_a_key_in_standalone_mode() {
    let app = spawn_fetch_app(start_sim(tenant_sim(0)).await, |config, _| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec!["the-right-key".to_owned().into()];
    })
    .await;
    let ids = r#"["6a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"]"#;
    for (path, body) in [
        (format!("/api/ops/backfill?{RANGE}"), ""),
        ("/api/ops/reprocess".to_owned(), ids),
    ] {
        assert_eq!(post(&app, &path, None, body).await.0, 401, "{path}");
        assert_eq!(
            post(&app, &path, Some("wrong"), body).await.0,
            401,
            "{path}"
        );
        let wrong_code = if path.contains('?') {
            "&code=wrong"
        } else {
            "?code=wrong"
        };
        assert_eq!(
            post(&app, &format!("{path}{wrong_code}"), None, body)
                .await
                .0,
            401
        );
        // Refused: nothing recorded, nothing queued (the windows of the backfill, the queue of
        // the reprocess; the other route's accepted requests came before).
        if path.contains("backfill") {
            assert!(app.app_state_rows("ReconcileWindow").await.is_empty());
        } else {
            assert_eq!(app.queue.approximate_count().await.unwrap(), 0);
        }

        assert_eq!(
            post(&app, &path, Some("the-right-key"), body).await.0,
            202,
            "{path}"
        );
        let right_code = wrong_code.replace("wrong", "the-right-key");
        assert_eq!(
            post(&app, &format!("{path}{right_code}"), None, body)
                .await
                .0,
            202
        );
    }
}

#[tokio::test]
async fn bad_backfill_ranges_and_id_lists_get_a_400_and_change_nothing() {
    let app = spawn_fetch_app(start_sim(tenant_sim(3)).await, |_, _| {}).await;
    for query in [
        "",
        "from=2026-11-20T01:00:00Z",
        "from=yesterday&to=2026-11-20T08:00:00Z",
        "from=2026-11-20T08:00:00Z&to=2026-11-20T01:00:00Z",
        "from=2026-11-20T08:00:00Z&to=2026-11-20T08:00:00Z",
        "from=2026-10-01T00:00:00Z&to=2026-11-20T08:00:00Z",
        "from=2026-11-20T08:00:00Z&to=2026-11-22T08:00:00Z",
        "from=2026-11-20T01:00:00Z&to=2026-11-20T08:00:00Z&days=3",
    ] {
        let (status, body) = post(&app, &format!("/api/ops/backfill?{query}"), None, "").await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "BadRequest", "{query}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let too_many: Vec<String> = (0..1001)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    let too_many = serde_json::to_string(&too_many).unwrap();
    for body in [
        "not json",
        "{}",
        "[]",
        "[1, 2]",
        r#"["not-a-guid"]"#,
        r#"["6a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "../../x"]"#,
        r#"{"ids": ["6a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", ""]}"#,
        too_many.as_str(),
    ] {
        let (status, answer) = post(&app, "/api/ops/reprocess", None, body).await;
        assert_eq!(status, 400, "{body:.60}");
        assert_eq!(answer["error"]["code"], "BadRequest");
    }
    assert!(app.app_state_rows("ReconcileWindow").await.is_empty());
    assert!(app.reconcile_row().await.is_none());
    assert_eq!(app.queue.approximate_count().await.unwrap(), 0);
}

#[tokio::test]
async fn backfill_sweeps_its_range_and_reprocess_queues_its_ids_for_rewriting() {
    let app = spawn_fetch_app(start_sim(tenant_sim(5)).await, |config, _| {
        // The calls (6 to 3 hours before now) lie outside the look-back: only the backfill finds them.
        config.subscription.reconcile_passes = vec![Duration::from_secs(3600)];
    })
    .await;
    let app = &app;
    let (status, body) = post(app, &format!("/api/ops/backfill?{RANGE}"), None, "").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    eventually(SETTLE, || async move {
        let swept = app.reconcile_row().await.is_some();
        let waiting = app.app_state_rows("ReconcileWindow").await.len();
        when(
            swept && waiting == 0,
            format!("swept: {swept}, {waiting} spans waiting"),
        )
    })
    .await
    .expect("a sweep ran and no span is left waiting");
    let ids = sorted(app.tenant_ids());
    assert_eq!(app.take_queued_ids().await, ids);

    let upper: Vec<String> = ids[..2].iter().map(|id| id.to_uppercase()).collect();
    let (status, body) = post(
        app,
        "/api/ops/reprocess",
        None,
        &json!({"ids": [upper[0], upper[1], upper[0]]}).to_string(),
    )
    .await;
    assert_eq!((status, body["queued"].as_u64()), (202, Some(2)));
    let jobs = app.take_queued().await;
    assert_eq!(
        sorted(jobs.iter().map(|j| j.id.clone()).collect()),
        ids[..2].to_vec()
    );
    assert!(
        jobs.iter()
            .all(|j| j.repair && j.change_type == "reprocess")
    );
}
