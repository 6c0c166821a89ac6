//! Cursors: where a list stopped, opaque to clients and tamper-evident. A cursor is
//! `{payload}.{tag}`, both base64url without padding: the payload is the position as compact JSON,
//! the tag the first 128 bits of its HMAC-SHA256 under a key kept in `AppState` (made once per
//! deployment, `store::feed`). A cursor that was changed, cut or made up fails the tag check and is
//! refused, never read as "from the start".

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Bytes of the HMAC kept in a cursor.
const TAG_BYTES: usize = 16;
/// Longest cursor accepted (a position is well under 1 KiB).
pub(crate) const MAX_CURSOR_CHARS: usize = 2048;

/// Where a list goes on. `after` is the last row returned, as (partition key, row key) of the table
/// read; `None` before the first row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(crate) enum Position {
    /// A data set's feed (the ingestion log).
    #[serde(rename = "f")]
    Feed { d: String, a: Option<String> },
    /// A data set's rows by time, `[from, to)` as Unix nanoseconds.
    #[serde(rename = "r")]
    Range {
        d: String,
        from: i64,
        to: i64,
        a: Option<(String, String)>,
    },
    /// A call record's sessions.
    #[serde(rename = "s")]
    Sessions { id: String, a: Option<String> },
}

/// A cursor that is not one of ours, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadCursor;

fn tag(key: &[u8; 32], payload: &str) -> Hmac<Sha256> {
    // An HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(payload.as_bytes());
    mac
}

pub(crate) fn encode(key: &[u8; 32], position: &Position) -> String {
    let json = serde_json::to_vec(position).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = tag(key, &payload).finalize().into_bytes();
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
}

/// The position of `cursor`, if `key` signed it.
///
/// # Errors
/// [`BadCursor`] for anything else.
pub(crate) fn decode(key: &[u8; 32], cursor: &str) -> Result<Position, BadCursor> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(BadCursor);
    }
    let (payload, given) = cursor.split_once('.').ok_or(BadCursor)?;
    let given = URL_SAFE_NO_PAD.decode(given).map_err(|_| BadCursor)?;
    if given.len() != TAG_BYTES {
        return Err(BadCursor);
    }
    // Constant time: the comparison does not say how much of a forged tag was right.
    tag(key, payload)
        .verify_truncated_left(&given)
        .map_err(|_| BadCursor)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| BadCursor)?;
    serde_json::from_slice(&json).map_err(|_| BadCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn sample() -> Position {
        Position::Range {
            d: "pstncalls".into(),
            from: 1,
            to: 2,
            a: Some(("2026-11-29".into(), "abc".into())),
        }
    }

    #[test]
    fn cursors_round_trip_under_their_key_only() {
        let cursor = encode(&KEY, &sample());
        assert_eq!(decode(&KEY, &cursor), Ok(sample()));
        assert_eq!(decode(&[8; 32], &cursor), Err(BadCursor));
    }

    #[test]
    fn any_changed_character_makes_a_cursor_bad() {
        let cursor = encode(&KEY, &sample());
        for i in 0..cursor.len() {
            let mut bytes = cursor.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap_or_default();
            if changed != cursor {
                assert_eq!(decode(&KEY, &changed), Err(BadCursor), "position {i}");
            }
        }
        for bad in ["", ".", "abc", "abc.def", &cursor[..cursor.len() - 1]] {
            assert_eq!(decode(&KEY, bad), Err(BadCursor), "{bad}");
        }
    }
}
