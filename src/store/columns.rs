//! What the rows of every data table share: the day partitions and the cap on text columns.

use time::OffsetDateTime;

/// `yyyy-MM-dd` (UTC) of a call's time: the partition of every data table, so a day is one range
/// read. A row without the time (never seen in Graph) goes to `0001-01-01` rather than being lost.
pub(crate) fn partition_day(start: Option<OffsetDateTime>) -> String {
    match start {
        Some(start) => {
            let d = start.to_offset(time::UtcOffset::UTC).date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        }
        None => "0001-01-01".to_owned(),
    }
}

/// Longest text a column holds, in characters. Table storage refuses strings over 64 KiB (and
/// entities over 1 MiB); a user agent or display name longer than this is cut in its column and kept
/// whole in the document, so that no value Graph sends can make a record unstorable.
pub(crate) const MAX_COLUMN_CHARS: usize = 4096;

pub(crate) fn column_text(text: &str) -> String {
    match text.char_indices().nth(MAX_COLUMN_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}
