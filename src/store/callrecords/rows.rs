//! The rows UC-Analytics reads (README "Tables"): the `CallRecords` summary row and the
//! `CallRecordSessions` rows, built from the flattened record. The column names are the contract.

use table_storage::{EdmValue, Entity, forbidden_in_key};
use time::OffsetDateTime;

use super::super::columns::column_text;
use crate::domain::callrecord::{EndpointInfo, Party, SessionRow, Summary};

fn put(entity: Entity, name: &str, value: Option<EdmValue>) -> Entity {
    match value {
        Some(value) => entity.with(name, value),
        None => entity,
    }
}

fn string(value: Option<&String>) -> Option<EdmValue> {
    value.map(|v| EdmValue::String(column_text(v)))
}

/// Sets `{prefix}{name}` for each string that has a value.
fn put_strings(mut entity: Entity, prefix: &str, fields: &[(&str, Option<&String>)]) -> Entity {
    for (name, value) in fields {
        entity = put(entity, &format!("{prefix}{name}"), string(*value));
    }
    entity
}

fn put_party(entity: Entity, prefix: &str, party: &Party) -> Entity {
    put_strings(
        entity,
        prefix,
        &[
            ("IdentityType", party.identity_kind.as_ref()),
            ("Id", party.id.as_ref()),
            ("DisplayName", party.display_name.as_ref()),
            ("UserPrincipalName", party.user_principal_name.as_ref()),
            ("TenantId", party.tenant_id.as_ref()),
            ("Department", party.department.as_ref()),
            ("CostCenter", party.cost_center.as_ref()),
        ],
    )
}

fn put_endpoint(entity: Entity, prefix: &str, endpoint: Option<&EndpointInfo>) -> Entity {
    let Some(endpoint) = endpoint else {
        return entity;
    };
    let entity = put_strings(entity, prefix, &[("EndpointType", endpoint.kind.as_ref())]);
    let entity = put_party(entity, prefix, &endpoint.party);
    put_strings(
        entity,
        prefix,
        &[
            ("UserAgent", endpoint.user_agent.as_ref()),
            ("Platform", endpoint.platform.as_ref()),
            ("ProductFamily", endpoint.product_family.as_ref()),
        ],
    )
}

pub(super) fn record_entity(
    day: &str,
    summary: &Summary,
    document_len: usize,
    (body, body_prefix, body_entities): (&[u8], &str, u32),
    stored_at: OffsetDateTime,
) -> Entity {
    let mut e = Entity::new(day, &summary.id)
        .with("CallRecordId", EdmValue::String(summary.id.clone()))
        .with("Version", EdmValue::Int64(summary.version))
        .with(
            "Modalities",
            EdmValue::String(column_text(&summary.modalities)),
        )
        .with(
            "ParticipantCount",
            EdmValue::Int32(summary.participant_count),
        )
        .with(
            "ParticipantsSource",
            EdmValue::String(summary.participants_source.to_owned()),
        )
        .with(
            "UnreadableSessions",
            EdmValue::Int32(summary.unreadable_sessions),
        )
        .with("SessionCount", EdmValue::Int32(summary.session_count))
        .with("SegmentCount", EdmValue::Int32(summary.segment_count))
        .with(
            "Outcome",
            EdmValue::String(summary.outcome.as_str().to_owned()),
        )
        .with("StoredAt", EdmValue::DateTime(stored_at))
        .with("BodyEncoding", EdmValue::String("gzip".to_owned()))
        .with("BodyPrefix", EdmValue::String(body_prefix.to_owned()))
        .with(
            "BodySize",
            EdmValue::Int64(i64::try_from(document_len).unwrap_or(i64::MAX)),
        )
        .with(
            "BodyCompressedSize",
            EdmValue::Int64(i64::try_from(body.len()).unwrap_or(i64::MAX)),
        )
        .with(
            "BodyEntities",
            EdmValue::Int32(i32::try_from(body_entities).unwrap_or(i32::MAX)),
        );
    e = put(e, "Type", string(summary.kind.as_ref()));
    e = put(e, "StartDateTime", summary.start.map(EdmValue::DateTime));
    e = put(e, "EndDateTime", summary.end.map(EdmValue::DateTime));
    e = put(
        e,
        "DurationSeconds",
        summary.duration_seconds.map(EdmValue::Double),
    );
    e = put(
        e,
        "LastModifiedDateTime",
        summary.last_modified.map(EdmValue::DateTime),
    );
    e = put(e, "JoinWebUrl", string(summary.join_web_url.as_ref()));
    if let Some(organizer) = &summary.organizer {
        e = put_party(e, "Organizer", organizer);
    }
    e
}

pub(super) fn session_entity(summary: &Summary, session: &SessionRow) -> Entity {
    let mut e = Entity::new(&summary.id, session_key(&session.key))
        .with("CallRecordId", EdmValue::String(summary.id.clone()))
        .with("SessionId", EdmValue::String(column_text(&session.key)))
        .with("Version", EdmValue::Int64(summary.version))
        .with(
            "Modalities",
            EdmValue::String(column_text(&session.modalities)),
        )
        .with("SegmentCount", EdmValue::Int32(session.segment_count));
    e = put(
        e,
        "CallStartDateTime",
        summary.start.map(EdmValue::DateTime),
    );
    e = put(e, "StartDateTime", session.start.map(EdmValue::DateTime));
    e = put(e, "EndDateTime", session.end.map(EdmValue::DateTime));
    e = put(
        e,
        "DurationSeconds",
        session.duration_seconds.map(EdmValue::Double),
    );
    e = put(e, "IsTest", session.is_test.map(EdmValue::Boolean));
    e = put_endpoint(e, "Caller", session.caller.as_ref());
    e = put_endpoint(e, "Callee", session.callee.as_ref());
    e = put(e, "FailureStage", string(session.failure_stage.as_ref()));
    put(e, "FailureReason", string(session.failure_reason.as_ref()))
}

/// The `CallRecordSessions` row key of a session.
pub(super) fn session_key(key: &str) -> String {
    sanitize_key(key)
}

/// A row key from text that may hold characters Table storage forbids in keys: those are replaced,
/// and the original kept in a column. Graph's ids are GUIDs, so this never changes one.
pub(crate) fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| if forbidden_in_key(c) { '_' } else { c })
        .take(255)
        .collect()
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::columns::partition_day;
    use time::macros::datetime;

    #[test]
    fn partition_day_is_the_utc_start_day() {
        assert_eq!(
            partition_day(Some(datetime!(2026-11-27 23:30 -02:00))),
            "2026-11-28"
        );
        assert_eq!(partition_day(None), "0001-01-01");
    }

    #[test]
    fn the_id_rule_and_the_key_rule_forbid_the_same_characters() {
        use crate::domain::notification::is_valid_id;
        for c in (0..=0x2fff_u32).filter_map(char::from_u32) {
            assert_eq!(
                is_valid_id(&format!("a{c}b")),
                !forbidden_in_key(c),
                "U+{:04X}",
                u32::from(c)
            );
            assert_eq!(
                sanitize_key(&format!("a{c}b")) == format!("a{c}b"),
                !forbidden_in_key(c)
            );
        }
    }
}
