//! The fake tenant: users, call records (with every session and participant, and later versions),
//! PSTN and Direct Routing report rows, generated deterministically from a seed.
//!
//! Every JSON object is built from Microsoft's documented payloads (`tests/fixtures/graph/`) with ids,
//! times and people replaced, so shapes match Graph's by construction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

use crate::rng::Rng;

const RECORD_TEMPLATE: &str =
    include_str!("../../tests/fixtures/graph/callrecord-get-expand-sessions-segments.json");
const PARTICIPANTS_TEMPLATE: &str =
    include_str!("../../tests/fixtures/graph/callrecord-participants_v2-list.json");
const PSTN_TEMPLATE: &str = include_str!("../../tests/fixtures/graph/getpstncalls-response.json");
const DIRECT_ROUTING_TEMPLATE: &str =
    include_str!("../../tests/fixtures/graph/getdirectroutingcalls-response.json");

/// Graph's "no value" date in Direct Routing rows.
pub const NO_DATE: &str = "0001-01-01T00:00:00Z";

/// What to generate.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub seed: u64,
    pub tenant_id: String,
    pub users: usize,
    /// Ordinary calls and meetings, spread over `[start, start + span)`.
    pub call_records: usize,
    pub start: OffsetDateTime,
    pub span: Duration,
    /// Extra meetings of (sessions, participants), e.g. (2000, 1000).
    pub big_meetings: Vec<(usize, usize)>,
    /// A record's first version appears between these delays after the call ended (Graph: up to 150 min).
    pub availability_delay: (Duration, Duration),
    /// Share of records that are re-issued later with a higher `version`.
    pub updated_share: f64,
    pub pstn_rows: usize,
    pub direct_routing_rows: usize,
    /// Share of Direct Routing rows that are failed attempts.
    pub direct_routing_failure_share: f64,
    /// Report rows appear this long after the call ended.
    pub report_delay: Duration,
}

impl Default for TenantSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            tenant_id: "dc368399-474c-4d40-900c-6265431fd81f".into(),
            users: 20,
            call_records: 20,
            start: time::macros::datetime!(2026-11-20 08:00 UTC),
            span: Duration::hours(8),
            big_meetings: Vec::new(),
            availability_delay: (Duration::minutes(5), Duration::minutes(150)),
            updated_share: 0.1,
            pstn_rows: 20,
            direct_routing_rows: 20,
            direct_routing_failure_share: 0.2,
            report_delay: Duration::minutes(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub display_name: String,
    pub upn: String,
    /// The directory's view (`users/delta`): department, `employeeOrgData`, office, usage location.
    pub department: Option<String>,
    pub cost_center: Option<String>,
    pub division: Option<String>,
    pub office_location: Option<String>,
    pub usage_location: Option<String>,
}

/// One version of a call record as Graph serves it.
#[derive(Debug, Clone)]
pub struct RecordVersion {
    pub version: u64,
    /// When this version becomes visible (tenant clock).
    pub issued_at: OffsetDateTime,
    /// The record's own properties (no `sessions`), `organizer_v2` expanded.
    pub base: Value,
    pub sessions: Arc<Vec<Value>>,
    pub participants: Arc<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub struct CallRecord {
    pub id: String,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// Ascending by `version` and `issued_at`.
    pub versions: Vec<RecordVersion>,
}

impl CallRecord {
    /// The newest version visible at `now`, if the record is available at all: Graph answers 404
    /// before the first version and for calls that started more than 30 days ago.
    pub fn visible_at(&self, now: OffsetDateTime) -> Option<&RecordVersion> {
        if now - self.start > Duration::days(30) {
            return None;
        }
        self.versions.iter().rev().find(|v| v.issued_at <= now)
    }
}

/// A report row with the time it becomes visible. Kept as serialized JSON: a tenant with 100,000
/// rows a day holds them in a fifth of the memory `Value`s would take.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub start: OffsetDateTime,
    pub visible_at: OffsetDateTime,
    pub json: Arc<RawValue>,
}

