//! Entities and their typed property values, their OData JSON form on the wire, and the Table
//! service's limits on them, checked before anything is sent.
//!
//! Wire format: <https://learn.microsoft.com/rest/api/storageservices/payload-format-for-table-service-operations>;
//! limits and the size formula: <https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model>.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::error::StoreError;

/// At most this many properties besides `PartitionKey`, `RowKey` and `Timestamp` (255 in all).
pub(crate) const MAX_CUSTOM_PROPERTIES: usize = 252;
/// An entity may take at most 1 MiB by the documented size formula ([`Entity::stored_size`]).
pub(crate) const MAX_ENTITY_BYTES: usize = 1024 * 1024;
/// A key may be at most 1 KiB; we count UTF-16 bytes (2 per code unit) like the size formula.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// String properties are stored as UTF-16, at most 64 KiB: 32,768 code units.
pub(crate) const MAX_STRING_UTF16: usize = 32 * 1024;
/// Binary properties hold at most 64 KiB.
pub(crate) const MAX_BINARY_BYTES: usize = 64 * 1024;
/// Property names are at most 255 characters.
const MAX_NAME_CHARS: usize = 255;

const TYPE_SUFFIX: &str = "@odata.type";

/// An entity's version as the service reports it (`ETag` header, `odata.etag`), for optimistic
/// concurrency: pass it back as `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// An ETag exactly as the service sent it.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// `*`: matches whatever version exists (an update or delete that only requires existence).
    pub fn any() -> Self {
        Self("*".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A typed property value (the Entity Data Model types the Table service stores).
///
/// `DateTime`s are stored with 100 ns precision (finer digits are dropped) between the years 1601
/// and 9999 (UTC). A `Guid` is its canonical text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
#[derive(Debug, Clone, PartialEq)]
pub enum EdmValue {
    String(String),
    Int32(i32),
    Int64(i64),
    Double(f64),
    Boolean(bool),
    DateTime(OffsetDateTime),
    Guid(String),
    Binary(Vec<u8>),
}

impl EdmValue {
    /// The EDM type name, as in `@odata.type` annotations.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::String(_) => "Edm.String",
            Self::Int32(_) => "Edm.Int32",
            Self::Int64(_) => "Edm.Int64",
            Self::Double(_) => "Edm.Double",
            Self::Boolean(_) => "Edm.Boolean",
            Self::DateTime(_) => "Edm.DateTime",
            Self::Guid(_) => "Edm.Guid",
            Self::Binary(_) => "Edm.Binary",
        }
    }

    /// Adds the property to a JSON entity, with a type annotation where plain JSON would be read
    /// back as another type (everything but strings, booleans and `Int32`).
    pub(crate) fn write_json(&self, name: &str, out: &mut Map<String, Value>) {
        let value = match self {
            Self::String(s) => Value::String(s.clone()),
            Self::Int32(n) => Value::from(*n),
            Self::Boolean(b) => Value::Bool(*b),
            // JSON numbers are doubles to many readers; Int64 travels as a string.
            Self::Int64(n) => Value::String(n.to_string()),
            // Annotated even with a fraction, so `1.0` is not read back as Int32 and NaN/±∞
            // (strings in JSON) are understood.
            Self::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(non_finite_text(*d).to_owned())),
            Self::DateTime(t) => Value::String(format_datetime(*t)),
            Self::Guid(g) => Value::String(g.clone()),
            Self::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        };
        if !matches!(self, Self::String(_) | Self::Int32(_) | Self::Boolean(_)) {
            out.insert(
                format!("{name}{TYPE_SUFFIX}"),
                Value::String(self.type_name().to_owned()),
            );
        }
        out.insert(name.to_owned(), value);
    }

    /// Reads a JSON property given its `@odata.type` annotation, if any. `Ok(None)` for `null`
    /// (the service does not store nulls). The error names what was wrong, never the value.
    pub(crate) fn read_json(
        value: &Value,
        annotation: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if value.is_null() {
            return Ok(None);
        }
        let as_str = || value.as_str().ok_or("is not a JSON string");
        let parsed = match annotation {
            None => match value {
                Value::String(s) => Self::String(s.clone()),
                Value::Bool(b) => Self::Boolean(*b),
                // Without annotation, a number without fraction or exponent is an Int32 (the
                // service annotates Int64); with one, a Double.
                Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => match i32::try_from(i) {
                        Ok(i) => Self::Int32(i),
                        Err(_) => Self::Int64(i),
                    },
                    (None, Some(d)) if n.is_f64() => Self::Double(d),
                    _ => return Err("is a number out of range".to_owned()),
                },
                _ => return Err("is neither a string, a number nor a boolean".to_owned()),
            },
            Some("Edm.String") => Self::String(as_str()?.to_owned()),
            Some("Edm.Boolean") => Self::Boolean(value.as_bool().ok_or("is not a boolean")?),
            Some("Edm.Int32") => Self::Int32(
                value
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or("is not an Int32")?,
            ),
            Some("Edm.Int64") => Self::Int64(match value {
                Value::String(s) => s.parse().map_err(|_| "is not an Int64 string")?,
                other => other.as_i64().ok_or("is not an Int64")?,
            }),
            Some("Edm.Double") => Self::Double(match value {
                Value::Number(n) => n.as_f64().ok_or("is not a Double")?,
                Value::String(s) => parse_non_finite(s).ok_or("is not a Double")?,
                _ => return Err("is not a Double".to_owned()),
            }),
            Some("Edm.DateTime") => {
                Self::DateTime(parse_datetime(as_str()?).ok_or("is not an ISO 8601 DateTime")?)
            }
            Some("Edm.Guid") => Self::Guid(as_str()?.to_owned()),
            Some("Edm.Binary") => Self::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(as_str()?)
                    .map_err(|_| "is not base64")?,
            ),
            Some(other) => return Err(format!("has an unknown type `{other}`")),
        };
        Ok(Some(parsed))
    }

    /// The bytes the value counts for in the documented entity size formula.
    fn stored_size(&self) -> usize {
        match self {
            Self::String(s) => 4 + 2 * s.encode_utf16().count(),
            Self::Int32(_) => 4,
            Self::Int64(_) | Self::Double(_) | Self::DateTime(_) => 8,
            Self::Boolean(_) => 1,
            Self::Guid(_) => 16,
            Self::Binary(b) => 4 + b.len(),
        }
    }

    /// Checks the value against the service's limits for its type.
    fn validate(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Self::String(s) if s.encode_utf16().count() > MAX_STRING_UTF16 => {
                Err(StoreError::invalid(format!(
                    "string property `{name}` is longer than {MAX_STRING_UTF16} UTF-16 code units (64 KiB)"
                )))
            }
            Self::Binary(b) if b.len() > MAX_BINARY_BYTES => Err(StoreError::invalid(format!(
                "binary property `{name}` is larger than {MAX_BINARY_BYTES} bytes"
            ))),
            Self::DateTime(t) => {
                // Checked: a time near year 9999 with a negative offset is past it in UTC.
                let year = t
                    .checked_to_offset(UtcOffset::UTC)
                    .map(OffsetDateTime::year);
                if year.is_some_and(|y| (1601..=9999).contains(&y)) {
                    Ok(())
                } else {
                    Err(StoreError::invalid(format!(
                        "DateTime property `{name}` is outside the years 1601 to 9999 (UTC)"
                    )))
                }
            }
            Self::Guid(g) if !is_guid(g) => Err(StoreError::invalid(format!(
                "Guid property `{name}` is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
            ))),
            _ => Ok(()),
        }
    }
}

