//! How storage requests are authenticated ([`StorageAuth`]), and the piece the storage SDK does not
//! do itself: signing an account SAS from an account key ([`SasPolicy`]).
//!
//! The 1.x storage SDK authenticates with a bearer token (HTTPS only) or a SAS already in the URL; it
//! has no shared-key signing. For an account key (Azurite, or an admin who chose keys) we sign a
//! short-lived *account SAS* ourselves and append it to each request in a pipeline policy,
//! re-signing before it expires. The SAS `sig` is redacted by the SDK's logging allow-list, and we
//! never log URLs ourselves. Where a credential comes from (configuration, a managed identity) is
//! the caller's business, not this module's.
//! Format: <https://learn.microsoft.com/rest/api/storageservices/create-account-sas>.

use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Service version the SAS is signed for (its string-to-sign includes the encryption scope line).
const SAS_VERSION: &str = "2021-08-06";
/// How long a signed SAS is valid; it is re-signed when less than [`SAS_RENEW_BEFORE`] is left.
const SAS_LIFETIME: Duration = Duration::hours(1);
const SAS_RENEW_BEFORE: Duration = Duration::minutes(10);
/// Clock skew allowance for the SAS start time.
const SAS_SKEW: Duration = Duration::minutes(5);

/// How storage requests are authenticated.
#[derive(Clone)]
pub enum StorageAuth {
    /// Sign an account SAS with this key (account name and key from a connection string).
    SharedKey {
        account: String,
        key: SecretSlice<u8>,
    },
    /// Append this SAS (without the leading `?`) to every request.
    Sas(SecretString),
    /// Send a bearer token for `https://storage.azure.com/.default` (HTTPS only).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SharedKey { .. } => "SharedKey(..)",
            Self::Sas(_) => "Sas(..)",
            Self::Token(_) => "Token(..)",
        })
    }
}

/// An `azure_core` pipeline policy that appends a SAS to every request that does not carry one yet:
/// a given one, or an account SAS it signs itself and renews before it expires.
#[derive(Debug)]
pub struct SasPolicy {
    source: SasSource,
}

enum SasSource {
    Fixed(SecretString),
    Signed {
        account: String,
        key: SecretSlice<u8>,
        /// The current SAS and when it expires.
        cached: Mutex<Option<(SecretString, OffsetDateTime)>>,
    },
}

impl std::fmt::Debug for SasSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SasSource(..)")
    }
}

impl SasPolicy {
    /// Appends `sas` (a query string without the leading `?`) as it is.
    pub fn fixed(sas: SecretString) -> Self {
        Self {
            source: SasSource::Fixed(sas),
        }
    }

    /// Signs an account SAS for the queue and table services of `account` with `key`, valid for an
    /// hour and renewed ten minutes before it expires.
    pub fn signed(account: String, key: SecretSlice<u8>) -> Self {
        Self {
            source: SasSource::Signed {
                account,
                key,
                cached: Mutex::new(None),
            },
        }
    }

    /// The SAS query string to use now.
    fn current(&self, now: OffsetDateTime) -> SecretString {
        match &self.source {
            SasSource::Fixed(sas) => sas.clone(),
            SasSource::Signed {
                account,
                key,
                cached,
            } => {
                // A poisoned lock only means another thread panicked while signing; the cache is
                // still either empty or a complete value, so keep using it.
                let mut cached = cached.lock().unwrap_or_else(|p| p.into_inner());
                match cached.as_ref() {
                    Some((sas, expiry)) if *expiry - now > SAS_RENEW_BEFORE => sas.clone(),
                    _ => {
                        let expiry = now + SAS_LIFETIME;
                        let sas =
                            sign_account_sas(account, key.expose_secret(), now - SAS_SKEW, expiry);
                        *cached = Some((sas.clone(), expiry));
                        sas
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
// The trait's signature elides the `Context` lifetime, and an impl must match it.
#[allow(elided_lifetimes_in_paths)]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let url = request.url_mut();
        if !url.query_pairs().any(|(k, _)| k == "sig") {
            let sas = self.current(OffsetDateTime::now_utc());
            let query = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{}", sas.expose_secret()),
                _ => sas.expose_secret().to_owned(),
            };
            url.set_query(Some(&query));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Signs an account SAS for the queue and table services with every object permission a queue or
/// table client needs.
fn sign_account_sas(
    account: &str,
    key: &[u8],
    start: OffsetDateTime,
    expiry: OffsetDateTime,
) -> SecretString {
    // Whole seconds: the service accepts ISO 8601 without fractions.
    let fmt = |t: OffsetDateTime| {
        t.replace_nanosecond(0)
            .unwrap_or(t)
            .format(&Rfc3339)
            .unwrap_or_default()
    };
    let (st, se) = (fmt(start), fmt(expiry));
    let (permissions, services, resource_types, protocol) = ("rwdlacup", "qt", "sco", "https,http");
    let string_to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n{st}\n{se}\n\n{protocol}\n{SAS_VERSION}\n\n"
    );
    // An HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(string_to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", permissions)
        .append_pair("st", &st)
        .append_pair("se", &se)
        .append_pair("spr", protocol)
        .append_pair("sig", &sig)
        .finish();
    SecretString::from(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn account_sas_matches_the_documented_string_to_sign() {
        // Recomputed independently: HMAC-SHA256 over the documented lines, key = "key".
        let sas = sign_account_sas(
            "acct",
            b"key",
            datetime!(2026-01-01 00:00:00.5 UTC),
            datetime!(2026-01-01 01:00 UTC),
        );
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(sas.expose_secret().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(pairs["st"], "2026-01-01T00:00:00Z");
        assert_eq!(pairs["se"], "2026-01-01T01:00:00Z");
        assert_eq!(pairs["sv"], SAS_VERSION);
        let expected_input = "acct\nrwdlacup\nqt\nsco\n2026-01-01T00:00:00Z\n2026-01-01T01:00:00Z\n\nhttps,http\n2021-08-06\n\n";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(expected_input.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(pairs["sig"], expected);
    }

    #[test]
    fn signed_sas_grants_every_table_operation() {
        // Account SAS rules: create table needs c (or w) on containers, query l/r, insert a,
        // update and merge u, delete d, all on the table service.
        // https://learn.microsoft.com/rest/api/storageservices/create-account-sas
        let sas = sign_account_sas(
            "acct",
            b"key",
            datetime!(2026-01-01 00:00 UTC),
            datetime!(2026-01-01 01:00 UTC),
        );
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(sas.expose_secret().as_bytes())
                .into_owned()
                .collect();
        assert!(pairs["ss"].contains('t'), "{}", pairs["ss"]);
        assert!(pairs["srt"].contains('c') && pairs["srt"].contains('o'));
        for p in ['r', 'w', 'd', 'l', 'a', 'c', 'u'] {
            assert!(pairs["sp"].contains(p), "missing {p} in {}", pairs["sp"]);
        }
    }

    #[test]
    fn signed_sas_is_reused_until_close_to_expiry() {
        let policy = SasPolicy::signed("acct".into(), SecretSlice::from(b"key".to_vec()));
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let first = policy.current(t0);
        let later = policy.current(t0 + Duration::minutes(45));
        assert_eq!(first.expose_secret(), later.expose_secret());
        let renewed = policy.current(t0 + Duration::minutes(55));
        assert_ne!(first.expose_secret(), renewed.expose_secret());
    }
}