impl ReportRow {
    /// A row filed under `start` (what the report filters on), published at `visible_at`.
    pub fn new(start: OffsetDateTime, visible_at: OffsetDateTime, row: &Value) -> Self {
        // A `Value` always serializes.
        let json =
            serde_json::value::to_raw_value(row).unwrap_or_else(|e| panic!("report row: {e}"));
        Self {
            start,
            visible_at,
            json: Arc::from(json),
        }
    }

    /// The row as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.json.get()).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub users: Vec<User>,
    pub records: BTreeMap<String, CallRecord>,
    /// The records' keys in start-time order, which is the list's order: a page reads its slice of
    /// it, not every record (a scan of 300,000 records a page made the simulator, not the app, the
    /// cost of a large tenant's sweep). Kept with `records` by [`Tenant::generate`] and
    /// `RunningSim::insert_record`, the only places a record is added or its start set.
    pub(crate) by_start: BTreeSet<(OffsetDateTime, String)>,
    /// Sorted by start time.
    pub pstn: Vec<ReportRow>,
    pub direct_routing: Vec<ReportRow>,
}

/// Formats a time the way Graph does (seven fractional digits, `Z`).
pub fn graph_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap_or_default()
}

fn template(text: &str) -> Value {
    // The templates are our own fixtures, compiled in: a parse failure is a broken build.
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture template is not JSON: {e}"))
}

const FIRST: &[&str] = &[
    "Abbie", "Owen", "Anette", "Richard", "Maria", "Jun", "Lena", "Tomás", "Aiko", "Noah",
    "Fatima", "Ivan",
];
const LAST: &[&str] = &[
    "Wilkins", "Franklin", "Thomsen", "Malk", "García", "Chen", "Berg", "Silva", "Sato", "Okafor",
    "Haddad", "Petrov",
];

/// Department, cost centre and division of the generated users, in turn.
const DEPARTMENTS: &[(&str, &str, &str)] = &[
    ("Sales", "CC-1100", "Commercial"),
    ("Finance", "CC-2100", "Corporate"),
    ("Support", "CC-3100", "Commercial"),
    ("Engineering", "CC-4100", "Product"),
];

struct Templates {
    record: Value,
    session: Value,
    participant: Value,
    pstn: Value,
    direct_routing: Value,
}

