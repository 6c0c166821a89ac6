//! The read API (`/api/v1`) against Azurite, the Graph simulator and the host emulator: the feeds
//! hand out every stored row at least once (concurrent writers, late appends and new versions
//! included), the formats hold the same rows, range and id reads, the auth matrix, and every bad
//! parameter's `400`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::fetch::{FetchApp, azurite_table, spawn_fetch_app};
use support::graph::{SimTime, sim_config, sim_start, start_sim};
use support::reports::{insert, pstn_row, reports_app};
use support::{CLIENT_STATE, TENANT_ID};
use table_storage::{EdmValue, Entity, WriteMode};
use teams_cdr_functions::config::RunMode;
use teams_cdr_functions::{FeedDataset, FeedStore};

const KEY: &str = "the-read-key";
/// The settle time the apps here use (the default).
const SETTLE: time::Duration = time::Duration::seconds(300);

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

async fn get_with(app: &FetchApp, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{}{path}", app.host.base()));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

async fn get(app: &FetchApp, path: &str) -> Answer {
    get_with(app, path, &[("x-functions-key", KEY.to_owned())]).await
}

/// Reads a feed from `cursor` to its current end in pages of `limit`: the rows, and the cursor to
/// go on from.
async fn read_feed(
    app: &FetchApp,
    dataset: &str,
    mut cursor: Option<String>,
    limit: u32,
) -> (Vec<Value>, Option<String>) {
    let mut rows = Vec::new();
    for _ in 0..10_000 {
        let mut path = format!("/api/v1/{dataset}?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let answer = get(app, &path).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let page = answer.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        assert_eq!(answer.header("x-next-cursor"), page["cursor"].as_str());
        assert_eq!(
            answer.header("x-row-count"),
            Some(items.len().to_string().as_str())
        );
        rows.extend(items.iter().cloned());
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        if !page["more"].as_bool().unwrap() {
            return (rows, cursor);
        }
    }
    panic!("the feed never ended");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn ids(rows: &[Value], column: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r[column].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_call_record_feed_serves_every_record_once_settled_and_again_at_a_new_version() {
    let app = spawn_fetch_app(start_sim(sim_config(23)).await, |_, _| {}).await;
    app.sim.clock().advance(time::Duration::hours(1));
    app.enqueue_ids(&app.tenant_ids()).await;
    app.drain().await;

    // Stored, but not yet settled: the feed does not show rows younger than the settle time.
    let (rows, cursor) = read_feed(&app, "callrecords", None, 7).await;
    assert!(rows.is_empty(), "{rows:?}");
    app.sim.clock().advance(SETTLE + time::Duration::seconds(1));

    let (rows, cursor) = read_feed(&app, "callrecords", cursor, 7).await;
    let seen = ids(&rows, "CallRecordId");
    let expected: BTreeSet<String> = app.tenant_ids().into_iter().collect();
    assert_eq!(seen.len(), expected.len(), "each record exactly once");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for row in &rows {
        assert_eq!(row["Version"], 1);
        // Internal columns stay internal.
        assert!(row.get("BodyPrefix").is_none() && row.get("FeedRowKey").is_none());
    }

    // Nothing new: the same cursor gives nothing.
    let (again, cursor) = read_feed(&app, "callrecords", cursor, 7).await;
    assert!(again.is_empty());

    // Three records re-issued at version 2 come again, at version 2, and only they.
    let updated: Vec<String> = app.tenant_ids().into_iter().take(3).collect();
    for id in &updated {
        app.sim.reissue(id, app.sim.clock().now(), 1).unwrap();
    }
    app.enqueue_ids(&updated).await;
    app.drain().await;
    app.sim.clock().advance(SETTLE + time::Duration::seconds(1));
    let (rows, _) = read_feed(&app, "callrecords", cursor, 2).await;
    assert_eq!(
        ids(&rows, "CallRecordId")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        updated.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(rows.iter().all(|r| r["Version"] == 2), "{rows:?}");
}

#[tokio::test]
async fn report_rows_enter_the_feed_once_and_a_pull_that_reads_them_again_adds_nothing() {
    let app = reports_app(sim_config(0)).await;
    let start = sim_start() - time::Duration::hours(2);
    let ids: Vec<String> = (0..12)
        .map(|n| format!("5e3b0d5a-0000-4000-8000-{n:012}"))
        .collect();
    for id in &ids {
        insert(
            &app.sim,
            false,
            start,
            start,
            &pstn_row(id, start, "0.0190"),
        );
    }
    assert_eq!(app.pull_reports().await, 200);
    app.sim.clock().advance(SETTLE + time::Duration::seconds(1));
    let (rows, cursor) = read_feed(&app, "pstncalls", None, 5).await;
    assert_eq!(ids_sorted(&rows), ids);
    assert_eq!(rows[0]["charge"], "0.0190", "money stays exact text");
    assert!(rows[0].get("SourceHash").is_none());

    // The next pull reads the same rows again (its look-back): they are unchanged.
    app.sim.clock().advance(time::Duration::minutes(15));
    assert_eq!(app.pull_reports().await, 200);
    app.sim.clock().advance(SETTLE + time::Duration::seconds(1));
    let (rows, _) = read_feed(&app, "pstncalls", cursor, 5).await;
    assert!(rows.is_empty(), "{rows:?}");
}

fn ids_sorted(rows: &[Value]) -> Vec<String> {
    let mut ids = ids(rows, "id");
    ids.sort();
    ids
}

/// Four writers append 10,000 rows at once (each a few at a time, then every 50th again at
/// version 2) while a reader polls in pages of 97 and the clock runs: an append that the clock
/// overtook is written again, and the reader still gets every row and every second version.
#[tokio::test]
async fn four_concurrent_writers_and_a_polling_reader_lose_no_row() {
    let app = spawn_fetch_app(start_sim(sim_config(0)).await, |_, _| {}).await;
    let clock = Arc::new(SimTime(app.sim.clock().clone()));
    let feed = FeedStore::new(
        azurite_table(&app.names.feed),
        azurite_table(&app.names.app_state),
        [
            (
                FeedDataset::CallRecords,
                azurite_table(&app.names.call_records),
            ),
            (FeedDataset::PstnCalls, azurite_table(&app.names.pstn_calls)),
            (
                FeedDataset::DirectRoutingCalls,
                azurite_table(&app.names.direct_routing_calls),
            ),
        ],
        azurite_table(&app.names.sessions),
        clock,
        Duration::from_secs(300),
    );
    // One writer reaches storage through a proxy that holds a request now and then for 0.6 s:
    // while such an append is on its way, the reader's clock runs past half the settle time.
    let slow = support::proxy::ToggleProxy::start(
        support::azurite()
            .table_endpoint
            .socket_addrs(|| None)
            .unwrap()[0],
    )
    .await;
    slow.set(support::proxy::Mode::Slow(Duration::from_millis(600)));
    let slow_feed = FeedStore::new(
        table_storage::TableStore::new(
            &format!("http://{}/devstoreaccount1", slow.addr)
                .parse()
                .unwrap(),
            &app.names.feed,
            &support::shared_key(),
            teams_cdr_functions::http_client(None).unwrap(),
            teams_cdr_functions::StorageRetry::default(),
        )
        .unwrap(),
        azurite_table(&app.names.app_state),
        [
            (
                FeedDataset::CallRecords,
                azurite_table(&app.names.call_records),
            ),
            (FeedDataset::PstnCalls, azurite_table(&app.names.pstn_calls)),
            (
                FeedDataset::DirectRoutingCalls,
                azurite_table(&app.names.direct_routing_calls),
            ),
        ],
        azurite_table(&app.names.sessions),
        Arc::new(SimTime(app.sim.clock().clone())),
        Duration::from_secs(300),
    );
    const WRITERS: usize = 4;
    const ROWS: usize = 10_000;
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let feed = if w == 0 {
            slow_feed.clone()
        } else {
            feed.clone()
        };
        let clock = app.sim.clock().clone();
        writers.push(tokio::spawn(async move {
            let mut late = 0;
            // Every row at version 1, a few at a time; then every 50th again at version 2.
            let mine: Vec<usize> = (w..ROWS).step_by(WRITERS).collect();
            let updated: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|id| id.is_multiple_of(50))
                .collect();
            for (version, ids) in [(1, mine), (2, updated)] {
                clock.advance(time::Duration::seconds(1));
                let mut at = 0;
                while at < ids.len() {
                    let take = 1 + (at * 7 + w) % 40;
                    let rows: Vec<Entity> = ids[at..(at + take).min(ids.len())]
                        .iter()
                        .map(|id| row(*id, version))
                        .collect();
                    at += take;
                    loop {
                        match feed.append(FeedDataset::CallRecords, &rows).await.unwrap() {
                            teams_cdr_functions::Appended::InTime => break,
                            teams_cdr_functions::Appended::Late => late += 1,
                        }
                    }
                }
            }
            late
        }));
    }
    // The clock runs while the writers write: 70 s of tenant time per poll, so that some appends
    // take longer than half the settle time and are written again.
    let reader = {
        let app_clock = app.sim.clock().clone();
        let done = Arc::clone(&done);
        let base = app.host.base().to_owned();
        tokio::spawn(async move {
            let mut seen: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
            let mut cursor: Option<String> = None;
            let mut polls = 0;
            let mut quiet_rounds = 0;
            loop {
                app_clock.advance(time::Duration::seconds(70));
                let mut path = format!("{base}/api/v1/callrecords?limit=97");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", urlencode(c)));
                }
                let page: Value = reqwest::get(&path).await.unwrap().json().await.unwrap();
                polls += 1;
                let items = page["items"].as_array().unwrap();
                for item in items {
                    seen.entry(item["CallRecordId"].as_str().unwrap().to_owned())
                        .or_default()
                        .insert(item["Version"].as_i64().unwrap());
                }
                cursor = Some(page["cursor"].as_str().unwrap().to_owned());
                if done.load(Ordering::Acquire) && items.is_empty() {
                    quiet_rounds += 1;
                    // Past the settle time of the last append: nothing can come any more.
                    if quiet_rounds > 6 {
                        return (seen, polls);
                    }
                }
            }
        })
    };
    let mut late = 0;
    for writer in writers {
        late += writer.await.unwrap();
    }
    done.store(true, Ordering::Release);
    let (seen, polls) = reader.await.unwrap();
    eprintln!("{polls} polls, {late} late appends written again");
    assert!(polls > 20, "the reader polled while the writers wrote");
    assert!(
        late > 0,
        "some appends were overtaken by the clock and written again"
    );
    assert_eq!(seen.len(), ROWS, "every row at least once");
    for (id, versions) in &seen {
        let n: usize = id.trim_start_matches("row-").parse().unwrap();
        let expected: BTreeSet<i64> = if n.is_multiple_of(50) {
            [1, 2].into()
        } else {
            [1].into()
        };
        assert_eq!(versions, &expected, "{id}");
    }
}

fn row(n: usize, version: i64) -> Entity {
    Entity::new("2026-11-29", format!("row-{n:05}"))
        .with("CallRecordId", EdmValue::String(format!("row-{n:05}")))
        .with("Version", EdmValue::Int64(version))
}

/// Rows written straight to `PstnCalls` (the range read reads the table, not the log).
async fn put_pstn(app: &FetchApp, rows: &[Entity]) {
    let table = azurite_table(&app.names.pstn_calls);
    table.ensure_exists().await.unwrap();
    for row in rows {
        table.upsert(row, WriteMode::Replace).await.unwrap();
    }
}

fn pstn_entity(n: usize, start: time::OffsetDateTime, name: &str) -> Entity {
    let day = format!(
        "{:04}-{:02}-{:02}",
        start.year(),
        u8::from(start.month()),
        start.day()
    );
    let id = format!("5e3b0d5a-0000-4000-8000-{n:012}");
    Entity::new(day, id.clone())
        .with("id", EdmValue::String(id))
        .with("userDisplayName", EdmValue::String(name.to_owned()))
        .with("startDateTime", EdmValue::DateTime(start))
        .with("duration", EdmValue::Int32(61 + i32::try_from(n).unwrap()))
        .with("charge", EdmValue::String("0.0190".into()))
        .with("successfulCall", EdmValue::Boolean(true))
}

#[tokio::test]
async fn a_time_range_reads_the_same_rows_in_json_ndjson_and_csv_with_hostile_text_intact() {
    let app = spawn_fetch_app(start_sim(sim_config(0)).await, |_, _| {}).await;
    let day = time::macros::datetime!(2026-11-20 00:00 UTC);
    let names = [
        "Zoë Ångström",
        "Smith, John",
        "say \"hi\"",
        "two\nlines",
        "=SUM(A1)",
        "日本語の名前",
        "",
    ];
    let mut rows = Vec::new();
    for n in 0..30 {
        // Over two days, and one row just outside the range on each side.
        let start = day + time::Duration::hours(i64::try_from(n).unwrap() * 2);
        rows.push(pstn_entity(n, start, names[n % names.len()]));
    }
    rows.push(pstn_entity(98, day - time::Duration::seconds(1), "before"));
    rows.push(pstn_entity(99, day + time::Duration::days(3), "after"));
    put_pstn(&app, &rows).await;
    let range = "from=2026-11-20T00:00:00Z&to=2026-11-23T00:00:00Z";

    // JSON, in pages of 4.
    let mut json_rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/pstncalls?{range}&limit=4");
        if let Some(c) = &cursor {
            // The range may be repeated with the cursor, or left out.
            path = format!("/api/v1/pstncalls?limit=4&cursor={}", urlencode(c));
        }
        let page = get(&app, &path).await.json();
        json_rows.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(json_rows.len(), 30);
    let by_id: BTreeMap<String, Value> = json_rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(by_id.len(), 30, "each row once");

    // NDJSON: one object a line, the same rows.
    let ndjson = get(
        &app,
        &format!("/api/v1/pstncalls?{range}&limit=5000&format=ndjson"),
    )
    .await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = ndjson
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    for line in &lines {
        assert_eq!(line, &by_id[line["id"].as_str().unwrap()]);
    }

    // CSV: a standard parser reads the header and the same values, quotes and newlines included.
    let csv_answer = get(&app, &format!("/api/v1/pstncalls?{range}&format=csv")).await;
    assert_eq!(
        csv_answer.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert!(csv_answer.header("x-next-cursor").is_some());
    let mut reader = csv::Reader::from_reader(csv_answer.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "id");
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut count = 0;
    for record in reader.records() {
        let record = record.unwrap();
        let json = &by_id[&record[column("id")]];
        assert_eq!(
            &record[column("userDisplayName")],
            json["userDisplayName"].as_str().unwrap()
        );
        assert_eq!(record[column("duration")], json["duration"].to_string());
        assert_eq!(&record[column("charge")], "0.0190");
        assert_eq!(
            &record[column("startDateTime")],
            json["startDateTime"].as_str().unwrap()
        );
        assert_eq!(&record[column("callId")], "", "absent is empty");
        count += 1;
    }
    assert_eq!(count, 30);
    assert!(csv_answer.text.contains("\"two\nlines\""));
}

#[tokio::test]
async fn a_call_record_is_served_whole_as_stored_with_its_sessions() {
    let app = spawn_fetch_app(start_sim(sim_config(3)).await, |_, _| {}).await;
    app.sim.clock().advance(time::Duration::hours(1));
    app.enqueue_ids(&app.tenant_ids()).await;
    app.drain().await;
    let id = app.tenant_ids()[0].clone();

    let answer = get(&app, &format!("/api/v1/callrecords/{id}")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let stored = app.store.document(&id).await.unwrap().unwrap();
    assert_eq!(answer.text.as_bytes(), stored.as_slice(), "byte for byte");
    // Ids are case-insensitive, like Graph's.
    let upper = get(&app, &format!("/api/v1/callrecords/{}", id.to_uppercase())).await;
    assert_eq!(upper.status, 200);

    let sessions_in_table = app.store.session_rows(&id).await.unwrap().len();
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/callrecords/{id}/sessions?limit=1");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page = get(&app, &path).await.json();
        for s in page["items"].as_array().unwrap() {
            assert_eq!(s["CallRecordId"], id.as_str());
            assert!(seen.insert(s["SessionId"].as_str().unwrap().to_owned()));
        }
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen.len(), sessions_in_table);
    assert!(sessions_in_table > 0);

    let unknown = "00000000-0000-4000-8000-000000000000";
    for path in [
        format!("/api/v1/callrecords/{unknown}"),
        format!("/api/v1/callrecords/{unknown}/sessions"),
        "/api/v1/nothing".to_owned(),
        "/api/v1/callrecords/a/b/c".to_owned(),
        // Not UTF-8 once decoded: still the JSON 404.
        "/api/v1/%FF".to_owned(),
        "/api/v1/callrecords/%FF%FE".to_owned(),
    ] {
        let answer = get(&app, &path).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "NotFound".to_owned()),
            "{path}"
        );
    }
}

/// A standalone app (it checks keys itself) with a required app role when `role` is set.
async fn standalone_app(role: Option<&str>) -> FetchApp {
    let role = role.map(str::to_owned);
    spawn_fetch_app(start_sim(sim_config(0)).await, move |config, _| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec![KEY.to_owned().into()];
        config.read_api.required_role = role;
    })
    .await
}

