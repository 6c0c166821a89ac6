//! The custom-handler side of the Azure Functions host protocol.
//!
//! The host starts the handler with `FUNCTIONS_CUSTOMHANDLER_PORT`, probes it until it answers, then
//! proxies HTTP-only functions as the original request (`enableProxyingHttpRequest`) and sends other
//! triggers as invocation payloads ([`invocation`]). Every request carries
//! `X-Azure-Functions-InvocationId`, which goes into the span of everything logged for it.
//! See <https://learn.microsoft.com/azure/azure-functions/functions-custom-handlers>.

pub(crate) mod invocation;
pub(crate) mod scheduler;
pub(crate) mod standalone;

use axum::http::HeaderMap;

/// Header the host sets on every request it sends to the handler.
pub(crate) const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// The invocation id of a request from the host, or `-` for a request that did not come through it
/// (standalone mode, a local curl).
pub(crate) fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .unwrap_or("-")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_id_comes_from_the_host_header_and_is_sanitised() {
        let mut headers = HeaderMap::new();
        assert_eq!(invocation_id(&headers), "-");
        headers.insert(
            INVOCATION_ID_HEADER,
            "83a33220-a921-460a-bec0-b3f043dcf1ff".parse().unwrap(),
        );
        assert_eq!(
            invocation_id(&headers),
            "83a33220-a921-460a-bec0-b3f043dcf1ff"
        );
        headers.insert(INVOCATION_ID_HEADER, "x\"injected".parse().unwrap());
        assert_eq!(invocation_id(&headers), "-");
    }
}