impl Tenant {
    /// Generates the tenant described by `spec`; the same spec gives the same tenant.
    pub fn generate(spec: &TenantSpec) -> Self {
        let mut rng = Rng::derive(spec.seed, "tenant");
        let record = template(RECORD_TEMPLATE);
        let t = Templates {
            session: record["sessions"][0].clone(),
            participant: template(PARTICIPANTS_TEMPLATE)["value"][0].clone(),
            pstn: template(PSTN_TEMPLATE)["value"][0].clone(),
            direct_routing: template(DIRECT_ROUTING_TEMPLATE)["value"][0].clone(),
            record,
        };
        let users: Vec<User> = (0..spec.users.max(2))
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len() + i) % LAST.len()];
                User {
                    id: rng.guid(),
                    display_name: format!("{first} {last}"),
                    upn: format!(
                        "{}.{}{i}@contoso.com",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                    department: Some(DEPARTMENTS[i % DEPARTMENTS.len()].0.to_owned()),
                    cost_center: Some(DEPARTMENTS[i % DEPARTMENTS.len()].1.to_owned()),
                    division: Some(DEPARTMENTS[i % DEPARTMENTS.len()].2.to_owned()),
                    office_location: Some(format!("Building {}", i % 3 + 1)),
                    usage_location: Some(if i % 4 == 3 { "US" } else { "DE" }.to_owned()),
                }
            })
            .collect();

        let mut records = BTreeMap::new();
        let span_secs = spec.span.whole_seconds().max(1) as u64;
        for _ in 0..spec.call_records {
            let start = spec.start + Duration::seconds(rng.range(0, span_secs) as i64);
            let (kind, sessions, participants) = match rng.range(0, 100) {
                0..60 => ("peerToPeer", 1, 2),
                60..85 => (
                    "groupCall",
                    rng.range(2, 11) as usize,
                    rng.range(3, 11) as usize,
                ),
                _ => (
                    "groupCall",
                    rng.range(10, 200) as usize,
                    rng.range(5, 150) as usize,
                ),
            };
            let r = build_record(
                &mut rng,
                spec,
                &t,
                &users,
                kind,
                start,
                sessions,
                participants,
            );
            records.insert(r.id.clone(), r);
        }
        for &(sessions, participants) in &spec.big_meetings {
            let start = spec.start + Duration::seconds(rng.range(0, span_secs) as i64);
            let r = build_record(
                &mut rng,
                spec,
                &t,
                &users,
                "groupCall",
                start,
                sessions,
                participants,
            );
            records.insert(r.id.clone(), r);
        }

        let mut pstn: Vec<ReportRow> = (0..spec.pstn_rows)
            .map(|_| pstn_row(&mut rng, spec, &t.pstn, &users, span_secs))
            .collect();
        pstn.sort_by_key(|r| r.start);
        let mut direct_routing: Vec<ReportRow> = (0..spec.direct_routing_rows)
            .map(|_| direct_routing_row(&mut rng, spec, &t.direct_routing, &users, span_secs))
            .collect();
        direct_routing.sort_by_key(|r| r.start);

        let by_start = records.values().map(|r| (r.start, r.id.clone())).collect();
        Self {
            tenant_id: spec.tenant_id.clone(),
            users,
            records,
            by_start,
            pstn,
            direct_routing,
        }
    }
}

fn identity(user: &User, tenant_id: &str) -> Value {
    json!({"id": user.id, "displayName": user.display_name, "tenantId": tenant_id, "userPrincipalName": user.upn})
}

