//! Who may call the guarded routes: the one place that checks function keys and app roles, for the
//! standalone admin API, the ops routes, the health details and the read API.
//!
//! Under the Functions host, routes with `authLevel: function` are checked by the host before they
//! reach us, and the host forwards the request unchanged (`x-functions-key` and `code=` included;
//! docs/DEVELOPMENT.md "Sources of platform facts"). In standalone mode no host stands in front, so
//! the app checks `READ_API_KEYS` as the host would: the `x-functions-key` header or the `code`
//! query parameter, compared in constant time. The read API may also require an Entra app role in
//! `X-MS-CLIENT-PRINCIPAL` (set by App Service Authentication, which strips any a client sends).

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::RunMode;
use crate::domain::secret::secrets_equal;
use crate::error::ApiError;

/// The header the host's keys travel in.
const KEY_HEADER: &str = "x-functions-key";
/// The header App Service Authentication forwards the caller's claims in.
const PRINCIPAL_HEADER: &str = "x-ms-client-principal";

/// The run mode and the keys standalone mode accepts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Auth {
    /// Whether the host stands in front (and checks function keys) or not.
    pub(crate) mode: RunMode,
    /// `READ_API_KEYS`.
    keys: Arc<Vec<SecretString>>,
}

impl Auth {
    pub(crate) fn new(mode: RunMode, keys: Vec<SecretString>) -> Self {
        Self {
            mode,
            keys: Arc::new(keys),
        }
    }

    /// A route the host guards with a function key: under the host, the host has checked it; in
    /// standalone mode the request must carry one of `READ_API_KEYS`.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] in standalone mode without a valid key.
    pub(crate) fn require_key(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.mode == RunMode::CustomHandler || self.has_key(headers, query) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Whether the request carries one of `READ_API_KEYS` (none configured: no request does).
    fn has_key(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let Some(given) = presented_key(headers, query) else {
            return false;
        };
        // Every key is compared, so the time taken does not say which one matched.
        self.keys.iter().fold(false, |found, key| {
            secrets_equal(given.as_bytes(), key.expose_secret().as_bytes()) | found
        })
    }
}

/// The key a request presents, as the host reads it: the `x-functions-key` header, else the `code`
/// query parameter.
pub(crate) fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    from_header.or_else(|| {
        query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
    })
}

/// With `role` set, the caller's App Service principal must hold it.
///
/// # Errors
/// [`ApiError::Forbidden`] without a principal, or with one that lacks the role.
pub(crate) fn require_role(headers: &HeaderMap, role: Option<&str>) -> Result<(), ApiError> {
    let Some(role) = role else {
        return Ok(());
    };
    let principal = headers
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Forbidden)?;
    if has_role(principal, role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Whether the App Service client principal (base64 JSON: `claims` of `typ`/`val`, and `role_typ`
/// naming the role claim) holds `role`.
pub(crate) fn has_role(principal: &str, role: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Claim {
        typ: String,
        val: String,
    }
    #[derive(serde::Deserialize)]
    struct Principal {
        #[serde(default)]
        claims: Vec<Claim>,
        role_typ: Option<String>,
    }
    let Ok(json) = base64::engine::general_purpose::STANDARD.decode(principal.trim()) else {
        return false;
    };
    let Ok(principal) = serde_json::from_slice::<Principal>(&json) else {
        return false;
    };
    principal
        .claims
        .iter()
        .any(|c| (c.typ == "roles" || Some(&c.typ) == principal.role_typ.as_ref()) && c.val == role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone(keys: &[&str]) -> Auth {
        Auth::new(
            RunMode::Standalone,
            keys.iter().map(|k| SecretString::from(*k)).collect(),
        )
    }

    #[test]
    fn standalone_mode_accepts_a_configured_key_in_the_header_or_the_code_parameter() {
        let auth = standalone(&["first", "second"]);
        let mut headers = HeaderMap::new();
        assert!(auth.require_key(&headers, None).is_err());
        assert!(auth.require_key(&headers, Some("code=second")).is_ok());
        assert!(auth.require_key(&headers, Some("code=third")).is_err());
        headers.insert(KEY_HEADER, "first".parse().unwrap());
        assert!(auth.require_key(&headers, None).is_ok());
    }

    #[test]
    fn standalone_mode_without_keys_accepts_no_request() {
        let auth = standalone(&[]);
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, "".parse().unwrap());
        assert!(auth.require_key(&headers, Some("code=")).is_err());
    }

    #[test]
    fn under_the_host_the_key_was_checked_by_the_host() {
        let auth = Auth::new(RunMode::CustomHandler, Vec::new());
        assert!(auth.require_key(&HeaderMap::new(), None).is_ok());
    }

    #[test]
    fn a_required_role_must_be_in_the_principal() {
        let principal = |claims: serde_json::Value| {
            base64::engine::general_purpose::STANDARD.encode(claims.to_string())
        };
        let mut headers = HeaderMap::new();
        assert!(require_role(&headers, None).is_ok());
        assert!(require_role(&headers, Some("CallData.Read")).is_err());
        let reader =
            principal(serde_json::json!({"claims": [{"typ": "roles", "val": "CallData.Read"}]}));
        headers.insert(PRINCIPAL_HEADER, reader.parse().unwrap());
        assert!(require_role(&headers, Some("CallData.Read")).is_ok());
        assert!(require_role(&headers, Some("Other")).is_err());
    }
}
