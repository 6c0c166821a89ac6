//! The `Users` table (README "Tables"): the directory sync's copy of Entra ID's users, and each
//! user's department and cost centre over time; and the sync's row in `AppState`
//! (`DirectorySync`/`users`: where the delta query stands, its lease).
//!
//! Rows, one partition per user (`PartitionKey` = the object id, lower case):
//! - `RowKey` = `current`: the user as last synced (`UserId`, `UserPrincipalName`, `DisplayName`,
//!   `Department`, `CostCenter`, `Division`, `OfficeLocation`, `UsageLocation`, `CompanyName`),
//!   `Removed` once Graph says the user is gone, `ChangedAt` when a sync last changed the row.
//! - `RowKey` = `since-{ValidFrom}`: a version of the attribution (`Department`, `CostCenter`) in
//!   force from `ValidFrom` (`domain::directory`): the first a user has is from 1970, each later
//!   one from the sync run that saw the change.
//!
//! A user's rows are written together in one entity-group transaction, and only when something
//! changed: a page applied twice (a run that died before its checkpoint) writes nothing new.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use table_storage::{BatchOp, EdmValue, Entity, Query, TableStore, WriteMode, format_datetime};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::StoreError;
use super::app_state::{self, Claim, DIRECTORY_SYNC, Lease};
use super::columns::column_text;
use crate::domain::directory::{Attribution, Directory, UserChange, Version};

/// The row key of a user's current row.
pub(crate) const CURRENT: &str = "current";
/// The row-key prefix of a user's versions.
const VERSION_PREFIX: &str = "since-";
/// Users written at once (each its own transaction: its own partition).
const WRITES_IN_FLIGHT: usize = 16;

/// Where the sync stands, as its `AppState` row says. Not `Debug`: its links carry Graph's delta
/// token, which no log line may print.
#[derive(Clone, Default)]
pub(crate) struct SyncState {
    /// The next page of a sync under way (full or incremental).
    pub(crate) next_link: Option<String>,
    /// Where the next incremental sync starts, once a sync has completed.
    pub(crate) delta_link: Option<String>,
    /// Counts every page that changed the table: readers reload when it moves.
    pub(crate) revision: i64,
    /// When the first run started (the health check's "never synced" counts from it).
    pub(crate) first_run: Option<OffsetDateTime>,
    /// The last run never released its lease (it crashed, timed out or was cut off): it may have
    /// written users without moving the revision.
    pub(crate) unreleased: bool,
}

/// The table as one run of the sync holds it: every user's current row and versions.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    current: HashMap<String, Entity>,
    directory: Directory,
}

impl Loaded {
    /// Users in the table and not removed.
    pub(crate) fn users(&self) -> usize {
        self.current
            .values()
            .filter(|row| row.get_bool("Removed") != Some(true))
            .count()
    }
}

/// What applying one page changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Current rows written (new, changed or removed users).
    pub(crate) changed: u64,
    /// New versions of an attribution (a user's first, a move).
    pub(crate) versions: u64,
}

struct Cached {
    checked: tokio::time::Instant,
    revision: i64,
    directory: Arc<Directory>,
}

/// The `Users` table, the sync's `AppState` row, and the directory as call rows read it.
#[derive(Clone)]
pub(crate) struct UserStore {
    users: TableStore,
    app_state: TableStore,
    /// `DIRECTORY_SYNC`: when off, call rows get no attribution and nothing here is read.
    enabled: bool,
    ready: Arc<OnceCell<()>>,
    cache: Arc<tokio::sync::Mutex<Option<Cached>>>,
}

impl UserStore {
    pub(crate) fn new(users: TableStore, app_state: TableStore, enabled: bool) -> Self {
        Self {
            users,
            app_state,
            enabled,
            ready: Arc::new(OnceCell::new()),
            cache: Arc::default(),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(&self.ready, &[&self.users, &self.app_state]).await
    }

    /// Takes the sync's lease for `owner` until `until`, with where the sync stands; `None` when
    /// another run holds it.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn claim(
        &self,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<(Lease, SyncState)>, StoreError> {
        self.ready().await?;
        match app_state::claim(
            &self.app_state,
            DIRECTORY_SYNC,
            owner,
            now,
            until,
            Vec::new(),
        )
        .await?
        {
            Claim::Held(lease, row) => Ok(Some((*lease, sync_state(row.as_ref())))),
            Claim::Taken { .. } => Ok(None),
        }
    }

    /// Every row of the table.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn load(&self) -> Result<Loaded, StoreError> {
        self.ready().await?;
        let mut loaded = Loaded::default();
        for row in self.users.query_all(&Query::new()).await? {
            if row.row_key == CURRENT {
                loaded.current.insert(row.partition_key.clone(), row);
            } else if let Some(version) = version_of(&row) {
                loaded.directory.add(&row.partition_key, version);
            }
        }
        Ok(loaded)
    }

