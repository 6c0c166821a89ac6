//! The simulator against Microsoft's documented payloads and rules; `https` serves it as Entra ID
//! for the real `azure_identity` credential.

// Helpers in test crates panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod https;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};
use teams_cdr_sim::{
    DeliveryConfig, Endpoint, Faults, Outcome, RunningSim, SimClock, SimConfig, Tenant, TenantSpec,
};
use time::macros::datetime;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/graph/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Properties Graph no longer fills (`organizer`/`participants` stopped on 2026-06-30) and paging
/// links, which depend on the data: allowed to be absent on either side.
const OPTIONAL: &[&str] = &[
    "organizer",
    "participants",
    "@odata.nextLink",
    "sessions@odata.nextLink",
    "participants_v2@odata.nextLink",
];

/// Differences in property names, JSON types and nesting (a `null` in the fixture matches anything;
/// array elements are compared with the fixture's first element).
fn shape_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().chain(a.keys()).collect::<BTreeSet<_>>() {
                match (e.get(k), a.get(k)) {
                    (Some(ev), Some(av)) => shape_diff(ev, av, &format!("{path}/{k}"), out),
                    _ if OPTIONAL.contains(&k.as_str()) => {}
                    (Some(_), None) => out.push(format!("{path}/{k} missing")),
                    (None, Some(_)) => out.push(format!("{path}/{k} not in the fixture")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, item) in a.iter().enumerate() {
                    shape_diff(first, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        (e, a) if std::mem::discriminant(e) == std::mem::discriminant(a) => {}
        (e, a) => out.push(format!(
            "{path}: {} in the fixture, {} served",
            kind(e),
            kind(a)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn assert_shape(name: &str, expected: &Value, actual: &Value) {
    let mut diffs = Vec::new();
    shape_diff(expected, actual, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{name} differs from its fixture:\n{}",
        diffs.join("\n")
    );
}

fn config(spec: TenantSpec) -> SimConfig {
    SimConfig {
        tenant: spec,
        clock: SimClock::manual(NOW),
        delivery: DeliveryConfig {
            tick: Duration::from_millis(10),
            backoff_initial: Duration::from_millis(20),
            ..DeliveryConfig::default()
        },
        ..SimConfig::default()
    }
}

fn spec() -> TenantSpec {
    TenantSpec {
        start: NOW - time::Duration::hours(12),
        span: time::Duration::hours(6),
        availability_delay: (time::Duration::minutes(5), time::Duration::minutes(150)),
        ..TenantSpec::default()
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    base: String,
}

impl Client {
    fn new(sim: &RunningSim) -> Self {
        Self {
            http: reqwest::Client::new(),
            token: sim.token(),
            base: sim.base_url().to_owned(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn get(&self, path_or_url: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path_or_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Follows `nextLink_key` from `first` until the end; returns every item of `items_key` pages.
    async fn follow(&self, first: Value, items_key: &str, next_key: &str) -> (Vec<Value>, usize) {
        let mut items: Vec<Value> = first[items_key].as_array().cloned().unwrap_or_default();
        let mut next = first[next_key].as_str().map(str::to_owned);
        let mut requests = 0;
        while let Some(url) = next {
            let (status, page) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{url}");
            requests += 1;
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        (items, requests)
    }
}

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn report_path(function: &str, from: OffsetDateTime, to: OffsetDateTime) -> String {
    format!(
        "/v1.0/communications/callRecords/{function}(fromDateTime={},toDateTime={})",
        time_text(from),
        time_text(to)
    )
}

#[tokio::test]
async fn every_endpoint_answers_in_the_documented_shape() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        big_meetings: vec![(70, 140)],
        ..spec()
    }))
    .await
    .unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let tenant = sim.tenant();
    let big = tenant
        .records
        .values()
        .find(|r| r.versions[0].sessions.len() == 70)
        .unwrap()
        .id
        .clone();

    let (_, basic) = client
        .get(&format!("/v1.0/communications/callRecords/{big}"))
        .await;
    assert_shape("record", &fixture("callrecord-get-basic.json"), &basic);
    let (_, expanded) = client
        .get(&format!(
            "/v1.0/communications/callRecords/{big}?$expand=sessions($expand=segments)"
        ))
        .await;
    assert_shape(
        "record with sessions",
        &fixture("callrecord-get-expand-sessions-segments.json"),
        &expanded,
    );
    assert!(
        expanded["sessions@odata.nextLink"].is_string(),
        "70 sessions need a second page"
    );
    let (_, participants) = client
        .get(&format!(
            "/v1.0/communications/callRecords/{big}/participants_v2"
        ))
        .await;
    assert_shape(
        "participants_v2",
        &fixture("callrecord-participants_v2-list.json"),
        &participants,
    );
    let (_, sessions) = client
        .get(&format!(
            "/v1.0/communications/callRecords/{big}/sessions?$expand=segments"
        ))
        .await;
    // The sessions-list doc example is an older shape (legacy `identity`); sessions must look like
    // the current expanded ones, in the list envelope.
    let session_shape = &fixture("callrecord-get-expand-sessions-segments.json")["sessions"];
    assert_shape(
        "sessions",
        &json!({"@odata.context": "", "value": session_shape}),
        &sessions,
    );
    let from = NOW - time::Duration::days(2);
    let (_, list) = client
        .get(&format!(
            "/v1.0/communications/callRecords?$filter=startDateTime ge {} and startDateTime lt {}",
            time_text(from),
            time_text(NOW)
        ))
        .await;
    assert_shape(
        "list",
        &fixture("callrecords-list-filter-startdatetime.json"),
        &list,
    );
    let (_, pstn) = client.get(&report_path("getPstnCalls", from, NOW)).await;
    assert_shape(
        "getPstnCalls",
        &fixture("getpstncalls-response.json"),
        &pstn,
    );
    let (_, dr) = client
        .get(&report_path(
            "microsoft.graph.callRecords.getDirectRoutingCalls",
            from,
            NOW,
        ))
        .await;
    assert_shape(
        "getDirectRoutingCalls",
        &fixture("getdirectroutingcalls-response.json"),
        &dr,
    );
    let (status, missing) = client
        .get("/v1.0/communications/callRecords/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_shape(
        "404",
        &fixture("error-404-callrecord-notfound-from-issue.json"),
        &missing,
    );
    for (name, body) in [("list", &list), ("pstn", &pstn), ("dr", &dr)] {
        assert!(
            !body["value"].as_array().unwrap().is_empty(),
            "{name} served nothing"
        );
    }
}

#[tokio::test]
async fn paging_yields_every_item_exactly_once_with_the_minimum_number_of_requests() {
    let mut config = config(TenantSpec {
        call_records: 150,
        big_meetings: vec![(2000, 1000)],
        pstn_rows: 2500,
        direct_routing_rows: 1200,
        ..spec()
    });
    // The 42 requests this meeting needs exceed Graph's 40 per record per 20 s: a real client must
    // wait out a Retry-After half-way. Not the subject here.
    config.limits.per_record.requests = 100;
    let sim = teams_cdr_sim::start(config).await.unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let tenant = sim.tenant();
    let big = tenant
        .records
        .values()
        .find(|r| r.versions[0].sessions.len() == 2000)
        .unwrap();

    let (_, first) = client
        .get(&format!(
            "/v1.0/communications/callRecords/{}?$expand=sessions($expand=segments)",
            big.id
        ))
        .await;
    let (sessions, session_pages) = client
        .follow(first, "sessions", "sessions@odata.nextLink")
        .await;
    let (_, first) = client
        .get(&format!(
            "/v1.0/communications/callRecords/{}/participants_v2",
            big.id
        ))
        .await;
    let (participants, participant_pages) = client.follow(first, "value", "@odata.nextLink").await;

    let ids: HashSet<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!((sessions.len(), ids.len()), (2000, 2000));
    assert!(
        sessions.iter().all(|s| s["segments"].is_array()),
        "segments expanded on every page"
    );
    assert_eq!(participants.len(), 1000);
    assert_eq!(
        participants, *big.versions[0].participants,
        "every participant once, in order"
    );
    // 2000 sessions = 1 + 33 further pages of 60; 1000 participants = 8 pages of 130.
    assert_eq!((session_pages, participant_pages), (33, 7));
    assert_eq!(sim.ledger().count_for_record(&big.id), 1 + 33 + 1 + 7);

    let from = NOW - time::Duration::days(2);
    let (_, first) = client
        .get(&format!(
            "/v1.0/communications/callRecords?$filter=startDateTime ge {} and startDateTime lt {}",
            time_text(from),
            time_text(NOW)
        ))
        .await;
    let (listed, _) = client.follow(first, "value", "@odata.nextLink").await;
    let listed_ids: BTreeSet<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), listed_ids.len(), "a record listed twice");
    assert_eq!(
        listed_ids,
        tenant.records.keys().map(String::as_str).collect()
    );

    let (_, first) = client.get(&report_path("getPstnCalls", from, NOW)).await;
    assert_eq!(first["value"].as_array().unwrap().len(), 1000);
    let (rows, pages) = client.follow(first, "value", "@odata.nextLink").await;
    let row_ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), row_ids.len(), pages), (2500, 2500, 2));
}

#[tokio::test]
async fn records_are_404_before_they_are_available_and_after_30_days() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 1,
        updated_share: 0.0,
        availability_delay: (time::Duration::minutes(150), time::Duration::minutes(150)),
        start: NOW,
        span: time::Duration::seconds(1),
        ..spec()
    }))
    .await
    .unwrap();
    let client = Client::new(&sim);
    let record = sim.tenant().records.into_values().next().unwrap();
    let path = format!("/v1.0/communications/callRecords/{}", record.id);
    let available = record.versions[0].issued_at;

    sim.clock()
        .advance(available - NOW - time::Duration::seconds(1));
    let (before, _) = client.get(&path).await;
    sim.clock().advance(time::Duration::seconds(1));
    let (at, body) = client.get(&path).await;
    sim.clock().advance(time::Duration::days(31));
    let (after, _) = client.get(&path).await;

    assert_eq!(
        (before, at, after),
        (StatusCode::NOT_FOUND, StatusCode::OK, StatusCode::NOT_FOUND)
    );
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn new_versions_replace_old_ones_from_their_issue_time() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 1,
        updated_share: 0.0,
        ..spec()
    }))
    .await
    .unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let id = sim.tenant().records.into_keys().next().unwrap();
    let path = format!("/v1.0/communications/callRecords/{id}?$expand=sessions");
    let (_, v1) = client.get(&path).await;

    let now = sim.clock().now();
    assert_eq!(
        sim.reissue(&id, now + time::Duration::minutes(10), 2),
        Some(2)
    );
    let (_, still_v1) = client.get(&path).await;
    sim.clock().advance(time::Duration::minutes(10));
    let (_, v2) = client.get(&path).await;

    assert_eq!(
        (
            v1["version"].clone(),
            still_v1["version"].clone(),
            v2["version"].clone()
        ),
        (json!(1), json!(1), json!(2))
    );
    assert_eq!(
        v2["sessions"].as_array().unwrap().len(),
        v1["sessions"].as_array().unwrap().len() + 2
    );
}

