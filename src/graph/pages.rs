//! Graph's paging undone: the first response of a call record with its first sessions, the collection
//! pages that follow (`value` + `@odata.nextLink`), and their merge into one document.
//!
//! The document keeps Graph's bytes: every property and array element is copied as Graph sent it
//! (`RawValue`), only the paging is undone (`sessions` from every page, `participants_v2` appended
//! from its own pages, the `sessions@odata.nextLink` dropped). Nothing is re-serialised from a typed
//! subset, so properties we don't model are never lost, and numbers keep their form (`1.50`).

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The page layout of a Graph response was not what the API documents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("the call record is not a JSON object: {0}")]
    Record(#[source] serde_json::Error),
    #[error("a collection page is not a JSON object with `value`: {0}")]
    List(#[source] serde_json::Error),
    #[error("Graph's next links repeat or do not end")]
    Endless,
}

/// The document being assembled, page by page: it starts from the first response,
/// `GET callRecords/{id}?$expand=sessions($expand=segments)`, and each later page is appended to it
/// as it arrives, so that a page's bytes are held only while it is copied (a 2,000-session meeting's
/// pages add up to megabytes).
#[derive(Debug)]
pub(crate) struct FirstPage {
    /// The document so far: `{`, the first page's properties in Graph's order (without the paging
    /// of `sessions` and without `participants_v2`), then `"sessions":[` and the sessions so far.
    out: Vec<u8>,
    sessions: usize,
    /// Participants appended so far, once the sessions are closed.
    participants: Option<usize>,
    /// `sessions@odata.nextLink`, to follow verbatim.
    pub(crate) sessions_next: Option<String>,
    /// `version`, 0 when absent (a record without one is older than any with one).
    pub(crate) version: i64,
    /// `lastModifiedDateTime` as Graph wrote it: what tells two versions of a record without a
    /// `version` apart.
    pub(crate) last_modified: Option<String>,
}

impl FirstPage {
    /// # Errors
    /// When the body is not a JSON object.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, PageError> {
        let OrderedFields(all) = serde_json::from_slice(body).map_err(PageError::Record)?;
        let mut out = Vec::with_capacity(body.len() + 64);
        out.push(b'{');
        let mut sessions = None;
        let mut sessions_next = None;
        let mut version = 0;
        let mut last_modified = None;
        for (name, value) in &all {
            match name.as_str() {
                "sessions" => sessions = Some(value),
                "sessions@odata.nextLink" => {
                    sessions_next = serde_json::from_str(value.get()).map_err(PageError::Record)?;
                }
                // Replaced by every page of the participants, read separately.
                "participants_v2" => {}
                _ => {
                    if name == "version" {
                        version = serde_json::from_str::<Option<i64>>(value.get())
                            .map_err(PageError::Record)?
                            .unwrap_or(0);
                    }
                    if name == "lastModifiedDateTime" {
                        last_modified = serde_json::from_str::<Option<String>>(value.get())
                            .ok()
                            .flatten();
                    }
                    put_key(&mut out, name);
                    out.extend_from_slice(value.get().as_bytes());
                }
            }
        }
        put_key(&mut out, "sessions");
        out.push(b'[');
        let mut page = Self {
            out,
            sessions: 0,
            participants: None,
            sessions_next,
            version,
            last_modified,
        };
        if let Some(sessions) = sessions {
            let items: Option<Vec<&RawValue>> =
                serde_json::from_str(sessions.get()).map_err(PageError::Record)?;
            page.append(items.unwrap_or_default());
        }
        Ok(page)
    }

    /// Appends the sessions of a `sessions@odata.nextLink` page.
    pub(crate) fn add_sessions(&mut self, page: &ListPage<'_>) {
        debug_assert!(self.participants.is_none(), "sessions after participants");
        self.append(page.value.iter().copied());
    }

    /// Appends the participants of a `participants_v2` page (closing the sessions at the first).
    pub(crate) fn add_participants(&mut self, page: &ListPage<'_>) {
        if self.participants.is_none() {
            self.out.push(b']');
            put_key(&mut self.out, "participants_v2");
            self.out.push(b'[');
            self.participants = Some(0);
        }
        self.append(page.value.iter().copied());
    }

    fn append<'a>(&mut self, items: impl IntoIterator<Item = &'a RawValue>) {
        let count = match &mut self.participants {
            Some(n) => n,
            None => &mut self.sessions,
        };
        for item in items {
            if *count > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(item.get().as_bytes());
            *count += 1;
        }
    }

    /// The complete document: the first page's properties in Graph's order, `sessions` with every
    /// page's sessions, then `participants_v2` with every participant page's items.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.participants.is_none() {
            self.add_participants(&ListPage::default());
        }
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

