//! The `Feed` table: an ingestion log that the read API's incremental feeds read, and the scans
//! behind the read API's other lists (time ranges, a record's sessions).
//!
//! Table storage has no change feed, and writers on several instances commit out of order, so a
//! reader that paged through the data tables by a "stored at" column would skip a row committed
//! late with an early time. Instead every writer appends a copy of each row it stores or changes
//! to the log, under a key that starts with the time of the append (`{µs since 1970, 17 digits}-
//! {row key}`, one partition per data set and day), and a reader reads the log only up to a settle horizon
//! (`FEED_SETTLE_SECONDS`, 300 s) behind the present. An entry's key time is read just before it is
//! written, and a writer whose append took longer than half the settle time appends again under a
//! new time (see [`FeedStore::append`]), so every entry keyed before the horizon has landed by the
//! time a reader gets there: a cursor that has passed a key never misses an entry below it.
//!
//! The log is appended to before the data write is committed (call records: after the
//! `CallRecords` row, before the commit of the write state; reports: before the report rows), so a
//! crash in between leaves work that a retry redoes, appending again. An entry can therefore
//! appear twice; the guarantee is "every row at least once, at every version stored after the
//! cursor, the newest last".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use table_storage::{
    BatchOp, Continuation, EdmValue, Entity, MAX_BATCH_OPERATIONS, MAX_PAGE_SIZE, Query,
    TableStore, WriteMode, filter,
};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::StoreError;
use crate::clock::Clock;

/// Columns of a log entry that are not the row's own: where the row lives.
pub(crate) const ENTRY_PARTITION: &str = "FeedPartitionKey";
pub(crate) const ENTRY_ROW: &str = "FeedRowKey";
/// Transactions of one append in flight at once.
const APPENDS_IN_FLIGHT: usize = 4;
/// Appends tried before giving up (each after the previous took too long).
const APPEND_TRIES: usize = 3;

/// Whether an append landed in time for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    InTime,
    /// It took longer than half the settle time: append again.
    Late,
}

/// Every try to append was late: storage is too slow for the settle time.
pub(crate) fn too_slow() -> StoreError {
    StoreError::Transient(super::SdkFailure::text(
        "feed entries kept taking longer than half of FEED_SETTLE_SECONDS to write",
    ))
}

/// The three data sets the read API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    CallRecords,
    PstnCalls,
    DirectRoutingCalls,
}

impl Dataset {
    pub const ALL: [Self; 3] = [Self::CallRecords, Self::PstnCalls, Self::DirectRoutingCalls];

    /// Its name in routes, cursors and the log's partition key.
    pub fn key(self) -> &'static str {
        match self {
            Self::CallRecords => "callrecords",
            Self::PstnCalls => "pstncalls",
            Self::DirectRoutingCalls => "directroutingcalls",
        }
    }

    pub(crate) fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.key() == key)
    }

    /// The column a time-range read filters on: the time the table is partitioned by.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            Self::CallRecords => "StartDateTime",
            Self::PstnCalls => "startDateTime",
            Self::DirectRoutingCalls => "inviteDateTime",
        }
    }
}

