//! Graph's call-record endpoints: one record (`$expand=sessions($expand=segments)`, sessions in
//! pages of 60), its sessions and `participants_v2` (pages of 130), the list filtered on
//! `startDateTime` (pages of 60), and the `getPstnCalls` / `getDirectRoutingCalls` reports (pages of
//! 1,000). Next links are real URLs with a `$skiptoken`/`$skip` the simulator understands; clients
//! must follow them verbatim.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use tokio::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::faults::RequestFault;
use crate::tenant::{CallRecord, ReportRow, Tenant};
use crate::throttle::{Limit, Verdict};
use crate::{Endpoint, LedgerTag, SimState, auth};

pub(crate) const SESSION_PAGE: usize = 60;
pub(crate) const PARTICIPANT_PAGE: usize = 130;
pub(crate) const LIST_PAGE: usize = 60;
pub(crate) const REPORT_PAGE: usize = 1000;
/// getPstnCalls and getDirectRoutingCalls accept windows of at most 90 days.
const MAX_REPORT_WINDOW: Duration = Duration::days(90);

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1.0/communications/callRecords", get(list))
        .route(
            "/v1.0/communications/callRecords/{id}",
            get(record_or_report),
        )
        .route(
            "/v1.0/communications/callRecords/{id}/sessions",
            get(sessions),
        )
        .route(
            "/v1.0/communications/callRecords/{id}/participants_v2",
            get(participants),
        )
}

/// Graph's error envelope.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let now = OffsetDateTime::now_utc();
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": now.format(&Rfc3339).unwrap_or_default(),
        "request-id": format!("{:032x}", now.unix_timestamp_nanos()),
        "client-request-id": format!("{:032x}", now.unix_timestamp_nanos() >> 3),
    }}});
    (status, axum::Json(body)).into_response()
}

fn tag(mut response: Response, endpoint: Endpoint, record_id: Option<&str>) -> Response {
    response.extensions_mut().insert(LedgerTag {
        endpoint,
        record_id: record_id.map(str::to_owned),
        reset: false,
    });
    response
}

type Query_ = Query<HashMap<String, String>>;

/// Authentication, throttling and injected faults, in Graph's order. `Err` is the answer to send.
async fn gate(
    state: &SimState,
    headers: &HeaderMap,
    endpoint: Endpoint,
    record_id: Option<&str>,
    keyed: Option<(String, Limit)>,
) -> Result<(), Response> {
    let client = auth::authorize(state, headers).map_err(|r| tag(r, endpoint, record_id))?;
    let now = Instant::now();
    let verdict = state
        .throttle
        .check(&client, keyed.as_ref().map(|(k, l)| (k.as_str(), *l)), now);
    let violated = match verdict {
        Verdict::Allow {
            violated_retry_after,
        } => violated_retry_after,
        Verdict::Throttle {
            retry_after,
            violated_retry_after,
        } => {
            if violated_retry_after {
                state.ledger.retry_after_violation();
            }
            return Err(tag(
                too_many_requests(&retry_after.as_secs_f64().ceil().to_string()),
                endpoint,
                record_id,
            ));
        }
    };
    if violated {
        state.ledger.retry_after_violation();
    }
    let (fault, delay) = state.dice.request();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match fault {
        RequestFault::None => Ok(()),
        RequestFault::Throttle(after) => {
            let key = keyed.as_ref().map(|(k, _)| k.as_str());
            state.throttle.block(&client, key, after.duration(), now);
            Err(tag(too_many_requests(&after.header()), endpoint, record_id))
        }
        RequestFault::Unavailable(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(tag(
                graph_error(
                    status,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable.",
                ),
                endpoint,
                record_id,
            ))
        }
        RequestFault::Reset => {
            // Headers go out, then the body fails: the client sees the connection cut mid-response.
            let body = Body::from_stream(futures::stream::once(async {
                Err::<Vec<u8>, std::io::Error>(std::io::Error::other("simulated reset"))
            }));
            let mut response = Response::new(body);
            response.extensions_mut().insert(LedgerTag {
                endpoint,
                record_id: record_id.map(str::to_owned),
                reset: true,
            });
            Err(response)
        }
    }
}

/// The gate of an endpoint without a limit of its own (the app-wide limit still applies).
pub(crate) async fn gate_plain(
    state: &SimState,
    headers: &HeaderMap,
    endpoint: Endpoint,
) -> Result<(), Response> {
    gate(state, headers, endpoint, None, None).await
}

