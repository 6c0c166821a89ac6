//! Graph change notifications for call records: which items of a collection are accepted.
//!
//! A notification carries only the call-record id; everything else is fetched later. An item is
//! accepted when its `clientState` matches ours (compared in constant time), its `tenantId` is the
//! customer's tenant and it names a call record. Everything else is rejected with a reason that can be
//! counted and logged (never with the clientState value).
//! See <https://learn.microsoft.com/graph/changenotifications-for-callrecords>.

use std::collections::HashSet;

use serde::Deserialize;
use time::OffsetDateTime;

use super::job::CallRecordJob;
use super::secret::secrets_equal;

/// The body Graph POSTs: `{"value": [ …items… ]}`. Items are kept as raw JSON so that one odd item
/// is rejected on its own instead of failing the whole collection.
#[derive(Debug, Deserialize)]
pub(crate) struct NotificationCollection {
    value: Vec<serde_json::Value>,
}

/// The fields of one item we look at; unknown fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeNotification {
    subscription_id: Option<String>,
    client_state: Option<String>,
    change_type: Option<String>,
    resource: Option<String>,
    resource_data: Option<ResourceData>,
    tenant_id: Option<String>,
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResourceData {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    id: Option<String>,
}

/// Why an item was not enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rejection {
    /// Not an object of the expected shape.
    Malformed,
    /// `clientState` missing or different from `NOTIFICATION_CLIENT_STATE`.
    ClientState,
    /// `tenantId` missing or not `GRAPH_TENANT_ID`.
    Tenant,
    /// Not a call-record change (another resource, or a lifecycle event sent to the wrong URL).
    NotCallRecord,
    /// A call record without a usable id.
    BadId,
    /// A CloudEvent of a type we do not act on (Event Grid delivery).
    EventType,
}

impl Rejection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::ClientState => "client_state",
            Self::Tenant => "tenant",
            Self::NotCallRecord => "not_call_record",
            Self::BadId => "bad_id",
            Self::EventType => "event_type",
        }
    }
}

/// The outcome for one collection.
#[derive(Debug, Default)]
pub(crate) struct Triage {
    /// One job per accepted item (duplicates within the collection removed).
    pub(crate) accepted: Vec<CallRecordJob>,
    pub(crate) rejected: Vec<Rejection>,
    /// Accepted items that repeated an earlier item of the same collection.
    pub(crate) duplicates: usize,
}

/// What an item is checked against.
pub(crate) struct Expectations<'a> {
    pub(crate) tenant_id: &'a str,
    pub(crate) client_state: &'a [u8],
}

impl NotificationCollection {
    /// A collection of one item: an Event Grid event's `data`.
    pub(crate) fn single(item: serde_json::Value) -> Self {
        Self { value: vec![item] }
    }

    /// Sorts the items into jobs to enqueue and rejections.
    pub(crate) fn triage(self, expect: &Expectations<'_>, now: OffsetDateTime) -> Triage {
        let mut triage = Triage::default();
        let mut seen = HashSet::new();
        for raw in self.value {
            match check_item(raw, expect, now) {
                Ok(job) => {
                    if seen.insert((job.id.clone(), job.change_type.clone())) {
                        triage.accepted.push(job);
                    } else {
                        triage.duplicates += 1;
                    }
                }
                Err(reason) => triage.rejected.push(reason),
            }
        }
        triage
    }
}

fn check_item(
    raw: serde_json::Value,
    expect: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<CallRecordJob, Rejection> {
    let item: ChangeNotification = serde_json::from_value(raw).map_err(|_| Rejection::Malformed)?;
    let tenant = authenticate(&item, expect)?.to_ascii_lowercase();
    if item.lifecycle_event.is_some() {
        return Err(Rejection::NotCallRecord);
    }
    let id = call_record_id(&item)?;
    Ok(CallRecordJob {
        id,
        change_type: item.change_type.unwrap_or_else(|| "created".to_owned()),
        tenant_id: tenant,
        subscription_id: item.subscription_id.unwrap_or_default(),
        received_at: now,
        attempt: 0,
        not_before: None,
        repair: false,
    })
}

/// Checks the secret first, so that nothing about an unauthenticated item is trusted, then the tenant.
fn authenticate<'i>(
    item: &'i ChangeNotification,
    expect: &Expectations<'_>,
) -> Result<&'i str, Rejection> {
    let state = item.client_state.as_deref().ok_or(Rejection::ClientState)?;
    if !secrets_equal(state.as_bytes(), expect.client_state) {
        return Err(Rejection::ClientState);
    }
    let tenant = item.tenant_id.as_deref().ok_or(Rejection::Tenant)?;
    if !tenant.eq_ignore_ascii_case(expect.tenant_id) {
        return Err(Rejection::Tenant);
    }
    Ok(tenant)
}

