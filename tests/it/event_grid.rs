//! Event Grid delivery (`NOTIFICATION_DELIVERY=eventGrid`) against Azurite, the Graph simulator
//! and the host emulator: the simulator's partner topic writes Graph's CloudEvents into the app's
//! call-record queue, in both encodings Event Grid is reported to use, and `FetchCallRecord` turns
//! them into stored records; bad events are refused and counted, a reauthorization event is acted
//! on, the subscription is made, renewed and replaced in the `EventGrid:` form, and the webhooks
//! answer nobody.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::event_grid::{Encoding, event_grid_app, event_grid_sim, spawn_event_grid_app, topic};
use support::fetch::FetchApp;
use support::graph::{sim_config, sim_start};
use support::lifecycle::{eventually, pass_time, served, spawn_subscribing_app, when};
use support::{CLIENT_STATE, TENANT_ID};
use teams_cdr_sim::{Endpoint, Outcome, SimConfig};

const SETTLE: Duration = Duration::from_secs(20);

/// A tenant of the app's, whose `calls` calls start over the hour after `sim_start`.
fn tenant(calls: usize) -> SimConfig {
    let mut config = sim_config(calls);
    config.tenant.tenant_id = TENANT_ID.to_owned();
    config.tenant.start = sim_start();
    config.tenant.span = time::Duration::hours(1);
    config
}

async fn subscribed(calls: usize, encoding: Encoding) -> FetchApp {
    let app = event_grid_app(tenant(calls), encoding, |_, _| {}).await;
    assert_eq!(app.run_timer("MaintainSubscription").await, 200);
    app
}

/// A CloudEvent for call record `id` as Graph's partner topic carries it.
fn event(kind: &str, id: &str, client_state: &str, tenant: &str) -> String {
    json!({
        "id": format!("evt-{id}-{kind}"),
        "source": format!("/tenants/{tenant}/applications/11111111-2222-3333-4444-555555555555"),
        "specversion": "1.0",
        "type": kind,
        "subject": format!("communications/callRecords/{id}"),
        "time": "2026-11-20T09:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "changeType": if kind.ends_with("Created") { "created" } else { "updated" },
            "clientState": client_state,
            "resource": format!("communications/callRecords/{id}"),
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.callRecord",
                "@odata.id": format!("communications/callRecords/{id}"),
                "id": id
            },
            "subscriptionExpirationDateTime": "2026-11-23T08:00:00Z",
            "subscriptionId": "0d1b4b5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "tenantId": tenant
        }
    })
    .to_string()
}

#[tokio::test]
async fn records_notified_through_event_grid_are_stored_whichever_encoding_it_writes() {
    for encoding in [Encoding::Base64, Encoding::Plain] {
        let app = subscribed(12, encoding).await;
        let subscription = app.sim.subscriptions().into_iter().next().unwrap();
        assert_eq!(subscription.notification_url, topic().url());
        assert_eq!(
            subscription.lifecycle_url.as_deref(),
            Some(topic().url().as_str())
        );
        pass_time(
            &app.sim,
            time::Duration::hours(3),
            time::Duration::minutes(15),
        )
        .await;
        let run = app.drain().await;
        assert_eq!(run.poisoned, 0, "{encoding:?}");
        assert_eq!(app.stored_ids().await, {
            let mut ids = app.tenant_ids();
            ids.sort();
            ids
        });
        let delivered = app
            .sim
            .ledger()
            .notifications()
            .iter()
            .filter(|n| matches!(n.outcome, Outcome::Delivered { .. }))
            .count();
        assert_eq!(delivered, 12, "{encoding:?}: one event per record");
        // Nothing went through a webhook, and no validation handshake was asked for.
        assert_eq!(served(&app.sim, Endpoint::SubscriptionCreate), 1);
        assert!(
            app.rows(&app.tables.records)
                .await
                .iter()
                .all(|r| r.get_i64("Version") == Some(1))
        );
    }
}

#[tokio::test]
async fn duplicate_and_reordered_events_store_each_record_once_at_its_newest_version() {
    let app = event_grid_app(tenant(2), Encoding::Plain, |_, _| {}).await;
    app.sim.clock().advance(time::Duration::hours(3));
    let ids = app.tenant_ids();
    let updated = &ids[0];
    assert_eq!(app.sim.reissue(updated, app.sim.clock().now(), 1), Some(2));
    // The update before the creation, each twice, and the other record three times, both
    // encodings mixed on one queue.
    for (kind, id, encoding) in [
        (
            "Microsoft.Graph.CallRecordUpdated",
            updated,
            Encoding::Base64,
        ),
        (
            "Microsoft.Graph.CallRecordUpdated",
            updated,
            Encoding::Plain,
        ),
        (
            "Microsoft.Graph.CallRecordCreated",
            updated,
            Encoding::Plain,
        ),
        (
            "Microsoft.Graph.CallRecordCreated",
            updated,
            Encoding::Base64,
        ),
        (
            "Microsoft.Graph.CallRecordCreated",
            &ids[1],
            Encoding::Plain,
        ),
        (
            "Microsoft.Graph.CallRecordCreated",
            &ids[1],
            Encoding::Base64,
        ),
        (
            "Microsoft.Graph.CallRecordCreated",
            &ids[1],
            Encoding::Plain,
        ),
    ] {
        let text = encoding.encode(&event(kind, id, CLIENT_STATE, TENANT_ID));
        app.queue.send_text(text, 0).await.unwrap();
    }
    // Duplicates that meet the first one's write lease are put back until it ends (minutes).
    let run = app.drain_advancing(time::Duration::minutes(6)).await;
    assert_eq!(run.poisoned, 0);
    let rows = app.rows(&app.tables.records).await;
    assert_eq!(rows.len(), 2);
    let version = |id: &str| {
        rows.iter()
            .find(|r| r.row_key == id)
            .and_then(|r| r.get_i64("Version"))
    };
    assert_eq!(version(updated), Some(2));
    assert_eq!(version(&ids[1]), Some(1));
}