#[allow(clippy::too_many_arguments)]
fn build_record(
    rng: &mut Rng,
    spec: &TenantSpec,
    t: &Templates,
    users: &[User],
    kind: &str,
    start: OffsetDateTime,
    session_count: usize,
    participant_count: usize,
) -> CallRecord {
    let id = rng.guid();
    let organizer = rng.pick(users).clone();
    let mut sessions = Vec::with_capacity(session_count);
    let mut end = start;
    for _ in 0..session_count.max(1) {
        let s_start = start + Duration::seconds(rng.range(0, 600) as i64);
        let s_end = s_start + Duration::seconds(rng.range(20, 3600) as i64);
        end = end.max(s_end);
        sessions.push(session(
            rng,
            &t.session,
            users,
            &spec.tenant_id,
            s_start,
            s_end,
        ));
    }
    // Each participant once, as in Graph: the organizer, other users of the tenant, then people from
    // outside it once the tenant's users are used up.
    let offset = rng.range(0, users.len() as u64) as usize;
    let mut others = (0..users.len())
        .map(|i| &users[(offset + i) % users.len()])
        .filter(|u| u.id != organizer.id);
    let participants: Vec<Value> = (0..participant_count.max(1))
        .map(|i| {
            let user = if i == 0 {
                organizer.clone()
            } else if let Some(user) = others.next() {
                user.clone()
            } else {
                let id = rng.guid();
                User {
                    display_name: format!("External participant {i}"),
                    upn: format!("participant{i}@fabrikam.example"),
                    id,
                    department: None,
                    cost_center: None,
                    division: None,
                    office_location: None,
                    usage_location: None,
                }
            };
            let mut p = t.participant.clone();
            p["id"] = json!(user.id);
            p["identity"]["user"]["id"] = json!(user.id);
            p["identity"]["user"]["displayName"] = json!(user.display_name);
            p["identity"]["user"]["tenantId"] = json!(spec.tenant_id);
            p["identity"]["user"]["userPrincipalName"] = json!(user.upn);
            p
        })
        .collect();
    let delay = rng.range(
        spec.availability_delay.0.whole_seconds().max(0) as u64,
        spec.availability_delay.1.whole_seconds().max(1) as u64 + 1,
    );
    let first_issue = end + Duration::seconds(delay as i64);

    let mut base = t.record.clone();
    let object = base
        .as_object_mut()
        .expect("the record template is an object");
    object.remove("sessions");
    object.remove("sessions@odata.nextLink");
    base["@odata.context"] =
        json!("https://graph.microsoft.com/v1.0/$metadata#communications/callRecords/$entity");
    base["id"] = json!(id);
    base["type"] = json!(kind);
    base["version"] = json!(1);
    base["startDateTime"] = json!(graph_time(start));
    base["endDateTime"] = json!(graph_time(end));
    base["lastModifiedDateTime"] = json!(graph_time(first_issue));
    base["organizer_v2@odata.context"] = json!(format!(
        "https://graph.microsoft.com/v1.0/$metadata#communications/callRecords('{id}')/organizer_v2/$entity"
    ));
    base["organizer_v2"]["id"] = json!(organizer.id);
    base["organizer_v2"]["identity"]["user"] = json!({"id": organizer.id, "displayName": organizer.display_name, "tenantId": spec.tenant_id});
    base["participants_v2@odata.context"] = json!(format!(
        "https://graph.microsoft.com/v1.0/$metadata#communications/callRecords('{id}')/participants_v2"
    ));
    let sessions = Arc::new(sessions);
    let participants = Arc::new(participants);
    let mut versions = vec![RecordVersion {
        version: 1,
        issued_at: first_issue,
        base: base.clone(),
        sessions: sessions.clone(),
        participants: participants.clone(),
    }];

    if rng.chance(spec.updated_share) {
        // Late data: a second version hours later, with one more session.
        let issued_at = first_issue + Duration::minutes(rng.range(30, 360) as i64);
        let mut more = (*sessions).clone();
        let s_start = start + Duration::seconds(rng.range(0, 600) as i64);
        more.push(session(
            rng,
            &t.session,
            users,
            &spec.tenant_id,
            s_start,
            s_start + Duration::seconds(60),
        ));
        let mut base2 = base;
        base2["version"] = json!(2);
        base2["lastModifiedDateTime"] = json!(graph_time(issued_at));
        versions.push(RecordVersion {
            version: 2,
            issued_at,
            base: base2,
            sessions: Arc::new(more),
            participants,
        });
    }
    CallRecord {
        id,
        start,
        end,
        versions,
    }
}

