//! The `PstnCalls` and `DirectRoutingCalls` tables (README "Tables") and each report's checkpoint
//! and lease in `AppState` (`ReportCheckpoint`).
//!
//! Rows: one entity per Graph row, `RowKey` = the row's `id` (lower case), `PartitionKey` = the UTC
//! day of the time Graph filters on ([`Report::partition_times`]). Every Graph property is kept
//! under its Graph name (camelCase) with an EDM type read from the JSON: times (`…DateTime`) as
//! DateTime (Graph's `0001-01-01` placeholder absent), whole numbers as Int64 (Int32 for the
//! documented Int32 fields), booleans, strings; money (`charge`, `connectionCharge`) and any other
//! fraction as the exact decimal text Graph sent (String, never through a float); objects and
//! arrays as their JSON text. Columns we derive are PascalCase (`Direction`, `RingSeconds`, `Department`, `CostCenter`,
//! `Outcome`, `TalkSeconds`), so they can never collide with a property Graph adds later. Writes are
//! upserts in entity-group transactions of up to 100 rows of one partition: a row read twice is
//! written twice, never doubled.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::value::RawValue;
use table_storage::{
    BatchOp, EdmValue, Entity, MAX_BATCH_OPERATIONS, Query, TableStore, WriteMode, filter,
    forbidden_in_key, format_datetime, validate_property_name,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OnceCell;

use super::StoreError;
use super::columns::{column_text, partition_day};
use super::feed::{Dataset, FeedStore};
use crate::domain::callrecord::graph_time;
use crate::domain::directory::{Attribution, Directory};
use crate::domain::notification::normalize_id;
use crate::domain::outcome::{
    Outcome, direct_routing_outcome, direct_routing_talk_seconds, pstn_talk_seconds,
};
use crate::domain::reports::{Checkpoint, Report, ring_seconds};

use super::app_state::{self, Claim, Lease, REPORT_CHECKPOINT_PARTITION as CHECKPOINT_PARTITION};
/// Transactions of one page written at once.
const WRITES_IN_FLIGHT: usize = 4;
/// Money: kept as the decimal text Graph sent.
const MONEY: [&str; 2] = ["charge", "connectionCharge"];
/// Whole numbers Graph documents as Int32; every other whole number is stored as Int64.
const INT32: [&str; 3] = ["duration", "finalSipCode", "callEndSubReason"];

/// Column of the first 128 bits (hex) of the SHA-256 of the row's JSON as Graph sent it: tells
/// a row read again unchanged (most of every look-back) from a new or changed one, which alone goes
/// to the read API's log.
pub(crate) const SOURCE_HASH: &str = "SourceHash";

/// Changes whenever [`report_entity`] stores a row differently (a new derived column, another
/// type): every row read again then differs from its stored hash and goes to the log once more, so
/// that the feed carries the new shape too.
const CONVERSION: &str = "report-entity-v2";

/// The hash of the row as Graph sent it and, where the directory attributes it, of its department
/// and cost centre: a row read again after its attribution came to be known is logged again, so
/// that the feed carries what the table holds. Without one the hash is what it always was.
fn source_hash(json: &str, attribution: Option<&Attribution>) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(CONVERSION.as_bytes());
    hasher.update(b"\n");
    hasher.update(json.as_bytes());
    if let Some(a) = attribution {
        for value in [&a.department, &a.cost_center] {
            hasher.update(b"\n");
            hasher.update(value.as_deref().unwrap_or_default().as_bytes());
        }
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Graph row we cannot store, and why (no personal data: names of properties, not values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadRow(pub(crate) String);

/// The entity for one Graph row of `report`, with the department and cost centre `directory`
/// gives its `userId` for the call's start (`domain::directory`).
///
/// # Errors
/// [`BadRow`] for a row without a usable `id`, with a time that is not one, or money that is not a
/// number.
pub(crate) fn report_entity(
    report: Report,
    raw: &RawValue,
    directory: &Directory,
) -> Result<Entity, BadRow> {
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| BadRow("the row is not a JSON object".to_owned()))?;
    let id = fields
        .get("id")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .map(|id| normalize_id(&id))
        .filter(|id| !id.is_empty() && id.len() <= 256 && !id.chars().any(forbidden_in_key))
        .ok_or_else(|| BadRow("the row has no usable id".to_owned()))?;
    let mut properties = Vec::with_capacity(fields.len() + 2);
    let mut times = BTreeMap::new();
    for (name, value) in &fields {
        if validate_property_name(name).is_err() {
            // `@odata.…` annotations and anything Table storage cannot name.
            continue;
        }
        if let Some(value) = edm_value(name, value.get())? {
            if let EdmValue::DateTime(t) = value {
                times.insert(name.as_str(), t);
            }
            properties.push((name.clone(), value));
        }
    }
    let day = report
        .partition_times()
        .iter()
        .find_map(|name| times.get(name).copied());
    let whole = |name: &str| {
        properties.iter().find_map(|(n, v)| match v {
            EdmValue::Int32(x) if n == name => Some(i64::from(*x)),
            EdmValue::Int64(x) if n == name => Some(*x),
            _ => None,
        })
    };
    let (duration, final_sip_code) = (whole("duration"), whole("finalSipCode"));
    let successful = properties.iter().find_map(|(n, v)| match v {
        EdmValue::Boolean(b) if n == "successfulCall" => Some(*b),
        _ => None,
    });
    let time = |name: &str| times.get(name).copied();
    let (start, end) = (time("startDateTime"), time("endDateTime"));
    let attribution = fields
        .get("userId")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .and_then(|user| directory.at(&user, day));
    let mut entity = Entity::new(partition_day(day), id).with(
        SOURCE_HASH,
        EdmValue::String(source_hash(raw.get(), attribution)),
    );
    for (name, value) in properties {
        entity = entity.with(name, value);
    }
    let call_type = fields
        .get("callType")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    if let Some(direction) = call_type.and_then(|t| report.direction(&t)) {
        entity = entity.with("Direction", EdmValue::String(direction.to_owned()));
    }
    let (outcome, talk) = match report {
        // A PSTN row is a connected call.
        Report::Pstn => (Outcome::Answered, pstn_talk_seconds(duration, start, end)),
        Report::DirectRouting => {
            let outcome = direct_routing_outcome(successful, final_sip_code, end.is_some());
            let talk = direct_routing_talk_seconds(outcome, start, end, duration);
            if let Some(ring) = ring_seconds(
                time("inviteDateTime"),
                outcome == Outcome::Answered,
                start,
                time("failureDateTime"),
            ) {
                entity = entity.with("RingSeconds", EdmValue::Double(ring));
            }
            (outcome, talk)
        }
    };
    entity = entity.with("Outcome", EdmValue::String(outcome.as_str().to_owned()));
    if let Some(talk) = talk {
        entity = entity.with("TalkSeconds", EdmValue::Double(talk));
    }
    if let Some(a) = attribution {
        if let Some(d) = &a.department {
            entity = entity.with("Department", EdmValue::String(column_text(d)));
        }
        if let Some(c) = &a.cost_center {
            entity = entity.with("CostCenter", EdmValue::String(column_text(c)));
        }
    }
    Ok(entity)
}

/// The EDM value of one Graph property, `None` for JSON `null` and for Graph's time placeholder.
fn edm_value(name: &str, raw: &str) -> Result<Option<EdmValue>, BadRow> {
    let bad = |what: &str| BadRow(format!("`{name}` is {what}"));
    let raw = raw.trim();
    Ok(Some(match raw.as_bytes().first() {
        None | Some(b'n') => return Ok(None),
        Some(b't' | b'f' | b'{' | b'[') if MONEY.contains(&name) => {
            return Err(bad("not a number"));
        }
        Some(b't') => EdmValue::Boolean(true),
        Some(b'f') => EdmValue::Boolean(false),
        Some(b'{' | b'[') => EdmValue::String(column_text(raw)),
        Some(b'"') => {
            let text: String = serde_json::from_str(raw).map_err(|_| bad("not a string"))?;
            if name.ends_with("DateTime") {
                match graph_time(&text).map_err(|_| bad("not a time"))? {
                    Some(t) => EdmValue::DateTime(t),
                    None => return Ok(None),
                }
            } else if MONEY.contains(&name) {
                decimal(&text).ok_or_else(|| bad("not a number"))?
            } else {
                EdmValue::String(column_text(&text))
            }
        }
        Some(_) if MONEY.contains(&name) => decimal(raw).ok_or_else(|| bad("not a number"))?,
        Some(_) => match raw.parse::<i64>() {
            Ok(n) if INT32.contains(&name) => match i32::try_from(n) {
                Ok(n) => EdmValue::Int32(n),
                Err(_) => EdmValue::Int64(n),
            },
            Ok(n) => EdmValue::Int64(n),
            // A fraction (or a whole number too large for Int64): its exact text.
            Err(_) => decimal(raw).ok_or_else(|| bad("not a number"))?,
        },
    }))
}

/// A JSON number's text, kept exactly, if it is one (`0.0190`, `-1.5e-3`, `12345678.901234567`).
fn decimal(text: &str) -> Option<EdmValue> {
    let is_number = serde_json::from_str::<serde_json::Number>(text).is_ok()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    is_number.then(|| EdmValue::String(text.to_owned()))
}

/// One transaction of upserts; should the service refuse it for good (a rule the client does not
/// check), its rows are written one by one and the ones refused again are bad rows, so that one row
/// cannot stop every later run at the same page.
async fn write_batch(
    table: &TableStore,
    partition: &str,
    rows: Vec<Entity>,
) -> Result<(u64, Vec<BadRow>), StoreError> {
    let n = rows.len() as u64;
    let ops = rows
        .iter()
        .cloned()
        .map(|e| BatchOp::Upsert(e, WriteMode::Replace))
        .collect();
    let refused = match table.batch(partition, ops).await {
        Ok(_) => return Ok((n, Vec::new())),
        Err(e) if e.is_permanent() => e,
        Err(e) => return Err(e),
    };
    tracing::warn!(error = %refused, "a transaction of report rows was refused; writing them one by one");
    let mut stored = 0;
    let mut bad = Vec::new();
    for entity in rows {
        match table.upsert(&entity, WriteMode::Replace).await {
            Ok(_) => stored += 1,
            Err(e) if e.is_permanent() => {
                bad.push(BadRow(format!("Table storage refused the row: {e}")));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((stored, bad))
}

/// The `SourceHash` of the stored rows of `partition` among `rows` (keys to hashes), read over
/// the range of their keys.
async fn stored_hashes(
    table: &TableStore,
    partition: &str,
    rows: &BTreeMap<String, Entity>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let (Some(first), Some(last)) = (rows.keys().next(), rows.keys().next_back()) else {
        return Ok(BTreeMap::new());
    };
    let query = Query::new()
        .filter(filter::and(
            filter::eq("PartitionKey", partition),
            filter::and(
                filter::cmp("RowKey", filter::Op::Ge, first.as_str()),
                filter::cmp("RowKey", filter::Op::Le, last.as_str()),
            ),
        ))
        .select([SOURCE_HASH]);
    let stored = match table.query_all(&query).await {
        Ok(stored) => stored,
        Err(StoreError::NotFound) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(stored
        .into_iter()
        .filter_map(|e| {
            let hash = e.get_str(SOURCE_HASH)?.to_owned();
            Some((e.row_key, hash))
        })
        .collect())
}

/// Rows a process remembers the hash of: about a day of a 10,000-call tenant's report rows (a
/// few MB), enough for every look-back but the daily deep one, which reads what it does not find.
const RECENT_HASHES: usize = 50_000;

/// The `SourceHash` of the rows this process wrote lately, oldest forgotten first: a look-back
/// reads most rows again unchanged, and without this it would read their hashes from storage on
/// every pull (cheap on Azure, a scan of the whole table on Azurite).
#[derive(Debug, Default)]
struct RecentHashes {
    hashes: std::collections::HashMap<(Report, String, String), String>,
    order: std::collections::VecDeque<(Report, String, String)>,
}

impl RecentHashes {
    fn key(report: Report, row: &Entity) -> (Report, String, String) {
        (report, row.partition_key.clone(), row.row_key.clone())
    }

    fn get(&self, report: Report, row: &Entity) -> Option<&str> {
        self.hashes.get(&Self::key(report, row)).map(String::as_str)
    }

    fn put(&mut self, report: Report, row: &Entity) {
        let Some(hash) = row.get_str(SOURCE_HASH) else {
            return;
        };
        let key = Self::key(report, row);
        if self.hashes.insert(key.clone(), hash.to_owned()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_HASHES {
            if let Some(old) = self.order.pop_front() {
                self.hashes.remove(&old);
            }
        }
    }
}

/// The read API's data set of `report`.
pub(crate) fn feed_dataset(report: Report) -> Dataset {
    match report {
        Report::Pstn => Dataset::PstnCalls,
        Report::DirectRouting => Dataset::DirectRoutingCalls,
    }
}

/// What one page's rows came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageWrite {
    pub(crate) stored: u64,
    pub(crate) bad: Vec<BadRow>,
}

/// A report's checkpoint row as this pull holds it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) report: Report,
    pub(crate) checkpoint: Checkpoint,
    lease: Lease,
    /// `RowsStored` and `BadRows` as of the claim, plus what this pull added.
    rows_total: i64,
    bad_total: i64,
}

impl Held {
    /// When the pull's lease runs out unless renewed.
    pub(crate) fn until(&self) -> OffsetDateTime {
        self.lease.until
    }
}

/// Why a pull did not get its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The other pull's lease runs until then.
    pub(crate) until: OffsetDateTime,
}

/// How a pull ended, for its checkpoint row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finish {
    /// Every window of the plan was stored.
    pub(crate) complete: bool,
    /// The plan was deep and complete: the deep pull is done as of this time.
    pub(crate) deep_done: Option<OffsetDateTime>,
    /// What stopped it early (Graph refusing, throttling, failing; the run's time budget).
    pub(crate) error: Option<String>,
}

/// The report tables and their checkpoints.
#[derive(Clone)]
pub(crate) struct ReportStore {
    pstn: TableStore,
    direct_routing: TableStore,
    app_state: TableStore,
    /// The read API's log: new and changed rows are appended before they are written.
    feed: FeedStore,
    /// The hashes of rows this process wrote lately.
    recent: Arc<std::sync::Mutex<RecentHashes>>,
    ready: Arc<OnceCell<()>>,
}

impl ReportStore {
    pub(crate) fn new(
        pstn: TableStore,
        direct_routing: TableStore,
        app_state: TableStore,
        feed: FeedStore,
    ) -> Self {
        Self {
            pstn,
            direct_routing,
            app_state,
            feed,
            recent: Arc::default(),
            ready: Arc::new(OnceCell::new()),
        }
    }

    /// The table of `report`'s rows.
    fn table(&self, report: Report) -> &TableStore {
        match report {
            Report::Pstn => &self.pstn,
            Report::DirectRouting => &self.direct_routing,
        }
    }

    /// Creates the tables that are missing, once per process (Bicep creates them in Azure).
    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(
            &self.ready,
            &[&self.pstn, &self.direct_routing, &self.app_state],
        )
        .await
    }

    /// Stores one page of rows: the rows that convert, upserted per partition in transactions of
    /// up to 100; the others are returned as bad rows. A row twice in a page is written once. New
    /// and changed rows are first appended to the read API's log; `fresh` says the page is of a
    /// window no pull completed before, so that every row counts as new without a read.
    ///
    /// # Errors
    /// When storage fails or refuses; nothing of the page is then known to be stored.
    pub(crate) async fn write_page(
        &self,
        report: Report,
        rows: &[&RawValue],
        fresh: bool,
        directory: &Directory,
    ) -> Result<PageWrite, StoreError> {
        self.ready().await?;
        let mut result = PageWrite::default();
        let mut partitions: BTreeMap<String, BTreeMap<String, Entity>> = BTreeMap::new();
        for raw in rows {
            // A row Table storage would refuse (checked here, before anything is sent) is a bad
            // row like any other: refused in a batch, it would fail the page on every run.
            let converted = report_entity(report, raw, directory).and_then(|entity| {
                entity
                    .validate()
                    .map(|()| entity)
                    .map_err(|e| BadRow(format!("Table storage would refuse the row: {e}")))
            });
            match converted {
                Ok(entity) => {
                    partitions
                        .entry(entity.partition_key.clone())
                        .or_default()
                        .insert(entity.row_key.clone(), entity);
                }
                Err(bad) => result.bad.push(bad),
            }
        }
        let table = self.table(report).clone();
        // New and changed rows go to the read API's log first: a crash before the rows are written
        // leaves them to the next pull, which finds them new again.
        // In a window never completed before (`fresh`), every row is new: no need to read what
        // is stored (a month's back-fill reads nothing).
        let mut changed = Vec::new();
        for (partition, rows) in &partitions {
            if fresh {
                changed.extend(rows.values().cloned());
                continue;
            }
            // Rows this process wrote lately with the same hash are unchanged without a read;
            // only the others are compared with what is stored.
            let unknown: BTreeMap<String, Entity> = {
                let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                rows.iter()
                    .filter(|(_, row)| recent.get(report, row) != row.get_str(SOURCE_HASH))
                    .map(|(k, row)| (k.clone(), row.clone()))
                    .collect()
            };
            if unknown.is_empty() {
                continue;
            }
            let known = stored_hashes(&table, partition, &unknown).await?;
            changed.extend(unknown.into_values().filter(|row| {
                known.get(&row.row_key).map(String::as_str) != row.get_str(SOURCE_HASH)
            }));
        }
        self.feed
            .append_until_in_time(feed_dataset(report), &changed)
            .await?;
        // Remembered once written (a refused row too: it is not logged again on every pull).
        let keys: Vec<Entity> = partitions
            .values()
            .flat_map(BTreeMap::values)
            .map(|row| {
                let mut key = Entity::new(&row.partition_key, &row.row_key);
                if let Some(hash) = row.get(SOURCE_HASH) {
                    key.set(SOURCE_HASH, hash.clone());
                }
                key
            })
            .collect();
        let mut batches = Vec::new();
        for (partition, rows) in partitions {
            let mut rows = rows.into_values().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<Entity> = rows.by_ref().take(MAX_BATCH_OPERATIONS).collect();
                batches.push((partition.clone(), chunk));
            }
        }
        let written: Vec<(u64, Vec<BadRow>)> =
            stream::iter(batches.into_iter().map(|(partition, ops)| {
                let table = table.clone();
                async move { write_batch(&table, &partition, ops).await }
            }))
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_collect()
            .await?;
        for (stored, bad) in written {
            result.stored += stored;
            result.bad.extend(bad);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for key in &keys {
            recent.put(report, key);
        }
        Ok(result)
    }

    /// Takes `report` for this pull (`owner`) until `until`, unless another pull's lease is live.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn claim(
        &self,
        report: Report,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Result<Held, Taken>, StoreError> {
        self.ready().await?;
        let (lease, current) = match app_state::claim(
            &self.app_state,
            (CHECKPOINT_PARTITION, report.key()),
            owner,
            now,
            until,
            vec![("LastRunAt", EdmValue::DateTime(now))],
        )
        .await?
        {
            Claim::Held(lease, current) => (*lease, current),
            Claim::Taken { until } => return Ok(Err(Taken { until })),
        };
        let checkpoint = current
            .as_ref()
            .map_or_else(Checkpoint::default, |row| Checkpoint {
                through: row.get_datetime("Through"),
                last_deep: row.get_datetime("LastDeepAt"),
                // Empty once the deep pull it belonged to completed (a merge cannot remove it).
                deep_next: row
                    .get_str("DeepNextFrom")
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            });
        let count = |name| {
            current
                .as_ref()
                .and_then(|row| row.get_i64(name))
                .unwrap_or(0)
        };
        Ok(Ok(Held {
            report,
            checkpoint,
            lease,
            rows_total: count("RowsStored"),
            bad_total: count("BadRows"),
        }))
    }

    /// Records that everything before `through` is stored (never moving it back) and that the deep
    /// pull under way has re-read everything before `deep_next`, adds the counts, and extends the
    /// lease to `until`: one write, conditional on our last one. `false`
    /// when another pull took the report over: then nothing is written and this pull must stop.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn advance(
        &self,
        held: &mut Held,
        (through, deep_next): (Option<OffsetDateTime>, Option<OffsetDateTime>),
        stored: u64,
        bad: &[BadRow],
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut columns = Vec::new();
        if let Some(next) = deep_next {
            columns.push(("DeepNextFrom", EdmValue::String(format_datetime(next))));
        }
        let through = through.map(|t| held.checkpoint.through.map_or(t, |c| c.max(t)));
        if let Some(through) = through {
            columns.push(("Through", EdmValue::DateTime(through)));
        }
        let rows_total = held
            .rows_total
            .saturating_add(i64::try_from(stored).unwrap_or(i64::MAX));
        let bad_total = held
            .bad_total
            .saturating_add(i64::try_from(bad.len()).unwrap_or(i64::MAX));
        if stored > 0 {
            columns.push(("RowsStored", EdmValue::Int64(rows_total)));
        }
        if let Some(last) = bad.last() {
            columns.push(("BadRows", EdmValue::Int64(bad_total)));
            columns.push(("LastBadRow", EdmValue::String(column_text(&last.0))));
        }
        let renewed = held.lease.renew(until, columns).await?;
        if renewed {
            held.rows_total = rows_total;
            held.bad_total = bad_total;
            if through.is_some() {
                held.checkpoint.through = through;
            }
        }
        Ok(renewed)
    }

    /// Ends the pull: releases the lease and records how it went.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn finish(
        &self,
        held: Held,
        finish: &Finish,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut columns = Vec::new();
        if let Some(at) = finish.deep_done {
            columns.push(("LastDeepAt", EdmValue::DateTime(at)));
            columns.push(("DeepNextFrom", EdmValue::String(String::new())));
        }
        if finish.complete {
            columns.push(("LastSuccessAt", EdmValue::DateTime(now)));
        }
        match &finish.error {
            Some(error) => {
                columns.push(("LastError", EdmValue::String(column_text(error))));
                columns.push(("LastErrorAt", EdmValue::DateTime(now)));
            }
            None => columns.push(("LastError", EdmValue::String(String::new()))),
        }
        held.lease.release(now, columns).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The first row of a documented report page, as Graph's bytes.
    fn fixture_row(name: &str) -> Box<RawValue> {
        let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        #[derive(serde::Deserialize)]
        struct Page {
            value: Vec<Box<RawValue>>,
        }
        let page: Page = serde_json::from_slice(&body).unwrap();
        raw(page.value[0].get())
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn the_documented_pstn_row_is_typed_by_its_graph_names() {
        let e = report_entity(
            Report::Pstn,
            &fixture_row("getpstncalls-response.json"),
            &Directory::default(),
        )
        .unwrap();
        assert_eq!(e.partition_key, "2019-11-01");
        assert_eq!(e.row_key, "9c4984c7-6c3c-427d-a30c-bd0b2eacee90");
        let p = &e.properties;
        assert_eq!(
            p.get("startDateTime"),
            Some(&EdmValue::DateTime(
                datetime!(2019-11-01 00:00:08.2589935 UTC)
            ))
        );
        assert_eq!(p.get("duration"), Some(&EdmValue::Int32(219)));
        assert_eq!(p.get("charge"), Some(&EdmValue::String("0.00".into())));
        assert_eq!(p.get("currency"), Some(&EdmValue::String("USD".into())));
        assert_eq!(
            p.get("Direction"),
            Some(&EdmValue::String("inbound".into()))
        );
        assert!(!p.contains_key("destinationContext"), "null is absent");
        assert_eq!(p.get("Outcome"), Some(&EdmValue::String("answered".into())));
        assert_eq!(p.get("TalkSeconds"), Some(&EdmValue::Double(219.0)));
        assert_eq!(
            p.get("id"),
            Some(&EdmValue::String(
                "9c4984c7-6c3c-427d-a30c-bd0b2eacee90".into()
            )),
            "the id is the RowKey and a column"
        );
    }

    #[test]
    fn the_documented_direct_routing_row_has_its_ring_time_and_no_placeholder() {
        let row = fixture_row("getdirectroutingcalls-response.json");
        let e = report_entity(Report::DirectRouting, &row, &Directory::default()).unwrap();
        let p = &e.properties;
        assert_eq!(e.partition_key, "2019-11-01");
        assert!(!p.contains_key("failureDateTime"), "0001-01-01 is absent");
        assert_eq!(p.get("finalSipCode"), Some(&EdmValue::Int32(0)));
        assert_eq!(p.get("callEndSubReason"), Some(&EdmValue::Int32(540_000)));
        assert_eq!(p.get("successfulCall"), Some(&EdmValue::Boolean(true)));
        assert_eq!(p.get("mediaBypassEnabled"), Some(&EdmValue::Boolean(false)));
        let Some(EdmValue::Double(ring)) = p.get("RingSeconds") else {
            panic!("{p:?}")
        };
        assert!((ring - 3.156).abs() < 1e-9);
        assert_eq!(
            p.get("Direction"),
            Some(&EdmValue::String("inbound".into()))
        );
        assert_eq!(p.get("Outcome"), Some(&EdmValue::String("answered".into())));
        assert_eq!(p.get("TalkSeconds"), Some(&EdmValue::Double(5.0)));
    }

    #[test]
    fn a_declined_direct_routing_call_is_busy_and_talked_for_no_time() {
        let row = raw(
            r#"{"id":"b","inviteDateTime":"2026-11-28T10:00:00Z","startDateTime":"2026-11-28T10:00:00Z",
                "failureDateTime":"2026-11-28T10:00:12.5Z","endDateTime":"0001-01-01T00:00:00Z",
                "duration":0,"successfulCall":false,"finalSipCode":603,"callType":"ByotOut"}"#,
        );
        let e = report_entity(Report::DirectRouting, &row, &Directory::default()).unwrap();
        let p = &e.properties;
        assert_eq!(p.get("Outcome"), Some(&EdmValue::String("busy".into())));
        assert_eq!(p.get("TalkSeconds"), Some(&EdmValue::Double(0.0)));
        // It rang until it failed, not until its start (which Graph set to the invite).
        assert_eq!(p.get("RingSeconds"), Some(&EdmValue::Double(12.5)));
    }

    #[test]
    fn money_keeps_the_exact_decimal_text_graph_sent() {
        for text in ["0.0190", "12345678.901234567", "1e-3", "-0.5000"] {
            let row = raw(&format!(
                r#"{{"id":"a","startDateTime":"2026-11-28T10:00:00Z","charge":{text},"connectionCharge":"{text}"}}"#
            ));
            let e = report_entity(Report::Pstn, &row, &Directory::default()).unwrap();
            assert_eq!(
                e.properties.get("charge"),
                Some(&EdmValue::String(text.into()))
            );
            assert_eq!(
                e.properties.get("connectionCharge"),
                Some(&EdmValue::String(text.into()))
            );
        }
    }

    #[test]
    fn bad_rows_say_why_without_their_values() {
        let cases = [
            (
                r#"{"startDateTime":"2026-11-28T10:00:00Z"}"#,
                "no usable id",
            ),
            (r#"{"id":"a/b"}"#, "no usable id"),
            (
                r#"{"id":"a","startDateTime":"yesterday"}"#,
                "`startDateTime` is not a time",
            ),
            (r#"{"id":"a","charge":"1,50"}"#, "`charge` is not a number"),
            (r#"{"id":"a","charge":true}"#, "`charge` is not a number"),
            ("[1,2]", "not a JSON object"),
        ];
        for (row, why) in cases {
            let error = report_entity(Report::Pstn, &raw(row), &Directory::default()).unwrap_err();
            assert!(error.0.contains(why), "{row}: {error}");
            assert!(!error.0.contains("yesterday") && !error.0.contains("1,50"));
        }
    }

    #[test]
    fn unknown_properties_are_kept_and_a_failed_attempt_files_under_its_invite() {
        let row = raw(
            r##"{"id":"A","inviteDateTime":"2026-11-27T23:59:59Z","startDateTime":"0001-01-01T00:00:00Z",
                "failureDateTime":"2026-11-28T00:00:09Z","newCounter":12345678901,"newRatio":0.25,
                "newFlag":true,"newList":[{"x":1}],"@odata.type":"#x","callType":"ByotOut"}"##,
        );
        let e = report_entity(Report::DirectRouting, &row, &Directory::default()).unwrap();
        assert_eq!(e.row_key, "a");
        assert_eq!(e.partition_key, "2026-11-27");
        let p = &e.properties;
        assert_eq!(p.get("newCounter"), Some(&EdmValue::Int64(12_345_678_901)));
        assert_eq!(p.get("newRatio"), Some(&EdmValue::String("0.25".into())));
        assert_eq!(p.get("newFlag"), Some(&EdmValue::Boolean(true)));
        assert_eq!(
            p.get("newList"),
            Some(&EdmValue::String(r#"[{"x":1}]"#.into()))
        );
        assert!(!p.contains_key("startDateTime"));
        assert_eq!(p.get("RingSeconds"), Some(&EdmValue::Double(10.0)));
        // Neither successfulCall nor an end time nor a SIP code: an attempt that failed.
        assert_eq!(p.get("Outcome"), Some(&EdmValue::String("failed".into())));
        assert_eq!(p.get("TalkSeconds"), Some(&EdmValue::Double(0.0)));
        assert_eq!(
            p.get("Direction"),
            Some(&EdmValue::String("outbound".into()))
        );
    }
}
