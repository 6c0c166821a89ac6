//! Subscriptions to `/communications/callRecords` and the delivery of their notifications.
//!
//! Create validates `notificationUrl` and `lifecycleNotificationUrl` with the `validationToken`
//! handshake (10 s limit) before answering `201`; a second subscription for the same resource and
//! change type is a `409`; expiry more than 4,230 minutes ahead is a `400`, less than 45 minutes is
//! raised to 45. When a record version is issued, every subscription that asked for its change type
//! (`created` for version 1, `updated` after) gets a notification; a webhook that fails or takes
//! longer than the timeout is retried with doubling back-off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::graph::graph_error;
use crate::ledger::{Notification, Outcome};
use crate::tenant::graph_time;
use crate::{Endpoint, LedgerTag, SimState, auth};

const MAX_EXPIRY: time::Duration = time::Duration::minutes(4230);
const MIN_EXPIRY: time::Duration = time::Duration::minutes(45);
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    id: String,
    resource: String,
    change_type: String,
    client_state: Option<String>,
    notification_url: String,
    lifecycle_url: Option<String>,
    expiration: OffsetDateTime,
    /// Tenant time of creation: only versions issued after it are notified.
    created_at: OffsetDateTime,
    /// When `reauthorizationRequired` was last sent (tenant time); cleared by a renewal or a
    /// reauthorization.
    reauthorization_sent: Option<OffsetDateTime>,
    /// Reauthorized since the last renewal: no further `reauthorizationRequired` until the next
    /// renewal moves the expiry (and with it the time the event is due).
    reauthorized: bool,
}

/// A live subscription as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: OffsetDateTime,
}

pub(crate) fn views(state: &SimState) -> Vec<SubscriptionView> {
    let now = state.clock.now();
    subs(state)
        .values()
        .filter(|s| s.expiration > now)
        .map(|s| SubscriptionView {
            id: s.id.clone(),
            notification_url: s.notification_url.clone(),
            lifecycle_url: s.lifecycle_url.clone(),
            client_state: s.client_state.clone(),
            expiration: s.expiration,
        })
        .collect()
}

fn lifecycle_body(state: &SimState, s: &Subscription, event: &str) -> Value {
    json!({"value": [{
        "lifecycleEvent": event,
        "subscriptionId": s.id,
        "subscriptionExpirationDateTime": graph_time(s.expiration),
        "clientState": s.client_state,
        "tenantId": state.tenant().tenant_id,
    }]})
}

pub(crate) async fn remove_on_graphs_side(state: &SimState, id: &str, notify: bool) -> bool {
    let Some(removed) = subs(state).remove(id) else {
        return false;
    };
    if notify && let Some(url) = &removed.lifecycle_url {
        let body = lifecycle_body(state, &removed, "subscriptionRemoved");
        let _ = post_json(state, url, &body).await;
    }
    true
}

/// The CloudEvent Graph's partner topic carries for one notification item (the item is `data`),
/// of `kind` (`Microsoft.Graph.CallRecordCreated`, …).
fn cloud_event(state: &SimState, kind: &str, subject: &str, item: &Value) -> String {
    let tenant = state.tenant().tenant_id.clone();
    json!({
        "id": state.new_id(),
        "source": format!("/tenants/{tenant}/applications/{}", state.config.client_id),
        "specversion": "1.0",
        "type": kind,
        "subject": subject,
        "time": graph_time(state.clock.now()),
        "datacontenttype": "application/json",
        "data": item,
    })
    .to_string()
}

/// Hands one event to the Event Grid sink; `false` when there is none or it failed.
async fn publish(state: &SimState, event: String) -> bool {
    match &state.config.event_grid {
        Some(sink) => {
            state.ledger.webhook_post();
            sink(event).await
        }
        None => false,
    }
}

