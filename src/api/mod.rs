//! The read API (`ReadApi`, `GET /api/v1/…`): what UC-Analytics and Power BI read, without knowing
//! the tables. Every list is streamed a storage page at a time, in JSON (default), NDJSON or CSV.
//!
//! - `/api/v1/{dataset}` (`callrecords`, `pstncalls`, `directroutingcalls`): the incremental feed
//!   (`cursor`, `limit`): the rows stored or changed after the cursor, from the ingestion log
//!   (`store::feed`), which it reads up to `FEED_SETTLE_SECONDS` behind the present. The same route
//!   with `from` and `to` reads the rows by time instead (the call's start; a Direct Routing
//!   attempt's invite), in day and id order.
//! - `/api/v1/callrecords/{id}`: the complete document as stored; `/…/{id}/sessions`: its sessions.
//! - `/api/v1/openapi.json`: the OpenAPI 3.1 document of all of it, generated from these handlers.
//!
//! Auth: under the host, the function's `authLevel: function` makes the host check the key; in
//! standalone mode the app checks `READ_API_KEYS` as the host would. With `READ_API_REQUIRED_ROLE`,
//! the Entra app role must also be in `X-MS-CLIENT-PRINCIPAL` (set by App Service Authentication,
//! which strips any a client sends). Errors are `{"error":{"code","message"}}` (`error.rs`).

pub(crate) mod cursor;
pub(crate) mod format;
mod openapi;
mod teams_admin;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream;
use table_storage::{Continuation, MAX_PAGE_SIZE};
use time::OffsetDateTime;

use crate::domain::notification::normalize_id;
use crate::error::ApiError;
use crate::services::{ReadApi, Services};
use crate::store::feed::{Dataset, Scan};
use cursor::Position;
use format::{Encoder, Format, Layout};

pub(crate) use openapi::document;

/// Rows a page holds unless `limit` says otherwise, and at most.
pub(crate) const DEFAULT_LIMIT: u32 = 500;
pub(crate) const MAX_LIMIT: u32 = 5000;
/// Longest time range one read may span.
const MAX_RANGE_DAYS: i64 = 400;

/// Every route of the read API (the OpenAPI document must describe exactly these: a test).
pub(crate) const ROUTES: [&str; 4] = [
    "/api/v1/openapi.json",
    "/api/v1/{dataset}",
    "/api/v1/callrecords/{id}",
    "/api/v1/callrecords/{id}/sessions",
];

/// The routes, mounted under the app's router.
pub(crate) fn routes() -> Router<Services> {
    let only_get = || async { ApiError::MethodNotAllowed };
    let [openapi, list_route, record, record_sessions] = ROUTES;
    Router::new()
        .route(openapi, get(openapi_json).fallback(only_get))
        .route(list_route, get(list).fallback(only_get))
        .route(record, get(call_record).fallback(only_get))
        .route(record_sessions, get(sessions).fallback(only_get))
}

/// Every other path of the app, read API or not: a JSON `404` like every other error.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/v1/openapi.json")
}

/// The key (standalone: the app checks it; under the host, the host did) and, when configured,
/// the app role.
fn authorize(state: &ReadApi, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    state.auth.require_key(headers, query)?;
    crate::auth::require_role(headers, state.config.required_role.as_deref())
}

