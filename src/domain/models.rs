//! Typed views of the call-record payloads we read: only the properties the summary and session
//! rows need. They never replace the stored document, which keeps Graph's bytes (see
//! [`crate::domain::callrecord`]).
//!
//! Graph's payloads vary more than its schema says (`tests/fixtures/graph/SOURCES.md`): properties
//! are absent or `null`, enums gain members (`unknownFutureValue` and later), endpoints carry either
//! `associatedIdentity` (current) or the deprecated `identity` identity set, and documentation
//! examples repeat participant ids. So every field is optional, enums are kept as strings, unknown
//! properties are ignored, and nothing here assumes ids are unique.
//! Schema: <https://learn.microsoft.com/graph/api/resources/callrecords-callrecord>.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Deserialises `null` like an absent property, so `#[serde(default)]` collections accept both.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `callRecord`, with `sessions` and `participants_v2` as merged from every page. Sessions stay raw
/// (borrowed from the document) and are read one at a time ([`Session`]): a 2,000-session meeting
/// read whole into typed structs would weigh several times its JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CallRecord<'a> {
    pub(crate) id: String,
    pub(crate) version: Option<i64>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) modalities: Vec<String>,
    pub(crate) last_modified_date_time: Option<String>,
    pub(crate) start_date_time: Option<String>,
    pub(crate) end_date_time: Option<String>,
    pub(crate) join_web_url: Option<String>,
    #[serde(rename = "organizer_v2")]
    pub(crate) organizer_v2: Option<Participant>,
    /// Deprecated identity set, the only organizer in older payloads.
    pub(crate) organizer: Option<IdentitySet>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub(crate) sessions: Vec<&'a RawValue>,
    /// Absent when Graph does not serve `participants_v2` for the record (national clouds).
    #[serde(rename = "participants_v2")]
    pub(crate) participants_v2: Option<Vec<ParticipantId>>,
    /// Deprecated list of identity sets, in payloads from before `participants_v2`.
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) participants: Vec<IdentitySet>,
}

/// A `participants_v2` item, of which only the id is needed (to count distinct participants).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ParticipantId {
    pub(crate) id: Option<String>,
}

/// `participant` (`organizer_v2`, `participants_v2`): an id and a communications identity set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Participant {
    pub(crate) id: Option<String>,
    pub(crate) identity: Option<IdentitySet>,
}

/// `identitySet` / `communicationsIdentitySet`: one of its members is set; which one says what kind
/// of party it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct IdentitySet {
    pub(crate) user: Option<Identity>,
    pub(crate) phone: Option<Identity>,
    pub(crate) guest: Option<Identity>,
    pub(crate) application_instance: Option<Identity>,
    pub(crate) application: Option<Identity>,
    pub(crate) device: Option<Identity>,
    pub(crate) encrypted: Option<Identity>,
    pub(crate) on_premises: Option<Identity>,
    pub(crate) acs_user: Option<Identity>,
    pub(crate) spool_user: Option<Identity>,
    pub(crate) acs_application_instance: Option<Identity>,
    pub(crate) spool_application_instance: Option<Identity>,
}

impl IdentitySet {
    /// The member that is set, with its kind (`user`, `phone`, …), in a fixed order of preference.
    pub(crate) fn primary(&self) -> Option<(&'static str, &Identity)> {
        [
            ("user", &self.user),
            ("phone", &self.phone),
            ("guest", &self.guest),
            ("applicationInstance", &self.application_instance),
            ("application", &self.application),
            ("acsUser", &self.acs_user),
            ("spoolUser", &self.spool_user),
            ("acsApplicationInstance", &self.acs_application_instance),
            ("spoolApplicationInstance", &self.spool_application_instance),
            ("onPremises", &self.on_premises),
            ("encrypted", &self.encrypted),
            ("device", &self.device),
        ]
        .into_iter()
        .find_map(|(kind, identity)| identity.as_ref().map(|i| (kind, i)))
    }
}

/// `identity` and its derived types (`userIdentity`, `communicationsUserIdentity`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Identity {
    pub(crate) id: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) user_principal_name: Option<String>,
}

/// `session`: one leg between two endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Session {
    pub(crate) id: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) modalities: Vec<String>,
    pub(crate) start_date_time: Option<String>,
    pub(crate) end_date_time: Option<String>,
    pub(crate) is_test: Option<bool>,
    pub(crate) caller: Option<Endpoint>,
    pub(crate) callee: Option<Endpoint>,
    pub(crate) failure_info: Option<FailureInfo>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) segments: Vec<serde::de::IgnoredAny>,
}

