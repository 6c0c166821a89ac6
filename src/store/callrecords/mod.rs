//! Call records in Table storage: the `CallRecords` summary rows, the `CallRecordSessions` rows and
//! the compressed documents with their write state in `CallRecordBodies`. Owns the entity layout
//! (README "Tables") and the write protocol that keeps them consistent.
//!
//! Write protocol for version V of record R (every step idempotent, so a crash between any two and a
//! redelivery end in the same state as a clean run):
//! 1. Read R's state row (`CallRecordBodies`, `R`/`state`) and decide ([`crate::domain::write`]):
//!    skip when the committed version is V or newer, come back after the lease when a writer holds
//!    one (it may be this message's own crashed delivery).
//! 2. Claim: write the state row with our lease and owner token (`If-Match`, or insert if new), in
//!    the same entity-group transaction as the first body parts of V (row keys carry the version, so
//!    parts of two versions never overwrite each other).
//! 3. The remaining body parts, the session rows (transactions of 100), and the deletion of sessions
//!    V no longer has.
//! 4. The deletion of R's `CallRecords` row under any other start day (an older version's, or a
//!    crashed writer's), then the `CallRecords` row. A crash in between leaves no row rather than two.
//! 5. Commit: the state row says V, `If-Match` our claim. Then the older body parts are deleted.
//!
//! Readers of `CallRecords` see a row only once its sessions and body are in place. The lease keeps
//! writers apart: before every write a writer makes sure its lease outlives the longest that write can
//! take (`fence`: the storage timeout times its tries), renewing it otherwise, so no write of ours can
//! land after another writer took over. A writer that finds its lease taken anyway stops and asks for
//! a repair (`Saved::Superseded`): the record is rewritten at its latest version once the new holder
//! is done. A lost acknowledgement (the write landed, the answer did not) is recognised by the owner
//! token and the committed version.

mod app_state;
mod body;
mod rows;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::BatchFailure;
use super::StoreError;
use super::table::{BatchOp, ETag, EdmValue, Entity, Query, TableStore, WriteMode, filter};
use crate::domain::callrecord::{SessionRow, Summary};
use crate::domain::write::{Committed, Decision, StoredState, decide};
use body::{BODY_ENTITIES_PER_BATCH, body_entities, body_key, body_prefix, compress};
use rows::{partition_day, record_entity, session_entity, session_key};

/// Row key of a record's state row in `CallRecordBodies`.
const STATE_ROW: &str = "state";
/// Entity group transactions take at most 100 operations.
const BATCH_MAX: usize = 100;

/// The tables the fetch writes to.
#[derive(Clone)]
pub struct CallRecordStore {
    records: TableStore,
    sessions: TableStore,
    bodies: TableStore,
    app_state: TableStore,
    lease: Duration,
    /// The longest one storage write can take, retries included: a writer renews its lease before
    /// a write unless the lease outlives this.
    fence: Duration,
    /// Set once the tables are known to exist in this process.
    ready: Arc<OnceCell<()>>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Saved {
    Written,
    /// The same or a newer version is stored, or is being stored by a live writer.
    Unchanged {
        stored: i64,
    },
    /// Another writer's lease runs for this long: try again after it.
    Busy {
        retry_in: Duration,
    },
    /// Our lease was taken over (we were too slow) after we may have written some rows: the record
    /// must be rewritten at its latest version once the new holder is done, in this long.
    Superseded {
        retry_in: Duration,
    },
}

impl CallRecordStore {
    /// The store over the four tables, with writers holding a record for `lease`, and `fence` the
    /// longest one storage request can take with its retries.
    pub fn new(
        records: TableStore,
        sessions: TableStore,
        bodies: TableStore,
        app_state: TableStore,
        lease: Duration,
        fence: Duration,
    ) -> Self {
        Self {
            records,
            sessions,
            bodies,
            app_state,
            lease,
            fence,
            ready: Arc::new(OnceCell::new()),
        }
    }

    /// Makes sure the tables exist, once per process: Bicep creates them in Azure, a fresh Azurite
    /// has none. Failures are not remembered, so the next call tries again.
    async fn ready(&self) -> Result<(), StoreError> {
        self.ready
            .get_or_try_init(|| self.ensure_tables())
            .await
            .map(|_| ())
    }

    /// Creates the tables that are missing (Bicep creates them in Azure; Azurite starts empty).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn ensure_tables(&self) -> Result<(), StoreError> {
        for table in [&self.records, &self.sessions, &self.bodies, &self.app_state] {
            table.ensure_exists().await?;
        }
        Ok(())
    }