    /// Only the version rows: what call rows read (about half the table).
    async fn load_versions(&self) -> Result<Directory, StoreError> {
        let mut directory = Directory::default();
        let query = Query::new().filter(table_storage::filter::and(
            table_storage::filter::cmp(
                "RowKey",
                table_storage::filter::Op::Ge,
                EdmValue::String(VERSION_PREFIX.to_owned()),
            ),
            table_storage::filter::cmp(
                "RowKey",
                table_storage::filter::Op::Lt,
                EdmValue::String("since.".to_owned()),
            ),
        ));
        for row in self.users.query_all(&query).await? {
            if let Some(version) = version_of(&row) {
                directory.add(&row.partition_key, version);
            }
        }
        Ok(directory)
    }

    /// Writes what `changes` say (in order; a user twice in them ends as the last says) to the
    /// table and to `loaded`, seen by the sync at `now`.
    ///
    /// # Errors
    /// When storage fails or refuses: what was written stays, and applying the page again
    /// writes the rest.
    pub(crate) async fn apply(
        &self,
        loaded: &mut Loaded,
        changes: &[UserChange],
        now: OffsetDateTime,
    ) -> Result<Applied, StoreError> {
        // The last word on each user, in a map of its own: one transaction per user.
        let mut writes: HashMap<String, (Entity, Option<(Version, Entity)>)> = HashMap::new();
        for change in changes {
            let stored = writes
                .get(&change.id)
                .map(|(row, _)| row)
                .or_else(|| loaded.current.get(&change.id));
            let Some(row) = changed_row(stored, change, now) else {
                continue;
            };
            let attribution = Attribution {
                department: row.get_str("Department").map(str::to_owned),
                cost_center: row.get_str("CostCenter").map(str::to_owned),
            };
            let pending = writes.get(&change.id).and_then(|(_, v)| v.as_ref());
            let latest = pending
                .map(|(v, _)| v)
                .or_else(|| loaded.directory.latest(&change.id));
            let version = match (latest, pending) {
                // A removed user keeps the attribution it had: its earlier calls are unchanged.
                _ if change.removed => None,
                (Some(v), _) if v.attribution == attribution => None,
                // Changed again in the same page: the version this page writes is replaced.
                (_, Some((v, _))) => Some(v.valid_from),
                (Some(_), None) => Some(now),
                // The first version a user has stands for every earlier call too.
                (None, None) => Some(OffsetDateTime::UNIX_EPOCH),
            }
            .map(|valid_from| {
                let version = Version {
                    valid_from,
                    attribution,
                };
                let row = version_row(&change.id, &version, now);
                (version, row)
            });
            let version = version.or_else(|| pending.cloned());
            writes.insert(change.id.clone(), (row, version));
        }
        let applied = Applied {
            changed: writes.len() as u64,
            versions: writes.values().filter(|(_, v)| v.is_some()).count() as u64,
        };
        let batches: Vec<(String, Vec<BatchOp>)> = writes
            .iter()
            .map(|(id, (row, version))| {
                let mut ops = vec![BatchOp::Upsert(row.clone(), WriteMode::Replace)];
                if let Some((_, version)) = version {
                    ops.push(BatchOp::Upsert(version.clone(), WriteMode::Replace));
                }
                (id.clone(), ops)
            })
            .collect();
        stream::iter(batches.into_iter().map(|(id, ops)| {
            let users = self.users.clone();
            async move { users.batch(&id, ops).await.map(drop) }
        }))
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
        for (id, (row, version)) in writes {
            if let Some((version, _)) = version {
                loaded.directory.add(&id, version);
            }
            loaded.current.insert(id, row);
        }
        Ok(applied)
    }

