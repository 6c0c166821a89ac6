//! Building `$filter` expressions safely: literals are quoted and escaped here, so a value can never
//! change the meaning of a query (a `'` in a string literal is written `''`).
//!
//! ```
//! use table_storage::filter;
//! let f = filter::and(
//!     filter::eq("PartitionKey", "O'Brien"),
//!     filter::cmp("RowKey", filter::Op::Ge, "2024-"),
//! );
//! assert_eq!(f, "(PartitionKey eq 'O''Brien') and (RowKey ge '2024-')");
//! ```
//!
//! Property names are written as given: pass names from code, never from input.
//! Syntax: <https://learn.microsoft.com/rest/api/storageservices/querying-tables-and-entities>.

use time::OffsetDateTime;

use super::entity::{EdmValue, format_datetime};

/// A comparison operator of the Table service's `$filter` syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }
}

/// A string literal: `'…'` with every `'` doubled.
pub fn string_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A DateTime literal: `datetime'2024-01-01T00:00:00.0000000Z'` (UTC, 100 ns precision).
pub fn datetime_lit(t: OffsetDateTime) -> String {
    format!("datetime'{}'", format_datetime(t))
}

/// A GUID literal: `guid'…'` (the text is escaped like a string, so a malformed GUID cannot break
/// out of the literal; the service rejects it instead).
pub fn guid_lit(g: &str) -> String {
    format!("guid{}", string_lit(g))
}

/// Any value as a literal of its type (`Int64` with the `L` suffix, binary as `X'…'`).
pub fn lit(value: &EdmValue) -> String {
    match value {
        EdmValue::String(s) => string_lit(s),
        EdmValue::Int32(n) => n.to_string(),
        EdmValue::Int64(n) => format!("{n}L"),
        EdmValue::Double(d) => double_lit(*d),
        EdmValue::Boolean(b) => b.to_string(),
        EdmValue::DateTime(t) => datetime_lit(*t),
        EdmValue::Guid(g) => guid_lit(g),
        EdmValue::Binary(b) => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// `name op literal`, the literal typed by the value (`cmp("Count", Op::Gt, 5_i64)` → `Count gt 5L`).
pub fn cmp(name: &str, op: Op, value: impl Into<EdmValue>) -> String {
    format!("{name} {} {}", op.as_str(), lit(&value.into()))
}

/// `name eq literal`.
pub fn eq(name: &str, value: impl Into<EdmValue>) -> String {
    cmp(name, Op::Eq, value)
}

/// `(a) and (b)`.
pub fn and(a: impl AsRef<str>, b: impl AsRef<str>) -> String {
    format!("({}) and ({})", a.as_ref(), b.as_ref())
}

/// `(a) or (b)`.
pub fn or(a: impl AsRef<str>, b: impl AsRef<str>) -> String {
    format!("({}) or ({})", a.as_ref(), b.as_ref())
}

/// `not (a)`.
pub fn not(a: impl AsRef<str>) -> String {
    format!("not ({})", a.as_ref())
}

/// Every entity whose `name` starts with `prefix`: `name ge 'prefix' and name lt 'prefiy'` (the
/// service has no `startswith`). An empty prefix matches everything.
pub fn starts_with(name: &str, prefix: &str) -> String {
    match prefix_successor(prefix) {
        Some(upper) => and(cmp(name, Op::Ge, prefix), cmp(name, Op::Lt, upper.as_str())),
        None => cmp(name, Op::Ge, prefix),
    }
}

/// The least string greater than every string starting with `prefix`: the last character that
/// can be incremented, incremented, with everything after it dropped.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn double_lit(d: f64) -> String {
    if d.is_finite() {
        // `{:?}` always has a fraction or exponent, so the service reads a Double.
        format!("{d:?}")
    } else {
        // No literal exists for NaN or ±∞; a comparison with them matches nothing useful anyway.
        "0.0".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn string_literals_double_their_quotes() {
        assert_eq!(string_lit("O'Brien"), "'O''Brien'");
        assert_eq!(string_lit("''"), "''''''");
        assert_eq!(string_lit(""), "''");
        assert_eq!(eq("PartitionKey", "O'Brien"), "PartitionKey eq 'O''Brien'");
        // A value trying to close the literal stays inside it.
        assert_eq!(
            eq("RowKey", "x' or RowKey ne 'y"),
            "RowKey eq 'x'' or RowKey ne ''y'"
        );
    }

    #[test]
    fn literals_carry_their_type() {
        assert_eq!(
            datetime_lit(datetime!(2024-01-02 03:04:05.5 UTC)),
            "datetime'2024-01-02T03:04:05.5000000Z'"
        );
        assert_eq!(cmp("N", Op::Gt, 5_i64), "N gt 5L");
        assert_eq!(cmp("N", Op::Le, 5), "N le 5");
        assert_eq!(cmp("D", Op::Ne, 1.0), "D ne 1.0");
        assert_eq!(eq("B", true), "B eq true");
        assert_eq!(
            eq(
                "G",
                EdmValue::Guid("c9da6455-213d-42c9-9a79-3e9149a57833".into())
            ),
            "G eq guid'c9da6455-213d-42c9-9a79-3e9149a57833'"
        );
        assert_eq!(eq("X", vec![0_u8, 255]), "X eq X'00ff'");
    }

    #[test]
    fn combinators_parenthesise_their_operands() {
        assert_eq!(
            or(and(eq("A", 1), eq("B", 2)), not(eq("C", 3))),
            "((A eq 1) and (B eq 2)) or (not (C eq 3))"
        );
    }

    #[test]
    fn starts_with_is_a_range() {
        assert_eq!(
            starts_with("RowKey", "ab"),
            "(RowKey ge 'ab') and (RowKey lt 'ac')"
        );
        assert_eq!(starts_with("RowKey", ""), "RowKey ge ''");
        assert_eq!(prefix_successor("a\u{10FFFF}"), Some("b".to_owned()));
    }
}
