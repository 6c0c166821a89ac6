//! The OpenAPI 3.1 document of the read API, generated from the handlers' annotations (`utoipa`),
//! so that it cannot drift from the code; a test runs schemathesis against it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A data set of the feeds.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used.
pub(crate) enum DatasetName {
    Callrecords,
    Pstncalls,
    Directroutingcalls,
}

/// A list's format.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used.
pub(crate) enum FormatName {
    Json,
    Ndjson,
    Csv,
}

/// The CSV layout of a list.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)] // Only its schema is used.
pub(crate) enum LayoutName {
    Table,
    TeamsAdmin,
}

/// A page of rows in JSON.
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct Page {
    /// The rows: each row's table columns under their table names (README "Tables").
    items: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass it back as `cursor` for the next page.
    cursor: String,
    /// Whether another page is ready now (when false, poll again later).
    more: bool,
}

/// Every error.
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct ErrorDetail {
    /// Stable: `InvalidLimit`, `InvalidFormat`, `InvalidLayout`, `InvalidTime`, `InvalidRange`, `RangeTooLong`,
    /// `IncompleteRange`, `InvalidCursor`, `CursorMismatch`, `UnknownParameter`,
    /// `RepeatedParameter`, `InvalidId`, `Unauthorized`, `Forbidden`, `NotFound`,
    /// `MethodNotAllowed`, `Unavailable`, `InternalError`.
    code: String,
    /// For people; may change.
    message: String,
}

struct Keys;

impl Modify for Keys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "functionKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-functions-key",
                "A function key of the app (READ_API_KEYS in standalone mode)",
            ))),
        );
        components.add_security_scheme(
            "functionKeyQuery",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "code",
                "The same key as a query parameter",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Teams CDR Functions read API",
        description = "Microsoft Teams call records, PSTN and Direct Routing calls as stored in the \
            deployment's own storage account. See the README's \"Read API\" section.",
    ),
    paths(super::list, super::call_record, super::sessions, super::openapi_json),
    components(schemas(Page, ErrorBody, ErrorDetail, DatasetName, FormatName, LayoutName)),
    modifiers(&Keys)
)]
struct ReadApiDoc;

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ReadApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document names every route the router mounts (`super::ROUTES`), each with `GET`.
    #[test]
    fn the_document_describes_every_route_of_the_router() {
        let document = document();
        let described: Vec<&str> = document.paths.paths.keys().map(String::as_str).collect();
        let mut mounted = super::super::ROUTES.to_vec();
        mounted.sort_unstable();
        assert_eq!(described, mounted);
        for item in document.paths.paths.values() {
            assert!(item.get.is_some());
        }
        let json = document.to_json().unwrap_or_default();
        assert!(json.contains("\"openapi\":\"3.1.0\""), "{json}");
    }
}