/// A lifecycle event to the subscription's lifecycle URL: a webhook post, or a CloudEvent of type
/// `Microsoft.Graph.Subscription{Event}` through Event Grid. The status the webhook answered (202
/// for an event Event Grid took).
async fn deliver_lifecycle(state: &SimState, s: &Subscription, event: &str) -> Option<u16> {
    let url = s.lifecycle_url.clone()?;
    let body = lifecycle_body(state, s, event);
    if event_grid_target(&url).is_some() {
        let mut kind = String::from("Microsoft.Graph.Subscription");
        let mut chars = event.chars();
        if let Some(first) = chars.next() {
            kind.push(first.to_ascii_uppercase());
            kind.extend(chars);
        }
        let subject = format!("subscriptions/{}", s.id);
        let event = cloud_event(state, &kind, &subject, &body["value"][0]);
        return Some(if publish(state, event).await {
            202
        } else {
            500
        });
    }
    state.ledger.webhook_post();
    let answer = state.http.post(url).json(&body).send().await.ok()?;
    Some(answer.status().as_u16())
}

pub(crate) async fn send_lifecycle(state: &SimState, id: &str, event: &str) -> Option<u16> {
    let s = subs(state).get(id).cloned()?;
    deliver_lifecycle(state, &s, event).await
}

impl Subscription {
    fn wants(&self, change: &str) -> bool {
        self.change_type
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(change))
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "resource": self.resource,
            "applicationId": "24d3b144-21ae-4080-943f-7067b395b913",
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(self.expiration),
            "creatorId": "8ee44408-0679-472c-bc2a-692812af3437",
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": "",
            "encryptionCertificateId": "",
            "includeResourceData": false,
            "notificationContentType": "application/json",
        })
    }
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1.0/subscriptions", post(create).get(list))
        .route(
            "/v1.0/subscriptions/{id}",
            get(one).patch(renew).delete(remove),
        )
        .route("/v1.0/subscriptions/{id}/reauthorize", post(reauthorize))
}

/// The ledger tells the subscription requests apart by what they did.
fn retag(endpoint: Endpoint, mut response: Response) -> Response {
    if let Some(tag) = response.extensions_mut().get_mut::<LedgerTag>() {
        tag.endpoint = endpoint;
    }
    response
}

fn tagged(response: impl IntoResponse) -> Response {
    tagged_as(Endpoint::Subscriptions, response)
}

fn tagged_as(endpoint: Endpoint, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(LedgerTag {
        endpoint,
        record_id: None,
        reset: false,
    });
    response
}

fn bad_request(message: &str) -> Response {
    tagged(graph_error(
        StatusCode::BAD_REQUEST,
        "ValidationError",
        message,
    ))
}

fn subs(state: &SimState) -> std::sync::MutexGuard<'_, BTreeMap<String, Subscription>> {
    state
        .subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    change_type: Option<String>,
    notification_url: Option<String>,
    lifecycle_notification_url: Option<String>,
    resource: Option<String>,
    expiration_date_time: Option<String>,
    client_state: Option<String>,
}

/// `/communications/callRecords` and `communications/callrecords` name the same resource.
fn normal_resource(resource: &str) -> String {
    resource.trim_start_matches('/').to_ascii_lowercase()
}

/// `created,updated` and `updated, created` are the same change types.
fn change_set(change_type: &str) -> std::collections::BTreeSet<String> {
    change_type
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect()
}

/// An Event Grid partner topic as Graph takes it: `EventGrid:?azuresubscriptionid=…&resourcegroup=…
/// &partnertopic=…&location=…`, all four present. Graph creates the topic; no handshake.
fn event_grid_target(raw: &str) -> Option<String> {
    let query = raw
        .get(..10)
        .filter(|p| p.eq_ignore_ascii_case("eventgrid:"))
        .map(|_| raw[10..].trim_start_matches('?'))?;
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    [
        "azuresubscriptionid",
        "resourcegroup",
        "partnertopic",
        "location",
    ]
    .iter()
    .all(|k| params.contains_key(*k))
    .then(|| params["partnertopic"].clone())
}

