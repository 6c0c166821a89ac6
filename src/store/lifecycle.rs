//! The `AppState` rows of the subscription's life and of reconciliation:
//! - `Subscription`/`callRecords`: our subscription (id, expiry), when it last worked, the last
//!   error, and the lease that keeps two `MaintainSubscription` runs (two instances, or a timer and
//!   a lifecycle event) from both creating one;
//! - `Subscription`/`reauthorization`: the last answer to `reauthorizationRequired`;
//! - `Reconcile`/`status`: the last sweep, its counts and error, and the lease of a running sweep;
//! - `ReconcileWindow`/`{from}_{to}_{reason}`: spans still to be swept (a lost subscription's gap,
//!   an admin's backfill), with how far the sweep got, so that a crash or the run's time budget
//!   only delays them;
//! - `ReconcileHour`/`{hour}`: an hour of call starts, how many of its scheduled listings (passes)
//!   it has had, and how far the running pass got; `Reconcile`/`frontier`: the end of the newest
//!   hour given its row. Written only under the sweep's lease, and each hour's row only
//!   conditionally on its ETag, so that a sweep whose lease ran out cannot move an hour on.

use std::sync::Arc;

use table_storage::{
    ETag, EdmValue, Entity, Query, TableStore, WriteMode, filter, format_datetime,
};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::StoreError;
use super::columns::column_text;

use super::app_state::{
    self, Claim, Lease, PURGE, REAUTHORIZATION, RECONCILE, RECONCILE_FRONTIER,
    RECONCILE_HOUR_PARTITION as HOUR_PARTITION, RECONCILE_WINDOW_PARTITION as WINDOW_PARTITION,
    SUBSCRIPTION,
};

/// Which lease: one per kind of run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LeaseRow {
    Subscription,
    Reconcile,
    Purge,
}

impl LeaseRow {
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Subscription => SUBSCRIPTION,
            Self::Reconcile => RECONCILE,
            Self::Purge => PURGE,
        }
    }
}

/// A run's lease on its row (`store::app_state`): writes to the row are conditional on it.
pub(crate) type Held = Lease;

/// Our subscription as last recorded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    pub(crate) id: Option<String>,
    pub(crate) expires: Option<OffsetDateTime>,
    /// The last time Graph confirmed it (created or renewed it).
    pub(crate) last_good: Option<OffsetDateTime>,
    /// The fingerprint of the client state it was created with (`domain::secret::fingerprint`).
    pub(crate) client_state: Option<String>,
}

/// A span still to be swept.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) key: String,
    pub(crate) to: OffsetDateTime,
    /// Swept up to here.
    pub(crate) next: OffsetDateTime,
    pub(crate) reason: String,
    /// The slice length (seconds) its last slice suggested (0 before the first), and the calls
    /// per second of start time it saw: a run that resumes it sizes its slices as the hours'.
    pub(crate) slice_seconds: i64,
    pub(crate) density: Option<f64>,
}

/// An hour of call starts and its passes (`domain::subscription::passes`).
#[derive(Debug, Clone)]
pub(crate) struct Hour {
    pub(crate) from: OffsetDateTime,
    pub(crate) to: OffsetDateTime,
    /// Passes it has had.
    pub(crate) passes: u32,
    /// Where the running pass stopped (`from` when none is running).
    pub(crate) next: OffsetDateTime,
    /// How long a slice of this hour is listed in one go, in seconds (0: not known yet): sized to
    /// the hour's density, and halved whenever a run's budget ran out inside one.
    pub(crate) slice_seconds: i64,
    /// Calls per second of start time, as last seen of it (a lower bound after a cut-short slice).
    pub(crate) density: Option<f64>,
    etag: ETag,
}

/// The hour's row was changed by another sweep (one whose lease had run out): this one leaves it.
#[derive(Debug)]
pub(crate) struct HourTaken;

/// How a sweep went, for the status row.
#[derive(Debug, Default)]
pub(crate) struct SweepReport {
    /// Passes over an hour finished by this run.
    pub(crate) passes: u64,
    pub(crate) listed: u64,
    /// Of `listed`, those in slices that stopped before their last page (the budget, Graph or
    /// storage): the next run lists them again. Steadily high, it says the budget is too short
    /// for the tenant.
    pub(crate) relisted: u64,
    pub(crate) enqueued: u64,
    pub(crate) retried: u64,
    pub(crate) complete: bool,
    pub(crate) error: Option<String>,
}

#[derive(Clone)]
pub(crate) struct LifecycleStore {
    app_state: TableStore,
    ready: Arc<OnceCell<()>>,
}