impl FirstPage {
    /// The complete document of a record whose `participants_v2` Graph does not serve: the first
    /// page's properties (its deprecated `participants` among them) and every session, with no
    /// `participants_v2` at all, so that the document does not claim an empty list.
    pub(crate) fn finish_without_participants(mut self) -> Vec<u8> {
        debug_assert!(self.participants.is_none(), "participants already added");
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

/// Writes `"key":`, with a comma before it unless it is the object's first.
fn put_key(out: &mut Vec<u8>, key: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    // A key is a Rust string from JSON: re-encoding it cannot fail.
    out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
    out.push(b':');
}

/// A collection page (`value` and `@odata.nextLink`), its items borrowed from the page's bytes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListPage<'a> {
    #[serde(default, borrow)]
    pub(crate) value: Vec<&'a RawValue>,
    #[serde(rename = "@odata.nextLink")]
    pub(crate) next: Option<String>,
}

impl<'a> ListPage<'a> {
    /// # Errors
    /// When the body is not a collection page.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, PageError> {
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
        let sessions = fixture("callrecord-sessions-list.json");
        first.add_sessions(&ListPage::parse(&sessions).unwrap());
        let participants = fixture("callrecord-participants_v2-list.json");
        first.add_participants(&ListPage::parse(&participants).unwrap());
        let merged = first.finish();

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
        let sessions = br#"{"value":[{"id":"t"}],"@odata.nextLink":"x"}"#;
        let page = br#"{"value":[{"id":"p","n":"caf\u00e9"}]}"#;
        let page2 = br#"{"value":[{"id":"q"}, {"id":"r"}]}"#;
        let mut merged = FirstPage::parse(first).unwrap();
        merged.add_sessions(&ListPage::parse(sessions).unwrap());
        merged.add_participants(&ListPage::parse(page).unwrap());
        merged.add_participants(&ListPage::parse(page2).unwrap());
        assert_eq!(
            String::from_utf8(merged.finish()).unwrap(),
            r#"{"id":"r","version":3,"x":1.50,"sessions":[{"id":"s","v":1e3},{"id":"t"}],"participants_v2":[{"id":"p","n":"caf\u00e9"},{"id":"q"},{"id":"r"}]}"#
        );
    }

    #[test]
    fn a_record_without_sessions_or_participants_gets_empty_arrays_in_place_of_its_paging() {
        let first = br#"{"id":"r","participants_v2":[{"id":"old"}],"sessions":null}"#;
        assert_eq!(
            String::from_utf8(FirstPage::parse(first).unwrap().finish()).unwrap(),
            r#"{"id":"r","sessions":[],"participants_v2":[]}"#
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_a_page_error() {
        assert!(FirstPage::parse(b"[1]").is_err());
        assert!(ListPage::parse(b"\"x\"").is_err());
    }

    #[test]
    fn summary_counts_distinct_participants_and_sessions() {
        let mut first =
            FirstPage::parse(&fixture("callrecord-get-expand-sessions-segments.json")).unwrap();
        // The session page repeats the first page's session id: counted once.
        let sessions = fixture("callrecord-sessions-list.json");
        first.add_sessions(&ListPage::parse(&sessions).unwrap());
        // The doc example repeats a participant id: counted once.
        let record: Value =
            serde_json::from_slice(&fixture("callrecord-get-expand-participants_v2.json")).unwrap();
        let page = serde_json::json!({"value": record["participants_v2"]}).to_string();
        first.add_participants(&ListPage::parse(page.as_bytes()).unwrap());
        let (summary, sessions) = crate::domain::callrecord::flatten(&first.finish()).unwrap();

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
}