    /// The directory as call rows read it: `Arc::default()` (nobody known) when the sync is off.
    /// Read again from the table when the sync's revision moved; the revision itself is checked at
    /// most every `recheck`.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn snapshot(&self, recheck: Duration) -> Result<Arc<Directory>, StoreError> {
        if !self.enabled {
            return Ok(Arc::default());
        }
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && cached.checked.elapsed() < recheck
        {
            return Ok(Arc::clone(&cached.directory));
        }
        self.ready().await?;
        let checked = tokio::time::Instant::now();
        let row = self
            .app_state
            .get(DIRECTORY_SYNC.0, DIRECTORY_SYNC.1)
            .await?;
        let revision = sync_state(row.as_ref()).revision;
        if let Some(cached) = cache.as_mut()
            && cached.revision == revision
        {
            cached.checked = checked;
            return Ok(Arc::clone(&cached.directory));
        }
        let directory = Arc::new(self.load_versions().await?);
        *cache = Some(Cached {
            checked,
            revision,
            directory: Arc::clone(&directory),
        });
        Ok(directory)
    }
}

fn sync_state(row: Option<&Entity>) -> SyncState {
    let link = |name| {
        row.and_then(|r| r.get_str(name))
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    };
    SyncState {
        next_link: link("NextLink"),
        delta_link: link("DeltaLink"),
        revision: row.and_then(|r| r.get_i64("Revision")).unwrap_or(0),
        first_run: row.and_then(|r| r.get_datetime("FirstRunAt")),
        unreleased: row
            .and_then(|r| r.get_str("LeaseOwner"))
            .is_some_and(|owner| !owner.is_empty()),
    }
}

/// The current row after `change`, or `None` when it changes nothing.
fn changed_row(
    stored: Option<&Entity>,
    change: &UserChange,
    now: OffsetDateTime,
) -> Option<Entity> {
    let mut row = Entity::new(&change.id, CURRENT);
    if let Some(stored) = stored {
        row.properties.clone_from(&stored.properties);
    }
    row.set("UserId", EdmValue::String(change.id.clone()));
    row.set("Removed", EdmValue::Boolean(change.removed));
    for (column, value) in &change.set {
        match value {
            Some(value) if !value.is_empty() => {
                row.set(*column, EdmValue::String(column_text(value)));
            }
            _ => {
                row.properties.remove(*column);
            }
        }
    }
    if stored.is_some_and(|s| s.properties == row.properties) {
        return None;
    }
    row.set("ChangedAt", EdmValue::DateTime(now));
    Some(row)
}

fn version_row(user: &str, version: &Version, now: OffsetDateTime) -> Entity {
    let mut row = Entity::new(
        user,
        format!("{VERSION_PREFIX}{}", format_datetime(version.valid_from)),
    )
    .with("ValidFrom", EdmValue::DateTime(version.valid_from))
    .with("SeenAt", EdmValue::DateTime(now));
    if let Some(d) = &version.attribution.department {
        row.set("Department", EdmValue::String(d.clone()));
    }
    if let Some(c) = &version.attribution.cost_center {
        row.set("CostCenter", EdmValue::String(c.clone()));
    }
    row
}

fn version_of(row: &Entity) -> Option<Version> {
    row.row_key.strip_prefix(VERSION_PREFIX)?;
    Some(Version {
        valid_from: row.get_datetime("ValidFrom")?,
        attribution: Attribution {
            department: row.get_str("Department").map(str::to_owned),
            cost_center: row.get_str("CostCenter").map(str::to_owned),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn change(id: &str, set: &[(&'static str, Option<&str>)]) -> UserChange {
        UserChange {
            id: id.to_owned(),
            removed: false,
            set: set
                .iter()
                .map(|(c, v)| (*c, v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn an_item_that_repeats_the_stored_values_changes_nothing() {
        let now = datetime!(2026-12-07 10:00 UTC);
        let first = change(
            "u1",
            &[("Department", Some("Sales")), ("DisplayName", Some("A"))],
        );
        let row = changed_row(None, &first, now).unwrap();
        assert_eq!(row.get_str("Department"), Some("Sales"));
        assert!(changed_row(Some(&row), &first, now).is_none());
        // Sending only some properties keeps the others.
        let partial = change("u1", &[("DisplayName", Some("A"))]);
        assert!(changed_row(Some(&row), &partial, now).is_none());
        let cleared = change("u1", &[("Department", None)]);
        let row = changed_row(Some(&row), &cleared, now).unwrap();
        assert_eq!(row.get_str("Department"), None);
        assert_eq!(row.get_str("DisplayName"), Some("A"));
    }
}
