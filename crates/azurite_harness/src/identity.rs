//! Bearer tokens for HTTPS Azurite (`--oauth basic`, which checks the claims but not the signature):
//! [`unsigned_jwt`], and a [`TestCredential`] handing them out, to inject in-process.

use std::sync::{Arc, Mutex};

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
