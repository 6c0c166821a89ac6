//! The `AppState` rows the fetch writes for the health check (their keys: `store::app_state`):
//! records given up on, Graph's last refusal of our token, and queue messages dropped as
//! unreadable.

use table_storage::{ETag, EdmValue, Entity, Query, WriteMode, filter};
use time::OffsetDateTime;

use super::super::StoreError;
use super::super::columns::partition_day;
use super::rows::{sanitize_key, truncate};
use super::{CallRecordStore, STATE_ROW};
use crate::domain::fetch::GiveUp;
use crate::domain::job::CallRecordJob;

use super::super::app_state::{
    DROPPED_MESSAGE_PARTITION as DROPPED_PARTITION, FETCH_FAILURE_PARTITION as FAILURE_PARTITION,
    GRAPH_STATUS, NOTIFICATION_REJECTED_PARTITION as REJECTED_PARTITION,
};
/// Tries of one counter update that loses a race with another instance before it gives up.
const COUNTER_RACES: usize = 5;

impl CallRecordStore {
    /// Records that the fetch of `job` was given up, for the health check. Idempotent.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn record_failure(
        &self,
        job: &CallRecordJob,
        reason: GiveUp,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let row = Entity::new(FAILURE_PARTITION, &job.id)
            .with("CallRecordId", EdmValue::String(job.id.clone()))
            .with("Reason", EdmValue::String(reason.as_str().to_owned()))
            .with("Detail", EdmValue::String(truncate(detail, 1024)))
            .with(
                "Attempts",
                EdmValue::Int32(i32::try_from(job.attempt).unwrap_or(i32::MAX)),
            )
            .with("ReceivedAt", EdmValue::DateTime(job.received_at))
            .with("GaveUpAt", EdmValue::DateTime(now));
        self.ready().await?;
        // Merged, so that how often reconciliation retried the record survives a new give-up.
        self.app_state.upsert(&row, WriteMode::Merge).await?;
        // Marked on the record too, so that storing it later removes the failure row.
        let mark = Entity::new(&job.id, STATE_ROW)
            .with("Failed", EdmValue::String(reason.as_str().to_owned()));
        self.bodies.upsert(&mark, WriteMode::Merge).await?;
        Ok(())
    }

    /// Records that Graph refused the app's token or permission (401/403), for the health check: an
    /// admin must act. One row, overwritten on every refusal.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn record_graph_refusal(
        &self,
        status: u16,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let row = Entity::new(GRAPH_STATUS.0, GRAPH_STATUS.1)
            .with("Status", EdmValue::Int32(i32::from(status)))
            .with("Code", EdmValue::String(truncate(code, 256)))
            .with("At", EdmValue::DateTime(now));
        self.ready().await?;
        self.app_state.upsert(&row, WriteMode::Replace).await?;
        Ok(())
    }

    /// Forgets a recorded failure of `id` once it has been stored after all: the failure row, then
    /// the mark on the state row that says one exists. The mark goes last, so that a crash in
    /// between leaves it, and the next delivery of the record (even one that finds it stored and
    /// skips) removes the row.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn clear_failure(&self, id: &str) -> Result<(), StoreError> {
        match self.app_state.delete(FAILURE_PARTITION, id, None).await {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let unmark = Entity::new(id, STATE_ROW).with("Failed", EdmValue::String(String::new()));
        match self.bodies.upsert(&unmark, WriteMode::Merge).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The records given up on: the `FetchFailure` rows, for reconciliation to try again.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn given_up(&self) -> Result<Vec<Entity>, StoreError> {
        self.ready().await?;
        self.app_state
            .query_all(&Query::new().filter(filter::eq("PartitionKey", FAILURE_PARTITION)))
            .await
    }

    /// Notes on a `FetchFailure` row that the record was sent to be fetched again at `now`, for
    /// the `retries`th time, and when its first notification came (`first_received`). A new give-up updates the row's other columns, so the next sweep
    /// tries once more, up to its limit.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn mark_retried(
        &self,
        id: &str,
        retries: i32,
        first_received: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut row = Entity::new(FAILURE_PARTITION, id)
            .with("RetriedAt", EdmValue::DateTime(now))
            .with("Retries", EdmValue::Int32(retries));
        // Kept apart from `ReceivedAt`, which a new give-up overwrites with the retry's own.
        if let Some(first) = first_received {
            row = row.with("FirstReceivedAt", EdmValue::DateTime(first));
        }
        match self
            .app_state
            .update(&row, WriteMode::Merge, &ETag::any())
            .await
        {
            // Stored in the meantime: nothing left to mark.
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The version stored of every record whose call started in `[from, to)` (a second wider on
    /// each side, so that no rounding of the start loses one): for each UTC day it spans, a query
    /// of that day's `CallRecords` partition on `StartDateTime`, id and version only. What a sweep
    /// reads is thus about the calls it lists, not the whole day (300,000 rows at a large tenant).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn stored_versions(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.ready().await?;
        let (from, to) = (from - time::Duration::SECOND, to + time::Duration::SECOND);
        let mut versions = std::collections::HashMap::new();
        let mut day = from.replace_time(time::Time::MIDNIGHT);
        while day < to {
            let start = filter::and(
                filter::cmp("StartDateTime", filter::Op::Ge, EdmValue::DateTime(from)),
                filter::cmp("StartDateTime", filter::Op::Lt, EdmValue::DateTime(to)),
            );
            let rows = self
                .records
                .query_all(
                    &Query::new()
                        .filter(filter::and(
                            filter::eq("PartitionKey", partition_day(Some(day))),
                            start,
                        ))
                        .select(["RowKey", "Version"]),
                )
                .await?;
            versions.extend(
                rows.into_iter()
                    .map(|row| (row.row_key.clone(), row.get_i64("Version").unwrap_or(0))),
            );
            day += time::Duration::DAY;
        }
        Ok(versions)
    }

    /// The version stored of every record Graph gave no start time (their own partition).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn stored_versions_without_start(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        self.ready().await?;
        let rows = self
            .records
            .query_all(
                &Query::new()
                    .filter(filter::eq("PartitionKey", partition_day(None)))
                    .select(["RowKey", "Version"]),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.row_key.clone(), row.get_i64("Version").unwrap_or(0)))
            .collect())
    }

    /// Records a queue message that could not be read (it is then deleted), for the health check.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn record_dropped(
        &self,
        message_id: &str,
        reason: &str,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let row = Entity::new(DROPPED_PARTITION, sanitize_key(message_id))
            .with("Reason", EdmValue::String(reason.to_owned()))
            .with("Sample", EdmValue::String(truncate(message, 1024)))
            .with(
                "Length",
                EdmValue::Int32(i32::try_from(message.len()).unwrap_or(i32::MAX)),
            )
            .with("DroppedAt", EdmValue::DateTime(now));
        self.ready().await?;
        self.app_state.upsert(&row, WriteMode::Replace).await?;
        Ok(())
    }

    /// Adds `count` to the rejection counter `{webhook}-{reason}` and stamps it with `now`, so that
    /// a silent total loss (every notification refused, e.g. after a redeploy changed the client
    /// state) shows in storage: `Count`, `FirstSeenAt`, `LastSeenAt`. Nothing of the rejected item
    /// (its client state, its payload) is stored. Counters are read-modify-written under the ETag, so
    /// concurrent instances add up rather than overwrite each other.
    ///
    /// # Errors
    /// When storage fails or refuses, or other writers kept winning the race.
    pub(crate) async fn count_rejections(
        &self,
        webhook: &str,
        reason: &str,
        count: u32,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.ready().await?;
        let key = format!("{webhook}-{reason}");
        for _ in 0..COUNTER_RACES {
            let current = self.app_state.get(REJECTED_PARTITION, &key).await?;
            let previous = current
                .as_ref()
                .and_then(|e| e.get_i64("Count"))
                .unwrap_or(0);
            let first = current
                .as_ref()
                .and_then(|e| e.get_datetime("FirstSeenAt"))
                .unwrap_or(now);
            let row = Entity::new(REJECTED_PARTITION, &key)
                .with("Webhook", EdmValue::String(webhook.to_owned()))
                .with("Reason", EdmValue::String(reason.to_owned()))
                .with(
                    "Count",
                    EdmValue::Int64(previous.saturating_add(i64::from(count))),
                )
                .with("FirstSeenAt", EdmValue::DateTime(first))
                .with("LastSeenAt", EdmValue::DateTime(now));
            let written = match current.and_then(|e| e.etag) {
                Some(etag) => self.update_counter(&row, &etag).await,
                None => self.app_state.insert(&row).await.map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::PreconditionFailed)
    }

    async fn update_counter(&self, row: &Entity, etag: &ETag) -> Result<(), StoreError> {
        self.app_state
            .update(row, WriteMode::Replace, etag)
            .await
            .map(|_| ())
    }
}
