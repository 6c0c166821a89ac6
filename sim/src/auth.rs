//! Tokens: the Entra ID client-credentials endpoint (`POST /{tenant}/oauth2/v2.0/token`), the App
//! Service managed-identity endpoint (`GET /msi/token`, api-version 2019-08-01, `X-IDENTITY-HEADER`),
//! and the bearer check every Graph request passes. Tokens are opaque random strings that expire after
//! an hour of real time.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::graph::graph_error;
use crate::{Endpoint, LedgerTag, SimState};

/// A token the simulator issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    client: String,
    expiry: Instant,
    /// Issued for Graph (`https://graph.microsoft.com`, or this simulator's own base URL, which a
    /// client pointed at it uses as its Graph base): only those are accepted by Graph endpoints.
    for_graph: bool,
}

/// Whether a scope or resource names Graph (as a real client would ask), or the simulator itself.
fn is_graph_audience(state: &SimState, audience: &str) -> bool {
    let audience = audience.trim_end_matches("/.default").trim_end_matches('/');
    audience.eq_ignore_ascii_case("https://graph.microsoft.com")
        || audience.eq_ignore_ascii_case(&state.base_url)
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(client_credentials))
        .route("/msi/token", get(managed_identity))
}

/// Issues a token for `client` directly.
pub(crate) fn mint(state: &SimState, client: &str, for_graph: bool) -> String {
    let token = format!("sim.{}.{}", state.new_id(), state.new_id());
    let issued = Issued {
        client: client.to_owned(),
        expiry: Instant::now() + state.config.token_lifetime,
        for_graph,
    };
    state
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), issued);
    token
}

fn tagged(endpoint: Endpoint, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(LedgerTag {
        endpoint,
        record_id: None,
        reset: false,
    });
    response
}

fn oauth_error(
    status: StatusCode,
    code: &str,
    description: &str,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
}

async fn client_credentials(
    State(state): State<Arc<SimState>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let endpoint = Endpoint::Token;
    if state.dice.token_fails(state.clock.now()) {
        return tagged(
            endpoint,
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "AADSTS90033: simulated outage",
            ),
        );
    }
    let config = &state.config;
    if !tenant.eq_ignore_ascii_case(&state.tenant().tenant_id) {
        return tagged(
            endpoint,
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS90002: Tenant not found.",
            ),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return tagged(
            endpoint,
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "AADSTS70003",
            ),
        );
    }
    if form.get("client_id") != Some(&config.client_id)
        || form.get("client_secret") != Some(&config.client_secret)
    {
        return tagged(
            endpoint,
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            ),
        );
    }
    if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return tagged(
            endpoint,
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "AADSTS1002012"),
        );
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or_default();
    let token = mint(&state, &config.client_id, is_graph_audience(&state, scope));
    let lifetime = config.token_lifetime.as_secs();
    tagged(
        endpoint,
        axum::Json(
            json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
        ),
    )
}

async fn managed_identity(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let endpoint = Endpoint::ManagedIdentityToken;
    if state.dice.token_fails(state.clock.now()) {
        return tagged(
            endpoint,
            (StatusCode::SERVICE_UNAVAILABLE, "simulated outage"),
        );
    }
    let header_ok = headers
        .get("x-identity-header")
        .is_some_and(|v| v.as_bytes() == state.config.identity_header.as_bytes());
    if !header_ok || query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return tagged(
            endpoint,
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER or api-version"}),
                ),
            ),
        );
    }
    let Some(resource) = query.get("resource").cloned() else {
        return tagged(
            endpoint,
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"statusCode": 400, "message": "resource is required"})),
            ),
        );
    };
    let client = query
        .get("client_id")
        .cloned()
        .unwrap_or_else(|| "system-assigned".into());
    if query.contains_key("client_id")
        && !state.config.managed_identity_client_ids.contains(&client)
    {
        // App Service: the requested user-assigned identity is not assigned to this app.
        return tagged(
            endpoint,
            (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"statusCode": 400, "message": "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."}),
                ),
            ),
        );
    }
    let token = mint(&state, &client, is_graph_audience(&state, &resource));
    let expires_on = time::OffsetDateTime::now_utc().unix_timestamp()
        + state.config.token_lifetime.as_secs() as i64;
    tagged(
        endpoint,
        axum::Json(
            json!({"access_token": token, "expires_on": expires_on.to_string(), "resource": resource, "token_type": "Bearer", "client_id": client}),
        ),
    )
}

/// The client behind a valid bearer token, or the `401` Graph answers.
pub(crate) fn authorize(state: &SimState, headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let tokens = state.tokens.lock().unwrap_or_else(|p| p.into_inner());
    match token.and_then(|t| tokens.get(t)) {
        Some(issued) if !issued.for_graph => Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Invalid audience.",
        )),
        Some(issued) if Instant::now() < issued.expiry => Ok(issued.client.clone()),
        Some(_) => Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )),
        None => Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty or invalid.",
        )),
    }
}
