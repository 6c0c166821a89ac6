//! A call record as we store it: Graph's pages merged into one document, the summary columns and one
//! row per session. Pure logic, no IO.
//!
//! The document keeps Graph's bytes: every property and array element is copied as Graph sent it
//! (`RawValue`), only the paging is undone (`sessions` from every page, `participants_v2` appended
//! from its own pages, the `sessions@odata.nextLink` dropped). Nothing is re-serialised from a typed
//! subset, so properties we don't model are never lost.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::graph::models::{CallRecord, Endpoint, Identity, Session};

/// The page layout of a Graph response was not what the API documents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("the call record is not a JSON object: {0}")]
    Record(#[source] serde_json::Error),
    #[error("a collection page is not a JSON object with `value`: {0}")]
    List(#[source] serde_json::Error),
    #[error("the merged call record does not parse: {0}")]
    Merged(#[source] serde_json::Error),
}

/// The first response, `GET callRecords/{id}?$expand=sessions($expand=segments)`.
#[derive(Debug)]
pub(crate) struct FirstPage {
    /// Every top-level property in Graph's order, except the paging of `sessions`.
    fields: Vec<(String, Box<RawValue>)>,
    sessions: Vec<Box<RawValue>>,
    /// `sessions@odata.nextLink`, to follow verbatim.
    pub(crate) sessions_next: Option<String>,
    /// `version`, 0 when absent (a record without one is older than any with one).
    pub(crate) version: i64,
}

impl FirstPage {
    /// # Errors
    /// When the body is not a JSON object.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, PageError> {
        let OrderedFields(all) = serde_json::from_slice(body).map_err(PageError::Record)?;
        let mut fields = Vec::with_capacity(all.len());
        let mut sessions = Vec::new();
        let mut sessions_next = None;
        let mut version = 0;
        for (name, value) in all {
            match name.as_str() {
                "sessions" => {
                    sessions = serde_json::from_str::<Option<Vec<Box<RawValue>>>>(value.get())
                        .map_err(PageError::Record)?
                        .unwrap_or_default();
                }
                "sessions@odata.nextLink" => {
                    sessions_next = serde_json::from_str(value.get()).map_err(PageError::Record)?;
                }
                _ => {
                    if name == "version" {
                        version = serde_json::from_str::<Option<i64>>(value.get())
                            .map_err(PageError::Record)?
                            .unwrap_or(0);
                    }
                    fields.push((name, value));
                }
            }
        }
        Ok(Self {
            fields,
            sessions,
            sessions_next,
            version,
        })
    }

    /// Appends the sessions of a `sessions@odata.nextLink` page.
    pub(crate) fn add_sessions(&mut self, page: ListPage) {
        self.sessions.extend(page.value);
    }

    /// The complete document: the first page's properties in Graph's order with `sessions` holding
    /// every page's sessions, then `participants_v2` with every participant page's items (replacing
    /// any `participants_v2` the first page carried).
    pub(crate) fn merge(self, participants: Vec<Box<RawValue>>) -> Vec<u8> {
        let estimate = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + self
                .sessions
                .iter()
                .map(|s| s.get().len() + 1)
                .sum::<usize>()
            + participants
                .iter()
                .map(|p| p.get().len() + 1)
                .sum::<usize>()
            + 64;
        let mut out = Vec::with_capacity(estimate);
        out.push(b'{');
        let mut first = true;
        let mut put_key = |out: &mut Vec<u8>, key: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // A key is a Rust string from JSON: re-encoding it cannot fail.
            out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
            out.push(b':');
        };
        let put_array = |out: &mut Vec<u8>, items: &[Box<RawValue>]| {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item.get().as_bytes());
            }
            out.push(b']');
        };
        for (name, value) in &self.fields {
            if name == "participants_v2" {
                continue;
            }
            put_key(&mut out, name);
            out.extend_from_slice(value.get().as_bytes());
        }
        put_key(&mut out, "sessions");
        put_array(&mut out, &self.sessions);
        put_key(&mut out, "participants_v2");
        put_array(&mut out, &participants);
        out.push(b'}');
        out
    }
}

