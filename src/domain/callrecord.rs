//! A call record as we store it besides its document: the summary columns and one row per session,
//! read from the merged document (which `graph::pages` puts together). Pure logic, no IO.

use std::collections::HashSet;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::directory::Directory;
use super::models::{CallRecord, Endpoint, Identity, Session};
use super::outcome::{Outcome, call_record_outcome};
use super::write::Incoming;

/// The merged document does not parse as a call record.
#[derive(Debug, thiserror::Error)]
#[error("the merged call record does not parse: {0}")]
pub(crate) struct NotACallRecord(#[source] serde_json::Error);

/// Who took part in a session or organised a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Party {
    /// Which member of the identity set it came from (`user`, `phone`, `guest`, …), if known.
    pub(crate) identity_kind: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) user_principal_name: Option<String>,
    pub(crate) tenant_id: Option<String>,
    /// From the directory sync, not from Graph's record ([`attribute`]).
    pub(crate) department: Option<String>,
    pub(crate) cost_center: Option<String>,
}

impl Party {
    fn from_identity(kind: Option<&str>, identity: &Identity) -> Self {
        Self {
            identity_kind: kind.map(str::to_owned),
            id: identity.id.clone(),
            display_name: identity.display_name.clone(),
            user_principal_name: identity.user_principal_name.clone(),
            tenant_id: identity.tenant_id.clone(),
            department: None,
            cost_center: None,
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
    /// Which list the participants were counted from: `participants_v2`, `participants` (the
    /// record's own deprecated list, where `participants_v2` is not served) or `none`.
    pub(crate) participants_source: &'static str,
    /// Sessions in the document that could not be read into a row (kept in the document).
    pub(crate) unreadable_sessions: i32,
    /// Distinct session ids.
    pub(crate) session_count: i32,
    pub(crate) segment_count: i32,
    /// How the call ended, where the record's documented fields say it ([`call_record_outcome`]).
    pub(crate) outcome: Outcome,
}

/// One session of a call record (a `CallRecordSessions` row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRow {
    /// Graph's session id, or `~<index>` for a session without one.
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

/// Gives each session's caller and callee the department and cost centre `directory` holds for
/// their id at the call's `start` (`domain::directory`); parties it does not know get none.
pub(crate) fn attribute(
    sessions: &mut [SessionRow],
    start: Option<OffsetDateTime>,
    directory: &Directory,
) {
    for session in sessions {
        for end in [&mut session.caller, &mut session.callee]
            .into_iter()
            .flatten()
        {
            let known = end
                .party
                .id
                .as_deref()
                .and_then(|id| directory.at(id, start));
            end.party.department = known.and_then(|a| a.department.clone());
            end.party.cost_center = known.and_then(|a| a.cost_center.clone());
        }
    }
}

/// The typed view of a merged document: its summary and its sessions, each session id once.
///
/// # Errors
/// When the document is not a call record.
pub(crate) fn flatten(document: &[u8]) -> Result<(Summary, Vec<SessionRow>), NotACallRecord> {
    let record: CallRecord<'_> = serde_json::from_slice(document).map_err(NotACallRecord)?;
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
    let v2 = record.participants_v2.as_deref().unwrap_or_default();
    let (participant_count, participants_source) = if !v2.is_empty() {
        (
            distinct(v2.iter().map(|p| p.id.as_deref())),
            "participants_v2",
        )
    } else if !record.participants.is_empty() {
        let ids = record
            .participants
            .iter()
            .map(|p| p.primary().and_then(|(_, identity)| identity.id.as_deref()));
        (distinct(ids), "participants")
    } else if record.participants_v2.is_some() {
        (0, "participants_v2")
    } else {
        (0, "none")
    };

    let mut seen = HashSet::new();
    let mut sessions = Vec::with_capacity(record.sessions.len());
    let mut segment_count = 0usize;
    let mut unreadable = 0usize;
    for (index, raw) in record.sessions.iter().enumerate() {
        // One session at a time: each is dropped once its row is made. A session that does not
        // read as one stays in the document and is counted; the record is still stored.
        let Ok(session) = serde_json::from_str::<Session>(raw.get()) else {
            unreadable += 1;
            continue;
        };
        // `~` is allowed in Table keys; Graph's session ids are GUIDs, so this cannot collide.
        let key = session.id.clone().unwrap_or_else(|| format!("~{index}"));
        if !seen.insert(key.clone()) {
            continue;
        }
        segment_count += session.segments.len();
        sessions.push(session_row(key, &session));
    }
    // A failure without a stage is still a failure: at an unknown stage.
    let failures: Vec<Option<&str>> = sessions
        .iter()
        .map(|s| match (&s.failure_stage, &s.failure_reason) {
            (Some(stage), _) => Some(stage.as_str()),
            (None, Some(_)) => Some("unknown"),
            (None, None) => None,
        })
        .collect();
    let outcome = call_record_outcome(record.kind.as_deref(), &failures);
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
        participants_source,
        unreadable_sessions: saturating_i32(unreadable),
        session_count: saturating_i32(sessions.len()),
        segment_count: saturating_i32(segment_count),
        outcome,
    };
    Ok((summary, sessions))
}

impl Summary {
    /// What the write rule compares with the stored record.
    pub(crate) fn incoming(&self) -> Incoming {
        Incoming {
            version: self.version,
            last_modified: self.last_modified,
        }
    }
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

/// Graph's timestamps (`2020-02-25T18:52:21.2169889Z`); anything else counts as absent, and so do
/// times before 1601 or after 9999: Graph writes `0001-01-01T00:00:00Z` (.NET's `MinValue`) for "no
/// time", and no call happened outside those years (which are also Table storage's range).
pub(crate) fn parse_time(value: Option<&str>) -> Option<OffsetDateTime> {
    graph_time(value?).ok().flatten()
}

/// A Graph timestamp that is not one (not RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotATime;

/// [`parse_time`] telling "no time" (Graph's placeholder, anything outside 1601–9999: `Ok(None)`)
/// from text that is not a time at all (`Err`), for callers that count the latter as bad data.
pub(crate) fn graph_time(text: &str) -> Result<Option<OffsetDateTime>, NotATime> {
    let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| NotATime)?;
    // Checked: `9999-12-31T23:00:00-02:00` is in year 10000 in UTC, which `time` cannot hold.
    let year = time
        .checked_to_offset(time::UtcOffset::UTC)
        .map(OffsetDateTime::year);
    Ok(year
        .is_some_and(|y| (1601..=9999).contains(&y))
        .then_some(time))
}

fn duration(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> Option<f64> {
    let seconds = (end? - start?).as_seconds_f64();
    (seconds >= 0.0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn legacy_record_without_v2_properties_is_summarised() {
        let (summary, sessions) = flatten(&fixture(
            "callrecord-get-basic-legacy-organizer-participants.json",
        ))
        .unwrap();
        assert_eq!(summary.participant_count, 2);
        assert_eq!(
            summary.organizer.unwrap().id.as_deref(),
            Some("821809f5-0000-0000-0000-3b5136c0e777")
        );
        assert!(sessions.is_empty());
    }

    #[test]
    fn the_documented_peer_to_peer_record_was_answered_and_one_without_sessions_is_unknown() {
        let (summary, _) =
            flatten(&fixture("callrecord-get-expand-sessions-segments.json")).unwrap();
        assert_eq!(summary.outcome, Outcome::Answered);
        let (summary, _) = flatten(&fixture(
            "callrecord-get-basic-legacy-organizer-participants.json",
        ))
        .unwrap();
        assert_eq!(summary.outcome, Outcome::Unknown);
    }

    #[test]
    fn a_session_that_failed_at_no_stated_stage_does_not_make_the_call_answered() {
        let record = |failure: &str| {
            format!(r#"{{"id":"x","type":"peerToPeer","sessions":[{{"id":"s1"{failure}}}]}}"#)
        };
        let outcome = |failure: &str| flatten(record(failure).as_bytes()).unwrap().0.outcome;
        assert_eq!(outcome(""), Outcome::Answered);
        assert_eq!(
            outcome(r#","failureInfo":{"reason":"x"}"#),
            Outcome::Unknown
        );
        assert_eq!(
            outcome(r#","failureInfo":{"stage":"callSetup","reason":"x"}"#),
            Outcome::Failed
        );
    }

    #[test]
    fn placeholder_and_out_of_range_times_are_absent() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(parse_time(Some("1600-12-31T23:59:59Z")), None);
        assert_eq!(parse_time(Some("9999-12-31T23:00:00-02:00")), None);
        assert!(parse_time(Some("2026-11-27T10:00:00.1234567Z")).is_some());
    }

    #[test]
    fn an_unreadable_session_is_counted_and_the_others_are_rows() {
        let document = br#"{"id":"r","version":2,"startDateTime":"0001-01-01T00:00:00Z",
            "sessions":[{"id":"a","modalities":["audio"]},{"id":"b","modalities":"not a list"},
                        {"id":"c","startDateTime":"0001-01-01T00:00:00Z","endDateTime":"2026-11-27T10:00:00Z"}],
            "participants_v2":[]}"#;
        let (summary, sessions) = flatten(document).unwrap();
        assert_eq!(summary.unreadable_sessions, 1);
        assert_eq!(summary.session_count, 2);
        assert_eq!(
            sessions.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            vec!["a", "c"]
        );
        assert_eq!(summary.start, None);
        assert_eq!(sessions[1].start, None);
        assert_eq!(sessions[1].duration_seconds, None);
    }

    #[test]
    fn participants_come_from_v2_else_from_the_records_own_list() {
        let v2 = br#"{"id":"r","participants_v2":[{"id":"p1"},{"id":"p2"}],"participants":[{"user":{"id":"u"}}]}"#;
        let legacy = br#"{"id":"r","participants":[{"user":{"id":"u1"}},{"user":{"id":"u2"}},{"user":{"id":"u1"}}]}"#;
        let neither = br#"{"id":"r"}"#;
        let empty_v2 = br#"{"id":"r","participants_v2":[]}"#;
        let summary = |doc: &[u8]| flatten(doc).unwrap().0;
        assert_eq!(summary(v2).participants_source, "participants_v2");
        assert_eq!(summary(v2).participant_count, 2);
        assert_eq!(summary(legacy).participants_source, "participants");
        assert_eq!(summary(legacy).participant_count, 2);
        assert_eq!(summary(neither).participants_source, "none");
        assert_eq!(summary(empty_v2).participants_source, "participants_v2");
    }
}
