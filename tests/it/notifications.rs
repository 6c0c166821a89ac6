//! The `Notifications` and `Lifecycle` webhooks against real Azurite, driven through the host emulator.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use support::{
    CLIENT_STATE, Setup, TENANT_ID, callrecord_notification, collection_of, spawn_app,
    spawn_app_with,
};

const CALL_ID: &str = "2f1a1100-b174-40a0-aba7-0b405e01ed92";

#[tokio::test]
async fn validation_request_gets_the_decoded_token_as_plain_text_on_both_webhooks() {
    let app = spawn_app().await;
    let tokens = [
        // (as Graph puts it in the URL, what we must answer)
        (
            "Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+7d1a",
            "Validation: Testing client application reachability for subscription Request-Id: 7d1a",
        ),
        (
            "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "<script>alert(1)</script>",
        ),
        ("Gr%C3%BC%C3%9Fe+%E2%9C%93", "Grüße ✓"),
    ];
    for route in ["/api/notifications", "/api/lifecycle"] {
        for (encoded, decoded) in tokens {
            // Graph sends the handshake with an empty text/plain body.
            let response = app
                .host
                .forward(
                    reqwest::Method::POST,
                    &format!("{route}?validationToken={encoded}"),
                    Some("text/plain; charset=utf-8"),
                    "",
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{route} {encoded}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                content_type.starts_with("text/plain"),
                "{route}: content type {content_type}"
            );
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            assert_eq!(response.text().await.unwrap(), decoded, "{route}");
        }
    }
    assert_eq!(
        app.drain_queue().await,
        vec![],
        "a handshake enqueues nothing"
    );
}

#[tokio::test]
async fn documented_call_record_notification_is_enqueued_once_as_base64_json() {
    let app = spawn_app().await;

    let response = app
        .post_notification(callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID))
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let jobs = app.drain_queue().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.id, CALL_ID);
    assert_eq!(job.change_type, "created");
    assert_eq!(job.tenant_id, TENANT_ID);
    assert_eq!(job.subscription_id, "9f4f0e2e-3c1f-4f6a-9d7b-1d2c3b4a5e6f");
    assert_eq!(job.attempt, 0);
    let age = time::OffsetDateTime::now_utc() - job.received_at;
    assert!(
        age < time::Duration::minutes(1) && age >= time::Duration::ZERO,
        "received_at {}",
        job.received_at
    );
}

#[tokio::test]
async fn notification_is_enqueued_with_a_sas_connection_string() {
    let mut setup = Setup::azurite();
    setup.connection_string = support::azurite().sas_connection_string();
    let app = spawn_app_with(setup).await;
    // The SAS may add messages but not create queues: as in Azure, the queue exists beforehand.
    app.reader.ensure_exists().await.unwrap();

    let response = app
        .post_notification(callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID))
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ids = app.enqueued_ids().await;
    assert_eq!(ids, vec![CALL_ID.to_owned()]);
}