fn principal(roles: &[&str]) -> String {
    let claims: Vec<Value> = roles
        .iter()
        .map(|r| json!({"typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "val": r}))
        .chain([json!({"typ": "name", "val": "UC-Analytics"})])
        .collect();
    let body = json!({
        "auth_typ": "aad",
        "claims": claims,
        "name_typ": "name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    });
    base64::engine::general_purpose::STANDARD.encode(body.to_string())
}

/// Headers, path, expected status.
type Case<'a> = (Vec<(&'a str, String)>, String, u16);

const ROUTES: [&str; 6] = [
    "/api/v1/callrecords",
    "/api/v1/pstncalls",
    "/api/v1/directroutingcalls?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    "/api/v1/callrecords/00000000-0000-4000-8000-000000000000",
    "/api/v1/callrecords/00000000-0000-4000-8000-000000000000/sessions",
    "/api/v1/openapi.json",
];

#[tokio::test]
async fn every_route_needs_the_key_and_the_role_when_one_is_required() {
    let app = standalone_app(Some("CallData.Read")).await;
    let right_key = ("x-functions-key", KEY.to_owned());
    for route in ROUTES {
        let cases: Vec<Case<'_>> = vec![
            (vec![], route.to_owned(), 401),
            (
                vec![("x-functions-key", "wrong".to_owned())],
                route.to_owned(),
                401,
            ),
            (
                vec![("x-ms-client-principal", principal(&["CallData.Read"]))],
                route.to_owned(),
                401,
            ),
            (vec![right_key.clone()], route.to_owned(), 403),
            (
                vec![
                    right_key.clone(),
                    ("x-ms-client-principal", principal(&["Other.Role"])),
                ],
                route.to_owned(),
                403,
            ),
            (
                vec![
                    right_key.clone(),
                    ("x-ms-client-principal", "not base64!".to_owned()),
                ],
                route.to_owned(),
                403,
            ),
        ];
        for (headers, path, status) in cases {
            let answer = get_with(&app, &path, &headers).await;
            assert_eq!(answer.status, status, "{path} {headers:?}: {}", answer.text);
            assert!(!answer.text.contains(KEY));
        }
        // The right key and the role, as header or `code` parameter: past auth.
        let with_role = ("x-ms-client-principal", principal(&["CallData.Read"]));
        let ok = get_with(&app, route, &[right_key.clone(), with_role.clone()]).await;
        assert!(
            matches!(ok.status, 200 | 404),
            "{route}: {} {}",
            ok.status,
            ok.text
        );
        let sep = if route.contains('?') { '&' } else { '?' };
        let by_code = get_with(&app, &format!("{route}{sep}code={KEY}"), &[with_role]).await;
        assert_eq!(by_code.status, ok.status, "{route}");
    }
    // Without a required role, the key is enough.
    let app = standalone_app(None).await;
    for route in ROUTES {
        let answer = get_with(&app, route, std::slice::from_ref(&right_key)).await;
        assert!(
            matches!(answer.status, 200 | 404),
            "{route}: {}",
            answer.text
        );
        assert_eq!(get_with(&app, route, &[]).await.status, 401);
    }
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_with_its_code_and_a_tampered_cursor_too() {
    let app = spawn_fetch_app(start_sim(sim_config(0)).await, |_, _| {}).await;
    let range = "from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z";
    let feed_cursor = get(&app, "/api/v1/callrecords").await.json()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let range_cursor = get(&app, &format!("/api/v1/pstncalls?{range}"))
        .await
        .json()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tampered = feed_cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases = [
        ("/api/v1/callrecords?limit=0", "InvalidLimit"),
        ("/api/v1/callrecords?limit=5001", "InvalidLimit"),
        ("/api/v1/callrecords?limit=-1", "InvalidLimit"),
        ("/api/v1/callrecords?limit=ten", "InvalidLimit"),
        ("/api/v1/callrecords?format=xml", "InvalidFormat"),
        ("/api/v1/callrecords?format=", "InvalidFormat"),
        ("/api/v1/pstncalls?format=csv&layout=excel", "InvalidLayout"),
        ("/api/v1/pstncalls?layout=teams-admin", "InvalidLayout"),
        (
            "/api/v1/directroutingcalls?format=ndjson&layout=teams-admin",
            "InvalidLayout",
        ),
        (
            "/api/v1/callrecords?format=csv&layout=teams-admin",
            "InvalidLayout",
        ),
        (
            "/api/v1/callrecords?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            "InvalidRange",
        ),
        (
            "/api/v1/callrecords?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z",
            "InvalidRange",
        ),
        (
            "/api/v1/callrecords?from=yesterday&to=2026-11-01T00:00:00Z",
            "InvalidTime",
        ),
        (
            "/api/v1/callrecords?from=2026-11-01&to=2026-11-02",
            "InvalidTime",
        ),
        (
            "/api/v1/callrecords?from=2020-01-01T00:00:00Z&to=2026-11-01T00:00:00Z",
            "RangeTooLong",
        ),
        (
            "/api/v1/callrecords?from=2026-11-01T00:00:00Z",
            "IncompleteRange",
        ),
        (
            "/api/v1/callrecords?to=2026-11-01T00:00:00Z",
            "IncompleteRange",
        ),
        ("/api/v1/callrecords?limit=1&limit=2", "RepeatedParameter"),
        ("/api/v1/callrecords?since=2026-11-01", "UnknownParameter"),
        ("/api/v1/callrecords/abc?limit=1", "UnknownParameter"),
        ("/api/v1/callrecords/a%5Cb", "InvalidId"),
        ("/api/v1/callrecords/a%23b/sessions", "InvalidId"),
        ("/api/v1/callrecords?cursor=", "InvalidCursor"),
        ("/api/v1/callrecords?cursor=abc", "InvalidCursor"),
        (
            "/api/v1/callrecords?cursor=e30.AAAAAAAAAAAAAAAAAAAAAA",
            "InvalidCursor",
        ),
    ];
    let mut paths: Vec<(String, &str)> = cases.iter().map(|(p, c)| ((*p).to_owned(), *c)).collect();
    paths.push((
        format!("/api/v1/callrecords?cursor={}", urlencode(&tampered)),
        "InvalidCursor",
    ));
    paths.push((
        format!(
            "/api/v1/callrecords?cursor={}",
            urlencode(&"A".repeat(5000))
        ),
        "InvalidCursor",
    ));
    // A cursor of another list.
    paths.push((
        format!("/api/v1/pstncalls?cursor={}", urlencode(&feed_cursor)),
        "CursorMismatch",
    ));
    paths.push((
        format!(
            "/api/v1/pstncalls?cursor={}&from=2026-11-05T00:00:00Z&to=2026-11-06T00:00:00Z",
            urlencode(&range_cursor)
        ),
        "CursorMismatch",
    ));
    paths.push((
        format!("/api/v1/callrecords?cursor={}", urlencode(&range_cursor)),
        "CursorMismatch",
    ));
    paths.push((
        format!(
            "/api/v1/callrecords/00000000-0000-4000-8000-000000000000/sessions?cursor={}",
            urlencode(&feed_cursor)
        ),
        "CursorMismatch",
    ));
    let tables_before = table_counts(&app).await;
    for (path, code) in &paths {
        let answer = get(&app, path).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, *code),
            "{path}: {}",
            answer.text
        );
        // Nothing internal in the message.
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        for leak in [
            "127.0.0.1",
            "devstoreaccount1",
            "AccountKey",
            "panicked",
            CLIENT_STATE,
            TENANT_ID,
        ] {
            assert!(!message.contains(leak), "{path}: {message}");
        }
    }
    // Other methods: 405 with the allowed one.
    let client = reqwest::Client::new();
    for route in [
        "/api/v1/callrecords",
        "/api/v1/openapi.json",
        "/api/v1/callrecords/x",
    ] {
        let response = client
            .post(format!("{}{route}", app.host.base()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{route}");
        assert_eq!(response.headers()["allow"], "GET");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "MethodNotAllowed");
    }
    assert_eq!(
        table_counts(&app).await,
        tables_before,
        "reads change nothing"
    );
}

/// Rows in every table of the app but `AppState` (where reads record themselves).
async fn table_counts(app: &FetchApp) -> Vec<usize> {
    let mut counts = Vec::new();
    for name in [
        &app.names.call_records,
        &app.names.sessions,
        &app.names.bodies,
        &app.names.pstn_calls,
        &app.names.direct_routing_calls,
        &app.names.feed,
    ] {
        let table = azurite_table(name);
        counts.push(app.rows(&table).await.len());
    }
    counts
}

/// The columns of one export in `tests/fixtures/teams-admin-export/COLUMNS.md` (Microsoft's list,
/// copied): name and SQL Server type, in order.
fn export_columns(section: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/tests/fixtures/teams-admin-export/COLUMNS.md",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let body = text
        .split("\n## ")
        .find(|s| s.starts_with(section))
        .unwrap_or_else(|| panic!("no section {section}"));
    body.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // `| 0 | UsageId | uniqueidentifier | id |`
            (cells.len() >= 5 && cells[1].parse::<u32>().is_ok())
                .then(|| (cells[2].to_owned(), cells[3].replace(' ', "")))
        })
        .collect()
}