/// A collection page (`value` and `@odata.nextLink`).
#[derive(Debug, Deserialize)]
pub(crate) struct ListPage {
    #[serde(default)]
    pub(crate) value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink")]
    pub(crate) next: Option<String>,
}

impl ListPage {
    /// # Errors
    /// When the body is not a collection page.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, PageError> {
        serde_json::from_slice(body).map_err(PageError::List)
    }
}

/// A JSON object's properties in document order, values untouched.
struct OrderedFields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for OrderedFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(OrderedFields(fields))
            }
        }
        deserializer.deserialize_map(V).map_err(de::Error::custom)
    }
}

/// Who took part in a session or organised a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Party {
    /// Which member of the identity set it came from (`user`, `phone`, `guest`, …), if known.
    pub(crate) identity_kind: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) user_principal_name: Option<String>,
    pub(crate) tenant_id: Option<String>,
}

impl Party {
    fn from_identity(kind: Option<&str>, identity: &Identity) -> Self {
        Self {
            identity_kind: kind.map(str::to_owned),
            id: identity.id.clone(),
            display_name: identity.display_name.clone(),
            user_principal_name: identity.user_principal_name.clone(),
            tenant_id: identity.tenant_id.clone(),
        }
    }
}

/// One end of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EndpointInfo {
    /// `participant` or `service` (the endpoint type without namespace).
    pub(crate) kind: Option<String>,
    pub(crate) party: Party,
    pub(crate) user_agent: Option<String>,
    pub(crate) platform: Option<String>,
    pub(crate) product_family: Option<String>,
}

impl EndpointInfo {
    fn from_endpoint(endpoint: &Endpoint) -> Self {
        let user_agent = endpoint.user_agent.as_ref();
        Self {
            kind: endpoint.kind(),
            party: endpoint
                .who()
                .map(|(kind, identity)| Party::from_identity(kind, identity))
                .unwrap_or_default(),
            user_agent: user_agent.and_then(|u| u.header_value.clone()),
            platform: user_agent.and_then(|u| u.platform.clone()),
            product_family: user_agent.and_then(|u| u.product_family.clone()),
        }
    }
}

/// The summary of one call record (the `CallRecords` row without its document).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub(crate) id: String,
    pub(crate) version: i64,
    pub(crate) kind: Option<String>,
    pub(crate) modalities: String,
    pub(crate) start: Option<OffsetDateTime>,
    pub(crate) end: Option<OffsetDateTime>,
    pub(crate) duration_seconds: Option<f64>,
    pub(crate) last_modified: Option<OffsetDateTime>,
    pub(crate) join_web_url: Option<String>,
    pub(crate) organizer: Option<Party>,
    /// Distinct participant ids (`participants_v2`, else the deprecated `participants`).
    pub(crate) participant_count: i32,
    /// Distinct session ids.
    pub(crate) session_count: i32,
    pub(crate) segment_count: i32,
}

/// One session of a call record (a `CallRecordSessions` row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRow {
    /// Graph's session id, or `#<index>` for a session without one.
    pub(crate) key: String,
    pub(crate) modalities: String,
    pub(crate) start: Option<OffsetDateTime>,
    pub(crate) end: Option<OffsetDateTime>,
    pub(crate) duration_seconds: Option<f64>,
    pub(crate) is_test: Option<bool>,
    pub(crate) caller: Option<EndpointInfo>,
    pub(crate) callee: Option<EndpointInfo>,
    pub(crate) failure_stage: Option<String>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) segment_count: i32,
}

