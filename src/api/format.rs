//! How rows leave the read API: JSON (a page object), NDJSON (one object a line) or CSV (RFC 4180,
//! a header row, UTF-8, CRLF), encoded a storage page at a time so that a response of thousands of
//! rows never holds them all.
//!
//! A row is its table's columns under their table names (README "Tables"), without the columns
//! that only serve the app (where a document's parts are, change detection, the log's own keys).
//! JSON and NDJSON carry every other column, including properties Graph adds later; CSV has the
//! documented columns of the data set, in a fixed order, so that every page has the same header.

use serde_json::{Map, Value};
use table_storage::{EdmValue, Entity};
use time::format_description::well_known::Rfc3339;

use super::teams_admin;
use crate::store::feed::{Dataset, ENTRY_PARTITION, ENTRY_ROW};
use crate::store::reports::SOURCE_HASH;

/// Columns that are the app's business, not the consumer's.
const INTERNAL: [&str; 7] = [
    ENTRY_PARTITION,
    ENTRY_ROW,
    SOURCE_HASH,
    "BodyEncoding",
    "BodyPrefix",
    "BodyEntities",
    "BodyCompressedSize",
];

pub(crate) const CALL_RECORD_COLUMNS: &[&str] = &[
    "CallRecordId",
    "Version",
    "Type",
    "Modalities",
    "StartDateTime",
    "EndDateTime",
    "DurationSeconds",
    "LastModifiedDateTime",
    "JoinWebUrl",
    "OrganizerIdentityType",
    "OrganizerId",
    "OrganizerDisplayName",
    "OrganizerUserPrincipalName",
    "OrganizerTenantId",
    "ParticipantCount",
    "ParticipantsSource",
    "UnreadableSessions",
    "SessionCount",
    "SegmentCount",
    "StoredAt",
    "BodySize",
    // Added later: appended, so that a reader that maps columns by position keeps working.
    "Outcome",
];

pub(crate) const SESSION_COLUMNS: &[&str] = &[
    "CallRecordId",
    "SessionId",
    "Version",
    "CallStartDateTime",
    "StartDateTime",
    "EndDateTime",
    "DurationSeconds",
    "Modalities",
    "IsTest",
    "SegmentCount",
    "CallerEndpointType",
    "CallerIdentityType",
    "CallerId",
    "CallerDisplayName",
    "CallerUserPrincipalName",
    "CallerTenantId",
    "CallerUserAgent",
    "CallerPlatform",
    "CallerProductFamily",
    "CalleeEndpointType",
    "CalleeIdentityType",
    "CalleeId",
    "CalleeDisplayName",
    "CalleeUserPrincipalName",
    "CalleeTenantId",
    "CalleeUserAgent",
    "CalleePlatform",
    "CalleeProductFamily",
    "FailureStage",
    "FailureReason",
    // From the directory sync (DIRECTORY_SYNC): appended, as columns added later are.
    "CallerDepartment",
    "CallerCostCenter",
    "CalleeDepartment",
    "CalleeCostCenter",
];

/// `pstnCallLogRow` as Graph documents it, then our derived columns.
pub(crate) const PSTN_COLUMNS: &[&str] = &[
    "id",
    "callId",
    "userId",
    "userPrincipalName",
    "userDisplayName",
    "startDateTime",
    "endDateTime",
    "duration",
    "charge",
    "connectionCharge",
    "currency",
    "callType",
    "calleeNumber",
    "callerNumber",
    "usageCountryCode",
    "tenantCountryCode",
    "destinationContext",
    "destinationName",
    "conferenceId",
    "licenseCapability",
    "inventoryType",
    "operator",
    "callDurationSource",
    "otherPartyCountryCode",
    "Direction",
    "Outcome",
    "TalkSeconds",
    "Department",
    "CostCenter",
];

/// `directRoutingLogRow` as Graph documents it, then our derived columns.
pub(crate) const DIRECT_ROUTING_COLUMNS: &[&str] = &[
    "id",
    "correlationId",
    "userId",
    "userPrincipalName",
    "userDisplayName",
    "inviteDateTime",
    "startDateTime",
    "failureDateTime",
    "endDateTime",
    "duration",
    "callType",
    "successfulCall",
    "callerNumber",
    "calleeNumber",
    "mediaPathLocation",
    "signalingLocation",
    "finalSipCode",
    "callEndSubReason",
    "finalSipCodePhrase",
    "trunkFullyQualifiedDomainName",
    "mediaBypassEnabled",
    "userCountryCode",
    "otherPartyCountryCode",
    "Direction",
    "RingSeconds",
    "Outcome",
    "TalkSeconds",
    "Department",
    "CostCenter",
];

/// A list's `layout`: the data set's own columns, or the Teams admin center's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Table,
    TeamsAdmin,
}

impl Layout {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "table" => Some(Self::Table),
            "teams-admin" => Some(Self::TeamsAdmin),
            _ => None,
        }
    }
}

/// The CSV columns of `dataset` in `layout`; `None` where the data set has no such layout (the
/// admin center exports no call records).
pub(crate) fn columns(dataset: Dataset, layout: Layout) -> Option<Columns> {
    Some(match (dataset, layout) {
        (Dataset::CallRecords, Layout::Table) => Columns::Table(CALL_RECORD_COLUMNS),
        (Dataset::PstnCalls, Layout::Table) => Columns::Table(PSTN_COLUMNS),
        (Dataset::DirectRoutingCalls, Layout::Table) => Columns::Table(DIRECT_ROUTING_COLUMNS),
        (Dataset::PstnCalls, Layout::TeamsAdmin) => Columns::TeamsAdmin(teams_admin::PSTN),
        (Dataset::DirectRoutingCalls, Layout::TeamsAdmin) => {
            Columns::TeamsAdmin(teams_admin::DIRECT_ROUTING)
        }
        (Dataset::CallRecords, Layout::TeamsAdmin) => return None,
    })
}