/// The documented `429` (`throttled-429-response.json`) with its `Retry-After`.
fn too_many_requests(retry_after: &str) -> Response {
    let now = OffsetDateTime::now_utc();
    let body = json!({"error": {"code": "TooManyRequests", "innerError": {
        "code": "429",
        "date": now.format(&Rfc3339).unwrap_or_default(),
        "message": "Please retry after",
        "request-id": format!("{:032x}", now.unix_timestamp_nanos()),
        "status": "429",
    }, "message": "Please retry again later."}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(retry_after) {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

fn not_found() -> Response {
    // As observed (`error-404-callrecord-notfound-from-issue.json`): an empty message.
    graph_error(StatusCode::NOT_FOUND, "NotFound", "")
}

/// The tenant time a paged listing is evaluated at: the first page's, carried in `$snapshot` by the
/// next links, so that rows becoming visible while a client pages do not shift the offsets.
fn snapshot(state: &SimState, query: &HashMap<String, String>) -> Result<OffsetDateTime, Response> {
    match query.get("$snapshot") {
        None => Ok(state.clock.now()),
        Some(v) => v
            .parse::<i128>()
            .ok()
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
            .ok_or_else(|| {
                graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid skip token.")
            }),
    }
}

fn skip(query: &HashMap<String, String>, key: &str) -> Result<usize, Response> {
    match query.get(key) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid skip token.")),
    }
}

fn expands_segments(expand: Option<&String>) -> bool {
    expand.is_some_and(|e| {
        e.replace(' ', "")
            .to_ascii_lowercase()
            .contains("$expand=segments")
    })
}

/// A session as served: without `segments` unless they were expanded.
fn session_view(session: &Value, with_segments: bool) -> Value {
    let mut s = session.clone();
    if !with_segments && let Some(o) = s.as_object_mut() {
        o.remove("segments");
    }
    s
}

fn per_record(state: &SimState, id: &str) -> Option<(String, Limit)> {
    Some((format!("record:{id}"), state.throttle.limits().per_record))
}

async fn record_or_report(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Response {
    let function = id
        .strip_prefix("microsoft.graph.callRecords.")
        .unwrap_or(&id);
    if let Some(args) = function
        .strip_prefix("getPstnCalls(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return report(
            &state,
            &headers,
            &query,
            Endpoint::PstnCalls,
            function,
            args,
        )
        .await;
    }
    if let Some(args) = function
        .strip_prefix("getDirectRoutingCalls(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return report(
            &state,
            &headers,
            &query,
            Endpoint::DirectRoutingCalls,
            function,
            args,
        )
        .await;
    }
    let endpoint = Endpoint::CallRecord;
    if let Err(r) = gate(
        &state,
        &headers,
        endpoint,
        Some(&id),
        per_record(&state, &id),
    )
    .await
    {
        return r;
    }
    let now = state.clock.now();
    let tenant = state.tenant();
    let Some(version) = find_record(&tenant, &id).and_then(|r| r.visible_at(now)) else {
        return tag(not_found(), endpoint, Some(&id));
    };
    let mut body = version.base.clone();
    let expand = query.get("$expand").map(|e| e.replace(' ', ""));
    if let Some(expand) = expand.as_deref() {
        let base = &state.base_url;
        if expand.starts_with("sessions") {
            let with_segments = expand.contains("segments");
            let page: Vec<Value> = version
                .sessions
                .iter()
                .take(SESSION_PAGE)
                .map(|s| session_view(s, with_segments))
                .collect();
            body["sessions"] = Value::Array(page);
            if version.sessions.len() > SESSION_PAGE {
                let seg = if with_segments {
                    "$expand=segments&"
                } else {
                    ""
                };
                body["sessions@odata.nextLink"] = json!(format!(
                    "{base}/v1.0/communications/callRecords/{id}/sessions?{seg}$skiptoken={SESSION_PAGE}"
                ));
            }
        } else if expand == "participants_v2"
            && let Some(response) = participants_v2_unsupported(&state)
        {
            return tag(response, endpoint, Some(&id));
        } else if expand == "participants_v2" {
            body["participants_v2"] = Value::Array(
                version
                    .participants
                    .iter()
                    .take(PARTICIPANT_PAGE)
                    .cloned()
                    .collect(),
            );
            if version.participants.len() > PARTICIPANT_PAGE {
                body["participants_v2@odata.nextLink"] = json!(format!(
                    "{base}/v1.0/communications/callRecords/{id}/participants_v2?$skiptoken={PARTICIPANT_PAGE}"
                ));
            }
        } else {
            return tag(
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Only one of sessions or participants_v2 can be expanded.",
                ),
                endpoint,
                Some(&id),
            );
        }
    }
    tag(axum::Json(body).into_response(), endpoint, Some(&id))
}

/// One page of `items` from `offset`, in Graph's collection envelope.
/// One page of `items` from `offset`, in Graph's collection envelope; `view` shapes each item of
/// the page (only those are copied).
fn page(
    context: String,
    items: &[Value],
    offset: usize,
    size: usize,
    view: impl Fn(&Value) -> Value,
    next: impl FnOnce(usize) -> String,
) -> Value {
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context));
    let end = (offset + size).min(items.len());
    let value = items
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(view)
        .collect();
    body.insert("value".into(), Value::Array(value));
    if end < items.len() {
        body.insert("@odata.nextLink".into(), json!(next(end)));
    }
    Value::Object(body)
}