/// The typed view of a merged document: its summary and its sessions, each session id once.
///
/// # Errors
/// When the document is not a call record.
pub(crate) fn flatten(document: &[u8]) -> Result<(Summary, Vec<SessionRow>), PageError> {
    let record: CallRecord = serde_json::from_slice(document).map_err(PageError::Merged)?;
    let start = parse_time(record.start_date_time.as_deref());
    let end = parse_time(record.end_date_time.as_deref());
    let organizer = record
        .organizer_v2
        .as_ref()
        .and_then(|o| {
            let (kind, identity) = o.identity.as_ref()?.primary()?;
            let mut party = Party::from_identity(Some(kind), identity);
            party.id = party.id.or_else(|| o.id.clone());
            Some(party)
        })
        .or_else(|| {
            let (kind, identity) = record.organizer.as_ref()?.primary()?;
            Some(Party::from_identity(Some(kind), identity))
        });
    let participant_count = if record.participants_v2.is_empty() {
        distinct(
            record
                .participants
                .iter()
                .map(|p| p.primary().and_then(|(_, identity)| identity.id.as_deref())),
        )
    } else {
        distinct(record.participants_v2.iter().map(|p| p.id.as_deref()))
    };

    let mut seen = HashSet::new();
    let mut sessions = Vec::with_capacity(record.sessions.len());
    let mut segment_count = 0usize;
    for (index, session) in record.sessions.iter().enumerate() {
        let key = session.id.clone().unwrap_or_else(|| format!("#{index}"));
        if !seen.insert(key.clone()) {
            continue;
        }
        segment_count += session.segments.len();
        sessions.push(session_row(key, session));
    }
    let summary = Summary {
        id: record.id.clone(),
        version: record.version.unwrap_or(0),
        kind: record.kind.clone(),
        modalities: record.modalities.join(","),
        start,
        end,
        duration_seconds: duration(start, end),
        last_modified: parse_time(record.last_modified_date_time.as_deref()),
        join_web_url: record.join_web_url.clone(),
        organizer,
        participant_count: saturating_i32(participant_count),
        session_count: saturating_i32(sessions.len()),
        segment_count: saturating_i32(segment_count),
    };
    Ok((summary, sessions))
}

fn session_row(key: String, session: &Session) -> SessionRow {
    let start = parse_time(session.start_date_time.as_deref());
    let end = parse_time(session.end_date_time.as_deref());
    let failure = session.failure_info.as_ref();
    SessionRow {
        key,
        modalities: session.modalities.join(","),
        start,
        end,
        duration_seconds: duration(start, end),
        is_test: session.is_test,
        caller: session.caller.as_ref().map(EndpointInfo::from_endpoint),
        callee: session.callee.as_ref().map(EndpointInfo::from_endpoint),
        failure_stage: failure.and_then(|f| f.stage.clone()),
        failure_reason: failure.and_then(|f| f.reason.clone()),
        segment_count: saturating_i32(session.segments.len()),
    }
}

fn distinct<'a>(ids: impl Iterator<Item = Option<&'a str>>) -> usize {
    let mut seen = HashSet::new();
    let mut anonymous = 0;
    for id in ids {
        match id {
            Some(id) => {
                seen.insert(id);
            }
            None => anonymous += 1,
        }
    }
    seen.len() + anonymous
}

fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Graph's timestamps (`2020-02-25T18:52:21.2169889Z`); anything else counts as absent.
pub(crate) fn parse_time(value: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value?, &Rfc3339).ok()
}