fn webhook_url_ok(state: &SimState, raw: &str) -> bool {
    if event_grid_target(raw).is_some() {
        return state.config.event_grid.is_some();
    }
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => {
            state.config.allow_loopback_http_webhooks
                && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
        }
        _ => false,
    }
}

/// The handshake Graph performs on create: the endpoint must echo the token as text within 10 s.
async fn validate(state: &SimState, url: &str) -> bool {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        state.new_id()
    );
    let target = format!(
        "{url}{}validationToken={}",
        if url.contains('?') { '&' } else { '?' },
        crate::graph::encode(&token)
    );
    let answer = state
        .http
        .post(target)
        .header("content-type", "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await;
    match answer {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            r.text().await.is_ok_and(|body| body == token)
        }
        _ => false,
    }
}

fn expiry(state: &SimState, raw: Option<&str>) -> Result<OffsetDateTime, Response> {
    let raw = raw.ok_or_else(|| bad_request("expirationDateTime is required."))?;
    let at = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|_| bad_request("expirationDateTime is not a valid date."))?;
    let now = state.clock.now();
    if at - now > MAX_EXPIRY {
        return Err(bad_request(
            "Subscription expiration can only be 4230 minutes in the future.",
        ));
    }
    Ok(at.max(now + MIN_EXPIRY))
}

async fn create(
    state: State<Arc<SimState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    retag(
        Endpoint::SubscriptionCreate,
        create_inner(state, headers, body).await,
    )
}

async fn create_inner(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    let Ok(body) = serde_json::from_slice::<CreateBody>(&body) else {
        return bad_request("The request body is not a subscription.");
    };
    let resource = body.resource.unwrap_or_default();
    if !resource
        .trim_start_matches('/')
        .eq_ignore_ascii_case("communications/callRecords")
    {
        return bad_request("This simulator serves only the /communications/callRecords resource.");
    }
    let change_type = body.change_type.unwrap_or_default();
    if change_type.is_empty()
        || !change_type
            .split(',')
            .all(|c| matches!(c.trim(), "created" | "updated"))
    {
        return bad_request("changeType must be created, updated or both.");
    }
    let expiration = match expiry(&state, body.expiration_date_time.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(notification_url) = body.notification_url.filter(|u| webhook_url_ok(&state, u)) else {
        return bad_request("notificationUrl must be an https URL.");
    };
    let lifecycle_url = body.lifecycle_notification_url;
    let now = state.clock.now();
    if lifecycle_url.is_none() && expiration - now > time::Duration::hours(1) {
        return bad_request(
            "lifecycleNotificationUrl is required for Teams resources when the expiration is more than 1 hour ahead.",
        );
    }
    if lifecycle_url
        .as_ref()
        .is_some_and(|u| !webhook_url_ok(&state, u))
    {
        return bad_request("lifecycleNotificationUrl must be an https URL.");
    }
    if body
        .client_state
        .as_ref()
        .is_some_and(|c| c.chars().count() > 128)
    {
        return bad_request("clientState is limited to 128 characters.");
    }
    let duplicate = subs(&state).values().any(|s| {
        s.expiration > now
            && normal_resource(&s.resource) == normal_resource(&resource)
            && change_set(&s.change_type) == change_set(&change_type)
    });
    if duplicate {
        return tagged(graph_error(
            StatusCode::CONFLICT,
            "ExtensionError",
            "A subscription for this resource and change type already exists.",
        ));
    }
    for url in std::iter::once(&notification_url).chain(lifecycle_url.as_ref()) {
        // The handshake is the webhooks' (Graph documents none for Event Grid).
        if event_grid_target(url).is_none() && !validate(&state, url).await {
            return bad_request(&format!(
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request: {url}"
            ));
        }
    }
    let subscription = Subscription {
        id: state.new_id(),
        resource,
        change_type,
        client_state: body.client_state,
        notification_url,
        lifecycle_url,
        expiration,
        created_at: now,
        reauthorization_sent: None,
        reauthorized: false,
    };
    let answer = subscription.json();
    subs(&state).insert(subscription.id.clone(), subscription);
    tagged((StatusCode::CREATED, axum::Json(answer)))
}

async fn list(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    let now = state.clock.now();
    let stale = state
        .stale_listings
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    let value: Vec<Value> = subs(&state)
        .values()
        .filter(|s| s.expiration > now && !stale)
        .map(|s| {
            let mut listed = s.json();
            if state.config.hide_client_state_in_listings {
                listed["clientState"] = Value::Null;
            }
            listed
        })
        .collect();
    tagged(axum::Json(
        json!({"@odata.context": format!("{}/v1.0/$metadata#subscriptions", state.base_url), "value": value}),
    ))
}

fn live(state: &SimState, id: &str) -> Option<Subscription> {
    let now = state.clock.now();
    subs(state).get(id).filter(|s| s.expiration > now).cloned()
}

fn gone() -> Response {
    tagged(graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The object was not found.",
    ))
}