/// A lifecycle notification (`reauthorizationRequired`, `subscriptionRemoved`, `missed`, or a value
/// Graph adds later) that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LifecycleEvent {
    pub(crate) event: String,
    pub(crate) subscription_id: String,
}

impl NotificationCollection {
    /// Sorts the items of a lifecycle collection into authenticated events and rejections.
    pub(crate) fn triage_lifecycle(
        self,
        expect: &Expectations<'_>,
    ) -> (Vec<LifecycleEvent>, Vec<Rejection>) {
        let mut events = Vec::new();
        let mut rejected = Vec::new();
        for raw in self.value {
            let checked = serde_json::from_value::<ChangeNotification>(raw)
                .map_err(|_| Rejection::Malformed)
                .and_then(|item| {
                    authenticate(&item, expect)?;
                    let event = item.lifecycle_event.clone().ok_or(Rejection::Malformed)?;
                    Ok(LifecycleEvent {
                        event,
                        subscription_id: item.subscription_id.unwrap_or_default(),
                    })
                });
            match checked {
                Ok(event) => events.push(event),
                Err(reason) => rejected.push(reason),
            }
        }
        (events, rejected)
    }
}

/// The call-record id, if the item is about a call record, in its one stored form (lower case).
///
/// The resource path decides: `communications/callRecords/{id}` names a call record whatever
/// `@odata.type` says (Graph has spelled the type several ways: `#Microsoft.Graph.callRecord`,
/// `#microsoft.graph.callRecords.callRecord`), so the type is only logged. An item without a
/// resource path must say it is a call record by its type.
fn call_record_id(item: &ChangeNotification) -> Result<String, Rejection> {
    const PREFIX: &str = "communications/callrecords/";
    let typed = item
        .resource_data
        .as_ref()
        .and_then(|d| d.odata_type.as_deref());
    let resource = item.resource.as_deref().map(|r| r.trim_start_matches('/'));
    let from_resource = match resource {
        // `get` rather than slicing: the prefix length can fall inside a multi-byte character.
        Some(r) => match (r.get(..PREFIX.len()), r.get(PREFIX.len()..)) {
            (Some(head), Some(rest)) if head.eq_ignore_ascii_case(PREFIX) && !rest.is_empty() => {
                Some(rest)
            }
            _ => return Err(Rejection::NotCallRecord),
        },
        None if typed.is_some_and(is_call_record_type) => None,
        None => return Err(Rejection::NotCallRecord),
    };
    if let Some(t) = typed.filter(|t| !is_call_record_type(t)) {
        tracing::info!(odata_type = %truncated(t, 100), "call-record notification with an unexpected @odata.type");
    }
    let data_id = item.resource_data.as_ref().and_then(|d| d.id.as_deref());
    // Both name the record: an item whose two ids disagree is not one we can trust.
    if let (Some(a), Some(b)) = (data_id, from_resource)
        && !a.eq_ignore_ascii_case(b)
    {
        return Err(Rejection::BadId);
    }
    let id = data_id.or(from_resource).ok_or(Rejection::BadId)?;
    if !is_valid_id(id) {
        return Err(Rejection::BadId);
    }
    Ok(normalize_id(id))
}

/// Graph writes `#Microsoft.Graph.callRecord` in notifications and `#microsoft.graph.callRecord`
/// (or with the `callRecords` namespace) in entities.
fn is_call_record_type(t: &str) -> bool {
    t.eq_ignore_ascii_case("#microsoft.graph.callRecord")
        || t.eq_ignore_ascii_case("#microsoft.graph.callRecords.callRecord")
}