/// Which consumer a request comes from, without keeping its secret: the first 48 bits (hex) of
/// the SHA-256 of its key (`x-functions-key` or `code`), else of its App Service principal id,
/// else `anonymous`. Consumers with their own keys are watched apart by the health check.
fn consumer_id(headers: &HeaderMap, query: Option<&str>) -> String {
    use sha2::Digest as _;
    let identity = crate::auth::presented_key(headers, query).or_else(|| {
        headers
            .get("x-ms-client-principal-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    match identity {
        Some(identity) => sha2::Sha256::digest(identity.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        None => "anonymous".to_owned(),
    }
}

/// Records a consumer's read of a feed in the background, at most once a minute per process and
/// feed: the health check tells a consumer that stopped reading, or fell behind the retention.
/// `at` is when the rows at the consumer's new cursor were stored.
fn note_feed_read(state: &ReadApi, dataset: Dataset, consumer: String, at: Option<OffsetDateTime>) {
    let now = state.clock.now();
    if !state.feed.read_mark_due(dataset, &consumer, now) {
        return;
    }
    let feed = state.feed.clone();
    tokio::spawn(async move {
        if let Err(e) = feed.record_read(dataset, &consumer, at, now).await {
            tracing::debug!(error = %crate::telemetry::error_chain(&e), "could not record a feed read");
        }
    });
}

/// The query parameters of a read, each at most once; any other name is refused.
#[derive(Debug, Default)]
struct Params {
    cursor: Option<String>,
    limit: Option<String>,
    format: Option<String>,
    layout: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match &*name {
                "code" => continue,
                n if !allowed.contains(&n) => None,
                "cursor" => Some(&mut params.cursor),
                "limit" => Some(&mut params.limit),
                "format" => Some(&mut params.format),
                "layout" => Some(&mut params.layout),
                "from" => Some(&mut params.from),
                "to" => Some(&mut params.to),
                _ => None,
            };
            let Some(slot) = slot else {
                return Err(ApiError::Invalid {
                    code: "UnknownParameter",
                    message: "unknown query parameter; see /api/v1/openapi.json",
                });
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ApiError::Invalid {
                    code: "RepeatedParameter",
                    message: "a query parameter is given more than once",
                });
            }
        }
        Ok(params)
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or(ApiError::Invalid {
                    code: "InvalidLimit",
                    message: "limit must be a whole number from 1 to 5000",
                }),
        }
    }

    fn format(&self) -> Result<Format, ApiError> {
        match &self.format {
            None => Ok(Format::Json),
            Some(text) => Format::parse(text).ok_or(ApiError::Invalid {
                code: "InvalidFormat",
                message: "format must be json, ndjson or csv",
            }),
        }
    }

    /// The CSV columns of `dataset` in the requested layout, which must fit `format`.
    fn columns(&self, dataset: Dataset, format: Format) -> Result<format::Columns, ApiError> {
        let layout = match &self.layout {
            None => Layout::Table,
            Some(text) => Layout::parse(text).ok_or(ApiError::Invalid {
                code: "InvalidLayout",
                message: "layout must be table or teams-admin",
            })?,
        };
        if layout == Layout::TeamsAdmin && format != Format::Csv {
            return Err(ApiError::Invalid {
                code: "InvalidLayout",
                message: "layout=teams-admin is a CSV layout: add format=csv",
            });
        }
        format::columns(dataset, layout).ok_or(ApiError::Invalid {
            code: "InvalidLayout",
            message: "layout=teams-admin is for pstncalls and directroutingcalls",
        })
    }

    async fn position(&self, state: &ReadApi) -> Result<Option<Position>, ApiError> {
        let Some(text) = &self.cursor else {
            return Ok(None);
        };
        let key = state.feed.cursor_key().await?;
        cursor::decode(&key, text)
            .map(Some)
            .map_err(|_| ApiError::Invalid {
                code: "InvalidCursor",
                message: "the cursor is not one this API issued (changed or cut?); \
                          pass it back exactly as received",
            })
    }
}

fn time_param(text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|t| {
        // A `+` offset sent unescaped arrives as a space.
        let t = t.replace(' ', "+");
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|_| {
            ApiError::Invalid {
                code: "InvalidTime",
                message: "from and to must be RFC 3339 date-times, like 2026-11-01T00:00:00Z",
            }
        })
    })
    .transpose()
}

/// Nanoseconds since 1970 (years 1678–2262 fit).
fn nanos(t: OffsetDateTime) -> Result<i64, ApiError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| ApiError::Invalid {
        code: "InvalidTime",
        message: "from and to must be between the years 1678 and 2262",
    })
}

const CURSOR_MISMATCH: ApiError = ApiError::Invalid {
    code: "CursorMismatch",
    message: "the cursor belongs to another list (another data set, range or record)",
};