/// The log's partition of `dataset` for entries appended at `at`: one a day (`callrecords-20261129`),
/// so that no partition grows without end (Table storage serves a partition from one server) and
/// the purge drops whole days. Partition and row keys both start with the time, so the log's order
/// (partition, then row key) is the order of appends.
fn partition(dataset: Dataset, at: OffsetDateTime) -> String {
    let d = at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{}-{:04}{:02}{:02}",
        dataset.key(),
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// Every partition of `dataset`'s log.
fn all_partitions(dataset: Dataset) -> String {
    filter::and(
        filter::cmp(
            "PartitionKey",
            filter::Op::Ge,
            format!("{}-00000000", dataset.key()).as_str(),
        ),
        filter::cmp(
            "PartitionKey",
            filter::Op::Le,
            format!("{}-99999999", dataset.key()).as_str(),
        ),
    )
}

/// The log's row key for an entry appended at `at` for data row `row_key`.
fn entry_key(at: OffsetDateTime, row_key: &str) -> String {
    format!("{}-{row_key}", time_key(at))
}

/// The key prefix of time `at`: every entry appended before `at` sorts below it.
fn time_key(at: OffsetDateTime) -> String {
    let micros = (at.unix_timestamp_nanos() / 1000).max(0);
    format!("{micros:017}")
}

/// The append time of entry key `key`.
pub(crate) fn key_time(key: &str) -> Option<OffsetDateTime> {
    let micros: i128 = key.get(..17)?.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok()
}

/// A filtered read of one table, page by page: what the read API streams.
#[derive(Clone)]
pub(crate) struct Scan {
    table: TableStore,
    filter: String,
}

/// One page of a scan.
pub(crate) struct ScanPage {
    pub(crate) rows: Vec<Entity>,
    pub(crate) next: Option<Continuation>,
}

impl Scan {
    /// Up to `top` (1–1,000) rows from `from` on; `keys_only` reads the keys alone (a cheap pass
    /// that finds where a page ends). A table that does not exist yet reads as empty.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn page(
        &self,
        top: u32,
        from: Option<Continuation>,
        keys_only: bool,
    ) -> Result<ScanPage, StoreError> {
        let mut query = Query::new()
            .filter(self.filter.clone())
            .top(top)
            .continuation(from);
        if keys_only {
            query = query.select(["PartitionKey", "RowKey"]);
        }
        match self.table.query(&query).await {
            Ok(page) => Ok(ScanPage {
                rows: page.entities,
                next: page.continuation,
            }),
            Err(StoreError::NotFound) => Ok(ScanPage {
                rows: Vec::new(),
                next: None,
            }),
            Err(e) => Err(e),
        }
    }

    /// The same scan, ending at the row `(pk, rk)` inclusive.
    #[must_use]
    pub(crate) fn through(&self, pk: &str, rk: &str) -> Self {
        Self {
            table: self.table.clone(),
            filter: filter::and(
                &self.filter,
                filter::or(
                    filter::cmp("PartitionKey", filter::Op::Lt, pk),
                    filter::and(
                        filter::eq("PartitionKey", pk),
                        filter::cmp("RowKey", filter::Op::Le, rk),
                    ),
                ),
            ),
        }
    }
}

/// `(PartitionKey, RowKey) > (pk, rk)`.
fn after(pk: &str, rk: &str) -> String {
    filter::or(
        filter::cmp("PartitionKey", filter::Op::Gt, pk),
        filter::and(
            filter::eq("PartitionKey", pk),
            filter::cmp("RowKey", filter::Op::Gt, rk),
        ),
    )
}

/// The ingestion log and the tables the read API reads.
#[derive(Clone)]
pub struct FeedStore {
    log: TableStore,
    app_state: TableStore,
    data: BTreeMap<Dataset, TableStore>,
    sessions: TableStore,
    clock: Arc<dyn Clock>,
    settle: Duration,
    ready: Arc<OnceCell<()>>,
    cursor_key: Arc<OnceCell<[u8; 32]>>,
    /// When this process last wrote each feed's consumer row (Unix seconds).
    reads: Arc<std::sync::Mutex<BTreeMap<(Dataset, String), i64>>>,
}

// The `AppState` consumer rows: one per feed and consumer, the last read and where it left the
// consumer.
use super::app_state::{CONSUMER_PARTITION, CURSOR_KEY};
/// At most one consumer-row write per feed per process in this many seconds.
const READ_MARK_EVERY_SECONDS: i64 = 60;

/// The `AppState` row that holds the key cursors are signed with.
const KEY_PARTITION: &str = CURSOR_KEY.0;
const KEY_ROW: &str = CURSOR_KEY.1;

impl FeedStore {
    /// `data` holds the table of each data set.
    pub fn new(
        log: TableStore,
        app_state: TableStore,
        data: [(Dataset, TableStore); 3],
        sessions: TableStore,
        clock: Arc<dyn Clock>,
        settle: Duration,
    ) -> Self {
        Self {
            log,
            app_state,
            data: data.into_iter().collect(),
            sessions,
            clock,
            settle,
            ready: Arc::new(OnceCell::new()),
            cursor_key: Arc::new(OnceCell::new()),
            reads: Arc::default(),
        }
    }