async fn one(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    match live(&state, &id) {
        Some(s) => tagged(axum::Json(s.json())),
        None => gone(),
    }
}

async fn renew(
    state: State<Arc<SimState>>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    retag(
        Endpoint::SubscriptionRenew,
        renew_inner(state, id, headers, body).await,
    )
}

async fn renew_inner(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    if live(&state, &id).is_none() {
        return gone();
    }
    let raw = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["expirationDateTime"].as_str().map(str::to_owned));
    let expiration = match expiry(&state, raw.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mut all = subs(&state);
    let Some(s) = all.get_mut(&id) else {
        return gone();
    };
    s.expiration = expiration;
    s.reauthorization_sent = None;
    s.reauthorized = false;
    tagged(axum::Json(s.json()))
}

async fn remove(state: State<Arc<SimState>>, id: Path<String>, headers: HeaderMap) -> Response {
    retag(
        Endpoint::SubscriptionDelete,
        remove_inner(state, id, headers).await,
    )
}

async fn remove_inner(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    if state
        .failing_deletes
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return tagged(graph_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ));
    }
    match subs(&state).remove(&id) {
        Some(_) => tagged(StatusCode::NO_CONTENT),
        None => gone(),
    }
}

async fn reauthorize(
    state: State<Arc<SimState>>,
    id: Path<String>,
    headers: HeaderMap,
) -> Response {
    retag(
        Endpoint::SubscriptionReauthorize,
        reauthorize_inner(state, id, headers).await,
    )
}

async fn reauthorize_inner(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth::authorize(&state, &headers) {
        return tagged(r);
    }
    if live(&state, &id).is_none() {
        return gone();
    }
    if let Some(s) = subs(&state).get_mut(&id) {
        // Acted on: Graph stops repeating the event.
        s.reauthorization_sent = None;
        s.reauthorized = true;
    }
    tagged(StatusCode::NO_CONTENT)
}

/// One item of a change-notification collection, as documented for call records.
fn notification_item(s: &Subscription, tenant_id: &str, record_id: &str, change: &str) -> Value {
    json!({
        "subscriptionId": s.id,
        "clientState": s.client_state,
        "changeType": change,
        "resource": format!("communications/callRecords/{record_id}"),
        "subscriptionExpirationDateTime": graph_time(s.expiration),
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.callRecord",
            "@odata.id": format!("communications/callRecords/{record_id}"),
            "id": record_id,
        },
        "tenantId": tenant_id,
    })
}

/// Looks for newly issued record versions every tick and delivers their notifications.
pub(crate) async fn deliver_forever(state: Arc<SimState>) {
    let mut tick = tokio::time::interval(state.config.delivery.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        deliver_due(&state);
    }
}

