//! The Graph credential: `azure_identity`'s `ManagedIdentityCredential` (system- or user-assigned) or
//! `ClientSecretCredential`, built from [`GraphConfig`] with our HTTP client as transport, so token
//! requests get the same TLS roots (`EXTRA_CA_CERTS_FILE`) and time limits as Graph calls.
//!
//! Both credentials cache tokens per scope and fetch a new one 5 minutes before expiry
//! (`azure_identity` 1.x `TokenCache`), so the client asks for a token before every try and
//! nothing is cached here. Their pipelines do not retry: a token request that fails transiently is
//! retried by the Graph client's one retry policy (`retry`), not by two stacked ones.
//!
//! Token failures become text for [`GraphError`](super::GraphError) with every URL's query string
//! removed; the secret itself is never part of an `azure_core` error (it travels in the form body).

use std::sync::Arc;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use secrecy::ExposeSecret;

use super::retry::is_transient_status;
use crate::config::{GraphAuth, GraphConfig};
use crate::http::redact_url_queries;

/// Longest credential error text kept (the SDK appends a troubleshooting link; Entra adds trace ids).
const MAX_ERROR_TEXT: usize = 600;

/// Builds the credential the configuration describes.
///
/// # Errors
/// The SDK's refusal as text (e.g. no managed-identity endpoint, an authority host that is not
/// HTTPS), never a secret.
pub(crate) fn graph_credential(
    config: &GraphConfig,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, String> {
    let client_options = || ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        retry: RetryOptions::none(),
        ..Default::default()
    };
    match &config.auth {
        GraphAuth::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(),
            };
            let credential =
                ManagedIdentityCredential::new(Some(options)).map_err(|e| describe(&e))?;
            Ok(credential)
        }
        GraphAuth::ClientSecret { client_id, secret } => {
            let mut cloud = CustomConfiguration::default();
            cloud.authority_host = config.authority_host.as_str().to_owned();
            let mut client_options = client_options();
            client_options.cloud = Some(Arc::new(cloud.into()));
            let credential = ClientSecretCredential::new(
                &config.tenant_id,
                client_id.clone(),
                Secret::new(secret.expose_secret().to_owned()),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| describe(&e))?;
            Ok(credential)
        }
    }
}

/// Whether a failed token request is worth retrying, and what to say about it.
///
/// Transient: the identity endpoint or Entra ID unreachable, cut off, timing out or answering
/// 408/429/5xx. Everything else (a wrong secret, an unknown tenant, an identity not assigned to the
/// app) will fail the same way next time.
pub(crate) fn token_failure(err: &azure_core::Error) -> (bool, String) {
    (is_transient_token_error(err), describe(err))
}

fn is_transient_token_error(err: &azure_core::Error) -> bool {
    // The credentials wrap the pipeline's error in an `ErrorKind::Credential` one; look through.
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(azure) = e.downcast_ref::<azure_core::Error>() {
            match azure.kind() {
                ErrorKind::HttpResponse { status, .. } => {
                    return is_transient_status(u16::from(*status));
                }
                ErrorKind::Connection | ErrorKind::Io => return true,
                _ => {}
            }
        }
        current = e.source();
    }
    false
}

/// An error and its causes on one line, URL queries redacted, bounded in length.
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The SDK repeats its cause's text in its own message; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let mut text = redact_url_queries(&text.replace('\n', " "));
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::StatusCode;

    #[test]
    fn url_queries_are_redacted_and_text_is_one_line() {
        let err = azure_core::Error::with_message(
            ErrorKind::Io,
            "error sending request for url (http://127.0.0.1:1/msi/token?api-version=2019-08-01&client_id=x)\n\
             see https://aka.ms/x",
        );
        assert_eq!(
            describe(&err),
            "error sending request for url (http://127.0.0.1:1/msi/token?REDACTED) see https://aka.ms/x"
        );
    }

    #[test]
    fn token_errors_are_transient_only_when_the_endpoint_failed() {
        let http = |status: StatusCode| {
            azure_core::Error::with_error(
                ErrorKind::Credential,
                azure_core::Error::with_message(
                    ErrorKind::HttpResponse {
                        status,
                        error_code: None,
                        raw_response: None,
                    },
                    "AADSTS",
                ),
                "ClientSecretCredential authentication failed.",
            )
        };
        let wrapped = |kind: ErrorKind| {
            azure_core::Error::with_error(
                ErrorKind::Credential,
                azure_core::Error::with_message(kind, "x"),
                "ManagedIdentityCredential authentication failed.",
            )
        };
        let cases = [
            ("503", http(StatusCode::ServiceUnavailable), true),
            ("429", http(StatusCode::TooManyRequests), true),
            ("401 bad secret", http(StatusCode::Unauthorized), false),
            ("400 unknown identity", http(StatusCode::BadRequest), false),
            ("connect", wrapped(ErrorKind::Connection), true),
            ("io", wrapped(ErrorKind::Io), true),
            ("parse", wrapped(ErrorKind::DataConversion), false),
            (
                "bare credential",
                azure_core::Error::with_message(ErrorKind::Credential, "no scopes"),
                false,
            ),
        ];
        for (case, err, transient) in cases {
            assert_eq!(token_failure(&err).0, transient, "{case}");
        }
    }
}