/// The two paged sub-collections of a call record.
#[derive(Clone, Copy, PartialEq)]
enum Child {
    Sessions,
    Participants,
}

async fn sessions(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Response {
    child_page(&state, &id, &query, &headers, Child::Sessions).await
}

async fn participants(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = participants_v2_unsupported(&state) {
        let endpoint = Endpoint::Participants;
        if let Err(r) = gate(
            &state,
            &headers,
            endpoint,
            Some(&id),
            per_record(&state, &id),
        )
        .await
        {
            return r;
        }
        return tag(response, endpoint, Some(&id));
    }
    child_page(&state, &id, &query, &headers, Child::Participants).await
}

/// The answer of a national cloud, which does not serve `participants_v2`.
fn participants_v2_unsupported(state: &SimState) -> Option<Response> {
    let status = state.config.participants_v2_unsupported?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    Some(graph_error(
        status,
        "BadRequest",
        "Resource not found for the segment 'participants_v2'.",
    ))
}

/// A record by id, matched without regard to case as Graph matches its GUIDs.
fn find_record<'a>(tenant: &'a Tenant, id: &str) -> Option<&'a CallRecord> {
    tenant
        .records
        .get(id)
        .or_else(|| tenant.records.get(&id.to_ascii_lowercase()))
}

/// One page of `…/{id}/sessions` (60, segments if expanded) or `…/{id}/participants_v2` (130).
async fn child_page(
    state: &SimState,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    child: Child,
) -> Response {
    let endpoint = match child {
        Child::Sessions => Endpoint::Sessions,
        Child::Participants => Endpoint::Participants,
    };
    if let Err(r) = gate(state, headers, endpoint, Some(id), per_record(state, id)).await {
        return r;
    }
    if child == Child::Participants
        && let Some(response) = participants_v2_unsupported(state)
    {
        return tag(response, endpoint, Some(id));
    }
    let offset = match skip(query, "$skiptoken") {
        Ok(o) => o,
        Err(r) => return tag(r, endpoint, Some(id)),
    };
    let tenant = state.tenant();
    let Some(version) = find_record(&tenant, id).and_then(|r| r.visible_at(state.clock.now()))
    else {
        return tag(not_found(), endpoint, Some(id));
    };
    let with_segments = child == Child::Sessions
        && expands_segments(
            query
                .get("$expand")
                .map(|e| format!("$expand={e}"))
                .as_ref(),
        );
    let (segment, size, items) = match child {
        Child::Sessions => ("sessions", SESSION_PAGE, &version.sessions),
        Child::Participants => ("participants_v2", PARTICIPANT_PAGE, &version.participants),
    };
    let base = &state.base_url;
    let expand = if with_segments {
        "$expand=segments&"
    } else {
        ""
    };
    let body = page(
        format!(
            "https://graph.microsoft.com/v1.0/$metadata#communications/callRecords('{id}')/{segment}"
        ),
        items,
        offset,
        size,
        |item| match child {
            Child::Sessions => session_view(item, with_segments),
            Child::Participants => item.clone(),
        },
        |next| {
            format!(
                "{base}/v1.0/communications/callRecords/{id}/{segment}?{expand}$skiptoken={next}"
            )
        },
    );
    tag(axum::Json(body).into_response(), endpoint, Some(id))
}

/// `startDateTime ge X and startDateTime lt Y` (also `gt`, `le`; either bound may be missing).
fn parse_start_filter(
    filter: &str,
) -> Option<(Option<OffsetDateTime>, Option<OffsetDateTime>, bool, bool)> {
    let (mut from, mut to, mut from_inclusive, mut to_inclusive) = (None, None, true, false);
    for clause in filter.split(" and ") {
        let mut words = clause.split_whitespace();
        let (field, op, value) = (words.next()?, words.next()?, words.next()?);
        if !field.eq_ignore_ascii_case("startDateTime") || words.next().is_some() {
            return None;
        }
        let at = OffsetDateTime::parse(value, &Rfc3339).ok()?;
        match op {
            "ge" | "gt" => (from, from_inclusive) = (Some(at), op == "ge"),
            "lt" | "le" => (to, to_inclusive) = (Some(at), op == "le"),
            _ => return None,
        }
    }
    Some((from, to, from_inclusive, to_inclusive))
}

