//! Microsoft Graph behind our own client: the only module that talks to Graph or knows its rules for
//! authentication, retries and throttling. It returns Graph's bodies as received; what they mean
//! (call records, sessions, paging) is for the code built on top of it.
//!
//! - [`GraphClient`]: `GET` a Graph path or a next link, with a token, a client-side rate limit, a
//!   per-try timeout and retries; errors are a [`GraphError`] callers branch on.
//! - `auth`: the credential (managed identity or client secret, `azure_identity` 1.x).
//! - `retry`: the one retry policy (classification, `Retry-After`, backoff, budgets).
//! - `rate`: the client-side rate limiter (Graph's documented call-record and report limits).
//!
//! Tokens never appear in logs or errors: the `Authorization` header is marked sensitive, spans carry
//! the path without its query, and error texts are built from status codes, Graph's error codes and
//! redacted SDK messages.
//!
//! A `401` is not retried with a fresh token: the credentials cache tokens until 5 minutes before
//! they expire, so a `401` means a configuration or consent problem, surfaced as
//! [`GraphError::Unauthorized`] (with Graph's code, e.g. `InvalidAuthenticationToken`).

mod auth;
pub(crate) mod callrecords;
pub(crate) mod pages;
mod rate;
pub(crate) mod reports;
mod retry;
pub(crate) mod subscriptions;
pub(crate) mod users;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use reqwest::Method;
use tokio::time::Instant;
use tracing::field;
use url::Url;

use crate::config::GraphConfig;
use rate::RateLimiter;
use retry::{Failure, Step, parse_retry_after};

pub use rate::{RateKey, RateLimit, RateLimits};
pub use retry::RetryPolicy;

/// The Graph API version every path is under.
const API_VERSION: &str = "v1.0/";
/// Longest Graph error message kept in an error's text.
const MAX_MESSAGE: usize = 300;

/// A Graph request that did not succeed, coarse enough for callers to decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph said to wait longer than we wait in-process (or kept throttling until the retry budget
    /// ran out): do the work again after `retry_after` (e.g. re-enqueue with that visibility delay).
    #[error("Graph throttled the request; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// `404`: for a call record, either not available yet or older than 30 days; callers decide.
    #[error("not found in Graph")]
    NotFound,
    /// `401`/`403`: Graph refused our token; `code` is Graph's error code (`Forbidden`,
    /// `InvalidAuthenticationToken`, …), which tells a missing permission from a wrong audience.
    #[error("Graph refused the request (HTTP {status}, {code})")]
    Unauthorized { status: u16, code: String },
    /// No token: a wrong secret, an unknown tenant or client id, an identity not assigned to the app.
    /// The text is the SDK's, with URL queries removed; it never holds the secret.
    #[error("cannot get a Graph token: {0}")]
    Credential(String),
    /// Graph or the token endpoint kept failing (5xx, 408, timeouts, cut connections) until the retry
    /// budget ran out: worth trying again later.
    #[error("Graph is unavailable: {0}")]
    Transient(String),
    /// Graph answered with a status that another try will not change (`400`, `405`, `501`, …).
    /// Callers that expect some of them (a property a national cloud does not serve) branch on
    /// `status`.
    #[error("Graph rejected the request (HTTP {status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// Our own refusal before anything was sent: a refused next link, a bad path.
    #[error("Graph request failed: {0}")]
    Fatal(String),
}

/// A successful (2xx) Graph response.
#[derive(Debug, Clone)]
pub struct GraphResponse {
    pub status: u16,
    /// The body exactly as Graph sent it.
    pub body: Bytes,
    /// Graph's `request-id` header, for support cases.
    pub request_id: Option<String>,
}

/// How a client retries and limits itself; [`GraphOptions::from_config`] is production's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphOptions {
    pub retry: RetryPolicy,
    pub limits: RateLimits,
    /// One try, from connecting to the last byte of the body.
    pub request_timeout: Duration,
}

