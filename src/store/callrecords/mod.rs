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

mod body;
pub(crate) mod failures;
mod rows;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use table_storage::{
    BatchOp, ETag, EdmValue, Entity, MAX_BATCH_OPERATIONS, Query, TableStore, WriteMode, filter,
};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::BatchFailure;
use super::StoreError;
use super::columns::partition_day;
use super::feed::{Appended, Dataset, FeedStore};
use crate::domain::callrecord::{SessionRow, Summary};
use crate::domain::write::{Committed, Decision, StoredState, decide};
use body::{
    BODY_ENTITIES_PER_BATCH, body_entities, body_key, body_prefix, compress, is_part_of,
    legacy_prefix,
};
use rows::{record_entity, session_entity, session_key};

/// Row key of a record's state row in `CallRecordBodies`.
const STATE_ROW: &str = "state";

/// The tables the fetch writes to.
#[derive(Clone)]
pub struct CallRecordStore {
    records: TableStore,
    sessions: TableStore,
    bodies: TableStore,
    app_state: TableStore,
    /// The read API's ingestion log, appended to before each commit (none: a store that only
    /// reads, in tests).
    feed: Option<FeedStore>,
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
    /// The same or a newer version is stored; `failed` when its state row still carries the mark
    /// of a failure row that must go.
    Unchanged {
        stored: i64,
        failed: bool,
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
    /// Storage refused a write in a way no retry changes (a rule of the Table service); nothing
    /// was committed and the lease is released.
    Refused {
        reason: String,
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
            feed: None,
            lease,
            fence,
            ready: Arc::new(OnceCell::new()),
        }
    }

