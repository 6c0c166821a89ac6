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
use futures::{StreamExt as _, TryStreamExt as _, stream};
use time::OffsetDateTime;

use super::webhook::{collection, expectations, log_rejections, validation_response};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::StoreError;

/// At most this many queue writes of one collection are in flight at once.
const ENQUEUE_CONCURRENCY: usize = 32;

pub(crate) async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Some(response) = validation_response(query.as_deref()) {
        tracing::info!("answered the Graph validation handshake");
        return Ok(response);
    }
    let triage = collection(body)?.triage(
        &expectations(&state.notifications),
        OffsetDateTime::now_utc(),
    );
    log_rejections("notification", &triage.rejected);

    let jobs = &triage.accepted;
    // Owned futures: each write holds its own job and queue handle (both cheap to clone).
    let enqueue = stream::iter(jobs.iter().cloned().map(|job| {
        let queue = state.queue.clone();
        async move {
            queue.send_json(&job, 0).await?;
            tracing::debug!(call_record_id = %job.id, change_type = %job.change_type, "enqueued");
            Ok::<(), StoreError>(())
        }
    }))
    .buffer_unordered(ENQUEUE_CONCURRENCY)
    .try_collect::<Vec<()>>();
    tokio::time::timeout(state.enqueue_budget, enqueue)
        .await
        .map_err(|_| ApiError::StorageTimeout)??;

    tracing::info!(
        enqueued = jobs.len(),
        rejected = triage.rejected.len(),
        duplicates = triage.duplicates,
        "notifications accepted"
    );
    Ok(StatusCode::ACCEPTED.into_response())
}