fn duration(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> Option<f64> {
    let seconds = (end? - start?).as_seconds_f64();
    (seconds >= 0.0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn merged_document_has_every_page_and_no_paging_link() {
        let mut first =
            FirstPage::parse(&fixture("callrecord-get-expand-sessions-segments.json")).unwrap();
        assert!(first.sessions_next.is_some());
        assert_eq!(first.version, 1);
        first.add_sessions(ListPage::parse(&fixture("callrecord-sessions-list.json")).unwrap());
        let participants =
            ListPage::parse(&fixture("callrecord-participants_v2-list.json")).unwrap();
        let merged = first.merge(participants.value);

        let merged: Value = serde_json::from_slice(&merged).unwrap();
        let original: Value =
            serde_json::from_slice(&fixture("callrecord-get-expand-sessions-segments.json"))
                .unwrap();
        let sessions_page: Value =
            serde_json::from_slice(&fixture("callrecord-sessions-list.json")).unwrap();
        let participants_page: Value =
            serde_json::from_slice(&fixture("callrecord-participants_v2-list.json")).unwrap();
        let mut expected_sessions = original["sessions"].as_array().unwrap().clone();
        expected_sessions.extend(sessions_page["value"].as_array().unwrap().iter().cloned());
        assert_eq!(merged["sessions"], Value::Array(expected_sessions));
        assert_eq!(merged["participants_v2"], participants_page["value"]);
        assert!(merged.get("sessions@odata.nextLink").is_none());
        for (key, value) in original.as_object().unwrap() {
            if key != "sessions" && key != "sessions@odata.nextLink" {
                assert_eq!(&merged[key], value, "{key}");
            }
        }
    }

    #[test]
    fn merged_document_keeps_graph_bytes_for_every_element() {
        // Numbers and strings exactly as sent, including forms serde_json would write differently.
        let first = br#"{"id":"r","version":3,"x":1.50,"sessions":[{"id":"s","v":1e3}]}"#;
        let page = br#"{"value":[{"id":"p","n":"caf\u00e9"}]}"#;
        let merged = FirstPage::parse(first)
            .unwrap()
            .merge(ListPage::parse(page).unwrap().value);
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            r#"{"id":"r","version":3,"x":1.50,"sessions":[{"id":"s","v":1e3}],"participants_v2":[{"id":"p","n":"caf\u00e9"}]}"#
        );
    }

    #[test]
    fn summary_counts_distinct_participants_and_sessions() {
        let mut first =
            FirstPage::parse(&fixture("callrecord-get-expand-sessions-segments.json")).unwrap();
        // The session page repeats the first page's session id: counted once.
        first.add_sessions(ListPage::parse(&fixture("callrecord-sessions-list.json")).unwrap());
        // The doc example repeats a participant id: counted once.
        let record: Value =
            serde_json::from_slice(&fixture("callrecord-get-expand-participants_v2.json")).unwrap();
        let participants = record["participants_v2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| RawValue::from_string(p.to_string()).unwrap())
            .collect();
        let (summary, sessions) = flatten(&first.merge(participants)).unwrap();

        assert_eq!(summary.id, "e523d2ed-2966-4b6b-925b-754a88034cc5");
        assert_eq!(summary.version, 1);
        assert_eq!(summary.kind.as_deref(), Some("peerToPeer"));
        assert_eq!(summary.modalities, "audio");
        assert_eq!(summary.participant_count, 1);
        assert_eq!(summary.session_count, 1);
        assert_eq!(sessions.len(), 1);
        assert!((summary.duration_seconds.unwrap() - 25.5470124).abs() < 1e-6);
        let organizer = summary.organizer.unwrap();
        assert_eq!(organizer.identity_kind.as_deref(), Some("user"));
        assert_eq!(organizer.display_name.as_deref(), Some("Abbie Wilkins"));
        let caller = sessions[0].caller.as_ref().unwrap();
        assert_eq!(caller.kind.as_deref(), Some("participant"));
        assert_eq!(caller.platform.as_deref(), Some("android"));
        assert_eq!(
            sessions[0]
                .callee
                .as_ref()
                .unwrap()
                .party
                .user_principal_name
                .as_deref(),
            Some("owen.franklin@contoso.com")
        );
        assert_eq!(sessions[0].segment_count, 1);
    }

    #[test]
    fn legacy_record_without_v2_properties_is_summarised() {
        let first = FirstPage::parse(&fixture(
            "callrecord-get-basic-legacy-organizer-participants.json",
        ))
        .unwrap();
        let (summary, sessions) = flatten(&first.merge(Vec::new())).unwrap();
        assert_eq!(summary.participant_count, 2);
        assert_eq!(
            summary.organizer.unwrap().id.as_deref(),
            Some("821809f5-0000-0000-0000-3b5136c0e777")
        );
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_body_that_is_not_an_object_is_a_page_error() {
        assert!(FirstPage::parse(b"[1]").is_err());
        assert!(ListPage::parse(b"\"x\"").is_err());
    }
}