/// The response formats of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Ndjson,
    Csv,
}

impl Format {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "ndjson" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A time as RFC 3339 in UTC (`2026-11-29T10:15:00Z`, fractions only where there are any): what
/// JSON consumers, Excel and Power BI read.
fn time_text(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn json_value(value: &EdmValue) -> Value {
    match value {
        EdmValue::String(s) | EdmValue::Guid(s) => Value::String(s.clone()),
        EdmValue::Int32(n) => Value::from(*n),
        EdmValue::Int64(n) => Value::from(*n),
        EdmValue::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        EdmValue::Boolean(b) => Value::Bool(*b),
        EdmValue::DateTime(t) => Value::String(time_text(*t)),
        EdmValue::Binary(b) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn cell(value: Option<&EdmValue>) -> String {
    match value.map(json_value) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// A row as a JSON object: every column but the internal ones.
pub(crate) fn row_object(row: &Entity) -> Map<String, Value> {
    row.properties
        .iter()
        .filter(|(name, _)| !INTERNAL.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), json_value(value)))
        .collect()
}

/// Which columns a CSV response has: the data set's own, or the Teams admin center's export layout.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Columns {
    Table(&'static [&'static str]),
    TeamsAdmin(&'static [teams_admin::Column]),
}

/// Encodes one response: [`Encoder::head`], [`Encoder::rows`] per storage page, [`Encoder::tail`].
pub(crate) struct Encoder {
    format: Format,
    columns: Columns,
    first: bool,
    /// JSON only: what closes the page object (the next cursor and whether there is more).
    tail: String,
}

impl Encoder {
    pub(crate) fn new(format: Format, columns: Columns, cursor: &str, more: bool) -> Self {
        let tail = format!(
            "],\"cursor\":{},\"more\":{more}}}",
            Value::String(cursor.to_owned())
        );
        Self {
            format,
            columns,
            first: true,
            tail,
        }
    }

    pub(crate) fn head(&self) -> Vec<u8> {
        match self.format {
            Format::Json => b"{\"items\":[".to_vec(),
            Format::Ndjson => Vec::new(),
            Format::Csv => match self.columns {
                Columns::Table(names) => csv_line(names.iter().map(|c| (*c).to_owned())),
                Columns::TeamsAdmin(layout) => csv_line(layout.iter().map(|c| c.name.to_owned())),
            },
        }
    }

    pub(crate) fn rows(&mut self, rows: &[Entity]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            match self.format {
                Format::Json => {
                    if !self.first {
                        out.push(b',');
                    }
                    out.extend(Value::Object(row_object(row)).to_string().into_bytes());
                }
                Format::Ndjson => {
                    out.extend(Value::Object(row_object(row)).to_string().into_bytes());
                    out.push(b'\n');
                }
                Format::Csv => out.extend(match self.columns {
                    Columns::Table(names) => {
                        csv_line(names.iter().map(|c| cell(row.properties.get(*c))))
                    }
                    Columns::TeamsAdmin(layout) => {
                        csv_line(layout.iter().map(|c| teams_admin::cell(c, row)))
                    }
                }),
            }
            self.first = false;
        }
        out
    }

    pub(crate) fn tail(&self) -> Vec<u8> {
        match self.format {
            Format::Json => self.tail.clone().into_bytes(),
            Format::Ndjson | Format::Csv => Vec::new(),
        }
    }
}

/// One CSV record, quoted where RFC 4180 requires it, ended with CRLF.
fn csv_line(cells: impl Iterator<Item = String>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let cells: Vec<String> = cells.collect();
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(&cells);
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn row() -> Entity {
        Entity::new("2026-11-29", "id-1")
            .with("id", EdmValue::String("id-1".into()))
            .with(
                "userDisplayName",
                EdmValue::String("Zoë \"Z\", Ltd\nHQ".into()),
            )
            .with("duration", EdmValue::Int32(61))
            .with("charge", EdmValue::String("0.0190".into()))
            .with(
                "startDateTime",
                EdmValue::DateTime(datetime!(2026-11-29 10:15 UTC)),
            )
            .with(SOURCE_HASH, EdmValue::String("ab".into()))
    }

    #[test]
    fn csv_quotes_what_rfc_4180_requires_and_keeps_the_columns_in_order() {
        let mut encoder = Encoder::new(
            Format::Csv,
            Columns::Table(&[
                "id",
                "userDisplayName",
                "charge",
                "duration",
                "startDateTime",
                "missing",
            ]),
            "c",
            false,
        );
        let mut out = encoder.head();
        out.extend(encoder.rows(&[row()]));
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text,
            "id,userDisplayName,charge,duration,startDateTime,missing\r\n\
             id-1,\"Zoë \"\"Z\"\", Ltd\nHQ\",0.0190,61,2026-11-29T10:15:00Z,\r\n"
        );
    }

    #[test]
    fn json_pages_hold_every_column_but_the_internal_ones_then_the_cursor() {
        let mut encoder = Encoder::new(Format::Json, Columns::Table(&[]), "next", true);
        let mut out = encoder.head();
        out.extend(encoder.rows(&[row(), row()]));
        out.extend(encoder.tail());
        let page: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(page["cursor"], "next");
        assert_eq!(page["more"], true);
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(page["items"][0]["duration"], 61);
        assert_eq!(page["items"][0]["startDateTime"], "2026-11-29T10:15:00Z");
        assert!(page["items"][0].get(SOURCE_HASH).is_none());
    }
}