    /// Whether this caller records a read of `dataset` by `consumer` now (at most once a minute
    /// per process, feed and consumer).
    pub(crate) fn read_mark_due(
        &self,
        dataset: Dataset,
        consumer: &str,
        now: OffsetDateTime,
    ) -> bool {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        let last = reads
            .entry((dataset, consumer.to_owned()))
            .or_insert(i64::MIN);
        let due = now.unix_timestamp().saturating_sub(*last) >= READ_MARK_EVERY_SECONDS;
        if due {
            *last = now.unix_timestamp();
        }
        due
    }

    /// Records that `consumer` read `dataset`'s feed at `now` and stands at rows stored at `at`
    /// (the health check's consumer rules read it). One row per feed and consumer.
    ///
    /// # Errors
    /// When storage fails.
    pub(crate) async fn record_read(
        &self,
        dataset: Dataset,
        consumer: &str,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.ready().await?;
        let mut row = Entity::new(CONSUMER_PARTITION, format!("{}-{consumer}", dataset.key()))
            .with("Feed", EdmValue::String(dataset.key().to_owned()))
            .with("Consumer", EdmValue::String(consumer.to_owned()))
            .with("LastReadAt", EdmValue::DateTime(now));
        if let Some(at) = at {
            row = row.with("CursorAt", EdmValue::DateTime(at));
        }
        self.app_state.upsert(&row, WriteMode::Merge).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(&self.ready, &[&self.log, &self.app_state]).await
    }