/// `endpoint`, `participantEndpoint` or `serviceEndpoint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Endpoint {
    #[serde(rename = "@odata.type")]
    pub(crate) odata_type: Option<String>,
    pub(crate) name: Option<String>,
    /// Current shape (`participantEndpoint.associatedIdentity`).
    pub(crate) associated_identity: Option<Identity>,
    /// Deprecated shape (`participantEndpoint.identity`, an identity set). Boxed: the set is large and
    /// usually absent.
    pub(crate) identity: Option<Box<IdentitySet>>,
    pub(crate) user_agent: Option<UserAgent>,
}

impl Endpoint {
    /// `participant`, `service` or the type name Graph used, without its namespace.
    pub(crate) fn kind(&self) -> Option<String> {
        let t = self.odata_type.as_deref()?;
        let name = t.rsplit('.').next().unwrap_or(t);
        Some(name.strip_suffix("Endpoint").unwrap_or(name).to_owned())
    }

    /// Who the endpoint is: `associatedIdentity` if present, else the primary member of the
    /// deprecated identity set, with the set member's kind.
    pub(crate) fn who(&self) -> Option<(Option<&'static str>, &Identity)> {
        if let Some(identity) = &self.associated_identity {
            return Some((None, identity));
        }
        self.identity
            .as_deref()
            .and_then(IdentitySet::primary)
            .map(|(kind, identity)| (Some(kind), identity))
    }
}

/// `userAgent` (`clientUserAgent` / `serviceUserAgent`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct UserAgent {
    pub(crate) header_value: Option<String>,
    pub(crate) platform: Option<String>,
    pub(crate) product_family: Option<String>,
    pub(crate) role: Option<String>,
}

/// `failureInfo`: why a session failed (absent when it did not).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FailureInfo {
    pub(crate) stage: Option<String>,
    pub(crate) reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_call_record_fixture_parses() {
        for name in [
            "callrecord-get-basic.json",
            "callrecord-get-basic-legacy-organizer-participants.json",
            "callrecord-get-expand-participants_v2.json",
            "callrecord-get-expand-sessions-segments.json",
        ] {
            let bytes = fixture(name);
            let record: CallRecord<'_> =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            for session in &record.sessions {
                let _: Session =
                    serde_json::from_str(session.get()).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            assert_eq!(record.id, "e523d2ed-2966-4b6b-925b-754a88034cc5", "{name}");
            assert!(record.version.is_some(), "{name}");
        }
    }

    #[test]
    fn list_fixtures_parse_including_a_phone_organizer_and_unknown_type() {
        #[derive(Deserialize)]
        struct List<'a> {
            #[serde(borrow)]
            value: Vec<CallRecord<'a>>,
        }
        let bytes = fixture("callrecords-list-all.json");
        let list: List<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(list.value[0].kind.as_deref(), Some("unknown"));
        let phone = list
            .value
            .iter()
            .filter_map(|r| r.organizer_v2.as_ref()?.identity.as_ref()?.primary())
            .find(|(kind, _)| *kind == "phone");
        assert!(phone.is_some(), "a phone organizer");
    }

    #[test]
    fn session_endpoints_read_both_identity_shapes() {
        let bytes = fixture("callrecord-get-expand-sessions-segments.json");
        let record: CallRecord<'_> = serde_json::from_slice(&bytes).unwrap();
        let session: Session = serde_json::from_str(record.sessions[0].get()).unwrap();
        let caller = session.caller.as_ref().unwrap();
        assert_eq!(caller.kind().as_deref(), Some("participant"));
        let (kind, who) = caller.who().unwrap();
        assert_eq!(kind, None);
        assert_eq!(
            who.user_principal_name.as_deref(),
            Some("abbie.wilkins@contoso.com")
        );

        let legacy: Endpoint = serde_json::from_value(serde_json::json!({
            "@odata.type": "#microsoft.graph.callRecords.participantEndpoint",
            "identity": {"user": null, "phone": {"id": "+12345678901"}},
            "someFutureProperty": {"x": 1}
        }))
        .unwrap();
        let (kind, who) = legacy.who().unwrap();
        assert_eq!(kind, Some("phone"));
        assert_eq!(who.id.as_deref(), Some("+12345678901"));
    }

    #[test]
    fn nulls_and_unknown_enum_members_are_accepted() {
        let text = serde_json::json!({
            "id": "x", "version": null, "type": "someNewType", "modalities": null,
            "sessions": null, "participants_v2": null, "organizer_v2": null,
        })
        .to_string();
        let record: CallRecord<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(record.kind.as_deref(), Some("someNewType"));
        assert!(record.sessions.is_empty() && record.modalities.is_empty());
    }
}