#[utoipa::path(
    get,
    path = "/api/v1/{dataset}",
    tag = "feeds",
    summary = "A data set's rows: the incremental feed, or a time range",
    description = "Without `from`/`to`: the feed. The rows stored or changed after `cursor` (from \
        the start of the retention without one), oldest first, up to `limit`, read up to \
        FEED_SETTLE_SECONDS (300 s) behind the present. Keep polling with the returned cursor: every \
        row arrives at least once, at every version stored after the cursor, the newest last; a row \
        can arrive twice. With `from` and `to`: the rows whose time (the call's start; a Direct \
        Routing attempt's invite) is in [from, to), in day and id order, paged the same way. \
        The next cursor is in the JSON body and, for every format, in the X-Next-Cursor header; \
        X-More says whether another page is ready now.",
    params(
        ("dataset" = openapi::DatasetName, Path, description = "The data set"),
        ("cursor" = Option<String>, Query, description = "Where the previous page ended, exactly as returned"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 5000, description = "Rows per page (default 500)"),
        ("format" = Option<openapi::FormatName>, Query, description = "json (default), ndjson or csv"),
        ("layout" = Option<openapi::LayoutName>, Query, description = "CSV columns: `table` (default), the data set's own; `teams-admin`, the Teams admin center's export (\"Export to Excel\" in the PSTN usage report): its column names, order and formats, for pstncalls and directroutingcalls with format=csv"),
        ("from" = Option<String>, Query, format = DateTime, description = "Range start (RFC 3339), with `to`"),
        ("to" = Option<String>, Query, format = DateTime, description = "Range end, exclusive (RFC 3339), with `from`"),
    ),
    responses(
        (status = 200, description = "A page of rows", headers(
            ("X-Next-Cursor" = String, description = "The cursor of the next page"),
            ("X-More" = bool, description = "Whether more rows are ready now"),
            ("X-Row-Count" = u32, description = "Rows in this page: fewer received means the transfer was cut; do not keep its cursor"),
        ), content(
            (openapi::Page = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad parameter", body = openapi::ErrorBody),
        (status = 401, description = "No valid key", body = openapi::ErrorBody),
        (status = 403, description = "The required app role is missing", body = openapi::ErrorBody),
        (status = 404, description = "No such data set", body = openapi::ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = openapi::ErrorBody),
    ),
    security(("functionKey" = []), ("functionKeyQuery" = []))
)]
pub(crate) async fn list(
    State(state): State<ReadApi>,
    dataset: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, query.as_deref())?;
    let dataset = path_text(dataset)?;
    let dataset = Dataset::from_key(&dataset).ok_or(ApiError::NotFound(
        "no such data set; use callrecords, pstncalls or directroutingcalls",
    ))?;
    let params = Params::parse(
        query.as_deref(),
        &["cursor", "limit", "format", "layout", "from", "to"],
    )?;
    let limit = params.limit()?;
    let format = params.format()?;
    let columns = params.columns(dataset, format)?;
    let from = time_param(params.from.as_deref())?;
    let to = time_param(params.to.as_deref())?;
    let position = params.position(&state).await?;
    let name = dataset.key().to_owned();
    let (scan, start) = match (position, from, to) {
        (position @ (None | Some(Position::Feed { .. })), None, None) => {
            let after = match position {
                Some(Position::Feed { d, a }) if d == name => a,
                Some(_) => return Err(CURSOR_MISMATCH),
                None => None,
            };
            let scan = state.feed.feed(dataset, after.as_deref());
            (
                scan,
                Position::Feed {
                    d: name.clone(),
                    a: after,
                },
            )
        }
        (None, Some(from), Some(to)) => {
            if from >= to {
                return Err(ApiError::Invalid {
                    code: "InvalidRange",
                    message: "from must be before to",
                });
            }
            if to - from > time::Duration::days(MAX_RANGE_DAYS) {
                return Err(ApiError::Invalid {
                    code: "RangeTooLong",
                    message: "a range spans at most 400 days",
                });
            }
            let start = Position::Range {
                d: name.clone(),
                from: nanos(from)?,
                to: nanos(to)?,
                a: None,
            };
            (state.feed.range(dataset, from, to, None), start)
        }
        (
            Some(Position::Range {
                d,
                from: f,
                to: t,
                a,
            }),
            from,
            to,
        ) => {
            let same = |given: Option<OffsetDateTime>, kept: i64| {
                given.is_none_or(|g| g.unix_timestamp_nanos() == i128::from(kept))
            };
            if d != name || !same(from, f) || !same(to, t) {
                return Err(CURSOR_MISMATCH);
            }
            let (Ok(from), Ok(to)) = (
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(f)),
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(t)),
            ) else {
                return Err(CURSOR_MISMATCH);
            };
            let scan = state.feed.range(
                dataset,
                from,
                to,
                a.as_ref().map(|(p, r)| (p.as_str(), r.as_str())),
            );
            (
                scan,
                Position::Range {
                    d,
                    from: f,
                    to: t,
                    a,
                },
            )
        }
        (None, _, _) => {
            return Err(ApiError::Invalid {
                code: "IncompleteRange",
                message: "a range needs both from and to",
            });
        }
        (Some(_), _, _) => return Err(CURSOR_MISMATCH),
    };
    let feed_read = matches!(start, Position::Feed { .. });
    let horizon = state.feed.horizon();
    let (response, end) = respond(&state, scan, start, limit, format, columns).await?;
    if feed_read {
        // Where the consumer now stands: at the settle horizon when it has read everything there
        // is, else at the last row it was given.
        let at = match end {
            End { more: false, .. } => Some(horizon),
            End { last, .. } => last.as_deref().and_then(crate::store::feed::key_time),
        };
        let consumer = consumer_id(&headers, query.as_deref());
        note_feed_read(&state, dataset, consumer, at);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/callrecords/{id}",
    tag = "call records",
    summary = "The complete call record, as Graph sent it",
    description = "The merged document (every page of sessions, segments and participants), byte for \
        byte as stored, at its latest stored version.",
    params(("id" = String, Path, pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$", description = "The call record id (a GUID)")),
    responses(
        (status = 200, description = "The document", content_type = "application/json", body = Object),
        (status = 400, description = "Not an id", body = openapi::ErrorBody),
        (status = 401, description = "No valid key", body = openapi::ErrorBody),
        (status = 403, description = "The required app role is missing", body = openapi::ErrorBody),
        (status = 404, description = "Not stored", body = openapi::ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = openapi::ErrorBody),
    ),
    security(("functionKey" = []), ("functionKeyQuery" = []))
)]
pub(crate) async fn call_record(
    State(state): State<ReadApi>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, query.as_deref())?;
    Params::parse(query.as_deref(), &[])?;
    let id = record_id(&path_text(id)?)?;
    let document = state
        .records
        .document(&id)
        .await?
        .ok_or(ApiError::NotFound("no call record with this id is stored"))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(document),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/callrecords/{id}/sessions",
    tag = "call records",
    summary = "The sessions of a call record: who called whom, how, for how long",
    params(
        ("id" = String, Path, pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$", description = "The call record id (a GUID)"),
        ("cursor" = Option<String>, Query, description = "Where the previous page ended"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 5000, description = "Rows per page (default 500)"),
        ("format" = Option<openapi::FormatName>, Query, description = "json (default), ndjson or csv"),
    ),
    responses(
        (status = 200, description = "A page of session rows", headers(
            ("X-Next-Cursor" = String, description = "The cursor of the next page"),
            ("X-More" = bool, description = "Whether more rows follow"),
            ("X-Row-Count" = u32, description = "Rows in this page: fewer received means the transfer was cut"),
        ), content(
            (openapi::Page = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad parameter", body = openapi::ErrorBody),
        (status = 401, description = "No valid key", body = openapi::ErrorBody),
        (status = 403, description = "The required app role is missing", body = openapi::ErrorBody),
        (status = 404, description = "Not stored", body = openapi::ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = openapi::ErrorBody),
    ),
    security(("functionKey" = []), ("functionKeyQuery" = []))
)]
pub(crate) async fn sessions(
    State(state): State<ReadApi>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, query.as_deref())?;
    let params = Params::parse(query.as_deref(), &["cursor", "limit", "format"])?;
    let limit = params.limit()?;
    let format = params.format()?;
    let id = record_id(&path_text(id)?)?;
    let after = match params.position(&state).await? {
        None => None,
        Some(Position::Sessions { id: of, a }) if of == id => a,
        Some(_) => return Err(CURSOR_MISMATCH),
    };
    if after.is_none() && state.records.state(&id).await?.is_none() {
        return Err(ApiError::NotFound("no call record with this id is stored"));
    }
    let scan = state.feed.sessions(&id, after.as_deref());
    let start = Position::Sessions { id, a: after };
    Ok(respond(
        &state,
        scan,
        start,
        limit,
        format,
        format::Columns::Table(format::SESSION_COLUMNS),
    )
    .await?
    .0)
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)),
    security(("functionKey" = []), ("functionKeyQuery" = []))
)]
pub(crate) async fn openapi_json(
    State(state): State<ReadApi>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, query.as_deref())?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        document().to_json().unwrap_or_default(),
    )
        .into_response())
}