fn truncated(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The one form a call-record id is read, keyed and compared in. Graph's ids are GUIDs, which Graph
/// matches without regard to case; notifications, list results and admins' id lists may spell them
/// differently, so every id is lower-cased once where it enters (the webhook, a queue message).
pub(crate) fn normalize_id(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// Whether `id` can name a call record in a Graph URL and a Table storage key. The characters are
/// the Table service's key rule (`table_storage::forbidden_in_key`, held to this by a test in
/// `store`), which also rules out what would change a URL path's meaning. Graph's ids are GUIDs;
/// this only rules out what could change the meaning of a path or a key.
pub(crate) fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && !id
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use time::macros::datetime;

    const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
    const STATE: &[u8] = b"secretClientValue";
    const NOW: OffsetDateTime = datetime!(2026-11-27 08:00 UTC);

    fn expect() -> Expectations<'static> {
        Expectations {
            tenant_id: TENANT,
            client_state: STATE,
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The documented call-record notification with its placeholders filled in.
    fn callrecord_notification(id: &str, state: &str, tenant: &str) -> NotificationCollection {
        let body = fixture("change-notification-callrecords.json")
            .replace("{Call id}", id)
            .replace("{Secret client state}", state)
            .replace("{Organization/Tenant id}", tenant)
            .replace("{Subscription id}", "sub-1");
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn documented_call_record_notification_becomes_one_job() {
        let triage = callrecord_notification(
            "2f1a1100-b174-40a0-aba7-0b405e01ed92",
            "secretClientValue",
            TENANT,
        )
        .triage(&expect(), NOW);
        assert_eq!(triage.rejected, vec![]);
        assert_eq!(
            triage.accepted,
            vec![CallRecordJob {
                id: "2f1a1100-b174-40a0-aba7-0b405e01ed92".into(),
                change_type: "created".into(),
                tenant_id: TENANT.into(),
                subscription_id: "sub-1".into(),
                received_at: NOW,
                attempt: 0,
                not_before: None,
                repair: false,
            }]
        );
    }

    #[test]
    fn items_failing_a_check_are_rejected_with_their_reason() {
        let id = "2f1a1100-b174-40a0-aba7-0b405e01ed92";
        let cases = [
            (
                "wrong client state",
                callrecord_notification(id, "guess", TENANT),
                Rejection::ClientState,
            ),
            (
                "empty client state",
                callrecord_notification(id, "", TENANT),
                Rejection::ClientState,
            ),
            (
                "other tenant",
                callrecord_notification(
                    id,
                    "secretClientValue",
                    "00000000-0000-0000-0000-000000000000",
                ),
                Rejection::Tenant,
            ),
            (
                "id with a slash",
                callrecord_notification("a/b", "secretClientValue", TENANT),
                Rejection::BadId,
            ),
        ];
        for (case, collection, reason) in cases {
            let triage = collection.triage(&expect(), NOW);
            assert!(triage.accepted.is_empty(), "{case}: accepted");
            assert_eq!(triage.rejected, vec![reason], "{case}");
        }
    }

    #[test]
    fn outlook_message_notification_is_not_a_call_record() {
        let collection: NotificationCollection =
            serde_json::from_str(&fixture("change-notification-generic-message.json")).unwrap();
        let triage = collection.triage(&expect(), NOW);
        assert!(triage.accepted.is_empty());
        assert_eq!(triage.rejected, vec![Rejection::NotCallRecord]);
    }

    #[test]
    fn lifecycle_event_sent_to_the_notification_url_is_not_enqueued() {
        let body = fixture("lifecycle-reauthorizationrequired.json");
        let mut collection: NotificationCollection = serde_json::from_str(&body).unwrap();
        for item in &mut collection.value {
            item["clientState"] = "secretClientValue".into();
            item["tenantId"] = TENANT.into();
        }
        let triage = collection.triage(&expect(), NOW);
        assert!(triage.accepted.is_empty());
        assert_eq!(triage.rejected, vec![Rejection::NotCallRecord]);
    }

    #[test]
    fn odata_type_and_resource_are_compared_without_case_and_unknown_fields_ignored() {
        let body = serde_json::json!({"value": [
            {"clientState": "secretClientValue", "tenantId": TENANT.to_uppercase(), "changeType": "updated",
             "resource": "/Communications/CallRecords/abc", "futureField": {"x": 1},
             "resourceData": {"@odata.type": "#microsoft.graph.callrecord", "id": "abc", "extra": true}},
            {"clientState": "secretClientValue", "tenantId": TENANT,
             "resource": "communications/callRecords/def"},
            {"clientState": "secretClientValue", "tenantId": TENANT, "resourceData": {"@odata.type": "#Microsoft.Graph.chatMessage", "id": "x"},
             "resource": "communications/callRecords/x"},
            {"clientState": "secretClientValue", "tenantId": TENANT, "resourceData": {"@odata.type": "#Microsoft.Graph.chatMessage", "id": "y"}},
            "not an object",
            {"clientState": 42}
        ]});
        let collection: NotificationCollection = serde_json::from_value(body).unwrap();
        let triage = collection.triage(&expect(), NOW);
        let ids: Vec<_> = triage
            .accepted
            .iter()
            .map(|j| (j.id.as_str(), j.change_type.as_str()))
            .collect();
        // The resource path decides; a type that disagrees is logged, not trusted over it.
        assert_eq!(
            ids,
            vec![("abc", "updated"), ("def", "created"), ("x", "created")]
        );
        assert_eq!(
            triage.rejected,
            vec![
                Rejection::NotCallRecord,
                Rejection::Malformed,
                Rejection::Malformed
            ]
        );
    }

    #[test]
    fn the_same_item_twice_in_one_collection_is_enqueued_once() {
        let item = serde_json::json!({"clientState": "secretClientValue", "tenantId": TENANT,
            "changeType": "created", "resource": "communications/callRecords/abc",
            "resourceData": {"id": "abc"}});
        let collection: NotificationCollection =
            serde_json::from_value(serde_json::json!({"value": [item.clone(), item]})).unwrap();
        let triage = collection.triage(&expect(), NOW);
        assert_eq!(triage.accepted.len(), 1);
        assert_eq!(triage.duplicates, 1);
    }

    #[test]
    fn lifecycle_fixtures_yield_their_event_when_authenticated() {
        for (name, event) in [
            (
                "lifecycle-reauthorizationrequired.json",
                "reauthorizationRequired",
            ),
            ("lifecycle-subscriptionremoved.json", "subscriptionRemoved"),
            ("lifecycle-missed.json", "missed"),
        ] {
            let mut collection: NotificationCollection =
                serde_json::from_str(&fixture(name)).unwrap();
            let mut forged: NotificationCollection = serde_json::from_str(&fixture(name)).unwrap();
            for item in &mut collection.value {
                item["clientState"] = "secretClientValue".into();
                item["tenantId"] = TENANT.into();
            }
            for item in &mut forged.value {
                item["clientState"] = "forged".into();
                item["tenantId"] = TENANT.into();
            }
            let (events, rejected) = collection.triage_lifecycle(&expect());
            assert_eq!(rejected, vec![], "{name}");
            assert_eq!(
                events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
                vec![event],
                "{name}"
            );
            let (events, rejected) = forged.triage_lifecycle(&expect());
            assert!(events.is_empty(), "{name}: forged event accepted");
            assert_eq!(rejected, vec![Rejection::ClientState], "{name}");
        }
    }

    fn item(resource: Value, odata_type: Option<&str>, id: Option<&str>) -> Value {
        let mut data = serde_json::Map::new();
        if let Some(t) = odata_type {
            data.insert("@odata.type".into(), t.into());
        }
        if let Some(id) = id {
            data.insert("id".into(), id.into());
        }
        serde_json::json!({"clientState": "secretClientValue", "tenantId": TENANT,
            "changeType": "created", "resource": resource, "resourceData": data})
    }

    fn triage_one(item: Value) -> Triage {
        let collection: NotificationCollection =
            serde_json::from_value(serde_json::json!({ "value": [item] })).unwrap();
        collection.triage(&expect(), NOW)
    }

    #[test]
    fn call_record_type_in_the_call_records_namespace_is_accepted_on_its_resource_path() {
        for t in [
            "#microsoft.graph.callRecords.callRecord",
            "#MICROSOFT.GRAPH.CALLRECORD",
            "#microsoft.graph.somethingNew",
        ] {
            let triage = triage_one(item(
                "communications/callRecords/abc".into(),
                Some(t),
                Some("abc"),
            ));
            assert_eq!(triage.rejected, vec![], "{t}");
            assert_eq!(triage.accepted.len(), 1, "{t}");
        }
        // Without a resource path only the type can say what the item is about.
        let typed = triage_one(item(
            Value::Null,
            Some("#microsoft.graph.callRecords.callRecord"),
            Some("abc"),
        ));
        assert_eq!(typed.accepted.len(), 1);
        let untyped = triage_one(item(
            Value::Null,
            Some("#microsoft.graph.user"),
            Some("abc"),
        ));
        assert_eq!(untyped.rejected, vec![Rejection::NotCallRecord]);
    }

    #[test]
    fn ids_that_differ_only_in_case_become_one_lower_case_id() {
        let upper = "2F1A1100-B174-40A0-ABA7-0B405E01ED92";
        let triage = triage_one(item(
            format!("communications/callRecords/{upper}").into(),
            None,
            Some(&upper.to_ascii_lowercase()),
        ));
        assert_eq!(triage.accepted[0].id, upper.to_ascii_lowercase());
    }

    #[test]
    fn a_multi_byte_character_at_the_prefix_boundary_is_rejected_without_a_panic() {
        // "communications/callRecords" is 26 bytes; a 3-byte character makes byte 27 fall inside it.
        for resource in [
            "communications/callRecords\u{20ac}abc",
            "communications/callRecord\u{20ac}abc",
            "\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}\u{20ac}",
        ] {
            let triage = triage_one(item(resource.into(), None, Some("abc")));
            assert_eq!(
                triage.rejected,
                vec![Rejection::NotCallRecord],
                "{resource}"
            );
        }
    }

    /// Any JSON value: the triage sees whatever a caller can post.
    fn json_value() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            ".*",
            "(/)?[cC]ommunications/[cC]all[rR]ecords/.{0,40}",
            Just("#microsoft.graph.callRecord".to_owned()),
            Just("secretClientValue".to_owned()),
            Just(TENANT.to_owned()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("clientState".to_owned()),
                        Just("tenantId".to_owned()),
                        Just("resource".to_owned()),
                        Just("resourceData".to_owned()),
                        Just("@odata.type".to_owned()),
                        Just("id".to_owned()),
                        Just("changeType".to_owned()),
                        Just("lifecycleEvent".to_owned()),
                        ".{0,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A notification item that passes authentication, with hostile resource, type and id.
    fn authenticated_item() -> impl Strategy<Value = Value> {
        (
            prop_oneof![".*", "(/)?communications/callRecords.{0,3}.*", "\\PC{0,30}"],
            prop::option::of(".*"),
            prop::option::of(".{0,300}"),
        )
            .prop_map(|(resource, t, id)| item(resource.into(), t.as_deref(), id.as_deref()))
    }

    proptest! {
        #[test]
        fn triage_never_panics_on_any_collection(
            items in prop::collection::vec(prop_oneof![json_value(), authenticated_item()], 0..8)
        ) {
            let collection = NotificationCollection { value: items.clone() };
            let triage = collection.triage(&expect(), NOW);
            prop_assert_eq!(triage.accepted.len() + triage.rejected.len() + triage.duplicates, items.len());
            for job in &triage.accepted {
                prop_assert!(is_valid_id(&job.id));
                prop_assert_eq!(job.id.clone(), job.id.to_ascii_lowercase());
            }
            let lifecycle = NotificationCollection { value: items };
            let _ = lifecycle.triage_lifecycle(&expect());
        }
    }
}
