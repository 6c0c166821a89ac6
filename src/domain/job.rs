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
    /// How often the fetch was re-enqueued because the record was not yet available (0 on first try).
    #[serde(default)]
    pub attempt: u32,
}