#[tokio::test]
async fn report_windows_follow_graphs_rules() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        pstn_rows: 50,
        direct_routing_rows: 50,
        ..spec()
    }))
    .await
    .unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let tenant = sim.tenant();
    let from = NOW - time::Duration::days(3);

    let (too_long, _) = client
        .get(&report_path(
            "getPstnCalls",
            from,
            from + time::Duration::days(91),
        ))
        .await;
    let (reversed, _) = client
        .get(&report_path("getDirectRoutingCalls", NOW, from))
        .await;
    // A window that ends exactly at a row's start: getPstnCalls includes it, getDirectRoutingCalls not.
    let pstn_edge = tenant.pstn[10].start;
    let (_, pstn) = client
        .get(&report_path("getPstnCalls", from, pstn_edge))
        .await;
    let dr_edge = tenant.direct_routing[10].start;
    let (_, dr) = client
        .get(&report_path("getDirectRoutingCalls", from, dr_edge))
        .await;

    assert_eq!(
        (too_long, reversed),
        (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST)
    );
    let ids = |body: &Value| {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect::<HashSet<_>>()
    };
    assert!(
        ids(&pstn).contains(tenant.pstn[10].value()["id"].as_str().unwrap()),
        "toDateTime is inclusive for PSTN"
    );
    assert!(
        !ids(&dr).contains(tenant.direct_routing[10].value()["id"].as_str().unwrap()),
        "toDateTime is exclusive for Direct Routing"
    );
    let failed = tenant
        .direct_routing
        .iter()
        .map(|r| r.value())
        .find(|r| r["successfulCall"] == false)
        .unwrap();
    assert_eq!(failed["startDateTime"], "0001-01-01T00:00:00Z");
    assert!(failed["finalSipCode"].as_u64().unwrap() >= 400);
}