    /// The store, appending every stored version to `feed` before its commit.
    #[must_use]
    pub(crate) fn with_feed(mut self, feed: FeedStore) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Makes sure the tables exist, once per process: Bicep creates them in Azure, a fresh Azurite
    /// has none. Failures are not remembered, so the next call tries again.
    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(
            &self.ready,
            &[&self.records, &self.sessions, &self.bodies, &self.app_state],
        )
        .await
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
    /// that compares with a lease; `repair` rewrites committed data equal to this.
    ///
    /// # Errors
    /// When storage fails (the record is then in a state a retry completes). A refusal that no retry
    /// can change is not an error but [`Saved::Refused`], with the lease released.
    #[tracing::instrument(skip_all, fields(version = summary.version, sessions = sessions.len()))]
    pub(crate) async fn save(
        &self,
        document: &[u8],
        summary: &Summary,
        sessions: &[SessionRow],
        repair: bool,
        read: StateRow,
        now: &Now<'_>,
    ) -> Result<Saved, StoreError> {
        self.ready().await?;
        let body = compress(document)?;
        let owner = crate::random::token();
        let write = Write {
            id: summary.id.as_str(),
            summary,
            sessions,
            day: partition_day(summary.start),
            document_len: document.len(),
            prefix: body_prefix(summary.version, &owner),
            owner,
            body: &body,
        };
        let entities = body_entities(write.id, &write.prefix, &body);
        let (mut lease, previous) = match self.claim(&write, &entities, repair, read, now).await {
            Ok(Claimed::Held(lease, previous)) => (lease, previous),
            Ok(Claimed::Declined(saved)) => return Ok(saved),
            Err(e) if e.is_permanent() => {
                return Ok(Saved::Refused {
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        };
        match self
            .write_claimed(&write, &entities, &mut lease, previous.as_ref(), now)
            .await
        {
            Ok(()) => {}
            Err(Halt::Superseded) => {
                return Ok(Saved::Superseded {
                    retry_in: self.lease + Duration::from_secs(1),
                });
            }
            Err(Halt::Store(e)) if e.is_permanent() => {
                // Another try would be refused the same way, and the lease would make every
                // redelivery wait for it: give the record back before giving it up.
                self.release(&write, &entities, &lease, previous.as_ref())
                    .await;
                return Ok(Saved::Refused {
                    reason: e.to_string(),
                });
            }
            Err(Halt::Store(e)) => return Err(e),
        }
        self.clean_up(&write, previous.as_ref()).await?;
        Ok(Saved::Written)
    }

    /// Steps 1–2: decide on the state row as read, then claim it together with the first body
    /// entities. Another writer can only win the race a few times before its lease makes us wait.
    async fn claim(
        &self,
        write: &Write<'_>,
        entities: &[Entity],
        repair: bool,
        read: StateRow,
        now: &Now<'_>,
    ) -> Result<Claimed, StoreError> {
        let incoming = write.summary.incoming();
        let mut known = Some(read.0);
        for _ in 0..5 {
            let current = match known.take() {
                Some(current) => current,
                None => self.bodies.get(write.id, STATE_ROW).await?,
            };
            let state = current.as_ref().map(read_state);
            match decide(state.as_ref(), incoming, now(), repair) {
                Decision::Skip(stored) => {
                    return Ok(Claimed::Declined(Saved::Unchanged {
                        stored,
                        failed: state.is_some_and(|s| s.failed),
                    }));
                }
                Decision::Wait(retry_in) => return Ok(Claimed::Declined(Saved::Busy { retry_in })),
                Decision::Write => {}
            }
            let until = now() + self.lease;
            let mut days: BTreeSet<String> = state
                .as_ref()
                .map(|s| s.writing_days.iter().cloned().collect())
                .unwrap_or_default();
            days.insert(write.day.clone());
            let claim = claim_row(write, current.as_ref(), &days, until);
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
            match self.bodies.batch(write.id, ops).await {
                Ok(etags) => {
                    let etag =
                        etags.into_iter().next().flatten().ok_or_else(|| {
                            StoreError::fatal("no ETag for the claimed state row")
                        })?;
                    let lease = Lease {
                        etag,
                        until,
                        owner: write.owner.clone(),
                    };
                    return Ok(Claimed::Held(lease, state));
                }
                // Someone claimed or committed between our read and our claim: read again.
                Err(StoreError::BatchFailed {
                    index: 0,
                    kind: BatchFailure::Conflict | BatchFailure::PreconditionFailed,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Claimed::Declined(Saved::Busy {
            retry_in: Duration::from_secs(1),
        }))
    }

    /// Steps 3–5 under our lease: every write is fenced (see the module docs), so none of them can
    /// land after another writer took over.
    async fn write_claimed(
        &self,
        write: &Write<'_>,
        entities: &[Entity],
        lease: &mut Lease,
        previous: Option<&StoredState>,
        now: &Now<'_>,
    ) -> Result<(), Halt> {
        let id = write.id;
        // 3: the rest of the body, then the sessions, then the sessions this version no longer has.
        for chunk in
            entities[entities.len().min(BODY_ENTITIES_PER_BATCH)..].chunks(BODY_ENTITIES_PER_BATCH)
        {
            self.fence(id, lease, now).await?;
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
        for chunk in write.sessions.chunks(MAX_BATCH_OPERATIONS) {
            let ops: Vec<BatchOp> = chunk
                .iter()
                .filter(|s| keep.insert(session_key(&s.key)))
                .map(|s| BatchOp::Upsert(session_entity(write.summary, s), WriteMode::Replace))
                .collect();
            if ops.is_empty() {
                continue;
            }
            self.fence(id, lease, now).await?;
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
            for chunk in stale.chunks(MAX_BATCH_OPERATIONS) {
                self.fence(id, lease, now).await?;
                self.sessions.batch(id, chunk.to_vec()).await?;
            }
        }

        // 4: rows under other start days first (a crash then leaves none rather than two), then ours.
        let other_days: BTreeSet<&str> = previous
            .iter()
            .flat_map(|p| {
                p.committed
                    .iter()
                    .map(|c| c.day.as_str())
                    .chain(p.writing_days.iter().map(String::as_str))
            })
            .filter(|d| *d != write.day)
            .collect();
        for other in other_days {
            self.fence(id, lease, now).await?;
            self.records.delete(other, id, None).await?;
        }
        let body_count = u32::try_from(entities.len().max(1)).unwrap_or(u32::MAX);
        self.fence(id, lease, now).await?;
        let record = record_entity(
            &write.day,
            write.summary,
            write.document_len,
            (write.body, &write.prefix, body_count),
            now(),
        );
        self.records.upsert(&record, WriteMode::Replace).await?;
        // The read API's log, before the commit: a crash in between leaves the write uncommitted,
        // and its retry appends again. Fenced like every write, so that a copy of this version
        // cannot land after a newer version's.
        if let Some(feed) = &self.feed {
            let mut in_time = false;
            for _ in 0..3 {
                self.fence(id, lease, now).await?;
                if feed
                    .append(Dataset::CallRecords, std::slice::from_ref(&record))
                    .await?
                    == Appended::InTime
                {
                    in_time = true;
                    break;
                }
            }
            if !in_time {
                return Err(Halt::Store(super::feed::too_slow()));
            }
        }

        // 5: commit, keeping a failure mark until the failure row is gone (see `clean_up`).
        let failed = previous.is_some_and(|p| p.failed);
        let committed = committed_row(write, body_count, failed);
        match self
            .bodies
            .update(&committed, WriteMode::Replace, &lease.etag)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::PreconditionFailed) => {
                // Our commit may have landed with its answer lost; anything else means we lost.
                let landed = self.state(id).await?.is_some_and(|s| {
                    s.writing.is_none()
                        && s.committed.is_some_and(|c| c.body_prefix == write.prefix)
                });
                if landed {
                    Ok(())
                } else {
                    Err(Halt::Superseded)
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// After the commit: the bodies no row points at any more, and a recorded failure.
    async fn clean_up(
        &self,
        write: &Write<'_>,
        previous: Option<&StoredState>,
    ) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        if let Some(old) = previous.and_then(|p| p.committed.as_ref()) {
            stale.push((old.body_prefix.clone(), Some(old.body_entities)));
        }
        if let Some(writing) = previous.and_then(|p| p.writing_body.clone()) {
            // A crashed or refused writer's parts: we don't know how many it wrote, so ask.
            stale.push((writing, None));
        } else if let Some((version, _)) = previous.and_then(|p| p.writing) {
            // A crashed writer of an older release, which keyed parts by version alone.
            stale.push((legacy_prefix(version), None));
        }
        for (prefix, count) in stale {
            if prefix == write.prefix {
                continue;
            }
            if let Err(e) = self.delete_body(write.id, &prefix, count).await {
                // Harmless leftovers: no row points at them. Logged, not failed.
                tracing::warn!(error = %e, prefix, "could not delete an old body");
            }
        }
        if previous.is_some_and(|p| p.failed) {
            self.clear_failure(write.id).await?;
        }
        Ok(())
    }

    /// Gives the record back after a refusal: the state row as it was before our claim (what is
    /// committed, the days writers wrote to, the failure mark), without our lease, and our own body
    /// parts deleted. Best effort: if this fails too, the lease runs out on its own.
    async fn release(
        &self,
        write: &Write<'_>,
        entities: &[Entity],
        lease: &Lease,
        previous: Option<&StoredState>,
    ) {
        let count = u32::try_from(entities.len()).unwrap_or(u32::MAX);
        if let Err(e) = self.delete_body(write.id, &write.prefix, Some(count)).await {
            tracing::warn!(error = %e, "could not delete the parts of a refused write");
        }
        let row = released_row(write, previous);
        if let Err(e) = self
            .bodies
            .update(&row, WriteMode::Replace, &lease.etag)
            .await
        {
            tracing::warn!(error = %e, "could not release the lease of a refused write");
        }
    }

    /// Makes sure our lease outlives the next write (see the module docs), renewing it if not.
    /// [`Halt::Superseded`] when another writer has taken it.
    async fn fence(&self, id: &str, lease: &mut Lease, now: &Now<'_>) -> Result<(), Halt> {
        let now = now();
        if lease.until - now > self.fence {
            return Ok(());
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
                Ok(())
            }
            Err(StoreError::PreconditionFailed) => {
                // Our renewal may have landed with its answer lost (the pipeline retried it), or
                // the row changed for another reason (a failure noted on it): still ours if it
                // names us.
                let Some(current) = self.bodies.get(id, STATE_ROW).await? else {
                    return Err(Halt::Superseded);
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
                        Ok(())
                    }
                    _ => Err(Halt::Superseded),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the body parts under `prefix`: `count` of them, or as many as a query finds.
    async fn delete_body(
        &self,
        id: &str,
        prefix: &str,
        count: Option<u32>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = match count {
            Some(count) => (0..count).map(|n| body_key(prefix, n)).collect(),
            None => self
                .body_parts(id, prefix, &["RowKey"])
                .await?
                .into_iter()
                .map(|e| e.row_key)
                .collect(),
        };
        for chunk in keys.chunks(MAX_BATCH_OPERATIONS) {
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
                        match self.bodies.delete(id, rk, None).await {
                            Ok(_) | Err(StoreError::NotFound) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The body entities under `prefix`, in part order (`select` limits the columns read).
    async fn body_parts(
        &self,
        id: &str,
        prefix: &str,
        select: &[&str],
    ) -> Result<Vec<Entity>, StoreError> {
        let mut query = Query::new().filter(format!(
            "{} and {}",
            filter::eq("PartitionKey", id),
            filter::starts_with("RowKey", prefix)
        ));
        if !select.is_empty() {
            query = query.select(select.iter().copied());
        }
        let mut parts: Vec<Entity> = self
            .bodies
            .query_all(&query)
            .await?
            .into_iter()
            .filter(|e| is_part_of(prefix, &e.row_key))
            .collect();
        parts.sort_by(|a, b| a.row_key.cmp(&b.row_key));
        Ok(parts)
    }

    /// The committed document of record `id`, decompressed: Graph's merged JSON, byte for byte.
    ///
    /// Always one complete document: each write keeps its parts under its own prefix, and a reader
    /// that finds the parts it was pointed at gone (a newer version committed and cleaned up in the
    /// meantime) reads the state again and follows it.
    ///
    /// # Errors
    /// When storage fails, or the stored parts are not a complete gzip stream.
    pub async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut last_prefix = None;
        for _ in 0..3 {
            let Some(committed) = self.state(id).await?.and_then(|s| s.committed) else {
                return Ok(None);
            };
            let parts = self.body_parts(id, &committed.body_prefix, &[]).await?;
            let expected = committed.body_entities as usize;
            if parts.len() >= expected
                && let Ok(document) = body::decode(parts.iter().take(expected))
            {
                return Ok(Some(document));
            }
            if last_prefix.as_ref() == Some(&committed.body_prefix) {
                break;
            }
            last_prefix = Some(committed.body_prefix);
        }
        Err(StoreError::InvalidInput(format!(
            "stored body of {id} is damaged"
        )))
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

/// Where a writer reads the time (the app's clock).
pub(crate) type Now<'a> = dyn Fn() -> OffsetDateTime + Send + Sync + 'a;

/// One version of a record being written, and where its rows go.
struct Write<'a> {
    id: &'a str,
    summary: &'a Summary,
    sessions: &'a [SessionRow],
    /// The `CallRecords` partition (the UTC start day).
    day: String,
    document_len: usize,
    /// Random per write: names the lease's holder and keys the body parts.
    owner: String,
    /// This write's body prefix (version and owner).
    prefix: String,
    body: &'a [u8],
}

enum Claimed {
    Held(Lease, Option<StoredState>),
    /// Not ours to write (stored already, or held by another writer).
    Declined(Saved),
}

/// Why a claimed write stopped before its commit.
enum Halt {
    /// Another writer took the record over.
    Superseded,
    Store(StoreError),
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

struct Lease {
    etag: ETag,
    until: OffsetDateTime,
    /// Random per write, so a writer recognises its own lease after a lost acknowledgement.
    owner: String,
}

fn read_state(entity: &Entity) -> StoredState {
    let committed = entity.get_i64("Version").map(|version| Committed {
        version,
        last_modified: entity.get_datetime("LastModified"),
        day: entity.get_str("Day").unwrap_or_default().to_owned(),
        body_prefix: entity
            .get_str("Body")
            .map_or_else(|| legacy_prefix(version), str::to_owned),
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
        writing_body: entity.get_str("WritingBody").map(str::to_owned),
        writing_days,
        failed: entity.get_str("Failed").is_some_and(|f| !f.is_empty()),
    }
}

/// The columns of the state row that describe what is committed, and the failure mark.
const KEPT_ON_CLAIM: [&str; 6] = [
    "Version",
    "LastModified",
    "Day",
    "Body",
    "BodyEntities",
    "Failed",
];

/// The state row with our claim, keeping what is committed, the days earlier writers wrote to and
/// the failure mark.
fn claim_row(
    write: &Write<'_>,
    current: Option<&Entity>,
    days: &BTreeSet<String>,
    until: OffsetDateTime,
) -> Entity {
    let row = kept(write.id, current);
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    row.with("WritingVersion", EdmValue::Int64(write.summary.version))
        .with("WritingDays", EdmValue::String(days.join(",")))
        .with("WritingBody", EdmValue::String(write.prefix.clone()))
        .with("LeaseUntil", EdmValue::DateTime(until))
        .with("LeaseOwner", EdmValue::String(write.owner.clone()))
}

fn kept(id: &str, current: Option<&Entity>) -> Entity {
    let mut row = Entity::new(id, STATE_ROW);
    if let Some(current) = current {
        for name in KEPT_ON_CLAIM {
            if let Some(value) = current.properties.get(name) {
                row = row.with(name, value.clone());
            }
        }
    }
    row
}

fn committed_row(write: &Write<'_>, body_entities: u32, failed: bool) -> Entity {
    let committed = Committed {
        version: write.summary.version,
        last_modified: write.summary.last_modified,
        day: write.day.clone(),
        body_prefix: write.prefix.clone(),
        body_entities,
    };
    with_failure_mark(
        with_committed(Entity::new(write.id, STATE_ROW), &committed),
        failed,
    )
}

/// The state row after a refused write: what was there before our claim, and the days we may have
/// written a `CallRecords` row to (so that the next writer removes it), without a lease.
fn released_row(write: &Write<'_>, previous: Option<&StoredState>) -> Entity {
    let mut row = Entity::new(write.id, STATE_ROW);
    if let Some(c) = previous.and_then(|p| p.committed.as_ref()) {
        row = with_committed(row, c);
    }
    let mut days: BTreeSet<&str> = previous
        .map(|p| p.writing_days.iter().map(String::as_str).collect())
        .unwrap_or_default();
    days.insert(&write.day);
    let days: Vec<&str> = days.into_iter().collect();
    row = row.with("WritingDays", EdmValue::String(days.join(",")));
    with_failure_mark(row, previous.is_some_and(|p| p.failed))
}

/// The columns [`read_state`] reads back as [`Committed`].
fn with_committed(row: Entity, c: &Committed) -> Entity {
    let row = row
        .with("Version", EdmValue::Int64(c.version))
        .with("Day", EdmValue::String(c.day.clone()))
        .with("Body", EdmValue::String(c.body_prefix.clone()))
        .with(
            "BodyEntities",
            EdmValue::Int32(i32::try_from(c.body_entities).unwrap_or(i32::MAX)),
        );
    match c.last_modified {
        Some(t) => row.with("LastModified", EdmValue::DateTime(t)),
        None => row,
    }
}

/// The mark that a `FetchFailure` row may exist for the record (removed by `clear_failure`).
fn with_failure_mark(row: Entity, failed: bool) -> Entity {
    if failed {
        row.with("Failed", EdmValue::String("stored".to_owned()))
    } else {
        row
    }
}
