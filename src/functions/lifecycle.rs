//! `Lifecycle` (`POST /api/lifecycle`): Graph's lifecycle notifications for our subscription.
//!
//! Graph validates this URL with the same handshake as the notification URL when the subscription is
//! created. For call records the only event Graph documents is `reauthorizationRequired`; events are
//! authenticated (clientState, tenant) and logged. Renewing the subscription in answer to them is the
//! job of `MaintainSubscription`, which does not exist yet: until then the events are only logged.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::webhook::{collection, expectations, note_rejections, validation_response};
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Some(response) = validation_response(query.as_deref()) {
        tracing::info!("answered the Graph validation handshake for the lifecycle URL");
        return Ok(response);
    }
    let (events, rejected) =
        collection(body)?.triage_lifecycle(&expectations(&state.notifications));
    note_rejections(&state, "lifecycle", &rejected);
    for event in &events {
        tracing::warn!(
            lifecycle_event = %event.event,
            subscription_id = %event.subscription_id,
            "Graph lifecycle event received; subscription renewal is not automated yet"
        );
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