    /// Appends a copy of each of `rows` (as written to `dataset`'s table) to the log, keyed by the
    /// time now. [`Appended::Late`] when the append took longer than half the settle time (storage
    /// slow, retries): a reader may already have passed that time, so the caller appends again,
    /// under a new time (see [`FeedStore::append_until_in_time`]).
    ///
    /// # Errors
    /// When storage fails.
    pub async fn append(&self, dataset: Dataset, rows: &[Entity]) -> Result<Appended, StoreError> {
        if rows.is_empty() {
            return Ok(Appended::InTime);
        }
        self.ready().await?;
        let at = self.clock.now();
        // A transaction may not name a row twice; the last copy of a row wins.
        let entries: BTreeMap<String, Entity> = rows
            .iter()
            .map(|row| {
                let key = entry_key(at, &row.row_key);
                let mut entry = Entity::new(partition(dataset, at), key.clone());
                for (name, value) in &row.properties {
                    entry.set(name.clone(), value.clone());
                }
                entry.set(ENTRY_PARTITION, EdmValue::String(row.partition_key.clone()));
                entry.set(ENTRY_ROW, EdmValue::String(row.row_key.clone()));
                (key, entry)
            })
            .collect();
        let entries: Vec<Entity> = entries.into_values().collect();
        let pk = partition(dataset, at);
        // Transactions of one append go in parallel, as the data writes do.
        let tasks: Vec<_> = entries
            .chunks(MAX_BATCH_OPERATIONS)
            .map(|chunk| {
                let (store, pk, chunk) = (self.clone(), pk.clone(), chunk.to_vec());
                async move { store.append_chunk(dataset, &pk, &chunk).await }
            })
            .collect();
        futures::stream::iter(tasks)
            .buffer_unordered(APPENDS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        let took = self.clock.now() - at;
        if took <= self.settle / 2 {
            return Ok(Appended::InTime);
        }
        tracing::warn!(
            took_seconds = took.as_seconds_f64(),
            dataset = dataset.key(),
            "feed entries took longer than half the settle time to write; writing them again"
        );
        Ok(Appended::Late)
    }

    /// One transaction of an append. A transaction over 4 MiB, or one copy the service refuses (a
    /// row at the property limit, whose copy has two more), is written one by one instead, so that
    /// one row cannot stop every later write: a copy refused alone is left out of the log (its row
    /// is stored, and reachable by a time-range read) and logged.
    async fn append_chunk(
        &self,
        dataset: Dataset,
        pk: &str,
        chunk: &[Entity],
    ) -> Result<(), StoreError> {
        let ops = chunk
            .iter()
            .cloned()
            .map(|e| BatchOp::Upsert(e, WriteMode::Replace))
            .collect();
        match self.log.batch(pk, ops).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => {
                for entry in chunk {
                    match self.log.upsert(entry, WriteMode::Replace).await {
                        Ok(_) => {}
                        Err(e) if e.is_permanent() => tracing::error!(
                            error = %e,
                            dataset = dataset.key(),
                            row = entry.get_str(ENTRY_ROW).unwrap_or_default(),
                            "a row could not be copied to the read API's feed"
                        ),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// [`FeedStore::append`] until an append is in time, at most [`APPEND_TRIES`] times.
    ///
    /// # Errors
    /// When storage fails, or every try was late (the caller's retry appends again).
    pub(crate) async fn append_until_in_time(
        &self,
        dataset: Dataset,
        rows: &[Entity],
    ) -> Result<(), StoreError> {
        for _ in 0..APPEND_TRIES {
            if self.append(dataset, rows).await? == Appended::InTime {
                return Ok(());
            }
        }
        Err(too_slow())
    }

    /// The time below which every log entry has landed.
    pub(crate) fn horizon(&self) -> OffsetDateTime {
        self.clock.now() - self.settle
    }

    /// The log of `dataset` after the entry key `after` (from the start without one), up to the
    /// settle horizon.
    pub(crate) fn feed(&self, dataset: Dataset, after_key: Option<&str>) -> Scan {
        let upper = time_key(self.horizon());
        let mut f = filter::and(
            all_partitions(dataset),
            filter::cmp("RowKey", filter::Op::Lt, upper.as_str()),
        );
        if let Some(after_key) = after_key {
            f = filter::and(&f, filter::cmp("RowKey", filter::Op::Gt, after_key));
        }
        Scan {
            table: self.log.clone(),
            filter: f,
        }
    }

    /// Rows of `dataset` whose time column (the call's start; a Direct Routing attempt's invite)
    /// is in `[from, to)`, in table order (day, then id), after `(day, id)` when given.
    pub(crate) fn range(
        &self,
        dataset: Dataset,
        from: OffsetDateTime,
        to: OffsetDateTime,
        after_row: Option<(&str, &str)>,
    ) -> Scan {
        let first = super::columns::partition_day(Some(from));
        let last = super::columns::partition_day(Some(to - time::Duration::nanoseconds(1)));
        let column = dataset.time_column();
        let mut f = filter::and(
            filter::and(
                filter::cmp("PartitionKey", filter::Op::Ge, first.as_str()),
                filter::cmp("PartitionKey", filter::Op::Le, last.as_str()),
            ),
            filter::and(
                filter::cmp(column, filter::Op::Ge, from),
                filter::cmp(column, filter::Op::Lt, to),
            ),
        );
        if let Some((pk, rk)) = after_row {
            f = filter::and(&f, after(pk, rk));
        }
        Scan {
            table: self.data[&dataset].clone(),
            filter: f,
        }
    }

    /// The `CallRecordSessions` rows of record `id`, after session row `after_row` when given.
    pub(crate) fn sessions(&self, id: &str, after_row: Option<&str>) -> Scan {
        let mut f = filter::eq("PartitionKey", id);
        if let Some(rk) = after_row {
            f = filter::and(&f, filter::cmp("RowKey", filter::Op::Gt, rk));
        }
        Scan {
            table: self.sessions.clone(),
            filter: f,
        }
    }

    /// The key cursors are signed with: 32 random bytes kept in `AppState`, made by the first
    /// instance that needs it (the first insert wins; the others read it back).
    ///
    /// # Errors
    /// When storage fails, or the OS has no random source.
    pub(crate) async fn cursor_key(&self) -> Result<[u8; 32], StoreError> {
        self.cursor_key
            .get_or_try_init(|| async {
                self.ready().await?;
                if let Some(key) = self.read_key().await? {
                    return Ok(key);
                }
                let mut key = [0u8; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| StoreError::fatal(format!("no random source: {e}")))?;
                let row =
                    Entity::new(KEY_PARTITION, KEY_ROW).with("Key", EdmValue::Binary(key.to_vec()));
                match self.app_state.insert(&row).await {
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
                self.read_key()
                    .await?
                    .ok_or_else(|| StoreError::fatal("the cursor key vanished after its insert"))
            })
            .await
            .copied()
    }

    async fn read_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .app_state
            .get(KEY_PARTITION, KEY_ROW)
            .await?
            .and_then(|row| row.get_binary("Key").and_then(|k| k.try_into().ok())))
    }

    /// Deletes the log entries appended before `cutoff`, until done or `deadline`; the number
    /// deleted, and whether it got to the end.
    ///
    /// # Errors
    /// When storage fails.
    pub(crate) async fn purge(
        &self,
        cutoff: OffsetDateTime,
        deadline: tokio::time::Instant,
    ) -> Result<(u64, bool), StoreError> {
        let upper = time_key(cutoff);
        let mut deleted = 0;
        for dataset in Dataset::ALL {
            loop {
                if tokio::time::Instant::now() >= deadline {
                    return Ok((deleted, false));
                }
                let query = Query::new()
                    .filter(filter::and(
                        all_partitions(dataset),
                        filter::cmp("RowKey", filter::Op::Lt, upper.as_str()),
                    ))
                    .select(["PartitionKey", "RowKey"])
                    .top(MAX_PAGE_SIZE);
                let page = match self.log.query(&query).await {
                    Ok(page) => page,
                    Err(StoreError::NotFound) => break,
                    Err(e) => return Err(e),
                };
                if page.entities.is_empty() {
                    break;
                }
                let mut by_partition: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for e in &page.entities {
                    by_partition
                        .entry(&e.partition_key)
                        .or_default()
                        .push(&e.row_key);
                }
                for (pk, keys) in by_partition {
                    for chunk in keys.chunks(MAX_BATCH_OPERATIONS) {
                        let ops: Vec<BatchOp> = chunk
                            .iter()
                            .map(|rk| BatchOp::Delete {
                                rk: (*rk).to_owned(),
                                if_match: None,
                            })
                            .collect();
                        match self.log.batch(pk, ops).await {
                            Ok(_) => {}
                            // Deleted meanwhile by another purge: one by one.
                            Err(StoreError::BatchFailed { .. }) => {
                                for rk in chunk {
                                    match self.log.delete(pk, rk, None).await {
                                        Ok(_) | Err(StoreError::NotFound) => {}
                                        Err(e) => return Err(e),
                                    }
                                }
                            }
                            Err(e) => return Err(e),
                        }
                        deleted += chunk.len() as u64;
                    }
                }
            }
        }
        Ok((deleted, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn entry_keys_sort_by_time_and_below_any_later_horizon() {
        let a = entry_key(datetime!(2026-11-29 10:00:00 UTC), "zzz");
        let b = entry_key(datetime!(2026-11-29 10:00:00.000001 UTC), "aaa");
        assert!(a < b);
        assert!(b < time_key(datetime!(2026-11-29 10:00:00.000002 UTC)));
        assert!(a > time_key(datetime!(2026-11-29 10:00:00 UTC)));
        assert_eq!(time_key(datetime!(2026-11-29 10:00:00 UTC)).len(), 17);
        // Partitions sort by day within a data set, and stay inside its range.
        let day = |at| partition(Dataset::PstnCalls, at);
        assert_eq!(day(datetime!(2026-11-29 23:59 UTC)), "pstncalls-20261129");
        assert!(day(datetime!(2026-11-29 23:59 UTC)) < day(datetime!(2026-11-30 00:00 UTC)));
        assert!(day(datetime!(2026-11-29 23:59 UTC)).as_str() > "pstncalls-00000000");
        assert!(day(datetime!(9999-12-31 23:59 UTC)).as_str() <= "pstncalls-99999999");
    }
}
