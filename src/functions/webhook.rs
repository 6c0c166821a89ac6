//! What the two Graph webhooks share: the validation handshake and reading a bounded JSON body.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::NotificationConfig;
use crate::domain::notification::{Expectations, NotificationCollection, Rejection};
use crate::error::ApiError;
use crate::services::{RejectionTally, Services};
use crate::store::callrecords::CallRecordStore;

/// Largest body accepted. A full Graph collection is far smaller (Graph batches at most a few
/// hundred items of well under 1 KiB each).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Graph's validation request: `POST …?validationToken=…` must be answered `200`, `text/plain`,
/// with the URL-decoded token, within 10 s. Returns that answer, or `None` for an ordinary request.
/// See <https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation>.
pub(crate) fn validation_response(raw_query: Option<&str>) -> Option<Response> {
    let token = url::form_urlencoded::parse(raw_query?.as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned())?;
    let mut response = (StatusCode::OK, token).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The token is echoed: make sure no browser ever treats it as markup.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

/// Parses a notification collection from the request body.
///
/// # Errors
/// `413` over [`MAX_BODY_BYTES`], `400` when the body is not a `{"value":[…]}` collection.
pub(crate) fn collection(
    body: Result<Bytes, BytesRejection>,
) -> Result<NotificationCollection, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::BadRequest("the request body could not be read")
        }
    })?;
    serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest("the body is not a change-notification collection ({\"value\":[…]})")
    })
}

/// With Event Grid delivery the webhooks accept nothing, not even Graph's handshake: `404`, as if
/// they were not there, so that the only inbound endpoint left is one that answers no one.
///
/// # Errors
/// [`ApiError::NotFound`] when `NOTIFICATION_DELIVERY` is `eventGrid`.
pub(crate) fn webhooks_on(state: &Services) -> Result<(), ApiError> {
    match state.subscription.delivery {
        crate::config::NotificationDelivery::Webhook => Ok(()),
        crate::config::NotificationDelivery::EventGrid(_) => Err(ApiError::NotFound(
            "no webhook: notifications are delivered through Event Grid (NOTIFICATION_DELIVERY)",
        )),
    }
}

/// What every item must match: our tenant and our clientState.
pub(crate) fn expectations(config: &NotificationConfig) -> Expectations<'_> {
    Expectations {
        tenant_id: &config.tenant_id,
        client_state: config.client_state_bytes(),
    }
}

/// How long one counter write may take.
const COUNT_BUDGET: Duration = Duration::from_secs(2);
/// Rejections arriving within this long of each other are written together.
const COALESCE: Duration = Duration::from_millis(500);
/// The wait before trying again after a counter write failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Logs dropped items, counted by reason (never with their content: it holds the clientState), and
/// adds them to the `AppState` counters the health check reads, in the background.
pub(crate) fn note_rejections(state: &Services, what: &'static str, rejected: &[Rejection]) {
    if rejected.is_empty() {
        return;
    }
    let mut by_reason = BTreeMap::new();
    for reason in rejected {
        *by_reason.entry(reason.as_str()).or_insert(0u32) += 1;
    }
    tracing::warn!(rejected = rejected.len(), reasons = ?by_reason, "{what} items dropped");
    let tally = &state.rejections;
    let now = state.clock.now();
    for (reason, count) in by_reason {
        tally.add(what, reason, count, now);
    }
    if !tally.flushing.swap(true, Ordering::AcqRel) {
        tokio::spawn(flush(state.records.clone(), Arc::clone(tally)));
    }
}

/// Writes the pending rejections until none are left, then lets the next one start a flusher.
async fn flush(records: CallRecordStore, tally: Arc<RejectionTally>) {
    let mut wait = COALESCE;
    loop {
        tokio::time::sleep(wait).await;
        wait = COALESCE;
        let batch = std::mem::take(&mut *tally.lock());
        for ((what, reason), (count, seen)) in batch {
            let counted = tokio::time::timeout(
                COUNT_BUDGET,
                records.count_rejections(what, reason, count, seen),
            )
            .await;
            if !matches!(counted, Ok(Ok(()))) {
                tracing::warn!(
                    reason,
                    "could not count rejected {what} items; trying again later"
                );
                tally.add(what, reason, count, seen);
                wait = RETRY_AFTER_FAILURE;
            }
        }
        if tally.lock().is_empty() {
            tally.flushing.store(false, Ordering::Release);
            // A rejection noted between the check and the store saw a flusher running: take over
            // again unless a new flusher already did.
            if tally.lock().is_empty() || tally.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}
