//! `POST /admin/functions/{FunctionName}` (standalone mode only): runs a timer function now, as the
//! Functions host's admin API does (the host serves its own, guarded by its master key). Guarded by
//! `READ_API_KEYS`, given as the `x-functions-key` header or the `code` query parameter, compared in
//! constant time. Answers `202` at once; the run goes on in the background, as the host's does.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;

use super::TIMER_FUNCTION_JSON;
use crate::domain::secret::secrets_equal;
use crate::error::ApiError;
use crate::state::AppState;

/// The header the host's keys travel in.
const KEY_HEADER: &str = "x-functions-key";

pub(crate) async fn run_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !has_key(&state, &headers, query.as_deref()) {
        return Err(ApiError::Unauthorized);
    }
    let Some((function, _)) = TIMER_FUNCTION_JSON
        .iter()
        .find(|(function, _)| function.eq_ignore_ascii_case(&name))
    else {
        return Err(ApiError::NotFound("no timer function of that name"));
    };
    tracing::info!(function, "timer function run on request");
    match *function {
        "PullReports" => {
            tokio::spawn(async move {
                if let Err(e) = super::pull_reports::run(&state).await {
                    tracing::error!(error = %crate::error::error_chain(&e), "requested run failed");
                }
            });
        }
        "MaintainSubscription" => {
            tokio::spawn(async move {
                if let Err(e) = super::maintain_subscription::run(&state).await {
                    tracing::error!(error = %crate::error::error_chain(&e), "requested run failed");
                }
            });
        }
        "Reconcile" => super::reconcile::start_in_background(&state),
        "Purge" => {
            tokio::spawn(async move {
                if let Err(e) = super::purge::run(&state).await {
                    tracing::error!(error = %crate::error::error_chain(&e), "requested run failed");
                }
            });
        }
        _ => return Err(ApiError::NotFound("no timer function of that name")),
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Whether the request carries one of `READ_API_KEYS` (none configured: no request does).
pub(crate) fn has_key(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> bool {
    let from_header = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
    });
    let Some(given) = from_header.or(from_query) else {
        return false;
    };
    // Every key is compared, so the time taken does not say which one matched.
    state.api_keys.iter().fold(false, |found, key| {
        secrets_equal(given.as_bytes(), key.expose_secret().as_bytes()) | found
    })
}
