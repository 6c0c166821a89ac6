//! `Notifications` (`POST /api/notifications`): Graph's call-record change notifications.
//!
//! Graph wants a 2xx within 3 s and drops notifications for endpoints that are too often slow, so
//! this only validates and enqueues; `FetchCallRecord` does the work. It answers `202` only once the
//! queue has accepted every valid item, and `503` otherwise so that Graph delivers the collection
//! again (the fetch is idempotent, so a partly enqueued collection sent twice does no harm).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::webhook::{collection, expectations, note_rejections, validation_response};
use crate::error::ApiError;
use crate::services::Services;
use crate::store::health::Activity;

/// At most this many queue writes of one collection are in flight at once.
const ENQUEUE_CONCURRENCY: usize = 32;

pub(crate) async fn handle(
    State(state): State<Services>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::webhook::webhooks_on(&state)?;
    if let Some(response) = validation_response(query.as_deref()) {
        tracing::info!("answered the Graph validation handshake");
        return Ok(response);
    }
    let triage = collection(body)?.triage(&expectations(&state.notifications), state.clock.now());
    note_rejections(&state, "notification", &triage.rejected);

    let jobs = &triage.accepted;
    tokio::time::timeout(
        state.notifications.enqueue_budget,
        state.queue.send_all_json(jobs, ENQUEUE_CONCURRENCY),
    )
    .await
    .map_err(|_| ApiError::StorageTimeout)??;

    if !jobs.is_empty() {
        super::health::note_activity(&state, Activity::Notification);
    }
    tracing::info!(
        enqueued = jobs.len(),
        rejected = triage.rejected.len(),
        duplicates = triage.duplicates,
        "notifications accepted"
    );
    Ok(StatusCode::ACCEPTED.into_response())
}
