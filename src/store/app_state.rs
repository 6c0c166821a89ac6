//! The `AppState` table: the app's own state, not data for UC-Analytics. This module lays out every
//! row (the keys below are the only place they are written) and holds the one lease that every
//! exclusive run takes on its row ([`claim`]). What goes into each row is written by the store that
//! owns the concern, named in the table.
//!
//! | PartitionKey | RowKey | Owner | What |
//! |---|---|---|---|
//! | `Subscription` | `callRecords` | `lifecycle` | our Graph subscription, its last error; `MaintainSubscription`'s lease |
//! | `Subscription` | `reauthorization` | `lifecycle` | the last answer to `reauthorizationRequired` |
//! | `Reconcile` | `status` | `lifecycle` | the last sweep and its counts; the sweep's lease |
//! | `ReconcileWindow` | `{from}_{to}_{reason}` | `lifecycle` | spans still to be swept, and how far |
//! | `ReconcileHour` | hour of call starts (`2026-11-20T09:00:00Z`) | `lifecycle` | passes an hour has had and is owed, and where the running one stopped |
//! | `Reconcile` | `frontier` | `lifecycle` | the end of the newest hour given its row |
//! | `Purge` | `status` | `lifecycle` | the last purge; its lease |
//! | `DirectorySync` | `users` | `users` | where the users delta query stands (its next and delta links), the last sync and its counts; the sync's lease |
//! | `ReportCheckpoint` | `pstn`, `directRouting` | `reports` | each report's checkpoint and counts; the pull's lease |
//! | `FetchFailure` | call-record id | `callrecords` | records given up on, and why |
//! | `GraphStatus` | `refused` | `callrecords` | Graph's last refusal of our token |
//! | `DroppedMessage` | message id | `callrecords` | queue messages dropped as unreadable |
//! | `NotificationRejected` | `{webhook}-{reason}` | `callrecords` | webhook items rejected, counted |
//! | `Activity` | `notifications`, `stored` | `health` | the last notification accepted, the last record stored |
//! | `Consumer` | `{dataset}-{consumer}` | `feed` | a read-API consumer's last read and where it stands |
//! | `ReadApi` | `cursorKey` | `feed` | the key cursors are signed with |
//!
//! # The lease
//! A run that must not overlap another (a subscription change, a sweep, a purge, a report pull)
//! writes `LeaseUntil` and `LeaseOwner` on its row, conditional on the row's ETag as it read it:
//! of two runs that read the same row, one write lands and the other gets `412` and stands back.
//! A live lease of another owner is respected; the same owner may take its own lease again (a claim
//! whose answer was lost and is tried again). Every later write to the row is conditional on the
//! lease's last ETag, so a run whose lease ran out and was taken over writes nothing more.

use time::OffsetDateTime;

use super::StoreError;
use table_storage::{ETag, EdmValue, Entity, TableStore, WriteMode};

pub(crate) const SUBSCRIPTION: (&str, &str) = ("Subscription", "callRecords");
/// Its own row, so that taking a turn never invalidates the lease a `MaintainSubscription` run holds
/// on the subscription's row (its final write is conditional on that row's ETag).
pub(crate) const REAUTHORIZATION: (&str, &str) = ("Subscription", "reauthorization");
pub(crate) const RECONCILE: (&str, &str) = ("Reconcile", "status");
pub(crate) const RECONCILE_WINDOW_PARTITION: &str = "ReconcileWindow";
pub(crate) const RECONCILE_HOUR_PARTITION: &str = "ReconcileHour";
/// Its own row, so that the sweep's lease on the status row is not invalidated by writing it.
pub(crate) const RECONCILE_FRONTIER: (&str, &str) = ("Reconcile", "frontier");
pub(crate) const PURGE: (&str, &str) = ("Purge", "status");
pub(crate) const DIRECTORY_SYNC: (&str, &str) = ("DirectorySync", "users");
pub(crate) const REPORT_CHECKPOINT_PARTITION: &str = "ReportCheckpoint";
pub(crate) const FETCH_FAILURE_PARTITION: &str = "FetchFailure";
pub(crate) const GRAPH_STATUS: (&str, &str) = ("GraphStatus", "refused");
pub(crate) const DROPPED_MESSAGE_PARTITION: &str = "DroppedMessage";
pub(crate) const NOTIFICATION_REJECTED_PARTITION: &str = "NotificationRejected";
pub(crate) const ACTIVITY_PARTITION: &str = "Activity";
pub(crate) const CONSUMER_PARTITION: &str = "Consumer";
pub(crate) const CURSOR_KEY: (&str, &str) = ("ReadApi", "cursorKey");

