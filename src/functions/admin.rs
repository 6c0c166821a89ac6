//! `POST /admin/functions/{FunctionName}` (standalone mode only): runs a timer function now, as the
//! Functions host's admin API does (the host serves its own, guarded by its master key). Guarded by
//! `READ_API_KEYS` (`crate::auth`). Answers `202` at once; the run goes on in the background, as
//! the host's does.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::Function;
use crate::error::ApiError;
use crate::services::Services;

pub(crate) async fn run_function(
    State(state): State<Services>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.require_key(&headers, query.as_deref())?;
    let Some((function, run)) = Function::timer_named(&name) else {
        return Err(ApiError::NotFound("no timer function of that name"));
    };
    tracing::info!(function = function.name, "timer function run on request");
    let span = tracing::info_span!("timer", function = function.name, trigger = "request");
    tokio::spawn(
        async move {
            if let Err(e) = run(state).await {
                tracing::error!(error = %crate::telemetry::error_chain(&e), "requested run failed");
            }
        }
        .instrument(span),
    );
    Ok(StatusCode::ACCEPTED.into_response())
}