#[tokio::test]
async fn every_item_of_a_100_item_collection_is_enqueued_exactly_once() {
    let app = spawn_app().await;
    let ids: Vec<String> = (0..100)
        .map(|i| format!("0000{i:04}-b174-40a0-aba7-0b405e01ed92"))
        .collect();

    let response = app.post_notification(collection_of(&ids)).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let jobs = app.drain_queue().await;
    assert_eq!(jobs.len(), 100);
    let enqueued: BTreeSet<String> = jobs.into_iter().map(|j| j.id).collect();
    assert_eq!(enqueued, ids.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn notification_is_not_enqueued_when_a_check_fails() {
    let app = spawn_app().await;
    let wrong_state = callrecord_notification(CALL_ID, "s3cr3t-Client-State-7f9d", TENANT_ID);
    let mut missing_state: serde_json::Value =
        serde_json::from_str(&callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID)).unwrap();
    missing_state["value"][0]
        .as_object_mut()
        .unwrap()
        .remove("clientState");
    let other_tenant = callrecord_notification(
        CALL_ID,
        CLIENT_STATE,
        "00000000-0000-0000-0000-000000000001",
    );
    let not_a_call_record = support::fixture("graph/change-notification-generic-message.json")
        .replace("secretClientValue", CLIENT_STATE)
        .replace("84bd8158-6d4d-4958-8b9f-9d6445542f95", TENANT_ID);
    let cases = [
        ("wrong clientState", wrong_state),
        ("missing clientState", missing_state.to_string()),
        ("other tenant", other_tenant),
        ("not a call record", not_a_call_record),
    ];
    for (case, body) in cases {
        let response = app.post_notification(body).await;
        // Accepted (Graph must not retry it), but dropped.
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{case}");
        assert_eq!(app.drain_queue().await, vec![], "{case}: was enqueued");
    }
}

#[tokio::test]
async fn rejected_notifications_are_counted_per_reason_with_the_time_last_seen_and_no_secret() {
    let app = spawn_app().await;
    let forged = "s3cr3t-Client-State-after-a-redeploy";
    for _ in 0..3 {
        let response = app
            .post_notification(callrecord_notification(CALL_ID, forged, TENANT_ID))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let foreign = callrecord_notification(
        CALL_ID,
        CLIENT_STATE,
        "00000000-0000-0000-0000-000000000001",
    );
    app.post_notification(foreign).await;
    assert_eq!(app.drain_queue().await, vec![]);

    let counted = |rows: &[table_storage::Entity]| {
        rows.iter()
            .map(|e| {
                let count = match e.properties.get("Count") {
                    Some(table_storage::EdmValue::Int64(n)) => *n,
                    other => panic!("Count: {other:?}"),
                };
                (e.row_key.clone(), count)
            })
            .collect::<BTreeSet<_>>()
    };
    let mut rows = app.app_state_rows("NotificationRejected", 2).await;
    for _ in 0..100 {
        if counted(&rows).contains(&("notification-client_state".to_owned(), 3)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        rows = app.app_state_rows("NotificationRejected", 2).await;
    }
    assert_eq!(
        counted(&rows),
        BTreeSet::from([
            ("notification-client_state".to_owned(), 3),
            ("notification-tenant".to_owned(), 1)
        ])
    );
    for row in &rows {
        assert!(row.properties.contains_key("LastSeenAt"), "{row:?}");
        assert!(row.properties.contains_key("FirstSeenAt"), "{row:?}");
        let text = format!("{row:?}");
        assert!(
            !text.contains(forged) && !text.contains(CLIENT_STATE),
            "{text}"
        );
    }
}

#[tokio::test]
async fn only_the_valid_items_of_a_mixed_collection_are_enqueued() {
    let app = spawn_app().await;
    let good: serde_json::Value =
        serde_json::from_str(&callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID)).unwrap();
    let bad: serde_json::Value =
        serde_json::from_str(&callrecord_notification("forged-id", "guess", TENANT_ID)).unwrap();
    let body = serde_json::json!({"value": [bad["value"][0], good["value"][0]]});

    let response = app.post_notification(body.to_string()).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ids = app.enqueued_ids().await;
    assert_eq!(ids, vec![CALL_ID.to_owned()]);
}

#[tokio::test]
async fn malformed_json_is_rejected_with_400_and_nothing_is_enqueued() {
    let app = spawn_app().await;
    for (case, body) in [
        ("truncated", r#"{"value":[{"clientState":"#.to_owned()),
        ("not an object", "[1,2,3]".to_owned()),
        (
            "value is not an array",
            r#"{"value":{"id":"x"}}"#.to_owned(),
        ),
        ("no value", r#"{"items":[]}"#.to_owned()),
        ("empty body", String::new()),
    ] {
        let response = app.post_notification(body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "BadRequest", "{case}");
        assert!(
            !error.to_string().contains("clientState"),
            "{case}: the error echoes the input: {error}"
        );
    }
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn body_over_one_mebibyte_is_rejected_with_413_and_nothing_is_enqueued() {
    let app = spawn_app().await;
    // Valid notifications, so that only the size can be the reason.
    let ids: Vec<String> = (0..3000).map(|i| format!("big-{i:06}")).collect();
    let body = collection_of(&ids);
    assert!(
        body.len() > 1024 * 1024,
        "test body is only {} bytes",
        body.len()
    );

    let with_length = app.post_notification(body.clone()).await;
    let chunked = app
        .post_notification(reqwest::Body::wrap_stream(futures::stream::iter(
            body.into_bytes()
                .chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .await;

    assert_eq!(with_length.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: serde_json::Value = chunked.json().await.unwrap();
    assert_eq!(error["error"]["code"], "PayloadTooLarge");
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn body_of_exactly_one_mebibyte_is_still_accepted() {
    let app = spawn_app().await;
    let mut body = callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID);
    // JSON allows trailing white space: pad to the limit exactly.
    body.push_str(&" ".repeat(1024 * 1024 - body.len()));

    let response = app.post_notification(body).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.drain_queue().await.len(), 1);
}

#[tokio::test]
async fn empty_value_array_is_accepted_and_nothing_is_enqueued() {
    let app = spawn_app().await;
    let response = app.post_notification(r#"{"value":[]}"#).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn unknown_extra_fields_are_ignored() {
    let app = spawn_app().await;
    let mut body: serde_json::Value =
        serde_json::from_str(&callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID)).unwrap();
    body["validationTokens"] = serde_json::json!(["eyJ0eXAiOiJKV1QifQ.e30."]);
    body["value"][0]["encryptedContent"] = serde_json::json!({"data": "…"});
    body["value"][0]["resourceData"]["@odata.etag"] = serde_json::json!("W/\"1\"");
    body["value"][0]["id"] = serde_json::json!("lsgTZMr9KwAAA");

    let response = app.post_notification(body.to_string()).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ids = app.enqueued_ids().await;
    assert_eq!(ids, vec![CALL_ID.to_owned()]);
}

/// The app with its queue endpoint behind a switchable proxy.
async fn spawn_app_behind_proxy() -> (support::TestApp, support::proxy::ToggleProxy) {
    let azurite = support::azurite();
    let target = azurite.queue_endpoint.socket_addrs(|| None).unwrap()[0];
    let proxy = support::proxy::ToggleProxy::start(target).await;
    let mut setup = Setup::azurite();
    setup
        .queue_endpoint
        .set_port(Some(proxy.addr.port()))
        .unwrap();
    setup.connection_string = setup.connection_string.replace(
        azurite.queue_endpoint.as_str(),
        setup.queue_endpoint.as_str(),
    );
    (spawn_app_with(setup).await, proxy)
}

#[tokio::test]
async fn notification_gets_503_while_storage_is_down_and_the_same_post_succeeds_once_it_is_back() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let body = callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID);

    proxy.set_up(false);
    let started = std::time::Instant::now();
    let down = app.post_notification(body.clone()).await;
    let waited = started.elapsed();
    let down_status = down.status();
    let retry_after = down.headers().get("retry-after").cloned();
    let down_body = down.text().await.unwrap();
    assert_eq!(
        app.drain_queue().await,
        vec![],
        "nothing is stored while storage is down"
    );

    proxy.set_up(true);
    let back = app.post_notification(body).await;

    assert_eq!(down_status, StatusCode::SERVICE_UNAVAILABLE, "{down_body}");
    assert!(retry_after.is_some());
    assert!(
        waited < std::time::Duration::from_secs(3),
        "Graph waits 3 s; we took {waited:?}"
    );
    for secret in [
        support::azurite::ACCOUNT_KEY,
        "sig=",
        "127.0.0.1",
        CLIENT_STATE,
    ] {
        assert!(
            !down_body.contains(secret),
            "503 body leaks `{secret}`: {down_body}"
        );
    }
    assert_eq!(back.status(), StatusCode::ACCEPTED);
    let ids = app.enqueued_ids().await;
    assert_eq!(ids, vec![CALL_ID.to_owned()]);
}

#[tokio::test]
async fn notification_gets_503_within_graphs_3_seconds_when_storage_hangs() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    proxy.set(support::proxy::Mode::BlackHole);

    let started = std::time::Instant::now();
    let response = app
        .post_notification(callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID))
        .await;
    let waited = started.elapsed();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited < std::time::Duration::from_secs(3),
        "Graph waits 3 s; we took {waited:?}"
    );
    proxy.set_up(true);
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn lifecycle_events_are_acknowledged_and_malformed_ones_rejected() {
    let app = spawn_app().await;
    let body = support::fixture("graph/lifecycle-reauthorizationrequired.json")
        .replace("{secret client state}", CLIENT_STATE);

    let response = app
        .host
        .forward(
            reqwest::Method::POST,
            "/api/lifecycle",
            Some("application/json"),
            body,
        )
        .await;
    let malformed = app
        .host
        .forward(
            reqwest::Method::POST,
            "/api/lifecycle",
            Some("application/json"),
            "{",
        )
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    // Lifecycle events are not call records: the fetch queue stays empty.
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn handler_logs_never_contain_the_client_state_tokens_keys_or_signatures() {
    // The shipped binary at the most verbose level, storage behind a switch, so that failures are
    // logged too.
    let azurite = support::azurite();
    let proxy = support::proxy::ToggleProxy::start(
        azurite.queue_endpoint.socket_addrs(|| None).unwrap()[0],
    )
    .await;
    let mut queue_via_proxy = azurite.queue_endpoint.clone();
    queue_via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let connection = azurite
        .connection_string()
        .replace(azurite.queue_endpoint.as_str(), queue_via_proxy.as_str());
    let handler = support::HandlerProcess::start(&[
        ("GRAPH_TENANT_ID", TENANT_ID),
        ("NOTIFICATION_CLIENT_STATE", CLIENT_STATE),
        ("AzureWebJobsStorage", &connection),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let post = |body: String, query: &'static str| {
        let host = &handler.host;
        async move {
            host.forward(
                reqwest::Method::POST,
                &format!("/api/notifications{query}"),
                Some("application/json"),
                body,
            )
            .await
            .status()
        }
    };
    let forged_state = "forged-state-Zq81";

    let forged = post(
        callrecord_notification(CALL_ID, forged_state, TENANT_ID),
        "",
    )
    .await;
    let accepted = post(
        callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID),
        "",
    )
    .await;
    let handshake = post(
        String::new(),
        "?validationToken=token-Xy7%21&code=function-key-Qw3",
    )
    .await;
    proxy.set_up(false);
    let down = post(
        callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID),
        "",
    )
    .await;
    proxy.set_up(true);
    let logs = handler.stop().await;

    assert_eq!(
        [forged, accepted, handshake, down],
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    for expected in [
        "notification items dropped",
        "notifications accepted",
        "storage is unavailable",
        "invocation_id",
    ] {
        assert!(
            logs.contains(expected),
            "no `{expected}` in the logs:\n{logs}"
        );
    }
    for secret in [
        CLIENT_STATE,
        forged_state,
        support::azurite::ACCOUNT_KEY,
        "token-Xy7",
        "function-key-Qw3",
    ] {
        let line = logs.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "a log line contains `{secret}`: {line:?}");
    }
    // Request URLs are logged (by the SDK at debug, in transport errors): never with the SAS signature.
    let leaked = logs
        .split("sig=")
        .skip(1)
        .find(|rest| !rest.starts_with("REDACTED"));
    assert!(leaked.is_none(), "a SAS signature is logged");
}
