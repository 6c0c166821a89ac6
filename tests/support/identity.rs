//! Bearer tokens for HTTPS Azurite (`--oauth basic`, which checks the claims but not the signature):
//! a [`TestCredential`] to inject in-process, and a fake App Service managed-identity endpoint for the
//! real binary, which gets its tokens through `azure_identity`'s `ManagedIdentityCredential`.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use base64::Engine as _;
use time::OffsetDateTime;

/// The audience Azurite (and Azure Storage) accept for `https://storage.azure.com/.default`.
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com";

/// An unsigned JWT (`alg: none`) with the claims Azurite checks: issuer, audience, validity.
pub fn unsigned_jwt(audience: &str, lifetime_secs: i64) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(serde_json::json!({"alg": "none", "typ": "JWT"}));
    let claims = b64(serde_json::json!({
        "aud": audience,
        "iss": "https://sts.windows.net/84bd8158-6d4d-4958-8b9f-9d6445542f95/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime_secs,
        "oid": "00000000-0000-0000-0000-00000000abcd",
        "tid": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }));
    format!("{header}.{claims}.")
}

/// A credential that hands out [`unsigned_jwt`]s for the audience it was made with, and counts calls.
#[derive(Debug)]
pub struct TestCredential {
    audience: String,
    pub calls: Mutex<Vec<Vec<String>>>,
}

impl TestCredential {
    pub fn new(audience: &str) -> Arc<Self> {
        Arc::new(Self {
            audience: audience.to_owned(),
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for TestCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.calls
            .lock()
            .unwrap()
            .push(scopes.iter().map(|s| (*s).to_owned()).collect());
        Ok(AccessToken::new(
            Secret::new(unsigned_jwt(&self.audience, 3600)),
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

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
