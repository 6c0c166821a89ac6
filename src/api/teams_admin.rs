//! `layout=teams-admin`: the PSTN and Direct Routing feeds in the columns of the Teams admin center's
//! export ("Export to Excel" in the PSTN usage report), which call-accounting tools import: its
//! names, in its order, each value written so that it fits the column's documented SQL Server type.
//! The columns, their types and where each comes from are in INTEGRATION ("The Teams admin center's
//! layout"), with the `CREATE TABLE` statements; `tests/fixtures/teams-admin-export/COLUMNS.md` is
//! the source.

use std::str::FromStr as _;

use rust_decimal::{Decimal, RoundingStrategy};
use table_storage::{EdmValue, Entity, format_datetime};

/// A column's SQL Server type, as the export documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sql {
    /// `uniqueidentifier`.
    Guid,
    /// `nvarchar(n)` holding a code or an identifier (a number, a country, an FQDN): a longer value
    /// is an empty cell, since a cut one would be another, wrong value.
    Text(usize),
    /// `nvarchar(n)` holding free text (a name, a SIP phrase): a longer value is cut.
    Prose(usize),
    /// `datetimeoffset`: UTC, ISO 8601, seven fractional digits.
    Time,
    /// `int`.
    Int,
    /// `numeric(16, 2)`.
    Money,
    /// `nvarchar(3)` holding `Yes` or `No`.
    YesNo,
}

/// One column of the export.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) sql: Sql,
    /// The stored column it is read from; `None` where Graph does not provide it (always empty).
    pub(crate) from: Option<&'static str>,
}

const fn col(name: &'static str, sql: Sql, from: &'static str) -> Column {
    Column {
        name,
        sql,
        from: Some(from),
    }
}

const fn none(name: &'static str, sql: Sql) -> Column {
    Column {
        name,
        sql,
        from: None,
    }
}

/// "Exported PSTN usage report" (Calling Plans, Operator Connect): 25 columns.
pub(crate) const PSTN: &[Column] = &[
    col("UsageId", Sql::Guid, "id"),
    col("Call ID", Sql::Text(64), "callId"),
    col("Conference ID", Sql::Text(64), "conferenceId"),
    col("User Location", Sql::Text(2), "usageCountryCode"),
    col("Microsoft Entra ObjectId", Sql::Guid, "userId"),
    col("UPN", Sql::Prose(128), "userPrincipalName"),
    col("User Display Name", Sql::Prose(128), "userDisplayName"),
    col("Caller ID", Sql::Text(128), "callerNumber"),
    col("Call Type", Sql::Text(32), "callType"),
    col("Call Direction", Sql::Text(32), "Direction"),
    col("Number Type", Sql::Text(16), "inventoryType"),
    col(
        "Domestic/International",
        Sql::Text(16),
        "destinationContext",
    ),
    col("Destination Dialed", Sql::Prose(64), "destinationName"),
    col("Destination Number", Sql::Text(32), "calleeNumber"),
    col("External Country", Sql::Text(16), "otherPartyCountryCode"),
    col("Start Time", Sql::Time, "startDateTime"),
    col("End Time", Sql::Time, "endDateTime"),
    col("Duration Seconds", Sql::Int, "duration"),
    col("Connection Fee", Sql::Money, "connectionCharge"),
    col("Charge", Sql::Money, "charge"),
    col("Currency", Sql::Text(3), "currency"),
    col("Capability", Sql::Text(32), "licenseCapability"),
    col("Operator", Sql::Text(32), "operator"),
    col(
        "Source of Call Duration",
        Sql::Text(32),
        "callDurationSource",
    ),
    // Graph v1.0 has no administrative units (beta's `administrativeUnitInfos` is a list).
    none("Administrative Units", Sql::Guid),
];