#[tokio::test]
async fn events_with_a_wrong_client_state_a_foreign_tenant_or_another_type_are_refused_and_counted()
{
    let app = event_grid_app(tenant(1), Encoding::Base64, |_, _| {}).await;
    app.sim.clock().advance(time::Duration::hours(3));
    let id = app.tenant_ids().remove(0);
    let created = "Microsoft.Graph.CallRecordCreated";
    for text in [
        event(created, &id, "a-guessed-client-state", TENANT_ID),
        event(
            created,
            &id,
            CLIENT_STATE,
            "00000000-0000-4000-8000-000000000099",
        ),
        event("Microsoft.Graph.UserUpdated", &id, CLIENT_STATE, TENANT_ID),
    ] {
        for encoding in [Encoding::Base64, Encoding::Plain] {
            app.queue
                .send_text(encoding.encode(&text), 0)
                .await
                .unwrap();
        }
    }
    let run = app.drain().await;
    assert_eq!(run.poisoned, 0, "never retried for ever");
    assert_eq!(run.failures, 0);
    assert!(app.stored_ids().await.is_empty());
    assert_eq!(
        served(&app.sim, Endpoint::CallRecord),
        0,
        "no Graph request for any"
    );
    let counted = eventually(SETTLE, || async {
        let rows = app.app_state_rows("NotificationRejected").await;
        let count = |key: &str| {
            rows.iter()
                .find(|r| r.row_key == key)
                .and_then(|r| r.get_i64("Count"))
                .unwrap_or(0)
        };
        let seen = (
            count("eventGrid-client_state"),
            count("eventGrid-tenant"),
            count("eventGrid-event_type"),
        );
        when(seen == (2, 2, 2), seen)
    })
    .await;
    assert!(counted.is_ok(), "{counted:?}");
    // Nothing of the events is kept: no client state in storage.
    for row in app.app_state_rows("NotificationRejected").await {
        assert!(!format!("{row:?}").contains("a-guessed-client-state"));
    }
}

#[tokio::test]
async fn a_reauthorization_event_through_event_grid_is_acted_on_once() {
    let app = subscribed(0, Encoding::Base64).await;
    let id = app.sim.subscriptions()[0].id.clone();
    for _ in 0..3 {
        assert_eq!(
            app.sim.send_lifecycle(&id, "reauthorizationRequired").await,
            Some(202)
        );
    }
    app.drain().await;
    // One answer per 10 minutes, however often Graph asks.
    assert_eq!(served(&app.sim, Endpoint::SubscriptionReauthorize), 1);
    let forged = {
        let mut event: Value = serde_json::from_str(&event(
            "Microsoft.Graph.SubscriptionReauthorizationRequired",
            "x",
            "a-guessed-client-state",
            TENANT_ID,
        ))
        .unwrap();
        event["data"]["lifecycleEvent"] = json!("reauthorizationRequired");
        event["data"]["subscriptionId"] = json!(id);
        event.to_string()
    };
    app.sim.clock().advance(time::Duration::minutes(11));
    app.queue.send_text(forged, 0).await.unwrap();
    app.drain().await;
    assert_eq!(
        served(&app.sim, Endpoint::SubscriptionReauthorize),
        1,
        "a forged event is not acted on"
    );
}

#[tokio::test]
async fn the_subscription_is_renewed_in_place_and_a_change_of_mode_replaces_it() {
    // Webhook mode first, as deployed before.
    let (sim, destination) = event_grid_sim(tenant(0), Encoding::Base64).await;
    let webhook = spawn_subscribing_app(Arc::clone(&sim), |_, _| {}).await;
    assert_eq!(webhook.run_timer("MaintainSubscription").await, 200);
    let first = sim.subscriptions()[0].clone();
    assert!(first.notification_url.ends_with("/api/notifications"));

    // The same tenant and tables, now with Event Grid: the webhook subscription goes and one in
    // the EventGrid: form comes, without a validation handshake.
    let names = webhook.names.clone();
    let switched = spawn_event_grid_app(Arc::clone(&sim), &destination, move |config, _| {
        config.tables = names;
    })
    .await;
    assert_eq!(switched.run_timer("MaintainSubscription").await, 200);
    let subscriptions = sim.subscriptions();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    assert_ne!(subscriptions[0].id, first.id);
    assert_eq!(subscriptions[0].notification_url, topic().url());
    assert_eq!(served(&sim, Endpoint::SubscriptionDelete), 1);

    // Renewed in place: the EventGrid: target, listed back, is recognised as ours.
    sim.clock().advance(time::Duration::hours(2));
    assert_eq!(switched.run_timer("MaintainSubscription").await, 200);
    let renewed = sim.subscriptions();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].id, subscriptions[0].id);
    assert_eq!(served(&sim, Endpoint::SubscriptionRenew), 1);
    assert_eq!(served(&sim, Endpoint::SubscriptionCreate), 2);

    // In this mode the webhooks answer nobody, not even Graph's handshake.
    for route in ["notifications", "lifecycle"] {
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/api/{route}?validationToken=hello",
                switched.host.base()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404, "{route}");
    }
}
