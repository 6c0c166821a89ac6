//! Deleting what is older than the retention: every data table, never `AppState`.
//!
//! Every data table is partitioned by the UTC day of the call's start (`CallRecords`, `PstnCalls`,
//! `DirectRoutingCalls`), except the two keyed by record (`CallRecordSessions`,
//! `CallRecordBodies`), which go with their record. So a purge reads the oldest rows of a day table
//! (`PartitionKey lt '{cutoff day}'`), deletes them in transactions of 100 per partition and reads
//! again, until none is left. For a call record, its session rows and its document (the body parts
//! and the write state) are deleted before its `CallRecords` row, so a crash in between leaves the
//! row, which the next run finds again: progress needs no checkpoint, and a second run deletes
//! nothing twice. Records without a start time (partition `0001-01-01`) are kept: their age is
//! unknown.

use futures::{StreamExt as _, TryStreamExt as _, stream};
use table_storage::{
    BatchOp, Entity, MAX_BATCH_OPERATIONS, MAX_PAGE_SIZE, Query, TableStore, filter,
};

use super::StoreError;

/// Records whose rows are deleted at once.
const RECORDS_IN_FLIGHT: usize = 8;
/// The partition of records without a start time.
const NO_START: &str = "0001-01-01";

/// What a purge deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) call_records: u64,
    pub(crate) report_rows: u64,
    /// Every data table is clean up to the cutoff (`false`: out of time, the next run goes on).
    pub(crate) complete: bool,
}

/// The data tables.
#[derive(Clone)]
pub(crate) struct Purger {
    pub(crate) records: TableStore,
    pub(crate) sessions: TableStore,
    pub(crate) bodies: TableStore,
    pub(crate) reports: [TableStore; 2],
}

/// The oldest rows (keys only) of a day table before `cutoff`; empty only when there are none
/// (or the deadline passed). The Table service may answer a range scan with an empty page and a
/// continuation, so empty pages are followed.
async fn oldest(
    table: &TableStore,
    cutoff: &str,
    deadline: tokio::time::Instant,
) -> Result<Vec<Entity>, StoreError> {
    let mut query = Query::new()
        .filter(filter::and(
            filter::cmp("PartitionKey", filter::Op::Lt, cutoff),
            filter::cmp("PartitionKey", filter::Op::Gt, NO_START),
        ))
        .select(["PartitionKey", "RowKey"])
        .top(MAX_PAGE_SIZE);
    loop {
        let page = match table.query(&query).await {
            Ok(page) => page,
            // A table never written has nothing to purge.
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        match page.continuation {
            Some(next) if page.entities.is_empty() && tokio::time::Instant::now() < deadline => {
                query = query.continuation(Some(next));
            }
            _ => return Ok(page.entities),
        }
    }
}

/// Deletes `rows` (keys only), grouped by partition, in transactions of 100.
async fn delete_rows(table: &TableStore, rows: &[Entity]) -> Result<u64, StoreError> {
    let mut by_partition: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for row in rows {
        by_partition
            .entry(&row.partition_key)
            .or_default()
            .push(&row.row_key);
    }
    let mut deleted = 0;
    for (partition, keys) in by_partition {
        for chunk in keys.chunks(MAX_BATCH_OPERATIONS) {
            let ops = chunk
                .iter()
                .map(|rk| BatchOp::Delete {
                    rk: (*rk).to_owned(),
                    if_match: None,
                })
                .collect();
            match table.batch(partition, ops).await {
                Ok(_) => {}
                // A row gone since it was read (a retried request whose first answer was lost)
                // fails its whole transaction: delete those rows one by one instead.
                Err(StoreError::BatchFailed {
                    kind: super::BatchFailure::NotFound,
                    ..
                }) => {
                    for rk in chunk {
                        table.delete(partition, rk, None).await?;
                    }
                }
                Err(e) => return Err(e),
            }
            deleted += chunk.len() as u64;
        }
    }
    Ok(deleted)
}

/// Deletes every row of partition `pk`.
async fn delete_partition(table: &TableStore, pk: &str) -> Result<(), StoreError> {
    let rows = match table
        .query_all(
            &Query::new()
                .filter(filter::eq("PartitionKey", pk))
                .select(["PartitionKey", "RowKey"]),
        )
        .await
    {
        Ok(rows) => rows,
        Err(StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    delete_rows(table, &rows).await.map(|_| ())
}

impl Purger {
    /// Deletes every row of calls that started before UTC day `cutoff` (`2026-08-30`), until done
    /// or until `deadline`.
    ///
    /// # Errors
    /// When storage fails or refuses; what was deleted stays deleted, the rest waits for a run.
    pub(crate) async fn purge_before(
        &self,
        cutoff: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        loop {
            let rows = oldest(&self.records, cutoff, deadline).await?;
            if tokio::time::Instant::now() >= deadline {
                return Ok(purged);
            }
            if rows.is_empty() {
                break;
            }
            // A record's sessions and document first, its summary row last.
            let ids: Vec<String> = rows.iter().map(|row| row.row_key.clone()).collect();
            stream::iter(ids)
                .map(|id| {
                    // Owned clones: the futures must not borrow across the stream's lifetime.
                    let (sessions, bodies) = (self.sessions.clone(), self.bodies.clone());
                    async move {
                        delete_partition(&sessions, &id).await?;
                        delete_partition(&bodies, &id).await
                    }
                })
                .buffer_unordered(RECORDS_IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await?;
            purged.call_records += delete_rows(&self.records, &rows).await?;
        }
        for table in &self.reports {
            loop {
                let rows = oldest(table, cutoff, deadline).await?;
                if tokio::time::Instant::now() >= deadline {
                    return Ok(purged);
                }
                if rows.is_empty() {
                    break;
                }
                purged.report_rows += delete_rows(table, &rows).await?;
            }
        }
        purged.complete = true;
        Ok(purged)
    }
}