/// "Exported Direct Routing usage report": 25 columns.
pub(crate) const DIRECT_ROUTING: &[Column] = &[
    col("CorrelationId", Sql::Guid, "correlationId"),
    col("Microsoft Entra ObjectId", Sql::Guid, "userId"),
    col("UPN", Sql::Prose(128), "userPrincipalName"),
    col("Display Name", Sql::Prose(128), "userDisplayName"),
    col("User country", Sql::Text(2), "userCountryCode"),
    col("Invite time", Sql::Time, "inviteDateTime"),
    col("Start time", Sql::Time, "startDateTime"),
    col("Failure time", Sql::Time, "failureDateTime"),
    col("End time", Sql::Time, "endDateTime"),
    col("Duration (seconds)", Sql::Int, "duration"),
    col("Success", Sql::YesNo, "successfulCall"),
    col("Caller Number", Sql::Text(32), "callerNumber"),
    col("Callee Number", Sql::Text(32), "calleeNumber"),
    col("Call type", Sql::Text(32), "callType"),
    col("Call Direction", Sql::Text(32), "Direction"),
    col("Azure region for Media", Sql::Text(8), "mediaPathLocation"),
    col(
        "Azure region for Signaling",
        Sql::Text(8),
        "signalingLocation",
    ),
    col("Final SIP code", Sql::Int, "finalSipCode"),
    col("Final Microsoft subcode", Sql::Int, "callEndSubReason"),
    col("Final SIP Phrase", Sql::Prose(256), "finalSipCodePhrase"),
    col("SBC FQDN", Sql::Text(64), "trunkFullyQualifiedDomainName"),
    col("Media bypass", Sql::YesNo, "mediaBypassEnabled"),
    // Only in the admin center's export: Graph has no shared correlation id.
    none("Shared correlation ID", Sql::Guid),
    none("Administrative Units", Sql::Guid),
    // Graph beta's `transferorCorrelationId`; v1.0, which the app reads, does not have it.
    none("Transfer or Correlation ID", Sql::Guid),
];

/// The cell of `column` for `row`: empty where the row has no value, or none that fits the type
/// (a `userId` that is not a GUID, an amount past `numeric(16, 2)`, a number longer than its
/// `nvarchar`); a name longer than its `nvarchar` is cut.
pub(crate) fn cell(column: &Column, row: &Entity) -> String {
    let Some(value) = column.from.and_then(|name| row.properties.get(name)) else {
        return String::new();
    };
    match (column.sql, value) {
        (Sql::Guid, EdmValue::String(s) | EdmValue::Guid(s)) if crate::config::is_guid(s) => {
            s.to_ascii_lowercase()
        }
        // `2019-11-01T00:00:08.2589935Z`: seven fractional digits, what `datetimeoffset` holds, as
        // Table storage writes it.
        (Sql::Time, EdmValue::DateTime(t)) => format_datetime(*t),
        (Sql::Int, EdmValue::Int32(n)) => n.to_string(),
        (Sql::Int, EdmValue::Int64(n)) => {
            i32::try_from(*n).map(|n| n.to_string()).unwrap_or_default()
        }
        (Sql::Money, EdmValue::String(s)) => money(s).unwrap_or_default(),
        (Sql::YesNo, EdmValue::Boolean(b)) => if *b { "Yes" } else { "No" }.to_owned(),
        (Sql::Text(n), value) => text(value)
            .filter(|s| s.encode_utf16().count() <= n)
            .unwrap_or_default(),
        (Sql::Prose(n), value) => text(value).map(|s| cut(&s, n)).unwrap_or_default(),
        // A value of another type than the column's (Graph changed a property's type).
        _ => String::new(),
    }
}

fn text(value: &EdmValue) -> Option<String> {
    Some(match value {
        EdmValue::String(s) | EdmValue::Guid(s) => s.clone(),
        EdmValue::Int32(n) => n.to_string(),
        EdmValue::Int64(n) => n.to_string(),
        EdmValue::Boolean(b) => if *b { "Yes" } else { "No" }.to_owned(),
        EdmValue::Double(_) | EdmValue::DateTime(_) | EdmValue::Binary(_) => return None,
    })
}

/// At most `units` UTF-16 code units (what `nvarchar(n)` counts), cut between characters.
fn cut(text: &str, units: usize) -> String {
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= units
        })
        .collect()
}