macro_rules! edm_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for EdmValue {
            fn from(v: $t) -> Self {
                Self::$variant(v.into())
            }
        })*
    };
}

edm_from! {
    String => String,
    &str => String,
    i32 => Int32,
    i64 => Int64,
    f64 => Double,
    bool => Boolean,
    OffsetDateTime => DateTime,
    Vec<u8> => Binary,
    &[u8] => Binary,
}

/// One entity: its keys, its version and timestamp as last read, and its typed properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    pub partition_key: String,
    pub row_key: String,
    /// The version read from storage; ignored on writes (pass it to `update`/`delete` instead).
    pub etag: Option<ETag>,
    /// When the service last changed the entity; ignored on writes (the service sets it).
    pub timestamp: Option<OffsetDateTime>,
    pub properties: BTreeMap<String, EdmValue>,
}

impl Entity {
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        Self {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
            ..Self::default()
        }
    }

    /// The entity with property `name` set to `value`.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<EdmValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets property `name`, returning its previous value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<EdmValue>) -> Option<EdmValue> {
        self.properties.insert(name.into(), value.into())
    }

    pub fn get(&self, name: &str) -> Option<&EdmValue> {
        self.properties.get(name)
    }

    /// The getters below return `None` when the property is missing or of another type.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            EdmValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn get_i32(&self, name: &str) -> Option<i32> {
        match self.get(name)? {
            EdmValue::Int32(n) => Some(*n),
            _ => None,
        }
    }

    /// An `Int64`, or an `Int32` widened (a lossless reading of either).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            EdmValue::Int64(n) => Some(*n),
            EdmValue::Int32(n) => Some(i64::from(*n)),
            _ => None,
        }
    }

    pub fn get_f64(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            EdmValue::Double(d) => Some(*d),
            _ => None,
        }
    }

    pub fn get_bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            EdmValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn get_datetime(&self, name: &str) -> Option<OffsetDateTime> {
        match self.get(name)? {
            EdmValue::DateTime(t) => Some(*t),
            _ => None,
        }
    }

    pub fn get_guid(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            EdmValue::Guid(g) => Some(g),
            _ => None,
        }
    }

    pub fn get_binary(&self, name: &str) -> Option<&[u8]> {
        match self.get(name)? {
            EdmValue::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The entity's size by the documented formula: 4 bytes + 2 bytes per key character + for each
    /// property 8 bytes + 2 per name character + the value's size (strings 4 + 2 per UTF-16 code
    /// unit, binary 4 + length, Guid 16, Int64/Double/DateTime 8, Int32 4, Boolean 1).
    pub fn stored_size(&self) -> usize {
        let keys = self.partition_key.encode_utf16().count() + self.row_key.encode_utf16().count();
        4 + 2 * keys
            + self
                .properties
                .iter()
                .map(|(name, value)| 8 + 2 * name.encode_utf16().count() + value.stored_size())
                .sum::<usize>()
    }

    /// Checks keys, property names, values and size against the service's limits.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] naming the first rule broken.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_key("PartitionKey", &self.partition_key)?;
        validate_key("RowKey", &self.row_key)?;
        if self.properties.len() > MAX_CUSTOM_PROPERTIES {
            return Err(StoreError::invalid(format!(
                "the entity has {} properties; at most {MAX_CUSTOM_PROPERTIES} are allowed besides the keys and Timestamp",
                self.properties.len()
            )));
        }
        for (name, value) in &self.properties {
            validate_property_name(name)?;
            value.validate(name)?;
        }
        let size = self.stored_size();
        if size > MAX_ENTITY_BYTES {
            return Err(StoreError::invalid(format!(
                "the entity takes about {size} bytes; at most {MAX_ENTITY_BYTES} (1 MiB) are allowed"
            )));
        }
        Ok(())
    }

    /// The JSON body for inserts and updates (keys and properties; never Timestamp or ETag).
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(
            "PartitionKey".to_owned(),
            Value::String(self.partition_key.clone()),
        );
        out.insert("RowKey".to_owned(), Value::String(self.row_key.clone()));
        for (name, value) in &self.properties {
            value.write_json(name, &mut out);
        }
        out
    }

    /// An entity as the service returns it with `odata=minimalmetadata`.
    ///
    /// # Errors
    /// [`StoreError::Fatal`] when a property does not match its type (the text names the property,
    /// not its value).
    pub(crate) fn from_json(object: &Map<String, Value>) -> Result<Self, StoreError> {
        let mut entity = Self::default();
        for (name, value) in object {
            match name.as_str() {
                "PartitionKey" | "RowKey" => {
                    let key = value
                        .as_str()
                        .ok_or_else(|| StoreError::fatal(format!("{name} is not a string")))?
                        .to_owned();
                    if name == "PartitionKey" {
                        entity.partition_key = key;
                    } else {
                        entity.row_key = key;
                    }
                }
                "Timestamp" => {
                    entity.timestamp = value.as_str().and_then(parse_datetime);
                }
                "odata.etag" => entity.etag = value.as_str().map(ETag::new),
                // Other control information (`odata.metadata`, …) and type annotations.
                _ if name.starts_with("odata.") || name.contains('@') => {}
                _ => {
                    let annotation = object
                        .get(&format!("{name}{TYPE_SUFFIX}"))
                        .and_then(Value::as_str);
                    match EdmValue::read_json(value, annotation) {
                        Ok(Some(v)) => {
                            entity.properties.insert(name.clone(), v);
                        }
                        Ok(None) => {}
                        Err(why) => {
                            return Err(StoreError::fatal(format!(
                                "property `{name}` in a storage response {why}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(entity)
    }
}

/// Checks a `PartitionKey` or `RowKey`: at most 1 KiB, and none of `/ \ # ?` or control characters
/// (U+0000–U+001F, U+007F–U+009F), which the service forbids in keys.
///
/// # Errors
/// [`StoreError::InvalidInput`] saying which rule the key breaks (not the key itself).
pub(crate) fn validate_key(which: &str, key: &str) -> Result<(), StoreError> {
    if let Some(c) = key.chars().find(|c| forbidden_in_key(*c)) {
        return Err(StoreError::invalid(format!(
            "{which} contains the forbidden character U+{:04X}",
            u32::from(c)
        )));
    }
    let bytes = 2 * key.encode_utf16().count();
    if bytes > MAX_KEY_BYTES {
        return Err(StoreError::invalid(format!(
            "{which} takes {bytes} bytes as UTF-16; at most {MAX_KEY_BYTES} are allowed"
        )));
    }
    Ok(())
}

/// The characters the Table service forbids in keys: `/ \ # ?` and the control characters
/// (U+0000–U+001F, U+007F–U+009F). The one statement of the rule; callers that make keys from
/// outside input replace or refuse these (and may hold their own id rules to it by a test).
pub fn forbidden_in_key(c: char) -> bool {
    matches!(c, '/' | '\\' | '#' | '?' | '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Property names are C#-style identifiers of at most 255 characters; the system properties'
/// names are taken.
pub fn validate_property_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_alphanumeric() || c == '_') {
        return Err(StoreError::invalid(format!(
            "property name `{}` is not an identifier (a letter or `_`, then letters, digits or `_`)",
            name.escape_debug()
        )));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::invalid(format!(
            "a property name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if matches!(name, "PartitionKey" | "RowKey" | "Timestamp") {
        return Err(StoreError::invalid(format!(
            "`{name}` is a system property; set it through the entity's fields"
        )));
    }
    Ok(())
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// ISO 8601 in UTC with 7 fractional digits (100 ns, the service's precision), as the service
/// writes it.
pub fn format_datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Parses an ISO 8601 date-time with any number of fractional digits, in UTC.
pub(crate) fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.to_offset(UtcOffset::UTC))
}

fn non_finite_text(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn parse_non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "INF" => Some(f64::INFINITY),
        "-Infinity" | "-INF" => Some(f64::NEG_INFINITY),
        // Some writers send whole doubles as annotated strings too.
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn write(value: &EdmValue) -> Map<String, Value> {
        let mut out = Map::new();
        value.write_json("P", &mut out);
        out
    }

    fn round_trip(value: &EdmValue) -> EdmValue {
        let json = write(value);
        let annotation = json.get("P@odata.type").and_then(Value::as_str);
        EdmValue::read_json(&json["P"], annotation)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn every_type_is_written_as_the_payload_format_documents() {
        let t = datetime!(2013-08-22 01:12:06.2608595 UTC);
        let cases: Vec<(EdmValue, Value, Option<&str>)> = vec![
            (EdmValue::from("O'Brien"), json!("O'Brien"), None),
            (EdmValue::Int32(-7), json!(-7), None),
            (
                EdmValue::Int64(i64::MAX),
                json!("9223372036854775807"),
                Some("Edm.Int64"),
            ),
            (EdmValue::Double(2.5), json!(2.5), Some("Edm.Double")),
            (EdmValue::Double(1.0), json!(1.0), Some("Edm.Double")),
            (EdmValue::Double(f64::NAN), json!("NaN"), Some("Edm.Double")),
            (
                EdmValue::Double(f64::INFINITY),
                json!("Infinity"),
                Some("Edm.Double"),
            ),
            (
                EdmValue::Double(f64::NEG_INFINITY),
                json!("-Infinity"),
                Some("Edm.Double"),
            ),
            (EdmValue::Boolean(true), json!(true), None),
            (
                EdmValue::DateTime(t),
                json!("2013-08-22T01:12:06.2608595Z"),
                Some("Edm.DateTime"),
            ),
            (
                EdmValue::Guid("c9da6455-213d-42c9-9a79-3e9149a57833".into()),
                json!("c9da6455-213d-42c9-9a79-3e9149a57833"),
                Some("Edm.Guid"),
            ),
            (
                EdmValue::Binary(vec![0, 1, 254, 255]),
                json!("AAH+/w=="),
                Some("Edm.Binary"),
            ),
        ];
        for (value, wire, annotation) in cases {
            let json = write(&value);
            assert_eq!(json["P"], wire, "{value:?}");
            assert_eq!(
                json.get("P@odata.type").and_then(Value::as_str),
                annotation,
                "{value:?}"
            );
        }
    }

    #[test]
    fn every_type_round_trips_through_json() {
        let values = [
            EdmValue::from(String::from("ünïcødé ' % \" \\ 😀")),
            EdmValue::Int32(i32::MIN),
            EdmValue::Int32(i32::MAX),
            EdmValue::Int64(i64::MIN),
            EdmValue::Int64(i64::MAX),
            EdmValue::Double(0.1),
            EdmValue::Double(-3.0),
            EdmValue::Double(1e300),
            EdmValue::Double(f64::MIN_POSITIVE),
            EdmValue::Double(f64::INFINITY),
            EdmValue::Double(f64::NEG_INFINITY),
            EdmValue::Boolean(false),
            EdmValue::DateTime(datetime!(1601-01-01 00:00 UTC)),
            EdmValue::DateTime(datetime!(9999-12-31 23:59:59.9999999 UTC)),
            EdmValue::Guid("00000000-0000-0000-0000-000000000000".into()),
            EdmValue::Binary(Vec::new()),
            EdmValue::Binary((0..=255).collect()),
        ];
        for value in values {
            assert_eq!(round_trip(&value), value);
        }
        assert!(
            matches!(round_trip(&EdmValue::Double(f64::NAN)), EdmValue::Double(d) if d.is_nan())
        );
    }

    #[test]
    fn datetime_is_written_with_100ns_precision_in_utc() {
        let t = datetime!(2024-02-29 23:30:00.123456789 -01:00);
        assert_eq!(format_datetime(t), "2024-03-01T00:30:00.1234567Z");
        assert_eq!(
            round_trip(&EdmValue::DateTime(t)),
            EdmValue::DateTime(datetime!(2024-03-01 00:30:00.1234567 UTC))
        );
    }

    #[test]
    fn unannotated_numbers_are_int32_without_fraction_and_double_with_one() {
        let read = |text: &str| EdmValue::read_json(&serde_json::from_str(text).unwrap(), None);
        assert_eq!(read("42").unwrap(), Some(EdmValue::Int32(42)));
        assert_eq!(
            read("-2147483648").unwrap(),
            Some(EdmValue::Int32(i32::MIN))
        );
        assert_eq!(read("2.5").unwrap(), Some(EdmValue::Double(2.5)));
        assert_eq!(read("1.0").unwrap(), Some(EdmValue::Double(1.0)));
        assert_eq!(read("1e3").unwrap(), Some(EdmValue::Double(1000.0)));
        // Lossless rather than wrong if a writer left a large integer unannotated.
        assert_eq!(read("4294967296").unwrap(), Some(EdmValue::Int64(1 << 32)));
        assert_eq!(read("null").unwrap(), None);
        assert!(read("[1]").is_err());
    }

    #[test]
    fn annotated_doubles_are_read_from_numbers_and_special_strings() {
        let read = |v: Value| {
            EdmValue::read_json(&v, Some("Edm.Double"))
                .unwrap()
                .unwrap()
        };
        assert_eq!(read(json!(1)), EdmValue::Double(1.0));
        assert_eq!(read(json!(1.0)), EdmValue::Double(1.0));
        assert_eq!(read(json!("Infinity")), EdmValue::Double(f64::INFINITY));
        assert_eq!(
            read(json!("-Infinity")),
            EdmValue::Double(f64::NEG_INFINITY)
        );
        assert_eq!(read(json!("INF")), EdmValue::Double(f64::INFINITY));
        assert!(matches!(read(json!("NaN")), EdmValue::Double(d) if d.is_nan()));
        assert!(EdmValue::read_json(&json!("one"), Some("Edm.Double")).is_err());
    }

    #[test]
    fn annotated_values_of_the_wrong_shape_are_errors_naming_no_value() {
        let cases = [
            (json!("12x"), "Edm.Int64"),
            (json!("not a date"), "Edm.DateTime"),
            (json!("!!!"), "Edm.Binary"),
            (json!(3_000_000_000_i64), "Edm.Int32"),
            (json!("x"), "Edm.Geography"),
        ];
        for (value, annotation) in cases {
            let err = EdmValue::read_json(&value, Some(annotation)).unwrap_err();
            assert!(!err.contains("12x") && !err.contains("not a date"), "{err}");
        }
    }

    #[test]
    fn entity_json_is_read_with_system_properties_and_annotations() {
        let body = json!({
            "odata.metadata": "https://myaccount.table.core.windows.net/metadata#Customers/@Element",
            "odata.etag": "W/\"datetime'2013-08-22T01%3A12%3A06.2608595Z'\"",
            "PartitionKey": "Customer'1",
            "RowKey": "",
            "Timestamp@odata.type": "Edm.DateTime",
            "Timestamp": "2013-08-22T01:12:06.2608595Z",
            "Age": 23,
            "AmountDue": 200.23,
            "CustomerCode@odata.type": "Edm.Guid",
            "CustomerCode": "c9da6455-213d-42c9-9a79-3e9149a57833",
            "CustomerSince@odata.type": "Edm.DateTime",
            "CustomerSince": "2008-07-10T00:00:00Z",
            "IsActive": true,
            "NumberOfOrders@odata.type": "Edm.Int64",
            "NumberOfOrders": "255",
            "Nothing": null
        });
        let entity = Entity::from_json(body.as_object().unwrap()).unwrap();
        assert_eq!(entity.partition_key, "Customer'1");
        assert_eq!(entity.row_key, "");
        assert_eq!(
            entity.etag.as_ref().map(ETag::as_str),
            Some("W/\"datetime'2013-08-22T01%3A12%3A06.2608595Z'\"")
        );
        assert_eq!(
            entity.timestamp,
            Some(datetime!(2013-08-22 01:12:06.2608595 UTC))
        );
        assert_eq!(entity.get_i32("Age"), Some(23));
        assert_eq!(entity.get_f64("AmountDue"), Some(200.23));
        assert_eq!(
            entity.get_guid("CustomerCode"),
            Some("c9da6455-213d-42c9-9a79-3e9149a57833")
        );
        assert_eq!(
            entity.get_datetime("CustomerSince"),
            Some(datetime!(2008-07-10 00:00 UTC))
        );
        assert_eq!(entity.get_bool("IsActive"), Some(true));
        assert_eq!(entity.get_i64("NumberOfOrders"), Some(255));
        assert_eq!(entity.properties.len(), 6, "{:?}", entity.properties.keys());
    }

    #[test]
    fn entity_json_round_trips_every_property() {
        let entity = Entity::new("pk", "rk")
            .with("S", "text")
            .with("I", 1)
            .with("L", 1_i64)
            .with("D", 1.0)
            .with("B", false)
            .with("T", datetime!(2020-01-01 0:00 UTC))
            .with(
                "G",
                EdmValue::Guid("c9da6455-213d-42c9-9a79-3e9149a57833".into()),
            )
            .with("X", vec![1_u8, 2, 3]);
        let read = Entity::from_json(&entity.to_json()).unwrap();
        assert_eq!(read, entity);
    }

    #[test]
    fn getters_return_none_for_missing_or_other_types() {
        let e = Entity::new("p", "r").with("N", 5).with("S", "x");
        assert_eq!(e.get_i64("N"), Some(5), "Int32 widens to i64");
        assert_eq!(e.get_str("N"), None);
        assert_eq!(e.get_i32("S"), None);
        assert_eq!(e.get_binary("missing"), None);
    }

    #[test]
    fn every_forbidden_key_character_is_rejected_by_name() {
        let mut forbidden: Vec<char> = vec!['/', '\\', '#', '?'];
        forbidden.extend(
            (0x00..=0x1f_u32)
                .chain(0x7f..=0x9f)
                .filter_map(char::from_u32),
        );
        for c in forbidden {
            let key = format!("a{c}b");
            for which in ["PartitionKey", "RowKey"] {
                let err = validate_key(which, &key).unwrap_err();
                let text = err.to_string();
                assert!(
                    text.contains(which) && text.contains(&format!("U+{:04X}", u32::from(c))),
                    "{c:?}: {text}"
                );
            }
        }
        for fine in ["", "O'Brien", "a b%c", "ünï😀", "a:b;c=d&e+f"] {
            assert!(validate_key("RowKey", fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn keys_longer_than_1_kib_as_utf16_are_rejected() {
        assert!(validate_key("RowKey", &"k".repeat(512)).is_ok());
        assert!(validate_key("RowKey", &"k".repeat(513)).is_err());
        // Four bytes of UTF-8, two UTF-16 code units: 256 of them fill 1 KiB.
        assert!(validate_key("RowKey", &"😀".repeat(256)).is_ok());
        assert!(validate_key("RowKey", &"😀".repeat(257)).is_err());
    }

    #[test]
    fn property_limits_are_checked_before_sending() {
        let ok = |e: &Entity| e.validate().is_ok();
        let base = || Entity::new("p", "r");
        assert!(ok(&base().with("S", "x".repeat(MAX_STRING_UTF16))));
        assert!(!ok(&base().with("S", "x".repeat(MAX_STRING_UTF16 + 1))));
        assert!(ok(&base().with("B", vec![0_u8; MAX_BINARY_BYTES])));
        assert!(!ok(&base().with("B", vec![0_u8; MAX_BINARY_BYTES + 1])));
        assert!(!ok(&base().with("G", EdmValue::Guid("not-a-guid".into()))));
        assert!(!ok(&base().with("T", datetime!(1600-12-31 23:59 UTC))));
        for name in [
            "",
            "1abc",
            "a-b",
            "a.b",
            "Timestamp",
            "PartitionKey",
            "odata@x",
        ] {
            assert!(!ok(&base().with(name, 1)), "{name:?}");
        }
        assert!(ok(&base().with("_ünïcode1", 1)));
        assert!(!ok(&base().with("n".repeat(256), 1)));
    }

    #[test]
    fn entities_over_252_properties_or_1_mib_are_rejected() {
        let mut e = Entity::new("p", "r");
        for i in 0..MAX_CUSTOM_PROPERTIES {
            e.set(format!("P{i}"), 1);
        }
        assert!(e.validate().is_ok());
        e.set("OneMore", 1);
        assert!(e.validate().unwrap_err().to_string().contains("252"));

        // 16 binary properties of 64 KiB exceed 1 MiB with their overhead.
        let mut big = Entity::new("p", "r");
        for i in 0..16 {
            big.set(format!("B{i}"), vec![0_u8; MAX_BINARY_BYTES]);
        }
        assert!(big.stored_size() > MAX_ENTITY_BYTES);
        assert!(big.validate().unwrap_err().to_string().contains("1 MiB"));
    }

    #[test]
    fn stored_size_follows_the_documented_formula() {
        let e = Entity::new("ab", "c")
            .with("S", "xyz")
            .with("I", 1)
            .with("B", true)
            .with("X", vec![0_u8; 10]);
        // 4 + 2*3 keys; S: 8+2+(4+6); I: 8+2+4; B: 8+2+1; X: 8+2+(4+10)
        assert_eq!(e.stored_size(), 10 + 20 + 14 + 11 + 24);
    }
}