/// A path segment, or the JSON `404` every unknown route gets (axum's own rejection, for a segment
/// that is not UTF-8, would be plain text).
fn path_text(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(text)| text)
        .map_err(|_| ApiError::NotFound("no such route; see /api/v1/openapi.json"))
}

/// A call record id: Graph's are GUIDs, in any case.
fn record_id(id: &str) -> Result<String, ApiError> {
    let id = normalize_id(id);
    if crate::config::is_guid(&id) {
        Ok(id)
    } else {
        Err(ApiError::Invalid {
            code: "InvalidId",
            message: "a call record id is a GUID",
        })
    }
}

/// The position after row `(pk, rk)` of a list that started at `start`.
fn advance(start: &Position, pk: String, rk: String) -> Position {
    match start {
        Position::Feed { d, .. } => Position::Feed {
            d: d.clone(),
            a: Some(rk),
        },
        Position::Range { d, from, to, .. } => Position::Range {
            d: d.clone(),
            from: *from,
            to: *to,
            a: Some((pk, rk)),
        },
        Position::Sessions { id, .. } => Position::Sessions {
            id: id.clone(),
            a: Some(rk),
        },
    }
}

/// Where a page ended: the row key of its last row (the position's when it has none), and whether
/// more rows were ready.
struct End {
    last: Option<String>,
    more: bool,
}