impl LifecycleStore {
    pub(crate) fn new(app_state: TableStore) -> Self {
        Self {
            app_state,
            ready: Arc::new(OnceCell::new()),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(&self.ready, &[&self.app_state]).await
    }

    /// Our subscription as last recorded (all empty before the first run).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn subscription(&self) -> Result<Recorded, StoreError> {
        self.ready().await?;
        let (pk, rk) = SUBSCRIPTION;
        Ok(self
            .app_state
            .get(pk, rk)
            .await?
            .map(|row| Recorded {
                id: row
                    .get_str("SubscriptionId")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                expires: row.get_datetime("ExpirationDateTime"),
                last_good: row.get_datetime("LastGoodAt"),
                client_state: row
                    .get_str("ClientStateFingerprint")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            })
            .unwrap_or_default())
    }

    /// Takes `row`'s lease until `until`, unless another run holds it. `None`: held elsewhere.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn claim(
        &self,
        row: LeaseRow,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<Held>, StoreError> {
        self.ready().await?;
        match app_state::claim(&self.app_state, row.keys(), owner, now, until, Vec::new()).await? {
            Claim::Held(lease, _) => Ok(Some(*lease)),
            Claim::Taken { .. } => Ok(None),
        }
    }

    /// Records that Graph confirmed subscription `id` until `expires` (created it, with the client
    /// state of fingerprint `created`, when that is given; left another subscription behind when
    /// `left_over` says so), and releases the lease.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn subscription_confirmed(
        &self,
        held: Held,
        id: &str,
        expires: Option<OffsetDateTime>,
        created: Option<&str>,
        left_over: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut columns = vec![
            ("SubscriptionId", EdmValue::String(id.to_owned())),
            ("LastGoodAt", EdmValue::DateTime(now)),
            ("LastSuccessAt", EdmValue::DateTime(now)),
            (
                "LastError",
                EdmValue::String(left_over.map(column_text).unwrap_or_default()),
            ),
        ];
        if left_over.is_some() {
            columns.push(("LastErrorAt", EdmValue::DateTime(now)));
        }
        if let Some(expires) = expires {
            columns.push(("ExpirationDateTime", EdmValue::DateTime(expires)));
        }
        if let Some(fingerprint) = created {
            columns.push(("CreatedAt", EdmValue::DateTime(now)));
            columns.push((
                "ClientStateFingerprint",
                EdmValue::String(fingerprint.to_owned()),
            ));
        }
        held.release(now, columns).await
    }

    /// Records why a `MaintainSubscription` run failed (never a secret: Graph's status and code),
    /// and releases the lease.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn subscription_failed(
        &self,
        held: Held,
        error: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let columns = vec![
            ("LastError", EdmValue::String(column_text(error))),
            ("LastErrorAt", EdmValue::DateTime(now)),
        ];
        held.release(now, columns).await
    }

    /// Whether this instance answers a `reauthorizationRequired` now: not when one was answered
    /// within `quiet`, nor when another instance takes this turn (conditional write).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn reauthorize_turn(
        &self,
        now: OffsetDateTime,
        quiet: time::Duration,
    ) -> Result<bool, StoreError> {
        self.ready().await?;
        let (pk, rk) = REAUTHORIZATION;
        let current = self.app_state.get(pk, rk).await?;
        if current
            .as_ref()
            .and_then(|row| row.get_datetime("LastReauthorizedAt"))
            .is_some_and(|t| t > now - quiet)
        {
            return Ok(false);
        }
        let turn = Entity::new(pk, rk).with("LastReauthorizedAt", EdmValue::DateTime(now));
        let taken = match current.and_then(|row| row.etag) {
            Some(etag) => self.app_state.update(&turn, WriteMode::Merge, &etag).await,
            None => self.app_state.insert(&turn).await,
        };
        match taken {
            Ok(_) => Ok(true),
            // Another instance took this turn between our read and our write.
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a span to sweep. The same span for the same reason is one window (idempotent).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn add_window(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<String, StoreError> {
        self.ready().await?;
        let key = format!("{}_{}_{reason}", format_datetime(from), format_datetime(to));
        let row = Entity::new(WINDOW_PARTITION, &key)
            .with("From", EdmValue::DateTime(from))
            .with("To", EdmValue::DateTime(to))
            .with("NextFrom", EdmValue::DateTime(from))
            .with("Reason", EdmValue::String(reason.to_owned()))
            .with("RequestedAt", EdmValue::DateTime(now));
        self.app_state.upsert(&row, WriteMode::Replace).await?;
        Ok(key)
    }

    /// The spans still to sweep, oldest request first.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn windows(&self) -> Result<Vec<Window>, StoreError> {
        self.ready().await?;
        let rows = self
            .app_state
            .query_all(&Query::new().filter(filter::eq("PartitionKey", WINDOW_PARTITION)))
            .await?;
        let mut windows: Vec<(Option<OffsetDateTime>, Window)> = rows
            .into_iter()
            .filter_map(|row| {
                let from = row.get_datetime("From")?;
                let to = row.get_datetime("To")?;
                Some((
                    row.get_datetime("RequestedAt"),
                    Window {
                        next: row.get_datetime("NextFrom").unwrap_or(from),
                        reason: row.get_str("Reason").unwrap_or_default().to_owned(),
                        slice_seconds: row.get_i64("SliceSeconds").unwrap_or(0),
                        density: row.get_f64("CallsPerSecond"),
                        key: row.row_key,
                        to,
                    },
                ))
            })
            .collect();
        windows.sort_by_key(|(at, _)| *at);
        Ok(windows.into_iter().map(|(_, w)| w).collect())
    }

    /// Records that `window` is swept up to `next`, in slices of `slice_seconds` at `density`;
    /// removes it once swept to its end.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn advance_window(
        &self,
        window: &Window,
        next: OffsetDateTime,
        slice_seconds: i64,
        density: Option<f64>,
    ) -> Result<(), StoreError> {
        if next >= window.to {
            self.app_state
                .delete(WINDOW_PARTITION, &window.key, None)
                .await?;
            return Ok(());
        }
        let mut row = Entity::new(WINDOW_PARTITION, &window.key)
            .with("NextFrom", EdmValue::DateTime(next))
            .with("SliceSeconds", EdmValue::Int64(slice_seconds));
        if let Some(density) = density {
            row = row.with("CallsPerSecond", EdmValue::Double(density));
        }
        // An update, not an upsert: a window another sweep finished (and deleted) stays deleted.
        match self
            .app_state
            .update(&row, WriteMode::Merge, &ETag::any())
            .await
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The end of the newest hour that has its row (`None` on a fresh deployment).
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn frontier(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.ready().await?;
        let (pk, rk) = RECONCILE_FRONTIER;
        Ok(self
            .app_state
            .get(pk, rk)
            .await?
            .and_then(|row| row.get_datetime("Through")))
    }

    /// Gives each hour `[from, from + 1 h)` in `starts` its row (owing every pass), then moves the
    /// frontier to `through`. Rows first: a crash in between makes the next run write the same
    /// rows again, which replaces nothing of theirs that a pass has written.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn add_hours(
        &self,
        starts: &[OffsetDateTime],
        through: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.ready().await?;
        for &from in starts {
            let row = Entity::new(HOUR_PARTITION, format_datetime(from))
                .with("From", EdmValue::DateTime(from))
                .with("To", EdmValue::DateTime(from + time::Duration::HOUR))
                .with("Passes", EdmValue::Int32(0))
                .with("NextFrom", EdmValue::DateTime(from));
            match self.app_state.insert(&row).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        let (pk, rk) = RECONCILE_FRONTIER;
        let frontier = Entity::new(pk, rk).with("Through", EdmValue::DateTime(through));
        self.app_state.upsert(&frontier, WriteMode::Merge).await?;
        Ok(())
    }

    /// Every hour that still owes a pass, oldest first.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn hours(&self) -> Result<Vec<Hour>, StoreError> {
        self.ready().await?;
        let rows = self
            .app_state
            .query_all(&Query::new().filter(filter::eq("PartitionKey", HOUR_PARTITION)))
            .await?;
        let mut hours: Vec<Hour> = rows
            .into_iter()
            .filter_map(|row| {
                let from = row.get_datetime("From")?;
                Some(Hour {
                    to: row
                        .get_datetime("To")
                        .unwrap_or(from + time::Duration::HOUR),
                    passes: u32::try_from(row.get_i32("Passes").unwrap_or(0)).unwrap_or(0),
                    next: row.get_datetime("NextFrom").unwrap_or(from),
                    slice_seconds: row.get_i64("SliceSeconds").unwrap_or(0),
                    density: row.get_f64("CallsPerSecond"),
                    etag: row.etag?,
                    from,
                })
            })
            .collect();
        hours.sort_by_key(|h| h.from);
        Ok(hours)
    }

    /// Records that the running pass over `hour` has listed up to `next`, and how it is to be
    /// listed on: in slices of `slice_seconds`, at `density` calls per second.
    ///
    /// # Errors
    /// [`HourTaken`] inside `Ok(Err(..))` when another sweep changed the row; storage failing.
    pub(crate) async fn hour_progress(
        &self,
        hour: &mut Hour,
        next: OffsetDateTime,
        slice_seconds: i64,
        density: Option<f64>,
    ) -> Result<Result<(), HourTaken>, StoreError> {
        let passes = hour.passes;
        self.write_hour(hour, passes, next, slice_seconds, density)
            .await
    }

    /// Records that `hour` has had `passes` passes (the next starts from its beginning, in slices
    /// of `slice_seconds` at `density`); removes its row once it owes none (`done`).
    ///
    /// # Errors
    /// [`HourTaken`] inside `Ok(Err(..))` when another sweep changed the row; storage failing.
    pub(crate) async fn hour_passed(
        &self,
        hour: &mut Hour,
        passes: u32,
        done: bool,
        slice_seconds: i64,
        density: Option<f64>,
    ) -> Result<Result<(), HourTaken>, StoreError> {
        if !done {
            let from = hour.from;
            return self
                .write_hour(hour, passes, from, slice_seconds, density)
                .await;
        }
        match self
            .app_state
            .delete(
                HOUR_PARTITION,
                &format_datetime(hour.from),
                Some(&hour.etag),
            )
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => Ok(Err(HourTaken)),
            Err(e) => Err(e),
        }
    }

    /// The one write of an hour's row, conditional on the ETag it was read (or last written) with.
    async fn write_hour(
        &self,
        hour: &mut Hour,
        passes: u32,
        next: OffsetDateTime,
        slice_seconds: i64,
        density: Option<f64>,
    ) -> Result<Result<(), HourTaken>, StoreError> {
        let mut row = Entity::new(HOUR_PARTITION, format_datetime(hour.from))
            .with(
                "Passes",
                EdmValue::Int32(i32::try_from(passes).unwrap_or(i32::MAX)),
            )
            .with("NextFrom", EdmValue::DateTime(next))
            .with("SliceSeconds", EdmValue::Int64(slice_seconds));
        if let Some(density) = density {
            row = row.with("CallsPerSecond", EdmValue::Double(density));
        }
        match self
            .app_state
            .update(&row, WriteMode::Merge, &hour.etag)
            .await
        {
            Ok(etag) => {
                hour.etag = etag;
                hour.passes = passes;
                hour.next = next;
                hour.slice_seconds = slice_seconds;
                hour.density = density;
                Ok(Ok(()))
            }
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => Ok(Err(HourTaken)),
            Err(e) => Err(e),
        }
    }

    /// Records how a purge went (`deleted`: call records and report rows; `error` when storage
    /// failed) and releases its lease.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn purge_done(
        &self,
        held: Held,
        (call_records, report_rows, complete): (u64, u64, bool),
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let count = |n: u64| EdmValue::Int64(i64::try_from(n).unwrap_or(i64::MAX));
        let mut columns = vec![
            ("LastRunAt", EdmValue::DateTime(now)),
            ("LastDeletedCallRecords", count(call_records)),
            ("LastDeletedReportRows", count(report_rows)),
            (
                "LastError",
                EdmValue::String(error.map(column_text).unwrap_or_default()),
            ),
        ];
        if complete && error.is_none() {
            columns.push(("LastSuccessAt", EdmValue::DateTime(now)));
        }
        held.release(now, columns).await
    }

    /// Records how a sweep went and releases its lease.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn sweep_done(
        &self,
        held: Held,
        report: &SweepReport,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let count = |n: u64| EdmValue::Int64(i64::try_from(n).unwrap_or(i64::MAX));
        let mut columns = vec![
            ("LastRunAt", EdmValue::DateTime(now)),
            ("LastListed", count(report.listed)),
            ("LastRelisted", count(report.relisted)),
            ("LastPasses", count(report.passes)),
            ("LastEnqueued", count(report.enqueued)),
            ("LastRetriedGivenUp", count(report.retried)),
        ];
        if report.complete {
            columns.push(("LastSuccessAt", EdmValue::DateTime(now)));
        }
        match &report.error {
            Some(error) => {
                columns.push(("LastError", EdmValue::String(column_text(error))));
                columns.push(("LastErrorAt", EdmValue::DateTime(now)));
            }
            None => columns.push(("LastError", EdmValue::String(String::new()))),
        }
        held.release(now, columns).await
    }
}