    /// The state of record `id`, if anything was ever written for it.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn state(&self, id: &str) -> Result<Option<StoredState>, StoreError> {
        Ok(self.read(id).await?.state())
    }

    /// The state row of record `id` as read now, to decide on and to hand to [`Self::save`], which
    /// then claims from it without reading it again.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn read(&self, id: &str) -> Result<StateRow, StoreError> {
        self.ready().await?;
        Ok(StateRow(self.bodies.get(id, STATE_ROW).await?))
    }

    /// Stores a version of a record per the protocol in the module docs. `now` is read at each step
    /// that compares with a lease; `repair` rewrites a committed version equal to this one.
    ///
    /// # Errors
    /// When storage fails or refuses; the record is then in a state a retry completes.
    #[tracing::instrument(skip_all, fields(version = summary.version, sessions = sessions.len()))]
    pub(crate) async fn save(
        &self,
        document: &[u8],
        summary: &Summary,
        sessions: &[SessionRow],
        repair: bool,
        read: StateRow,
        now: &(dyn Fn() -> OffsetDateTime + Send + Sync),
    ) -> Result<Saved, StoreError> {
        self.ready().await?;
        let id = summary.id.as_str();
        let version = summary.version;
        let body = compress(document)?;
        let day = partition_day(summary.start);
        let entities = body_entities(id, version, &body);
        let owner = owner_token();
        let superseded = Saved::Superseded {
            retry_in: self.lease + Duration::from_secs(1),
        };

        // 1–2: read, decide, claim together with the first body entities. Another writer can only
        // win the race a few times before its lease makes us wait.
        let mut races = 0;
        let mut known = Some(read.0);
        let (mut lease, previous) = loop {
            races += 1;
            if races > 5 {
                return Ok(Saved::Busy {
                    retry_in: Duration::from_secs(1),
                });
            }
            let current = match known.take() {
                Some(current) => current,
                None => self.bodies.get(id, STATE_ROW).await?,
            };
            let state = current.as_ref().map(read_state);
            match decide(state.as_ref(), version, now(), repair) {
                Decision::Skip(stored) => return Ok(Saved::Unchanged { stored }),
                Decision::Wait(retry_in) => return Ok(Saved::Busy { retry_in }),
                Decision::Write => {}
            }
            let until = now() + self.lease;
            let mut days: BTreeSet<String> = state
                .as_ref()
                .map(|s| s.writing_days.iter().cloned().collect())
                .unwrap_or_default();
            days.insert(day.clone());
            let claim = claim_row(id, current.as_ref(), version, &days, until, &owner);
            let mut ops = Vec::with_capacity(BODY_ENTITIES_PER_BATCH + 1);
            ops.push(match current.as_ref().and_then(|e| e.etag.clone()) {
                Some(etag) => BatchOp::Update(claim, WriteMode::Replace, etag),
                None => BatchOp::Insert(claim),
            });
            ops.extend(
                entities
                    .iter()
                    .take(BODY_ENTITIES_PER_BATCH)
                    .cloned()
                    .map(|e| BatchOp::Upsert(e, WriteMode::Replace)),
            );
            match self.bodies.batch(id, ops).await {
                Ok(etags) => {
                    let etag = etags.into_iter().next().flatten().ok_or_else(|| {
                        StoreError::InvalidInput("no ETag for the claimed state row".into())
                    })?;
                    break (Lease { etag, until, owner }, state);
                }
                // Someone claimed or committed between our read and our claim: read again.
                Err(StoreError::BatchFailed {
                    index: 0,
                    kind: BatchFailure::Conflict | BatchFailure::PreconditionFailed,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        };

        // 3: the rest of the body, then the sessions, then the sessions V no longer has.
        for chunk in
            entities[entities.len().min(BODY_ENTITIES_PER_BATCH)..].chunks(BODY_ENTITIES_PER_BATCH)
        {
            if !self.fence(id, &mut lease, now).await? {
                return Ok(superseded);
            }
            let ops = chunk
                .iter()
                .cloned()
                .map(|e| BatchOp::Upsert(e, WriteMode::Replace))
                .collect();
            self.bodies.batch(id, ops).await?;
        }
        // Built a transaction at a time: a 2,000-session meeting's rows at once would weigh more
        // than its whole document. A transaction may not name a row twice: first one wins.
        let mut keep = BTreeSet::new();
        for chunk in sessions.chunks(BATCH_MAX) {
            let ops: Vec<BatchOp> = chunk
                .iter()
                .filter(|s| keep.insert(session_key(&s.key)))
                .map(|s| BatchOp::Upsert(session_entity(summary, s), WriteMode::Replace))
                .collect();
            if ops.is_empty() {
                continue;
            }
            if !self.fence(id, &mut lease, now).await? {
                return Ok(superseded);
            }
            self.sessions.batch(id, ops).await?;
        }
        if previous.is_some() {
            // Only a record written before can have sessions this version no longer has.
            let existing = self
                .sessions
                .query_all(
                    &Query::new()
                        .filter(filter::eq("PartitionKey", id))
                        .select(["RowKey"]),
                )
                .await?;
            let stale: Vec<BatchOp> = existing
                .into_iter()
                .filter(|e| !keep.contains(&e.row_key))
                .map(|e| BatchOp::Delete {
                    rk: e.row_key,
                    if_match: None,
                })
                .collect();
            for chunk in stale.chunks(BATCH_MAX) {
                if !self.fence(id, &mut lease, now).await? {
                    return Ok(superseded);
                }
                self.sessions.batch(id, chunk.to_vec()).await?;
            }
        }

        // 4: rows under other start days first (a crash then leaves none rather than two), then ours.
        let old_committed = previous.as_ref().and_then(|p| p.committed.clone());
        let other_days: BTreeSet<&str> = old_committed
            .iter()
            .map(|c| c.day.as_str())
            .chain(
                previous
                    .iter()
                    .flat_map(|p| p.writing_days.iter().map(String::as_str)),
            )
            .filter(|d| *d != day)
            .collect();
        for other in other_days {
            if !self.fence(id, &mut lease, now).await? {
                return Ok(superseded);
            }
            self.records.delete(other, id, None).await?;
        }
        let body_count = u32::try_from(entities.len().max(1)).unwrap_or(u32::MAX);
        if !self.fence(id, &mut lease, now).await? {
            return Ok(superseded);
        }
        let record = record_entity(&day, summary, document.len(), &body, body_count, now());
        self.records.upsert(&record, WriteMode::Replace).await?;

        // 5: commit, then drop the bodies of other versions and a recorded failure.
        let committed = committed_row(id, version, &day, body_count);
        match self
            .bodies
            .update(&committed, WriteMode::Replace, &lease.etag)
            .await
        {
            Ok(_) => {}
            Err(StoreError::PreconditionFailed) => {
                // Our commit may have landed with its answer lost; anything else means we lost.
                let landed = self.state(id).await?.is_some_and(|s| {
                    s.writing.is_none() && s.committed.is_some_and(|c| c.version == version)
                });
                if !landed {
                    return Ok(superseded);
                }
            }
            Err(e) => return Err(e),
        }
        let mut stale_versions = Vec::new();
        if let Some(old) = old_committed.filter(|o| o.version != version) {
            stale_versions.push((old.version, old.body_entities));
        }
        if let Some((writing, _)) = previous.as_ref().and_then(|p| p.writing)
            && writing != version
        {
            // A crashed writer's parts: we don't know how many it wrote, so ask.
            stale_versions.push((writing, u32::MAX));
        }
        for (old_version, count) in stale_versions {
            if let Err(e) = self.delete_body(id, old_version, count).await {
                // Harmless leftovers: no row points at them. Logged, not failed.
                tracing::warn!(error = %e, old_version, "could not delete an old body");
            }
        }
        if previous.as_ref().is_some_and(|p| p.failed) {
            self.clear_failure(id).await?;
        }
        Ok(Saved::Written)
    }

    /// Makes sure our lease outlives the next write (see the module docs), renewing it if not.
    /// `false` when another writer has taken it.
    async fn fence(
        &self,
        id: &str,
        lease: &mut Lease,
        now: &(dyn Fn() -> OffsetDateTime + Send + Sync),
    ) -> Result<bool, StoreError> {
        let now = now();
        if lease.until - now > self.fence {
            return Ok(true);
        }
        let until = now + self.lease;
        let row = Entity::new(id, STATE_ROW)
            .with("LeaseUntil", EdmValue::DateTime(until))
            .with("LeaseOwner", EdmValue::String(lease.owner.clone()));
        match self
            .bodies
            .update(&row, WriteMode::Merge, &lease.etag)
            .await
        {
            Ok(etag) => {
                lease.etag = etag;
                lease.until = until;
                Ok(true)
            }
            Err(StoreError::PreconditionFailed) => {
                // Our renewal may have landed with its answer lost (the pipeline retried it), or
                // the row changed for another reason (a failure noted on it): still ours if it
                // names us.
                let Some(current) = self.bodies.get(id, STATE_ROW).await? else {
                    return Ok(false);
                };
                let ours = current.get_str("LeaseOwner") == Some(lease.owner.as_str());
                match (
                    ours,
                    current.etag.clone(),
                    current.get_datetime("LeaseUntil"),
                ) {
                    (true, Some(etag), Some(until)) if until > now => {
                        lease.etag = etag;
                        lease.until = until;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_body(&self, id: &str, version: i64, count: u32) -> Result<(), StoreError> {
        let keys: Vec<String> = if count == u32::MAX {
            let prefix = body_prefix(version);
            self.bodies
                .query_all(
                    &Query::new()
                        .filter(format!(
                            "{} and {}",
                            filter::eq("PartitionKey", id),
                            filter::starts_with("RowKey", &prefix)
                        ))
                        .select(["RowKey"]),
                )
                .await?
                .into_iter()
                .map(|e| e.row_key)
                .collect()
        } else {
            (0..count).map(|n| body_key(version, n)).collect()
        };
        for chunk in keys.chunks(BATCH_MAX) {
            let ops = chunk
                .iter()
                .map(|rk| BatchOp::Delete {
                    rk: rk.clone(),
                    if_match: None,
                })
                .collect();
            match self.bodies.batch(id, ops).await {
                Ok(_) => {}
                // One of them is already gone (a previous attempt): delete one by one instead.
                Err(StoreError::BatchFailed {
                    kind: BatchFailure::NotFound,
                    ..
                }) => {
                    for rk in chunk {
                        self.bodies.delete(id, rk, None).await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The committed document of record `id`, decompressed: Graph's merged JSON, byte for byte.
    ///
    /// # Errors
    /// When storage fails, or the stored parts are not a complete gzip stream.
    pub async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(state) = self.state(id).await? else {
            return Ok(None);
        };
        let Some(committed) = state.committed else {
            return Ok(None);
        };
        let prefix = body_prefix(committed.version);
        let mut parts = self
            .bodies
            .query_all(&Query::new().filter(format!(
                "{} and {}",
                filter::eq("PartitionKey", id),
                filter::starts_with("RowKey", &prefix)
            )))
            .await?;
        parts.sort_by(|a, b| a.row_key.cmp(&b.row_key));
        let document =
            body::decode(parts.iter().take(committed.body_entities as usize)).map_err(|e| {
                StoreError::InvalidInput(format!("stored body of {id} is damaged: {e}"))
            })?;
        Ok(Some(document))
    }

    /// Rows of `CallRecordSessions` for record `id` (tests and the read API).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub async fn session_rows(&self, id: &str) -> Result<Vec<Entity>, StoreError> {
        self.sessions
            .query_all(&Query::new().filter(filter::eq("PartitionKey", id)))
            .await
    }
}

/// A record's state row as read (absent for a record never written).
#[derive(Debug, Clone)]
pub(crate) struct StateRow(Option<Entity>);

impl StateRow {
    pub(crate) fn state(&self) -> Option<StoredState> {
        self.0.as_ref().map(read_state)
    }
}

struct Lease {
    etag: ETag,
    until: OffsetDateTime,
    /// Random per write, so a writer recognises its own lease after a lost acknowledgement.
    owner: String,
}

fn owner_token() -> String {
    use std::hash::BuildHasher as _;
    let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
    format!("{:016x}{:016x}", random(), random())
}

fn read_state(entity: &Entity) -> StoredState {
    let committed = entity.get_i64("Version").map(|version| Committed {
        version,
        day: entity.get_str("Day").unwrap_or_default().to_owned(),
        body_entities: entity
            .get_i32("BodyEntities")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    });
    let writing = entity
        .get_i64("WritingVersion")
        .zip(entity.get_datetime("LeaseUntil"));
    let writing_days = entity
        .get_str("WritingDays")
        .map(|days| {
            days.split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    StoredState {
        committed,
        writing,
        writing_days,
        failed: entity.get_str("Failed").is_some(),
    }
}

/// The state row with our claim, keeping what is committed, the days earlier writers wrote to and
/// the failure mark.
fn claim_row(
    id: &str,
    current: Option<&Entity>,
    version: i64,
    days: &BTreeSet<String>,
    until: OffsetDateTime,
    owner: &str,
) -> Entity {
    let mut row = Entity::new(id, STATE_ROW);
    if let Some(current) = current {
        for name in ["Version", "Day", "BodyEntities", "Failed"] {
            if let Some(value) = current.properties.get(name) {
                row = row.with(name, value.clone());
            }
        }
    }
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    row.with("WritingVersion", EdmValue::Int64(version))
        .with("WritingDays", EdmValue::String(days.join(",")))
        .with("LeaseUntil", EdmValue::DateTime(until))
        .with("LeaseOwner", EdmValue::String(owner.to_owned()))
}

fn committed_row(id: &str, version: i64, day: &str, body_entities: u32) -> Entity {
    Entity::new(id, STATE_ROW)
        .with("Version", EdmValue::Int64(version))
        .with("Day", EdmValue::String(day.to_owned()))
        .with(
            "BodyEntities",
            EdmValue::Int32(i32::try_from(body_entities).unwrap_or(i32::MAX)),
        )
}