/// Streams one page: a first pass over the keys finds where the page ends (so that the next
/// cursor can go in a header before any row is sent), then the rows up to there are read and
/// encoded a storage page at a time.
async fn respond(
    state: &ReadApi,
    scan: Scan,
    start: Position,
    limit: u32,
    format: Format,
    columns: format::Columns,
) -> Result<(Response, End), ApiError> {
    let mut taken = 0u32;
    let mut last = None;
    let mut more = false;
    let mut next: Option<Continuation> = None;
    loop {
        let page = scan
            .page(MAX_PAGE_SIZE.min(limit - taken), next.clone(), true)
            .await?;
        taken += u32::try_from(page.rows.len()).unwrap_or(u32::MAX);
        if let Some(row) = page.rows.into_iter().last() {
            last = Some((row.partition_key, row.row_key));
        }
        match page.next {
            // A continuation repeated would never end: treated as the end.
            Some(n) if next.as_ref() != Some(&n) => {
                if taken >= limit {
                    more = true;
                    break;
                }
                next = Some(n);
            }
            _ => break,
        }
    }
    let key = state.feed.cursor_key().await?;
    let end = End {
        last: last
            .as_ref()
            .map(|(_, rk)| rk.clone())
            .or_else(|| match &start {
                Position::Feed { a, .. } => a.clone(),
                _ => None,
            }),
        more,
    };
    let (cursor, body_scan) = match last {
        Some((pk, rk)) => {
            let bounded = scan.through(&pk, &rk);
            (
                cursor::encode(&key, &advance(&start, pk, rk)),
                Some(bounded),
            )
        }
        None => (cursor::encode(&key, &start), None),
    };
    let encoder = Encoder::new(format, columns, &cursor, more);
    let mut response = Response::new(body(body_scan, encoder));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&cursor) {
        headers.insert("x-next-cursor", value);
    }
    headers.insert(
        "x-more",
        HeaderValue::from_static(if more { "true" } else { "false" }),
    );
    // What the page holds: a client that got fewer rows was cut off (storage failed midway) and
    // must not keep the cursor.
    headers.insert("x-row-count", HeaderValue::from(taken));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *response.status_mut() = StatusCode::OK;
    Ok((response, end))
}

/// What the body stream is doing.
enum Step {
    Head(Option<Scan>, Encoder),
    Rows(Scan, Option<Continuation>, Encoder),
    Tail(Encoder),
    Done,
}

/// The body: head, the rows of `scan` a storage page at a time, tail. A storage failure midway
/// aborts the response (the client sees a cut transfer, never a short page that looks whole).
fn body(scan: Option<Scan>, encoder: Encoder) -> Body {
    let steps = stream::try_unfold(Step::Head(scan, encoder), |step| async move {
        Ok::<_, crate::store::StoreError>(match step {
            Step::Head(scan, encoder) => {
                let head = encoder.head();
                let next = match scan {
                    Some(scan) => Step::Rows(scan, None, encoder),
                    None => Step::Tail(encoder),
                };
                Some((head, next))
            }
            Step::Rows(scan, from, mut encoder) => {
                let page = scan.page(MAX_PAGE_SIZE, from.clone(), false).await?;
                let bytes = encoder.rows(&page.rows);
                let next = match page.next {
                    Some(n) if from.as_ref() != Some(&n) => Step::Rows(scan, Some(n), encoder),
                    _ => Step::Tail(encoder),
                };
                Some((bytes, next))
            }
            Step::Tail(encoder) => Some((encoder.tail(), Step::Done)),
            Step::Done => None,
        })
    });
    Body::from_stream(steps)
}
