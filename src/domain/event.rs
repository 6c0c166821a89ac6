//! Messages on the call-record queue that are not our jobs: the CloudEvents an Event Grid event
//! subscription writes there when notifications are delivered through a partner topic
//! (`NOTIFICATION_DELIVERY=eventGrid`), and the two encodings a message can have.
//!
//! An event's `data` is one item of a webhook collection (Graph's documented partner-event shape:
//! `subscriptionId`, `changeType`, `clientState`, `resource`, `resourceData`, `tenantId`), so it is
//! authenticated by the very rules of `domain::notification`: the client state in constant time,
//! the tenant, a call-record resource.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::job::CallRecordJob;
use super::notification::{Expectations, LifecycleEvent, NotificationCollection, Rejection};

/// The CloudEvent types Graph publishes for call records, and the lifecycle type that applies to
/// them (`docs/DEVELOPMENT.md`, Event Grid).
const CREATED: &str = "Microsoft.Graph.CallRecordCreated";
const UPDATED: &str = "Microsoft.Graph.CallRecordUpdated";
const REAUTHORIZATION: &str = "Microsoft.Graph.SubscriptionReauthorizationRequired";

/// The text of a queue message: JSON as written, or base64 of it. Our own messages are base64
/// (what the Functions queue trigger decodes by default); Event Grid writes base64 too by the
/// reports of its users and Microsoft's SDK samples, plain JSON by one of Microsoft's pages. A JSON
/// message starts with `{`, which base64 never contains, so the two cannot be confused.
pub(crate) fn message_text(raw: &str) -> Option<String> {
    use base64::Engine as _;
    let trimmed = raw.trim();
    if trimmed.starts_with('{') {
        return Some(trimmed.to_owned());
    }
    base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A CloudEvent 1.0 in structured mode: the attributes we read.
#[derive(Debug, Deserialize)]
struct CloudEvent {
    specversion: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
}

/// What a queue message that is a CloudEvent asks for.
#[derive(Debug)]
pub(crate) enum EventAction {
    /// A call record to fetch.
    Fetch(CallRecordJob),
    /// A lifecycle event for a subscription, authenticated.
    Lifecycle(LifecycleEvent),
    /// Dropped, for this reason (counted, never retried).
    Rejected(Rejection),
}

/// `Some` when `text` is a CloudEvent (anything with `specversion` and `type`), with what it asks.
pub(crate) fn classify(
    text: &str,
    expect: &Expectations<'_>,
    now: OffsetDateTime,
) -> Option<EventAction> {
    let event: CloudEvent = serde_json::from_str(text).ok()?;
    if !event.specversion.starts_with('1') {
        return Some(EventAction::Rejected(Rejection::EventType));
    }
    let Some(data) = event.data else {
        return Some(EventAction::Rejected(Rejection::Malformed));
    };
    let one = NotificationCollection::single(data);
    let kind = event.kind.as_str();
    Some(
        if kind.eq_ignore_ascii_case(CREATED) || kind.eq_ignore_ascii_case(UPDATED) {
            let triage = one.triage(expect, now);
            match (triage.accepted.into_iter().next(), triage.rejected.first()) {
                (Some(job), _) => EventAction::Fetch(job),
                (None, Some(reason)) => EventAction::Rejected(*reason),
                (None, None) => EventAction::Rejected(Rejection::Malformed),
            }
        } else if kind.eq_ignore_ascii_case(REAUTHORIZATION) {
            let (events, rejected) = one.triage_lifecycle(expect);
            match (events.into_iter().next(), rejected.first()) {
                (Some(event), _) => EventAction::Lifecycle(event),
                (None, Some(reason)) => EventAction::Rejected(*reason),
                (None, None) => EventAction::Rejected(Rejection::Malformed),
            }
        } else {
            EventAction::Rejected(Rejection::EventType)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const TENANT: &str = "dc368399-474c-4d40-900c-6265431fd81f";
    const STATE: &[u8] = b"the-client-state";
    const NOW: OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

    fn expect() -> Expectations<'static> {
        Expectations {
            tenant_id: TENANT,
            client_state: STATE,
        }
    }

    fn event(kind: &str, client_state: &str, tenant: &str) -> String {
        json!({
            "id": "5b7f0a6e-1d3c-4f7e-9a1b-2c3d4e5f6a7b",
            "source": format!("/tenants/{tenant}/applications/11111111-2222-3333-4444-555555555555"),
            "specversion": "1.0",
            "type": kind,
            "subject": "communications/callRecords/2f1a1100-b174-40a0-aba7-0b405e01ed92",
            "time": "2026-12-07T09:59:58.123Z",
            "datacontenttype": "application/json",
            "data": {
                "changeType": "created",
                "clientState": client_state,
                "resource": "communications/callRecords/2f1a1100-b174-40a0-aba7-0b405e01ed92",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.callRecord",
                    "@odata.id": "communications/callRecords/2f1a1100-b174-40a0-aba7-0b405e01ed92",
                    "id": "2f1a1100-b174-40a0-aba7-0b405e01ed92"
                },
                "subscriptionExpirationDateTime": "2026-12-10T08:00:00Z",
                "subscriptionId": "0d1b4b5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
                "tenantId": tenant
            }
        })
        .to_string()
    }

    #[test]
    fn both_encodings_read_as_the_same_text_and_our_jobs_too() {
        use base64::Engine as _;
        let text = event(CREATED, "the-client-state", TENANT);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&text);
        assert_eq!(message_text(&text).as_deref(), Some(text.as_str()));
        assert_eq!(message_text(&encoded).as_deref(), Some(text.as_str()));
        assert_eq!(message_text("not base64!"), None);
    }

    #[test]
    fn a_call_record_event_becomes_the_job_a_webhook_item_would() {
        let Some(EventAction::Fetch(job)) =
            classify(&event(CREATED, "the-client-state", TENANT), &expect(), NOW)
        else {
            panic!("not a fetch");
        };
        assert_eq!(job.id, "2f1a1100-b174-40a0-aba7-0b405e01ed92");
        assert_eq!(job.change_type, "created");
        assert_eq!(job.subscription_id, "0d1b4b5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e");
        assert!(matches!(
            classify(&event(UPDATED, "the-client-state", TENANT), &expect(), NOW),
            Some(EventAction::Fetch(_))
        ));
    }

    #[test]
    fn a_wrong_client_state_a_foreign_tenant_and_other_types_are_rejected_by_reason() {
        let reason = |text: String| match classify(&text, &expect(), NOW) {
            Some(EventAction::Rejected(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(event(CREATED, "guess", TENANT)),
            Rejection::ClientState
        );
        assert_eq!(
            reason(event(
                CREATED,
                "the-client-state",
                "00000000-0000-0000-0000-000000000001"
            )),
            Rejection::Tenant
        );
        assert_eq!(
            reason(event(
                "Microsoft.Graph.UserUpdated",
                "the-client-state",
                TENANT
            )),
            Rejection::EventType
        );
        let no_data = r#"{"specversion":"1.0","type":"Microsoft.Graph.CallRecordCreated","id":"x","source":"y"}"#;
        assert_eq!(reason(no_data.to_owned()), Rejection::Malformed);
        // Not a CloudEvent at all: for the caller's own checks.
        assert!(classify(r#"{"id":"abc"}"#, &expect(), NOW).is_none());
    }

    #[test]
    fn a_reauthorization_event_is_a_lifecycle_event_once_authenticated() {
        let mut text: Value =
            serde_json::from_str(&event(REAUTHORIZATION, "the-client-state", TENANT)).unwrap();
        text["data"]["lifecycleEvent"] = json!("reauthorizationRequired");
        let Some(EventAction::Lifecycle(event)) = classify(&text.to_string(), &expect(), NOW)
        else {
            panic!("not a lifecycle event");
        };
        assert_eq!(event.event, "reauthorizationRequired");
        text["data"]["clientState"] = json!("guess");
        assert!(matches!(
            classify(&text.to_string(), &expect(), NOW),
            Some(EventAction::Rejected(Rejection::ClientState))
        ));
    }
}