/// Graph's exact decimal text rounded to cents (half away from zero, as SQL Server rounds), or
/// `None` when it is not a number or does not fit `numeric(16, 2)`.
fn money(text: &str) -> Option<String> {
    let value = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    // 16 digits, 2 of them after the point.
    (value.abs() < Decimal::from(100_000_000_000_000_i64)).then(|| format!("{value:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn row(properties: &[(&str, EdmValue)]) -> Entity {
        let mut e = Entity::new("2026-11-29", "id-1");
        for (name, value) in properties {
            e = e.with(*name, value.clone());
        }
        e
    }

    fn column<'a>(layout: &'a [Column], name: &str) -> &'a Column {
        layout.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn both_layouts_have_the_exports_25_columns_and_read_only_stored_columns() {
        assert_eq!(PSTN.len(), 25);
        assert_eq!(DIRECT_ROUTING.len(), 25);
        for c in PSTN {
            if let Some(from) = c.from {
                assert!(
                    crate::api::format::PSTN_COLUMNS.contains(&from),
                    "{} reads {from}",
                    c.name
                );
            }
        }
        for c in DIRECT_ROUTING {
            if let Some(from) = c.from {
                assert!(
                    crate::api::format::DIRECT_ROUTING_COLUMNS.contains(&from),
                    "{} reads {from}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn money_is_rounded_to_cents_half_away_from_zero_and_nothing_else_passes() {
        for (text, cents) in [
            ("0.0190", Some("0.02")),
            ("0.005", Some("0.01")),
            ("-0.005", Some("-0.01")),
            ("0.0049", Some("0.00")),
            ("12345678.901234567", Some("12345678.90")),
            ("1e-3", Some("0.00")),
            ("2.5E1", Some("25.00")),
            ("0", Some("0.00")),
            ("99999999999999.994", Some("99999999999999.99")),
            ("99999999999999.995", None),
            ("1,50", None),
            ("", None),
        ] {
            assert_eq!(money(text).as_deref(), cents, "{text}");
        }
    }

    #[test]
    fn each_value_is_written_as_its_sql_server_type_reads_it() {
        let r = row(&[
            (
                "id",
                EdmValue::String("9C4984C7-6C3C-427D-A30C-BD0B2EACEE90".into()),
            ),
            ("userId", EdmValue::String("not-a-guid".into())),
            (
                "startDateTime",
                EdmValue::DateTime(datetime!(2019-11-01 00:00:08.2589935 UTC)),
            ),
            (
                "endDateTime",
                EdmValue::DateTime(datetime!(2019-11-01 00:03:47 UTC)),
            ),
            ("duration", EdmValue::Int32(219)),
            ("charge", EdmValue::String("0.0190".into())),
            ("usageCountryCode", EdmValue::String("USA".into())),
            ("userDisplayName", EdmValue::String("Zoë 😀".repeat(40))),
            ("Direction", EdmValue::String("inbound".into())),
        ]);
        let at = |name| cell(column(PSTN, name), &r);
        assert_eq!(at("UsageId"), "9c4984c7-6c3c-427d-a30c-bd0b2eacee90");
        assert_eq!(at("Microsoft Entra ObjectId"), "", "not a GUID: empty");
        assert_eq!(at("Start Time"), "2019-11-01T00:00:08.2589935Z");
        assert_eq!(at("End Time"), "2019-11-01T00:03:47.0000000Z");
        assert_eq!(at("Duration Seconds"), "219");
        assert_eq!(at("Charge"), "0.02");
        assert_eq!(at("Connection Fee"), "", "absent");
        assert_eq!(
            at("User Location"),
            "",
            "longer than nvarchar(2): not cut into another code"
        );
        assert_eq!(at("Call Direction"), "inbound");
        assert_eq!(at("Administrative Units"), "");
        let name = at("User Display Name");
        assert!(name.encode_utf16().count() <= 128, "{name}");
        assert!(name.starts_with("Zoë 😀Zoë"));

        let dr = row(&[
            ("successfulCall", EdmValue::Boolean(true)),
            ("mediaBypassEnabled", EdmValue::Boolean(false)),
            ("finalSipCode", EdmValue::Int32(0)),
            ("callEndSubReason", EdmValue::Int64(5_000_000_000)),
        ]);
        let at = |name| cell(column(DIRECT_ROUTING, name), &dr);
        assert_eq!(at("Success"), "Yes");
        assert_eq!(at("Media bypass"), "No");
        assert_eq!(at("Final SIP code"), "0");
        assert_eq!(at("Final Microsoft subcode"), "", "past int");
        assert_eq!(at("Failure time"), "", "Graph's placeholder is absent");
    }
}
