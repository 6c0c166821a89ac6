//! The test credential and unsigned JWTs come from `azurite_harness`; what is here is the app's own:
//! a fake App Service managed-identity endpoint for the real binary, which gets its tokens through
//! `azure_identity`'s `ManagedIdentityCredential`.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use time::OffsetDateTime;

pub use azurite_harness::{STORAGE_AUDIENCE, TestCredential, unsigned_jwt};

/// What the fake managed-identity endpoint saw.
#[derive(Debug, Clone, Default)]
pub struct IdentityRequest {
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub api_version: Option<String>,
    pub identity_header_ok: bool,
}

/// The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`,
/// api-version 2019-08-01), answering with an unsigned storage token.
/// See <https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>.
pub struct FakeManagedIdentity {
    pub endpoint: String,
    pub header_secret: String,
    pub requests: Arc<Mutex<Vec<IdentityRequest>>>,
}

impl FakeManagedIdentity {
    pub async fn start() -> Self {
        let header_secret = "test-identity-header-secret".to_owned();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = (header_secret.clone(), requests.clone());
        let app = axum::Router::new()
            .route("/msi/token", get(token))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            endpoint: format!("http://{addr}/msi/token"),
            header_secret,
            requests,
        }
    }
}

type IdentityState = (String, Arc<Mutex<Vec<IdentityRequest>>>);

async fn token(
    State((secret, requests)): State<IdentityState>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let request = IdentityRequest {
        resource: query.get("resource").cloned(),
        client_id: query.get("client_id").cloned(),
        api_version: query.get("api-version").cloned(),
        identity_header_ok: headers
            .get("x-identity-header")
            .is_some_and(|v| v.as_bytes() == secret.as_bytes()),
    };
    requests.lock().unwrap().push(request.clone());
    if !request.identity_header_ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "missing or wrong X-IDENTITY-HEADER"})),
        );
    }
    let resource = request.resource.unwrap_or_default();
    let expires_on = OffsetDateTime::now_utc().unix_timestamp() + 3600;
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({
            "access_token": unsigned_jwt(&resource, 3600),
            // App Service sends expires_on as a string of epoch seconds.
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": request.client_id,
        })),
    )
}