/// A webhook that records what it gets: validation tokens (echoed unless told not to) and
/// notification collections (failing the first `fail_first` POSTs).
#[derive(Clone, Default)]
struct Webhook {
    validations: Arc<Mutex<Vec<String>>>,
    posts: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<Mutex<usize>>,
    echo_wrong: bool,
}

async fn webhook_handler(
    State(hook): State<Webhook>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> (AxumStatus, String) {
    if let Some(token) = q.get("validationToken") {
        hook.validations.lock().unwrap().push(token.clone());
        return (
            AxumStatus::OK,
            if hook.echo_wrong {
                "nope".into()
            } else {
                token.clone()
            },
        );
    }
    hook.posts
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    let mut fail = hook.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return (AxumStatus::INTERNAL_SERVER_ERROR, String::new());
    }
    (AxumStatus::ACCEPTED, String::new())
}

async fn start_webhook(hook: Webhook) -> String {
    let app = axum::Router::new()
        .route("/hook", post(webhook_handler))
        .route("/life", post(webhook_handler))
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn subscription(base: &str, expiry: OffsetDateTime) -> Value {
    let mut body = fixture("subscription-create-callrecords-request-created-updated.json");
    body["notificationUrl"] = json!(format!("{base}/hook"));
    body["lifecycleNotificationUrl"] = json!(format!("{base}/life"));
    body["expirationDateTime"] = json!(time_text(expiry));
    body["clientState"] = json!("sim-client-state");
    body
}

/// Creates a subscription whose webhooks are `hook`, expiring at `expiry`; returns Graph's answer.
async fn subscribe(client: &Client, hook: &Webhook, expiry: OffsetDateTime) -> Value {
    let base = start_webhook(hook.clone()).await;
    let (created, body) = client
        .send(
            reqwest::Method::POST,
            "/v1.0/subscriptions",
            &subscription(&base, expiry),
        )
        .await;
    assert_eq!(created, StatusCode::CREATED, "{body}");
    body
}

/// Polls `done` until it holds, failing with `what` after `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscription_create_validates_both_urls_and_enforces_graphs_rules() {
    let sim = teams_cdr_sim::start(config(spec())).await.unwrap();
    let client = Client::new(&sim);
    let hook = Webhook::default();
    let base = start_webhook(hook.clone()).await;
    let wrong_base = start_webhook(Webhook {
        echo_wrong: true,
        ..Webhook::default()
    })
    .await;

    let (too_far, _) = client
        .send(
            reqwest::Method::POST,
            "/v1.0/subscriptions",
            &subscription(&base, NOW + time::Duration::minutes(4231)),
        )
        .await;
    let (wrong_echo, _) = client
        .send(
            reqwest::Method::POST,
            "/v1.0/subscriptions",
            &subscription(&wrong_base, NOW + time::Duration::hours(2)),
        )
        .await;
    let (created, body) = client
        .send(
            reqwest::Method::POST,
            "/v1.0/subscriptions",
            &subscription(&base, NOW + time::Duration::minutes(10)),
        )
        .await;
    let (duplicate, _) = client
        .send(
            reqwest::Method::POST,
            "/v1.0/subscriptions",
            &subscription(&base, NOW + time::Duration::hours(2)),
        )
        .await;

    assert_eq!(
        (too_far, wrong_echo, created, duplicate),
        (
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
            StatusCode::CREATED,
            StatusCode::CONFLICT
        )
    );
    assert_shape(
        "subscription",
        &fixture("subscription-object-response.json"),
        &body,
    );
    let expiry =
        OffsetDateTime::parse(body["expirationDateTime"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(
        expiry,
        NOW + time::Duration::minutes(45),
        "short expiries are raised to 45 minutes"
    );
    let validations = hook.validations.lock().unwrap().clone();
    assert_eq!(
        validations.len(),
        2,
        "notificationUrl and lifecycleNotificationUrl are both validated"
    );

    let id = body["id"].as_str().unwrap();
    let renew = json!({"expirationDateTime": time_text(NOW + time::Duration::hours(70))});
    let (renewed, _) = client
        .send(
            reqwest::Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            &renew,
        )
        .await;
    let (deleted, _) = client
        .send(
            reqwest::Method::DELETE,
            &format!("/v1.0/subscriptions/{id}"),
            &json!({}),
        )
        .await;
    let (renew_gone, _) = client
        .send(
            reqwest::Method::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            &renew,
        )
        .await;
    assert_eq!(
        (renewed, deleted, renew_gone),
        (
            StatusCode::OK,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_FOUND
        )
    );
}

#[tokio::test]
async fn an_expired_subscription_cannot_be_renewed_and_reauthorize_answers_204() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 0,
        ..spec()
    }))
    .await
    .unwrap();
    let client = Client::new(&sim);
    let hook = Webhook::default();
    let body = subscribe(&client, &hook, NOW + time::Duration::hours(2)).await;
    let id = body["id"].as_str().unwrap();
    let path = format!("/v1.0/subscriptions/{id}");
    let renew = json!({"expirationDateTime": time_text(NOW + time::Duration::hours(30))});

    let (reauthorized, _) = client
        .send(
            reqwest::Method::POST,
            &format!("{path}/reauthorize"),
            &json!({}),
        )
        .await;
    sim.clock().advance(time::Duration::hours(3));
    let (renew_expired, _) = client.send(reqwest::Method::PATCH, &path, &renew).await;
    let (listed, list) = client.get("/v1.0/subscriptions").await;

    assert_eq!(reauthorized, StatusCode::NO_CONTENT);
    assert_eq!(
        renew_expired,
        StatusCode::NOT_FOUND,
        "Graph: renewing an expired subscription is a 404"
    );
    assert_eq!(listed, StatusCode::OK);
    assert_eq!(
        list["value"],
        json!([]),
        "expired subscriptions are not listed"
    );
}