/// Whether `value` is one that SQL Server reads into `sql` (an empty cell is NULL).
fn fits(value: &str, sql: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match sql {
        "uniqueidentifier" => {
            let g: Vec<&str> = value.split('-').collect();
            g.len() == 5 && g.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| hex(p, n))
        }
        "int" => value.parse::<i32>().is_ok(),
        "numeric(16,2)" => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            digits.split_once('.').is_some_and(|(whole, cents)| {
                (1..=14).contains(&whole.len())
                    && whole.bytes().all(|b| b.is_ascii_digit())
                    && hex(cents, 2)
                    && cents.bytes().all(|b| b.is_ascii_digit())
            })
        }
        "datetimeoffset" => {
            // UTC ISO 8601 with at most seven fractional digits (datetimeoffset's precision).
            value.ends_with('Z')
                && value.split_once('.').is_none_or(|(_, f)| f.len() <= 8)
                && time::OffsetDateTime::parse(
                    value,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok()
        }
        text if text.starts_with("nvarchar(") => {
            let n: usize = text["nvarchar(".len()..text.len() - 1].parse().unwrap();
            value.encode_utf16().count() <= n
        }
        other => panic!("a type the export does not use: {other}"),
    }
}

/// Reads a CSV answer with a standard reader: its header and its records.
fn csv_records(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let records = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, records)
}

