//! The admin's two levers, both `authLevel: function` (under the host, the host checks the key; in
//! standalone mode the app checks `READ_API_KEYS` as the host would):
//! - `Backfill` (`POST /api/ops/backfill?from=…&to=…`): sweeps the calls started in that range (at
//!   most 30 days, not in the future) and queues every record not stored at its latest version:
//!   the first install, after an outage.
//! - `Reprocess` (`POST /api/ops/reprocess`, a JSON array of call-record ids, or `{"ids":[…]}`):
//!   fetches those records again and rewrites them.
//!
//! Both answer `202` once the work is recorded (the range as a waiting span in `AppState`, the ids
//! on the queue); bad input is a `400` that records and queues nothing.
//!
//! The routes are under `ops/`, not `admin/`: the Functions host reserves every route that starts
//! with `admin` for its own API and refuses to load a function that claims one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::config::is_guid;
use crate::domain::notification::normalize_id;
use crate::domain::subscription::backfill_range;
use crate::error::ApiError;
use crate::services::Services;

/// Most ids one reprocess request may name.
pub(crate) const MAX_REPROCESS_IDS: usize = 1000;

pub(crate) async fn backfill(
    State(state): State<Services>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.require_key(&headers, query.as_deref())?;
    let mut from = None;
    let mut to = None;
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
    {
        match &*key {
            "from" => from = Some(value.into_owned()),
            "to" => to = Some(value.into_owned()),
            "code" => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "unknown parameter; expected `from` and `to`",
                ));
            }
        }
    }
    let now = state.clock.now();
    let (from, to) = backfill_range(from.as_deref(), to.as_deref(), now)
        .map_err(|e| ApiError::BadRequest(e.message()))?;
    let key = state
        .lifecycle
        .add_window(from, to, "backfill", now)
        .await?;
    tracing::info!(%from, %to, "backfill requested");
    super::reconcile::start_in_background(&state);
    let body = json!({
        "status": "queued",
        "window": key,
        "from": crate::graph::reports::literal(from),
        "to": crate::graph::reports::literal(to),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdList {
    Bare(Vec<String>),
    Wrapped { ids: Vec<String> },
}

pub(crate) async fn reprocess(
    State(state): State<Services>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.auth.require_key(&headers, query.as_deref())?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: super::MAX_BODY_BYTES,
            }
        } else {
            ApiError::BadRequest("the request body could not be read")
        }
    })?;
    let Ok(IdList::Bare(ids) | IdList::Wrapped { ids }) = serde_json::from_slice::<IdList>(&body)
    else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON array of call-record ids, or {\"ids\":[…]}",
        ));
    };
    if ids.is_empty() {
        return Err(ApiError::BadRequest("the list of ids is empty"));
    }
    if ids.len() > MAX_REPROCESS_IDS {
        return Err(ApiError::BadRequest("at most 1,000 ids per request"));
    }
    if !ids.iter().all(|id| is_guid(id.trim())) {
        return Err(ApiError::BadRequest(
            "every id must be a call-record id (a GUID); nothing was queued",
        ));
    }
    let mut ids: Vec<String> = ids.iter().map(|id| normalize_id(id.trim())).collect();
    ids.sort();
    ids.dedup();
    let jobs: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut job = super::reconcile::job(&state, id.clone(), "reprocess");
            // Rewritten even when this version is stored: that is what reprocessing is for.
            job.repair = true;
            job
        })
        .collect();
    state.queue.send_all_json(&jobs, 32).await?;
    tracing::info!(queued = jobs.len(), "reprocess requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "queued", "queued": jobs.len()})),
    )
        .into_response())
}