async fn list(
    State(state): State<Arc<SimState>>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Response {
    let endpoint = Endpoint::ListCallRecords;
    let keyed = Some(("list".to_owned(), state.throttle.limits().list));
    if let Err(r) = gate(&state, &headers, endpoint, None, keyed).await {
        return r;
    }
    let bounds = match query.get("$filter") {
        None => Some((None, None, true, false)),
        Some(f) => parse_start_filter(f),
    };
    let (Some((from, to, from_inc, to_inc)), Ok(offset), Ok(now)) =
        (bounds, skip(&query, "$skiptoken"), snapshot(&state, &query))
    else {
        return tag(
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Unsupported $filter or $skiptoken.",
            ),
            endpoint,
            None,
        );
    };
    let tenant = state.tenant();
    // In (start, id) order; one more than the page, to know whether a next link is due.
    let lower = from.map_or(Bound::Unbounded, |f| Bound::Included((f, String::new())));
    let visible: Vec<&Value> = tenant
        .by_start
        .range((lower, Bound::Unbounded))
        .skip_while(|(start, _)| !from_inc && Some(*start) == from)
        .take_while(|(start, _)| to.is_none_or(|t| if to_inc { *start <= t } else { *start < t }))
        .filter_map(|(_, id)| tenant.records.get(id)?.visible_at(now))
        .map(|v| &v.base)
        .skip(offset)
        .take(LIST_PAGE + 1)
        .collect();
    let more = visible.len() > LIST_PAGE;
    let items: Vec<Value> = visible
        .into_iter()
        .take(LIST_PAGE)
        .map(|v| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("@odata.context");
                o.remove("participants_v2@odata.context");
            }
            v
        })
        .collect();
    let base = &state.base_url;
    let filter = query
        .get("$filter")
        .map(|f| format!("$filter={}&", encode(f)))
        .unwrap_or_default();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#communications/callRecords"),
    );
    body.insert("value".into(), Value::Array(items));
    if more {
        let (next, at) = (offset + LIST_PAGE, now.unix_timestamp_nanos());
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{base}/v1.0/communications/callRecords?{filter}$skiptoken={next}&$snapshot={at}"
            )),
        );
    }
    let body = Value::Object(body);
    tag(axum::Json(body).into_response(), endpoint, None)
}

pub(crate) fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn report_bounds(args: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let mut from = None;
    let mut to = None;
    for pair in args.split(',') {
        let (k, v) = pair.split_once('=')?;
        let v = v.trim().trim_matches('\'');
        let at = OffsetDateTime::parse(v, &Rfc3339).ok()?;
        match k.trim() {
            "fromDateTime" => from = Some(at),
            "toDateTime" => to = Some(at),
            _ => return None,
        }
    }
    Some((from?, to?))
}

async fn report(
    state: &SimState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    endpoint: Endpoint,
    function: &str,
    args: &str,
) -> Response {
    let name = if endpoint == Endpoint::PstnCalls {
        "getPstnCalls"
    } else {
        "getDirectRoutingCalls"
    };
    let keyed = Some((format!("report:{name}"), state.throttle.limits().per_report));
    if let Err(r) = gate(state, headers, endpoint, None, keyed).await {
        return r;
    }
    let (Some((from, to)), Ok(offset), Ok(now)) = (
        report_bounds(args),
        skip(query, "$skip"),
        snapshot(state, query),
    ) else {
        return tag(
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "fromDateTime and toDateTime are required ISO 8601 times.",
            ),
            endpoint,
            None,
        );
    };
    if to < from || to - from > MAX_REPORT_WINDOW {
        return tag(
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The time window must be at most 90 days and end after it starts.",
            ),
            endpoint,
            None,
        );
    }
    let tenant = state.tenant();
    let (rows, row_type): (&[ReportRow], &str) = if endpoint == Endpoint::PstnCalls {
        (&tenant.pstn, "pstnCallLogRow")
    } else {
        (&tenant.direct_routing, "directRoutingLogRow")
    };
    // getPstnCalls includes toDateTime, getDirectRoutingCalls does not.
    let inclusive = endpoint == Endpoint::PstnCalls;
    let items: Vec<&RawValue> = rows
        .iter()
        .filter(|r| {
            r.start >= from && (r.start < to || (inclusive && r.start == to)) && r.visible_at <= now
        })
        .map(|r| &*r.json)
        .collect();
    let end = (offset + REPORT_PAGE).min(items.len());
    let page_items = items.get(offset..end).unwrap_or_default();
    let next = (end < items.len()).then(|| {
        format!(
            "{}/v1.0/communications/callRecords/{function}?$skip={end}&$snapshot={}",
            state.base_url,
            now.unix_timestamp_nanos()
        )
    });
    let page = ReportPage {
        context: format!(
            "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.callRecords.{row_type})"
        ),
        count: page_items.len(),
        value: page_items,
        next,
    };
    tag(axum::Json(page).into_response(), endpoint, None)
}

/// A report page, written straight from the stored row JSON.
#[derive(serde::Serialize)]
struct ReportPage<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.count")]
    count: usize,
    value: &'a [&'a RawValue],
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}