fn deliver_due(state: &Arc<SimState>) {
    let now = state.clock.now();
    let live: Vec<Subscription> = subs(state)
        .values()
        .filter(|s| s.expiration > now)
        .cloned()
        .collect();
    if live.is_empty() {
        return;
    }
    let tenant = state.tenant();
    let mut notified = state.notified.lock().unwrap_or_else(|p| p.into_inner());
    for s in &live {
        let mut batch: Vec<(String, String)> = Vec::new();
        for record in tenant.records.values() {
            for v in record
                .versions
                .iter()
                .filter(|v| v.issued_at <= now && v.issued_at >= s.created_at)
            {
                let change = if v.version == 1 { "created" } else { "updated" };
                if !s.wants(change)
                    || !notified.insert((s.id.clone(), record.id.clone(), v.version))
                {
                    continue;
                }
                let lost = |outcome| Notification {
                    subscription_id: s.id.clone(),
                    record_id: record.id.clone(),
                    change_type: change.into(),
                    outcome,
                };
                if state.dice.in_outage(v.issued_at) {
                    state
                        .ledger
                        .notification(lost(Outcome::Lost { attempts: 0 }));
                    continue;
                }
                let (dropped, duplicated) = state.dice.notification();
                if dropped {
                    state.ledger.notification(lost(Outcome::Dropped));
                    continue;
                }
                batch.push((record.id.clone(), change.into()));
                if duplicated {
                    batch.push((record.id.clone(), change.into()));
                }
            }
        }
        state.dice.shuffle(&mut batch);
        for chunk in batch.chunks(state.config.delivery.batch_max.max(1)) {
            tokio::spawn(post_with_retries(state.clone(), s.clone(), chunk.to_vec()));
        }
    }
    drop(notified);
    drop(tenant);
    lifecycle_due(state, now);
}

fn lifecycle_due(state: &Arc<SimState>, now: OffsetDateTime) {
    let lead = state.config.delivery.reauthorization_lead;
    let repeat = state.config.delivery.reauthorization_repeat;
    let mut all = subs(state);
    for s in all.values_mut() {
        let repeated_lately = s.reauthorization_sent.is_some_and(|at| now - at < repeat);
        if repeated_lately || s.reauthorized || s.expiration <= now || s.expiration - now > lead {
            continue;
        }
        s.reauthorization_sent = Some(now);
        let s = s.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _ = deliver_lifecycle(&state, &s, "reauthorizationRequired").await;
        });
    }
}

async fn post_json(state: &SimState, url: &str, body: &Value) -> bool {
    state.ledger.webhook_post();
    matches!(state.http.post(url).json(body).send().await, Ok(r) if r.status().is_success())
}

async fn post_with_retries(state: Arc<SimState>, s: Subscription, items: Vec<(String, String)>) {
    let tenant_id = state.tenant().tenant_id.clone();
    let body = json!({"value": items.iter().map(|(id, change)| notification_item(&s, &tenant_id, id, change)).collect::<Vec<_>>()});
    let config = &state.config.delivery;
    let mut delay = config.backoff_initial;
    let mut attempts = 0;
    let event_grid = event_grid_target(&s.notification_url).is_some();
    // Through Event Grid, each item is an event of its own (one queue message each).
    let mut pending: Vec<String> = if event_grid {
        body["value"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(&items)
            .map(|(item, (id, change))| {
                let kind = if change == "created" {
                    "Microsoft.Graph.CallRecordCreated"
                } else {
                    "Microsoft.Graph.CallRecordUpdated"
                };
                cloud_event(
                    &state,
                    kind,
                    &format!("communications/callRecords/{id}"),
                    item,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let delivered = loop {
        attempts += 1;
        if event_grid {
            let mut failed = Vec::new();
            for event in pending {
                if !publish(&state, event.clone()).await {
                    failed.push(event);
                }
            }
            pending = failed;
            if pending.is_empty() {
                break true;
            }
        } else if post_json(&state, &s.notification_url, &body).await {
            break true;
        }
        if attempts >= config.max_attempts {
            break false;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    };
    for (record_id, change) in items {
        let outcome = if delivered {
            Outcome::Delivered { attempts }
        } else {
            Outcome::Lost { attempts }
        };
        state.ledger.notification(Notification {
            subscription_id: s.id.clone(),
            record_id,
            change_type: change,
            outcome,
        });
    }
}