impl GraphOptions {
    /// The configured retry budget, timeout and share of the per-app limit, Graph's documented
    /// limits otherwise, the default delays.
    pub fn from_config(config: &GraphConfig) -> Self {
        let mut limits = RateLimits::default();
        limits.call_records_app.requests = config.call_record_requests_per_20s as usize;
        Self {
            retry: RetryPolicy::from_config(config),
            limits,
            request_timeout: config.request_timeout,
        }
    }
}

/// A Graph client. Cheap to clone: clones share the credential, the connection pool and the rate
/// limiter (which must be one per process to keep the process under Graph's limits).
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    /// `GRAPH_BASE_URL`, ending in `/`.
    base_url: Url,
    /// `{base_url}v1.0/`.
    api_root: Url,
    scope: String,
    options: GraphOptions,
    limiter: RateLimiter,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.inner.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for the configured Graph, authenticating with `credential`, or, when `None`, with the
    /// credential the configuration describes (built on `http`).
    ///
    /// # Errors
    /// [`GraphError::Credential`] when the credential cannot be built (e.g. managed identity asked
    /// for where there is no identity endpoint); [`GraphError::Fatal`] for an unusable base URL.
    pub fn new(
        config: &GraphConfig,
        http: reqwest::Client,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self, GraphError> {
        Self::with_options(config, http, credential, GraphOptions::from_config(config))
    }

    /// [`GraphClient::new`] with explicit retry, rate-limit and timeout options (tests use
    /// millisecond delays).
    ///
    /// # Errors
    /// As [`GraphClient::new`].
    pub fn with_options(
        config: &GraphConfig,
        http: reqwest::Client,
        credential: Option<Arc<dyn TokenCredential>>,
        options: GraphOptions,
    ) -> Result<Self, GraphError> {
        let credential = match credential {
            Some(credential) => credential,
            None => auth::graph_credential(config, &http).map_err(GraphError::Credential)?,
        };
        let mut base_url = config.base_url.clone();
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let api_root = base_url
            .join(API_VERSION)
            .map_err(|_| GraphError::Fatal("GRAPH_BASE_URL cannot be a base".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                credential,
                scope: config.scope(),
                base_url,
                api_root,
                options,
                limiter: RateLimiter::new(options.limits),
            }),
        })
    }

    /// `GRAPH_BASE_URL` (ending in `/`); paths are under `{base_url}v1.0/`.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// `GET {base}/v1.0/{path_and_query}`, e.g.
    /// `communications/callRecords/{id}?$expand=sessions($expand=segments)`.
    ///
    /// # Errors
    /// [`GraphError`]: transient failures are retried first (see `retry`).
    pub async fn get(
        &self,
        path_and_query: &str,
        key: RateKey,
    ) -> Result<GraphResponse, GraphError> {
        let url = self.api_url(path_and_query)?;
        self.send(&Method::GET, url, None, key).await
    }

    /// `{method} {base}/v1.0/{path}` with a JSON body (or none): the subscription requests. The
    /// same retries as a `GET`: a create that timed out may have succeeded, and is then answered
    /// `409` on the retry, which callers treat as "it exists".
    ///
    /// # Errors
    /// As [`GraphClient::get`].
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        key: RateKey,
    ) -> Result<GraphResponse, GraphError> {
        let url = self.api_url(path)?;
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.send(&method, url, body, key).await
    }

    /// `GET` an absolute URL from an `@odata.nextLink`, followed verbatim. Refused with
    /// [`GraphError::Fatal`], and nothing sent, unless it has the scheme, host and port of
    /// `GRAPH_BASE_URL`: a token is never sent anywhere else.
    ///
    /// # Errors
    /// As [`GraphClient::get`].
    pub async fn get_url(&self, url: &str, key: RateKey) -> Result<GraphResponse, GraphError> {
        let url = Url::parse(url)
            .map_err(|_| GraphError::Fatal("the next link is not an absolute URL".into()))?;
        if !same_origin(&self.inner.base_url, &url) {
            return Err(GraphError::Fatal(format!(
                "the next link points to {}://{}, not to GRAPH_BASE_URL; not followed",
                url.scheme(),
                url.host_str().unwrap_or("?")
            )));
        }
        self.send(&Method::GET, url, None, key).await
    }

    fn api_url(&self, path_and_query: &str) -> Result<Url, GraphError> {
        let relative = path_and_query.trim_start_matches('/');
        let url = Url::parse(&format!("{}{relative}", self.inner.api_root))
            .map_err(|_| GraphError::Fatal("not a valid Graph path".into()))?;
        if !same_origin(&self.inner.base_url, &url) {
            return Err(GraphError::Fatal("not a valid Graph path".into()));
        }
        Ok(url)
    }

    /// How long requests about call record `id` are still held back by a `429` (zero when not).
    pub(crate) fn throttled_for(&self, id: &str) -> Duration {
        self.inner
            .limiter
            .blocked_for(&RateKey::CallRecord(id.to_owned()), Instant::now())
    }

    /// The request loop: rate limit, try, and ask the retry policy what next.
    #[tracing::instrument(
        name = "graph_request",
        skip_all,
        fields(method = %method, path = %url.path(), key = ?key, attempt = field::Empty, status = field::Empty)
    )]
    async fn send(
        &self,
        method: &Method,
        url: Url,
        body: Option<Bytes>,
        key: RateKey,
    ) -> Result<GraphResponse, GraphError> {
        let span = tracing::Span::current();
        let policy = &self.inner.options.retry;
        let started = Instant::now();
        let mut retries = 0u32;
        loop {
            // Another request's 429 already said to come back later than we wait in-process: hand
            // the wait to the caller, as if this request had been throttled itself.
            let blocked = self.inner.limiter.blocked_for(&key, Instant::now());
            if blocked > policy.max_inline_retry_after {
                tracing::warn!(
                    wait_ms = blocked.as_millis(),
                    "Graph key throttled; not sent"
                );
                return Err(GraphError::Throttled {
                    retry_after: blocked,
                });
            }
            self.inner.limiter.acquire(&key).await;
            let attempt = retries + 1;
            span.record("attempt", attempt);
            let (failure, error) = match self.try_once(method, &url, body.as_ref()).await {
                Ok(response) => {
                    span.record("status", response.status);
                    tracing::debug!(attempt, status = response.status, "Graph answered");
                    return Ok(response);
                }
                Err(tried) => tried,
            };
            if let Failure::Status { status, .. } = failure {
                span.record("status", status);
            }
            if let Failure::Status {
                status: 429,
                retry_after: Some(after),
            } = failure
            {
                // Everyone waiting for this key waits too, not just this request.
                self.inner
                    .limiter
                    .block(&key, rate::deadline(Instant::now(), after));
            }
            match policy.next_step(failure, retries, started.elapsed(), crate::random::unit()) {
                Step::Retry(wait) => {
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis(),
                        error = %error,
                        "Graph request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                Step::Stop => {
                    if matches!(
                        error,
                        GraphError::Throttled { .. } | GraphError::Transient(_)
                    ) {
                        tracing::warn!(attempt, error = %error, "Graph request given up");
                    } else {
                        tracing::debug!(attempt, error = %error, "Graph request failed");
                    }
                    return Err(error);
                }
            }
        }
    }

    /// One try: token, request, whole body.
    async fn try_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
    ) -> Result<GraphResponse, (Failure, GraphError)> {
        let inner = &*self.inner;
        let token = match inner.credential.get_token(&[&inner.scope], None).await {
            Ok(token) => token,
            Err(err) => {
                let (transient, text) = auth::token_failure(&err);
                let error = if transient {
                    GraphError::Transient(format!("token request failed: {text}"))
                } else {
                    GraphError::Credential(text)
                };
                return Err((Failure::Token { transient }, error));
            }
        };
        let mut request = inner
            .http
            .request(method.clone(), url.clone())
            // `bearer_auth` marks the header sensitive, so reqwest never prints it.
            .bearer_auth(token.token.secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(inner.options.request_timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        } else if *method == Method::POST {
            // A POST without a body (`reauthorize`) still says so: HTTP/1.1 front ends may answer
            // `411 Length Required` otherwise.
            request = request.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_failure(e, url))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        // An HTTP-date Retry-After counts from Graph's own clock when it says what time it is.
        let now = header("date")
            .and_then(|d| httpdate::parse_http_date(&d).ok())
            .unwrap_or_else(SystemTime::now);
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v, now));
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_failure(e, url))?;
        if (200..300).contains(&status) {
            return Ok(GraphResponse {
                status,
                body,
                request_id,
            });
        }
        let failure = Failure::Status {
            status,
            retry_after,
        };
        Err((failure, self.status_error(status, retry_after, &body, url)))
    }

    fn status_error(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        url: &Url,
    ) -> GraphError {
        let (code, message) = graph_error_body(body);
        match status {
            404 => GraphError::NotFound,
            401 | 403 => GraphError::Unauthorized { status, code },
            429 => GraphError::Throttled {
                // Graph always sends Retry-After with a 429; without one, wait a backoff step.
                retry_after: retry_after.unwrap_or(self.inner.options.retry.initial_delay),
            },
            s if retry::is_transient_status(s) => {
                GraphError::Transient(format!("HTTP {status} {code} for {}", url.path()))
            }
            _ => GraphError::Rejected {
                status,
                detail: format!("{code}: {message} ({})", url.path()),
            },
        }
    }
}

