//! Whether data flows, for admins and their alerts:
//! - `Health` (`GET /api/health`, anonymous): `{"status":"ok|degraded|failing"}` and nothing else,
//!   `200` unless failing (`503`), so that App Service's health check, an availability test or a
//!   load balancer can watch it. Answered from a verdict at most 10 s old.
//! - `HealthDetails` (`GET /api/health/details`, function key; `READ_API_KEYS` in standalone
//!   mode): the verdict, every finding with its code, and what it was reached from (the
//!   subscription, the last notification and record, the queue and its poison queue, records given
//!   up on, rejected notifications per reason, each report's checkpoint, the last sweep, Graph's
//!   last refusal). No secret is in it.
//!
//! The rules are `domain::health`'s (README "Health").

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::NotificationDelivery;
use crate::domain::health::{Finding, Status, assess};
use crate::error::ApiError;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::health::Activity;
use crate::telemetry::error_chain;

/// Writes the activity mark in the background, at most once a minute per process.
pub(crate) fn note_activity(state: &Services, activity: Activity) {
    let now = state.clock.now();
    if !state.marks.due(activity, now) {
        return;
    }
    let health = state.health.clone();
    tokio::spawn(async move {
        if let Err(e) = health.mark(activity, now).await {
            tracing::debug!(error = %error_chain(&e), "could not write an activity mark");
        }
    });
}

/// The verdict with its findings and details. Storage that cannot be read is itself a verdict:
/// nothing can be stored either.
async fn verdict(state: &Services) -> (Status, Vec<Finding>, serde_json::Value) {
    match observe(state).await {
        Ok(verdict) => verdict,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "the health check cannot read storage");
            let finding = Finding {
                status: Status::Failing,
                code: "storageUnavailable",
                message: "the app cannot read its storage account: nothing can be stored".into(),
            };
            (Status::Failing, vec![finding], json!({}))
        }
    }
}

/// Which delivery is on, into the signals and the details.
fn signals_delivery(state: &Services, observed: &mut crate::store::health::Observed) {
    let delivery = &state.subscription.delivery;
    observed.signals.event_grid = matches!(delivery, NotificationDelivery::EventGrid(_));
    observed.details["delivery"] = match delivery {
        NotificationDelivery::Webhook => json!({"mode": delivery.name()}),
        NotificationDelivery::EventGrid(topic) => json!({
            "mode": delivery.name(),
            "partnerTopic": topic.partner_topic,
            "resourceGroup": topic.resource_group,
            "location": topic.location,
        }),
    };
}

async fn observe(
    state: &Services,
) -> Result<(Status, Vec<Finding>, serde_json::Value), StoreError> {
    let now = state.clock.now();
    let mut observed = state.health.observe(now).await?;
    // A queue not created yet holds nothing.
    let count = |r: Result<u64, StoreError>| match r {
        Ok(n) => Ok(n),
        Err(StoreError::NotFound) => Ok(0),
        Err(e) => Err(e),
    };
    let depth = count(state.queue.approximate_count().await)?;
    let poison = count(state.poison.approximate_count().await)?;
    observed.signals.poison_messages = poison;
    observed.signals.consumer_stale = state.read.config.consumer_stale;
    observed.signals.retention = Some(std::time::Duration::from_secs(
        86_400 * u64::from(state.retention.days),
    ));
    signals_delivery(state, &mut observed);
    if state.directory.enabled {
        observed.signals.directory = Some(observed.directory.clone());
    }
    let (status, findings) = assess(&observed.signals, now);
    observed.details["queue"] = json!({"depth": depth, "poison": poison});
    observed.details["directory"]["enabled"] = json!(state.directory.enabled);
    Ok((status, findings, observed.details))
}

fn http_status(status: Status) -> StatusCode {
    match status {
        Status::Failing => StatusCode::SERVICE_UNAVAILABLE,
        Status::Ok | Status::Degraded => StatusCode::OK,
    }
}

pub(crate) async fn summary(State(state): State<Services>) -> Response {
    // Held while a verdict is reached: concurrent callers wait for it instead of each reading
    // storage, so an instance reads at most once per TTL however it is polled.
    let mut cached = state.verdict.lock().await;
    let status = match *cached {
        Some((at, status)) if at.elapsed() < state.verdict_ttl => status,
        _ => {
            let (status, findings, _) = verdict(&state).await;
            if status != Status::Ok {
                let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
                tracing::info!(?status, ?codes, "health is not ok");
            }
            *cached = Some((tokio::time::Instant::now(), status));
            status
        }
    };
    drop(cached);
    (http_status(status), Json(json!({"status": status}))).into_response()
}

pub(crate) async fn details(
    State(state): State<Services>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.require_key(&headers, query.as_deref())?;
    let (status, findings, details) = verdict(&state).await;
    let mut body = json!({"status": status, "findings": findings});
    if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
        body.extend(details.clone());
    }
    Ok((http_status(status), Json(body)).into_response())
}
