//! The message on queue `callrecord-ids`: one call record to fetch from Graph.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One call record to fetch, as the `Notifications` webhook enqueues it and `FetchCallRecord` reads it.
///
/// The JSON form (camelCase) is a contract between versions of this app: a message written by one
/// version may be read by the next, so fields are only ever added, with defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecordJob {
    /// The call record id (`resourceData.id`).
    pub id: String,
    /// `created` or `updated`, as Graph sent it.
    pub change_type: String,
    pub tenant_id: String,
    pub subscription_id: String,
    /// When the webhook accepted the notification.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// How often the fetch was put back on the queue (0 on the first try).
    #[serde(default)]
    pub attempt: u32,
    /// Not to be fetched before this time. The queue's visibility delay is capped (7 days in Azure,
    /// less in tests), so a message that surfaces earlier is put back without calling Graph.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_before: Option<OffsetDateTime>,
    /// Rewrite the record even if its version is stored: a writer that lost its lease may have
    /// overwritten some of that version's rows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}