/// A try that got no complete response. reqwest quotes the URL in its errors; the query is dropped
/// (ours hold no secrets, but filters are noise) and the path said once.
fn transport_failure(err: reqwest::Error, url: &Url) -> (Failure, GraphError) {
    let builder = err.is_builder();
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "connection cut while reading the body"
    } else {
        "request failed"
    };
    let text = format!(
        "{kind} ({}): {}",
        url.path(),
        auth::describe(&err.without_url())
    );
    if builder {
        (Failure::Final, GraphError::Fatal(text))
    } else {
        (Failure::Transport, GraphError::Transient(text))
    }
}

/// Graph's error envelope `{"error":{"code","message"}}`; empty strings when the body is not one.
fn graph_error_body(body: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |name: &str| {
        value["error"][name]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(MAX_MESSAGE)
            .collect::<String>()
    };
    (field("code"), field("message"))
}

/// Same scheme, host and port, and no user info: where a token for `base` may go.
fn same_origin(base: &Url, link: &Url) -> bool {
    link.scheme() == base.scheme()
        && link.host_str().is_some()
        && link
            .host_str()
            .zip(base.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        && link.port_or_known_default() == base.port_or_known_default()
        && link.username().is_empty()
        && link.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn next_links_are_followed_only_to_the_configured_origin() {
        let base = url("https://graph.microsoft.com/");
        let cases = [
            (
                "https://graph.microsoft.com/v1.0/communications/callRecords/x/sessions?$skiptoken=60",
                true,
            ),
            ("https://GRAPH.microsoft.com:443/v1.0/x", true),
            ("http://graph.microsoft.com/v1.0/x", false),
            ("https://graph.microsoft.com:8443/v1.0/x", false),
            ("https://graph.microsoft.com.evil.example/v1.0/x", false),
            ("https://evil.example/v1.0/x", false),
            ("https://user@graph.microsoft.com/v1.0/x", false),
            ("https://graph.microsoft.us/v1.0/x", false),
        ];
        for (link, allowed) in cases {
            assert_eq!(same_origin(&base, &url(link)), allowed, "{link}");
        }
        let sim = url("https://127.0.0.1:4443/");
        assert!(same_origin(&sim, &url("https://127.0.0.1:4443/v1.0/x")));
        assert!(!same_origin(&sim, &url("https://127.0.0.1:4444/v1.0/x")));
    }

    #[test]
    fn graph_error_bodies_give_code_and_message() {
        let body = br#"{"error":{"code":"Forbidden","message":"Missing role","innerError":{}}}"#;
        assert_eq!(
            graph_error_body(body),
            ("Forbidden".to_owned(), "Missing role".to_owned())
        );
        assert_eq!(graph_error_body(b"<html>"), (String::new(), String::new()));
    }
}