#[tokio::test]
async fn notifications_are_delivered_when_records_become_available_and_retried_on_failure() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 12,
        updated_share: 0.0,
        start: NOW,
        ..spec()
    }))
    .await
    .unwrap();
    let client = Client::new(&sim);
    let hook = Webhook {
        fail_first: Arc::new(Mutex::new(1)),
        ..Webhook::default()
    };
    let _ = subscribe(&client, &hook, NOW + time::Duration::hours(70)).await;

    sim.clock().advance(time::Duration::days(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.ledger().notifications().len() < 12 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let notifications = sim.ledger().notifications();
    assert_eq!(notifications.len(), 12);
    assert!(
        notifications
            .iter()
            .all(|n| n.outcome == Outcome::Delivered { attempts: 2 }),
        "{notifications:?}"
    );
    let posts = hook.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "one failed POST, one retry");
    assert_eq!(posts[0], posts[1], "the retry carries the same collection");
    let items = posts[1]["value"].as_array().unwrap();
    let ids: BTreeSet<&str> = items
        .iter()
        .map(|i| i["resourceData"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        sim.tenant().records.keys().map(String::as_str).collect()
    );
    assert!(
        items
            .iter()
            .all(|i| i["clientState"] == "sim-client-state" && i["changeType"] == "created")
    );
    assert_shape(
        "notification",
        &fixture("change-notification-callrecords.json"),
        &posts[1],
    );
    assert_eq!(sim.ledger().webhook_posts(), 2);
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_once_a_limit_is_exceeded() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 1,
        ..spec()
    }))
    .await
    .unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let id = sim.tenant().records.into_keys().next().unwrap();
    let path = format!("/v1.0/communications/callRecords/{id}");
    for i in 0..40 {
        assert_eq!(client.get(&path).await.0, StatusCode::OK, "request {i}");
    }
    let response = client
        .http
        .get(client.url(&path))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: f64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1.0..=20.0).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let body: Value = response.json().await.unwrap();
    assert_shape("429", &fixture("throttled-429-response.json"), &body);
    // Coming back at once ignores Retry-After, and the ledger says so.
    assert_eq!(client.get(&path).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.ledger().retry_after_violations(), 1);
}