fn session(
    rng: &mut Rng,
    template: &Value,
    users: &[User],
    tenant_id: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Value {
    let mut s = template.clone();
    s["id"] = json!(rng.guid());
    s["startDateTime"] = json!(graph_time(start));
    s["endDateTime"] = json!(graph_time(end));
    s["caller"]["associatedIdentity"] = identity(rng.pick(users), tenant_id);
    s["callee"]["associatedIdentity"] = identity(rng.pick(users), tenant_id);
    if let Some(segments) = s["segments"].as_array_mut() {
        for segment in segments {
            segment["id"] = json!(rng.guid());
            segment["startDateTime"] = json!(graph_time(start));
            segment["endDateTime"] = json!(graph_time(end));
        }
    }
    s
}

/// The user columns every report row has.
fn set_user(row: &mut Value, user: &User) {
    row["userId"] = json!(user.id);
    row["userPrincipalName"] = json!(user.upn);
    row["userDisplayName"] = json!(user.display_name);
}

/// Money as an exact decimal JSON number (4 places), never a computed float.
fn money(ten_thousandths: u64) -> Value {
    let text = format!(
        "{}.{:04}",
        ten_thousandths / 10_000,
        ten_thousandths % 10_000
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn phone(rng: &mut Rng) -> String {
    format!("+1425555{:04}", rng.range(0, 10_000))
}

fn pstn_row(
    rng: &mut Rng,
    spec: &TenantSpec,
    template: &Value,
    users: &[User],
    span_secs: u64,
) -> ReportRow {
    let user = rng.pick(users).clone();
    let start = spec.start + Duration::seconds(rng.range(0, span_secs) as i64);
    let duration = rng.range(5, 3600);
    let end = start + Duration::seconds(duration as i64);
    let outbound = rng.chance(0.5);
    let mut row = template.clone();
    row["id"] = json!(rng.guid());
    row["callId"] = json!(format!(
        "{}_{}@61.221.3.176",
        rng.range(1_000_000_000, 2_000_000_000),
        rng.range(100_000_000, 200_000_000)
    ));
    set_user(&mut row, &user);
    row["startDateTime"] = json!(graph_time(start));
    row["endDateTime"] = json!(graph_time(end));
    row["duration"] = json!(duration);
    row["callType"] = json!(if outbound { "user_out" } else { "user_in" });
    row["charge"] = if outbound {
        money(rng.range(0, 50_000))
    } else {
        money(0)
    };
    row["connectionCharge"] = money(0);
    row["calleeNumber"] = json!(phone(rng));
    row["callerNumber"] = json!(phone(rng));
    ReportRow::new(start, end + spec.report_delay, &row)
}

fn direct_routing_row(
    rng: &mut Rng,
    spec: &TenantSpec,
    template: &Value,
    users: &[User],
    span_secs: u64,
) -> ReportRow {
    let user = rng.pick(users).clone();
    let invite = spec.start + Duration::seconds(rng.range(0, span_secs) as i64);
    let ring = Duration::milliseconds(rng.range(500, 30_000) as i64);
    let failed = rng.chance(spec.direct_routing_failure_share);
    let mut row = template.clone();
    row["id"] = json!(rng.guid());
    row["correlationId"] = json!(rng.guid());
    set_user(&mut row, &user);
    row["inviteDateTime"] = json!(graph_time(invite));
    row["callerNumber"] = json!(format!("{}***", &phone(rng)[..9]));
    row["calleeNumber"] = json!(format!("{}***", &phone(rng)[..9]));
    row["callType"] = json!(if rng.chance(0.5) { "ByotIn" } else { "ByotOut" });
    let (start, end) = if failed {
        let failure = invite + ring;
        let (code, phrase) = *rng.pick(&[
            (486, "Busy Here"),
            (487, "Request Terminated"),
            (404, "Not Found"),
            (480, "Temporarily Unavailable"),
            (503, "Service Unavailable"),
            (603, "Decline"),
        ]);
        row["successfulCall"] = json!(false);
        row["startDateTime"] = json!(NO_DATE);
        row["failureDateTime"] = json!(graph_time(failure));
        // "Only exists for successful (fully established) calls."
        row["endDateTime"] = json!(NO_DATE);
        row["duration"] = json!(0);
        row["finalSipCode"] = json!(code);
        row["finalSipCodePhrase"] = json!(phrase);
        row["callEndSubReason"] = json!(560_000 + code);
        (invite, failure)
    } else {
        let start = invite + ring;
        let duration = rng.range(5, 3600);
        let end = start + Duration::seconds(duration as i64);
        row["successfulCall"] = json!(true);
        row["startDateTime"] = json!(graph_time(start));
        row["failureDateTime"] = json!(NO_DATE);
        row["endDateTime"] = json!(graph_time(end));
        row["duration"] = json!(duration);
        row["finalSipCode"] = json!(0);
        row["finalSipCodePhrase"] = json!("BYE");
        row["callEndSubReason"] = json!(540_000);
        (invite, end)
    };
    // Reports are filtered on the row's start; a failed attempt has none, so it files under its invite.
    ReportRow::new(start, end + spec.report_delay, &row)
}