/// The lease's columns.
const LEASE_UNTIL: &str = "LeaseUntil";
const LEASE_OWNER: &str = "LeaseOwner";

/// A lease held on a row: every write to the row through it is conditional on holding it.
#[derive(Debug)]
pub(crate) struct Lease {
    table: TableStore,
    partition: String,
    row: String,
    owner: String,
    etag: ETag,
    /// When it runs out unless renewed.
    pub(crate) until: OffsetDateTime,
}

/// What a claim got.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The lease, and the row as it was before the claim (`None`: there was none).
    Held(Box<Lease>, Option<Entity>),
    /// Another owner holds the row until then.
    Taken { until: OffsetDateTime },
}

/// Takes the lease on `(partition, row)` for `owner` until `until`, writing `columns` with it,
/// unless another owner's lease is live at `now`.
///
/// # Errors
/// When storage fails or refuses.
pub(crate) async fn claim(
    table: &TableStore,
    (partition, row): (&str, &str),
    owner: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
    columns: Vec<(&'static str, EdmValue)>,
) -> Result<Claim, StoreError> {
    let current = table.get(partition, row).await?;
    if let Some(current) = &current
        && let Some(other) = current.get_datetime(LEASE_UNTIL).filter(|t| *t > now)
        && current.get_str(LEASE_OWNER) != Some(owner)
    {
        return Ok(Claim::Taken { until: other });
    }
    let claim = with_columns(
        Entity::new(partition, row)
            .with(LEASE_UNTIL, EdmValue::DateTime(until))
            .with(LEASE_OWNER, EdmValue::String(owner.to_owned())),
        columns,
    );
    let written = match current.as_ref().and_then(|e| e.etag.clone()) {
        Some(etag) => table.update(&claim, WriteMode::Merge, &etag).await,
        None => table.insert(&claim).await,
    };
    match written {
        Ok(etag) => Ok(Claim::Held(
            Box::new(Lease {
                table: table.clone(),
                partition: partition.to_owned(),
                row: row.to_owned(),
                owner: owner.to_owned(),
                etag,
                until,
            }),
            current,
        )),
        // Another run claimed it between our read and our write.
        Err(StoreError::PreconditionFailed | StoreError::Conflict) => Ok(Claim::Taken { until }),
        Err(e) => Err(e),
    }
}

impl Lease {
    /// Writes `columns` and extends the lease to `until`, conditional on still holding it.
    /// `false` when another run took the row over: then nothing was written and this run must stop.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn renew(
        &mut self,
        until: OffsetDateTime,
        columns: Vec<(&'static str, EdmValue)>,
    ) -> Result<bool, StoreError> {
        let row = with_columns(
            Entity::new(&self.partition, &self.row)
                .with(LEASE_UNTIL, EdmValue::DateTime(until))
                .with(LEASE_OWNER, EdmValue::String(self.owner.clone())),
            columns,
        );
        match self.table.update(&row, WriteMode::Merge, &self.etag).await {
            Ok(etag) => {
                self.etag = etag;
                self.until = until;
                Ok(true)
            }
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `columns` and releases the lease, conditional on still holding it. When another run
    /// took the row over (our lease ran out), its record stands and nothing is written.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn release(
        self,
        now: OffsetDateTime,
        columns: Vec<(&'static str, EdmValue)>,
    ) -> Result<(), StoreError> {
        let row = with_columns(
            Entity::new(&self.partition, &self.row)
                .with(LEASE_UNTIL, EdmValue::DateTime(now))
                .with(LEASE_OWNER, EdmValue::String(String::new())),
            columns,
        );
        match self.table.update(&row, WriteMode::Merge, &self.etag).await {
            Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn with_columns(mut row: Entity, columns: Vec<(&'static str, EdmValue)>) -> Entity {
    for (name, value) in columns {
        row = row.with(name, value);
    }
    row
}