async fn statuses_with_faults(seed: u64) -> Vec<u16> {
    let mut config = config(TenantSpec {
        seed,
        call_records: 1,
        ..spec()
    });
    config.faults = Faults {
        throttle_rate: 0.2,
        unavailable_rate: 0.1,
        ..Faults::default()
    };
    // Not about the real limits here.
    config.limits.per_record.requests = 10_000;
    config.limits.per_app.requests = 10_000;
    let sim = teams_cdr_sim::start(config).await.unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let id = sim.tenant().records.into_keys().next().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..1000 {
        statuses.push(
            client
                .get(&format!("/v1.0/communications/callRecords/{id}"))
                .await
                .0
                .as_u16(),
        );
    }
    assert_eq!(
        sim.ledger().count(Endpoint::CallRecord),
        1000,
        "the ledger counts every request"
    );
    statuses
}

#[tokio::test]
async fn faults_occur_at_the_configured_rates_and_repeat_for_the_same_seed() {
    let first = statuses_with_faults(42).await;
    let again = statuses_with_faults(42).await;
    let other = statuses_with_faults(43).await;

    let count = |s: &[u16], code: u16| s.iter().filter(|&&c| c == code).count();
    assert_eq!(first, again, "same seed, same faults");
    assert_ne!(first, other, "another seed, other faults");
    let throttled = count(&first, 429);
    let unavailable = count(&first, 503) + count(&first, 504);
    assert!(
        (150..=250).contains(&throttled),
        "429 rate 0.2 of 1000: {throttled}"
    );
    // 10% of the 80% not throttled.
    assert!(
        (50..=110).contains(&unavailable),
        "503/504 rate: {unavailable}"
    );
    assert_eq!(count(&first, 200) + throttled + unavailable, 1000);
}