#[tokio::test]
async fn the_teams_admin_layouts_have_the_exports_exact_header_and_every_value_fits_its_sql_type() {
    let mut config = sim_config(0);
    config.tenant.pstn_rows = 30;
    config.tenant.direct_routing_rows = 30;
    config.tenant.direct_routing_failure_share = 0.4;
    let app = reports_app(config).await;
    // Every row published (at most an hour after its call, which started 03:00–06:00).
    app.sim.clock().advance(time::Duration::hours(2));
    assert_eq!(app.pull_reports().await, 200);
    app.sim.clock().advance(SETTLE + time::Duration::seconds(1));

    for (dataset, section, id_column, graph_id) in [
        ("pstncalls", "Calling Plans", "UsageId", "id"),
        (
            "directroutingcalls",
            "Direct Routing",
            "CorrelationId",
            "correlationId",
        ),
    ] {
        let columns = export_columns(section);
        assert_eq!(columns.len(), 25, "{section}");
        // The feed, in pages of 7 followed by their cursors.
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/{dataset}?format=csv&layout=teams-admin&limit=7");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", urlencode(c)));
            }
            let answer = get(&app, &path).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text);
            let (header, page) = csv_records(&answer.text);
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                header, names,
                "{dataset}: the export's header, in its order"
            );
            records.extend(page);
            cursor = answer.header("x-next-cursor").map(str::to_owned);
            if answer.header("x-more") != Some("true") {
                break;
            }
        }
        // Every stored row once, under the id the export keys it by.
        let json = get(&app, &format!("/api/v1/{dataset}?limit=5000"))
            .await
            .json();
        let stored: BTreeMap<String, Value> = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[graph_id].as_str().unwrap().to_owned(), r.clone()))
            .collect();
        assert_eq!(stored.len(), 30, "{dataset}");
        let at = |name: &str| columns.iter().position(|(n, _)| n == name).unwrap();
        let ids: BTreeSet<String> = records.iter().map(|r| r[at(id_column)].clone()).collect();
        assert_eq!(ids, stored.keys().cloned().collect(), "{dataset}");
        assert_eq!(records.len(), 30, "{dataset}: each row once");
        for record in &records {
            for ((name, sql), value) in columns.iter().zip(record) {
                assert!(fits(value, sql), "{dataset} {name} ({sql}): {value:?}");
            }
            let row = &stored[&record[at(id_column)]];
            // Each column holds its own property: times as the same instants, text as stored,
            // money within half a cent of Graph's exact amount.
            let same_time = |column: &str, property: &str| {
                let parse = |t: &str| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                };
                assert_eq!(
                    parse(&record[at(column)]),
                    row[property].as_str().and_then(parse),
                    "{dataset} {column}"
                );
            };
            let same_text = |column: &str, property: &str| {
                assert_eq!(
                    record[at(column)],
                    row[property].as_str().unwrap_or_default(),
                    "{dataset} {column}"
                );
            };
            let cents = |column: &str, property: &str| {
                let csv: f64 = record[at(column)].parse().unwrap();
                let exact: f64 = row[property].as_str().unwrap().parse().unwrap();
                assert!(
                    (csv - exact).abs() <= 0.005 + 1e-9,
                    "{dataset} {column}: {csv} for {exact}"
                );
            };
            if dataset == "pstncalls" {
                assert_eq!(record[at("Duration Seconds")], row["duration"].to_string());
                same_time("Start Time", "startDateTime");
                same_time("End Time", "endDateTime");
                same_text("Caller ID", "callerNumber");
                same_text("Destination Number", "calleeNumber");
                same_text("Call Type", "callType");
                same_text("Call Direction", "Direction");
                cents("Charge", "charge");
                cents("Connection Fee", "connectionCharge");
            } else {
                same_time("Invite time", "inviteDateTime");
                same_time("Start time", "startDateTime");
                same_time("End time", "endDateTime");
                same_text("Caller Number", "callerNumber");
                same_text("Callee Number", "calleeNumber");
                same_text("UPN", "userPrincipalName");
                let success = row["successfulCall"].as_bool().unwrap();
                assert_eq!(record[at("Success")], if success { "Yes" } else { "No" });
                assert_eq!(record[at("Media bypass")], "No");
                assert_eq!(
                    record[at("Final SIP code")],
                    row["finalSipCode"].to_string()
                );
                // Graph has no shared correlation id: always empty.
                assert_eq!(record[at("Shared correlation ID")], "");
                assert_eq!(record[at("Failure time")].is_empty(), success);
            }
        }
    }

    // A time range in the layout holds the same rows as the feed.
    let range = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";
    let answer = get(
        &app,
        &format!("/api/v1/directroutingcalls?{range}&format=csv&layout=teams-admin&limit=5000"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(csv_records(&answer.text).1.len(), 30);
}