#[tokio::test]
async fn graph_requires_a_valid_token_from_either_token_endpoint() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 1,
        ..spec()
    }))
    .await
    .unwrap();
    sim.clock().advance(time::Duration::days(1));
    let http = reqwest::Client::new();
    let c = sim.config().clone();
    let path = format!(
        "{}/v1.0/communications/callRecords/{}",
        sim.base_url(),
        sim.tenant().records.into_keys().next().unwrap()
    );

    let anonymous = http.get(&path).send().await.unwrap().status();
    let forged = http
        .get(&path)
        .bearer_auth("forged")
        .send()
        .await
        .unwrap()
        .status();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", c.client_id.as_str()),
        ("client_secret", c.client_secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let token: Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            c.tenant.tenant_id
        ))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let with_secret = http
        .get(&path)
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    let bad_secret = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            c.tenant.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .status();
    let identity_token = |resource: &'static str, client_id: String| {
        let http = http.clone();
        let url = format!(
            "{}?resource={resource}&api-version=2019-08-01&client_id={client_id}",
            sim.identity_endpoint()
        );
        let header = c.identity_header.clone();
        async move {
            let response = http
                .get(url)
                .header("X-IDENTITY-HEADER", header)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let assigned = c.managed_identity_client_ids[0].clone();
    let (_, msi) = identity_token("https://graph.microsoft.com", assigned.clone()).await;
    let (unassigned, _) = identity_token("https://graph.microsoft.com", "abc".into()).await;
    let (_, storage_token) = identity_token("https://storage.azure.com", assigned).await;
    let wrong_audience = http
        .get(&path)
        .bearer_auth(storage_token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    let with_identity = http
        .get(&path)
        .bearer_auth(msi["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    let msi_without_header = http
        .get(format!(
            "{}?resource=https://graph.microsoft.com&api-version=2019-08-01",
            sim.identity_endpoint()
        ))
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(
        (anonymous, forged),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        (with_secret, bad_secret),
        (StatusCode::OK, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        (with_identity, msi_without_header),
        (StatusCode::OK, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        unassigned,
        StatusCode::BAD_REQUEST,
        "a client_id not assigned to the app"
    );
    assert_eq!(
        wrong_audience,
        StatusCode::UNAUTHORIZED,
        "a storage token is no Graph token"
    );
    assert!(
        msi["expires_on"].is_string(),
        "App Service sends expires_on as a string"
    );
    assert_eq!(sim.ledger().count(Endpoint::Token), 2);
}

#[tokio::test]
async fn dropped_and_duplicated_notifications_follow_their_rates_and_the_ledger_adds_up() {
    let mut config = config(TenantSpec {
        call_records: 300,
        updated_share: 0.0,
        start: NOW,
        ..spec()
    });
    config.faults = Faults {
        drop_rate: 0.2,
        duplicate_rate: 0.1,
        reorder: true,
        ..Faults::default()
    };
    let sim = teams_cdr_sim::start(config).await.unwrap();
    let client = Client::new(&sim);
    let hook = Webhook::default();
    let _ = subscribe(&client, &hook, NOW + time::Duration::hours(70)).await;

    sim.clock().advance(time::Duration::days(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let settled = |n: &[teams_cdr_sim::ledger::Notification]| {
        n.iter().filter(|n| n.outcome != Outcome::Dropped).count()
    };
    loop {
        let n = sim.ledger().notifications();
        let dropped = n.len() - settled(&n);
        // Every record is either dropped or delivered (duplicates counted as their own items).
        if dropped > 0
            && n.len() >= 300
            && hook
                .posts
                .lock()
                .unwrap()
                .iter()
                .map(|p| p["value"].as_array().unwrap().len())
                .sum::<usize>()
                == settled(&n)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery did not settle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let notifications = sim.ledger().notifications();
    let dropped: BTreeSet<&str> = notifications
        .iter()
        .filter(|n| n.outcome == Outcome::Dropped)
        .map(|n| n.record_id.as_str())
        .collect();
    let delivered_items: Vec<String> = hook
        .posts
        .lock()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["resourceData"]["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let delivered: BTreeSet<&str> = delivered_items.iter().map(String::as_str).collect();
    let duplicates = delivered_items.len() - delivered.len();
    assert!(
        (30..=90).contains(&dropped.len()),
        "drop rate 0.2 of 300: {}",
        dropped.len()
    );
    assert!(
        (10..=45).contains(&duplicates),
        "duplicate rate 0.1 of the rest: {duplicates}"
    );
    assert!(
        dropped.is_disjoint(&delivered),
        "a dropped notification was delivered"
    );
    assert_eq!(
        dropped.len() + delivered.len(),
        300,
        "every record is accounted for"
    );
    assert_eq!(
        sim.ledger().webhook_posts() as usize,
        hook.posts.lock().unwrap().len()
    );
}

#[tokio::test]
async fn slow_responses_cut_connections_and_token_failures_are_injected_when_asked() {
    let mut config = config(TenantSpec {
        call_records: 1,
        ..spec()
    });
    config.faults = Faults {
        slow_rate: 1.0,
        slow_by: Duration::from_millis(300),
        reset_rate: 1.0,
        token_failure_rate: 1.0,
        ..Faults::default()
    };
    let sim = teams_cdr_sim::start(config).await.unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let id = sim.tenant().records.into_keys().next().unwrap();

    let started = std::time::Instant::now();
    let cut = async {
        let response = client
            .http
            .get(client.url(&format!("/v1.0/communications/callRecords/{id}")))
            .bearer_auth(&client.token)
            .send()
            .await?;
        response.bytes().await
    }
    .await;
    let waited = started.elapsed();
    let token = client
        .http
        .get(format!(
            "{}?resource=https://graph.microsoft.com&api-version=2019-08-01",
            sim.identity_endpoint()
        ))
        .header("X-IDENTITY-HEADER", &sim.config().identity_header)
        .send()
        .await
        .unwrap()
        .status();

    assert!(cut.is_err(), "the connection should have been cut: {cut:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "not slowed: {waited:?}"
    );
    assert_eq!(token, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sim.ledger().count_status(0),
        1,
        "a cut connection is recorded with status 0"
    );
}

#[tokio::test]
async fn reauthorization_required_is_sent_to_the_lifecycle_url_before_expiry() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 0,
        ..spec()
    }))
    .await
    .unwrap();
    let client = Client::new(&sim);
    let hook = Webhook::default();
    let body = subscribe(&client, &hook, NOW + time::Duration::hours(3)).await;

    sim.clock().advance(time::Duration::minutes(125)); // 55 minutes left, inside the 60-minute lead
    wait_until("no lifecycle notification", Duration::from_secs(5), || {
        !hook.posts.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let posts = hook.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "sent once");
    let item = &posts[0]["value"][0];
    assert_eq!(item["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(item["subscriptionId"], body["id"]);
    assert_eq!(item["clientState"], "sim-client-state");
    assert_shape(
        "lifecycle",
        &fixture("lifecycle-reauthorizationrequired.json"),
        &posts[0],
    );
}

#[tokio::test]
async fn notifications_issued_during_a_delivery_outage_are_never_delivered() {
    let mut config = config(TenantSpec {
        call_records: 40,
        updated_share: 0.0,
        start: NOW,
        ..spec()
    });
    let tenant = Tenant::generate(&config.tenant);
    let mut issued: Vec<OffsetDateTime> = tenant
        .records
        .values()
        .map(|r| r.versions[0].issued_at)
        .collect();
    issued.sort();
    // An outage covering the first half of the issue times.
    let outage = (issued[0], issued[20]);
    config.faults = Faults {
        delivery_outages: vec![outage],
        ..Faults::default()
    };
    let sim = teams_cdr_sim::start(config).await.unwrap();
    let client = Client::new(&sim);
    let hook = Webhook::default();
    let _ = subscribe(&client, &hook, NOW + time::Duration::hours(70)).await;

    sim.clock().advance(time::Duration::days(1));
    wait_until("delivery did not settle", Duration::from_secs(10), || {
        sim.ledger().notifications().len() >= 40
    })
    .await;

    let notifications = sim.ledger().notifications();
    let lost: Vec<_> = notifications
        .iter()
        .filter(|n| n.outcome == Outcome::Lost { attempts: 0 })
        .collect();
    assert_eq!(lost.len(), 20, "issued inside [first, 21st) issue time");
    let delivered: usize = hook
        .posts
        .lock()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_array().unwrap().len())
        .sum();
    assert_eq!(delivered, 20);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let mut config = config(TenantSpec {
        call_records: 1,
        ..spec()
    });
    config.token_lifetime = Duration::from_millis(200);
    let sim = teams_cdr_sim::start(config).await.unwrap();
    sim.clock().advance(time::Duration::days(1));
    let client = Client::new(&sim);
    let id = sim.tenant().records.into_keys().next().unwrap();
    let path = format!("/v1.0/communications/callRecords/{id}");

    let fresh = client.get(&path).await.0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (expired, body) = client.get(&path).await;

    assert_eq!((fresh, expired), (StatusCode::OK, StatusCode::UNAUTHORIZED));
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test]
async fn list_paging_is_not_shifted_by_records_becoming_visible_meanwhile() {
    let sim = teams_cdr_sim::start(config(TenantSpec {
        call_records: 400,
        updated_share: 0.0,
        start: NOW - time::Duration::hours(4),
        span: time::Duration::hours(4),
        ..spec()
    }))
    .await
    .unwrap();
    let client = Client::new(&sim);
    let from = NOW - time::Duration::days(1);
    let list = format!(
        "/v1.0/communications/callRecords?$filter=startDateTime ge {} and startDateTime lt {}",
        time_text(from),
        time_text(NOW + time::Duration::days(1))
    );
    let visible_now = |at: OffsetDateTime| {
        sim.tenant()
            .records
            .values()
            .filter(|r| r.versions[0].issued_at <= at)
            .count()
    };
    let first_at = sim.clock().now();
    let (_, first) = client.get(&list).await;
    assert!(
        first["@odata.nextLink"].is_string(),
        "needs more than one page"
    );

    // Records become available while the client is still paging.
    sim.clock().advance(time::Duration::hours(6));
    let (items, _) = client.follow(first, "value", "@odata.nextLink").await;

    let ids: BTreeSet<&str> = items.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), items.len(), "a record listed twice");
    assert_eq!(
        items.len(),
        visible_now(first_at),
        "the listing is the first page's snapshot"
    );
    assert!(
        visible_now(sim.clock().now()) > items.len(),
        "the test needs records to appear meanwhile"
    );
}

/// Pages a users delta query from `start` to its delta link: the items and the delta link.
async fn delta_pages(client: &Client, start: &str) -> (Vec<Value>, String, usize) {
    let mut items = Vec::new();
    let mut url = start.to_owned();
    for pages in 1..=100 {
        let (status, page) = client.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        items.extend(page["value"].as_array().unwrap().iter().cloned());
        assert!(
            page.get("@odata.nextLink").is_none() || page.get("@odata.deltaLink").is_none(),
            "a page has one link or the other"
        );
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), _) => url = next.to_owned(),
            (None, Some(delta)) => return (items, delta.to_owned(), pages),
            _ => panic!("a page without a link: {page}"),
        }
    }
    panic!("users delta never ended");
}

#[tokio::test]
async fn users_delta_pages_a_full_sync_then_serves_only_changes_and_refuses_expired_tokens() {
    let mut config = config(TenantSpec { users: 7, ..spec() });
    config.users_delta_page = 3;
    let sim = teams_cdr_sim::start(config).await.unwrap();
    let client = Client::new(&sim);
    let select = "id,userPrincipalName,displayName,department,employeeOrgData,officeLocation,usageLocation,companyName";

    let (users, delta, pages) =
        delta_pages(&client, &format!("/v1.0/users/delta?$select={select}")).await;
    assert_eq!(pages, 3);
    let ids: BTreeSet<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7, "each user once");
    assert!(
        users
            .iter()
            .all(|u| u["department"].is_string() && u["employeeOrgData"]["costCenter"].is_string())
    );

    // Nothing changed: an empty page and a new delta link.
    let (none, delta, _) = delta_pages(&client, &delta).await;
    assert!(none.is_empty(), "{none:?}");

    // One user moves, one is deleted: exactly those two come back.
    let tenant = sim.tenant();
    assert!(sim.set_user_property(&tenant.users[0].id, "department", json!("Legal")));
    assert!(sim.remove_user(&tenant.users[1].id));
    let (changed, delta, _) = delta_pages(&client, &delta).await;
    assert_eq!(changed.len(), 2, "{changed:?}");
    let moved = changed
        .iter()
        .find(|u| u["id"] == tenant.users[0].id.as_str())
        .unwrap();
    assert_eq!(moved["department"], "Legal");
    assert_eq!(
        moved["displayName"],
        tenant.users[0].display_name.as_str(),
        "every selected property"
    );
    let gone = changed
        .iter()
        .find(|u| u["id"] == tenant.users[1].id.as_str())
        .unwrap();
    assert_eq!(gone["@removed"]["reason"], "deleted");

    // Expired tokens: 400 syncStateNotFound; a new full sync works and leaves the removed user out.
    sim.expire_delta_tokens();
    let (status, body) = client.get(&delta).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "syncStateNotFound");
    let (users, _, _) = delta_pages(&client, &format!("/v1.0/users/delta?$select={select}")).await;
    assert_eq!(users.len(), 6);
    // Full sync, no change, two changes, the refusal, full sync of six.
    assert_eq!(sim.ledger().count(Endpoint::UsersDelta), 3 + 1 + 1 + 1 + 2);
}
