//! `Reconcile` (timer, `RECONCILE_SCHEDULE`, every 5 minutes): the safety net under the
//! notifications. Graph sends no `missed` signal for call records and has had tenant-wide
//! notification outages, so every hour of call starts is listed a few times over its life, on a
//! schedule (`RECONCILE_PASS_HOURS`, by default 3 and 26 hours after the hour ends; the reasoning
//! is in DESIGN §6.5), and each record that is not stored, or is stored at a lower version than
//! listed, is queued. The hours and their passes live in `AppState` (`ReconcileHour`): a run
//! works through the passes owed, oldest due first, up to its budget, keeping its place after each
//! slice of an hour, so a run cut short anywhere is continued by the next. Then it sweeps the spans
//! waiting in `AppState` (a lost subscription's gap, an admin's backfill) the same way; and it
//! sends the records given up on (`FetchFailure`) that Graph still keeps to be fetched once more.
//!
//! One sweep at a time (a lease in `AppState`); a run stops at its time budget and the next one
//! goes on. Graph failing or throttling ends that hour's pass early and is recorded; only storage
//! failing fails the invocation. What is queued is fetched by `FetchCallRecord`, which stores a
//! version once however often it is queued.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::domain::job::CallRecordJob;
use crate::domain::notification::{is_valid_id, normalize_id};
use crate::domain::subscription::{
    Due, ListedPage, MAX_SLICE, MAX_SPAN_SLICE, MIN_SLICE, RETENTION, hours_to_add, latest_density,
    needs_fetch, next_slice_seconds, pass_due, passes_after, retry_given_up, slice_for_density,
};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::lifecycle::{Hour, LeaseRow, SweepReport, Window};

/// The `name` of the timer binding in `handlers/Reconcile/function.json`.
pub(crate) const BINDING: &str = "timer";
/// Far more pages than a slice of calls fills: past this, Graph is paging in circles.
const MAX_PAGES: usize = 10_000;
/// Calls on a full list page (Graph's page size for call records).
const LIST_PAGE: f64 = 60.0;
/// Queue writes of one page in flight at once.
const ENQUEUE_CONCURRENCY: usize = 32;
/// Rounds over the waiting spans in one run (a span added while the run goes on is taken too).
const MAX_SPAN_ROUNDS: usize = 4;

/// Why a pass or span stopped early.
enum Stop {
    /// The run's time budget is spent (before a slice started).
    OutOfTime,
    /// ... inside a slice, between two of its pages.
    Cut,
    Graph(GraphError),
    Pages(&'static str),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<GraphError> for Stop {
    fn from(e: GraphError) -> Self {
        Self::Graph(e)
    }
}

/// Starts a sweep without waiting for it (a lifecycle event, a recreated subscription, a
/// backfill). Should the process end first, the span waits in `AppState` for the next run.
pub(crate) fn start_in_background(state: &Services) {
    let state = state.clone();
    let span = tracing::info_span!("reconcile", trigger = "event");
    tokio::spawn(
        async move {
            if let Err(e) = run(&state).await {
                tracing::error!(error = %crate::telemetry::error_chain(&e), "reconciliation failed");
            }
        }
        .instrument(span),
    );
}

/// One sweep; `None` when another sweep holds the lease.
///
/// # Errors
/// When storage fails.
pub(crate) async fn run(state: &Services) -> Result<Option<SweepReport>, InvocationError> {
    let budget = state.subscription.reconcile_budget;
    let now = state.clock.now();
    let owner = crate::random::token();
    // The lease outlives the budget: a run stops at its budget, then records how it went.
    let until = now + state.clock.clock_span(budget * 2);
    let Some(held) = state
        .lifecycle
        .claim(LeaseRow::Reconcile, &owner, now, until)
        .await?
    else {
        tracing::info!(outcome = "skipped", "another sweep is running");
        return Ok(None);
    };
    let mut sweep = Sweep {
        state,
        report: SweepReport::default(),
        undated: None,
        queued: HashSet::new(),
        slice_hint: MAX_SLICE.whole_seconds(),
        density: None,
        slices: 0,
        // Graph's list limit: 40 requests / 20 s.
        page_seconds: 0.5,
        deadline: tokio::time::Instant::now() + budget,
    };
    let outcome = sweep.all().await;
    let mut report = sweep.report;
    let stored_failure = match outcome {
        Ok(complete) => {
            report.complete = complete;
            if !complete && report.error.is_none() {
                report.error = Some("the run's time budget ran out; the next run goes on".into());
            }
            None
        }
        Err(e) => {
            report.error = Some(format!("storage failed: {e}"));
            Some(e)
        }
    };
    tracing::info!(
        passes = report.passes,
        listed = report.listed,
        relisted = report.relisted,
        enqueued = report.enqueued,
        retried_given_up = report.retried,
        complete = report.complete,
        error = report.error.as_deref().unwrap_or(""),
        "reconciliation swept"
    );
    state
        .lifecycle
        .sweep_done(held, &report, state.clock.now())
        .await?;
    match stored_failure {
        Some(e) => Err(e.into()),
        None => Ok(Some(report)),
    }
}

struct Sweep<'a> {
    state: &'a Services,
    report: SweepReport,
    /// Stored versions of the records Graph gave no start time, once one is listed.
    undated: Option<HashMap<String, i64>>,
    /// Ids queued by this run: an hour's pass and a waiting span overlap, and a record queued
    /// once is not stored before the run ends.
    queued: HashSet<String>,
    /// The slice length (seconds) the last slice listed with calls suggests: where an hour has
    /// none of its own yet, its neighbour's density is the best guess.
    slice_hint: i64,
    /// Calls per second of start time in the last slice listed with calls (before the first,
    /// the latest hour's from the rows: [`Sweep::guess_density`]).
    density: Option<f64>,
    /// Slices this run has started.
    slices: u32,
    /// How long a list page takes, throttling included (a moving average): with `density`, what
    /// tells whether a slice still fits the budget.
    page_seconds: f64,
    deadline: tokio::time::Instant,
}

impl Sweep<'_> {
    /// The records given up on, the passes owed, the waiting spans. `false`: incomplete (out of
    /// time, or a pass or span stopped by Graph; the reason is in the report).
    async fn all(&mut self) -> Result<bool, StoreError> {
        // A few queue writes, first: a pass or span that never fits one run must not hold them
        // up, and the listing's budget then covers them instead of running past it.
        self.retry_given_up().await?;
        self.listings().await
    }

    /// The passes owed, then the waiting spans.
    async fn listings(&mut self) -> Result<bool, StoreError> {
        let mut complete = self.hours().await?;
        if !complete && self.out_of_time() {
            return Ok(false);
        }
        for _ in 0..MAX_SPAN_ROUNDS {
            let windows = self.state.lifecycle.windows().await?;
            if windows.is_empty() {
                break;
            }
            let mut progressed = false;
            for window in &windows {
                tracing::info!(from = %window.next, to = %window.to, reason = %window.reason, "sweeping a waiting span");
                // One span that Graph refuses or fails does not hold up the others.
                match self.span(window).await {
                    Ok(true) => progressed = true,
                    Ok(false) => return Ok(false),
                    Err(stop) => complete = self.note(stop)? && complete,
                }
                if self.out_of_time() {
                    return Ok(false);
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(complete)
    }

    fn out_of_time(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Records why a pass or span stopped; storage failing ends the run.
    fn note(&mut self, stop: Stop) -> Result<bool, StoreError> {
        let why = match stop {
            Stop::Store(e) => return Err(e),
            Stop::OutOfTime | Stop::Cut => return Ok(false),
            Stop::Graph(e) => e.to_string(),
            Stop::Pages(why) => why.to_owned(),
        };
        tracing::warn!(error = %why, "a pass or span was not listed to its end; the next run goes on");
        self.report.error = Some(why);
        Ok(false)
    }

    /// Gives the hours that ended since the last run their rows, then works through the passes
    /// owed, oldest due first. `false`: out of time, or a pass stopped by Graph.
    async fn hours(&mut self) -> Result<bool, StoreError> {
        let lifecycle = &self.state.lifecycle;
        let now = self.state.clock.now();
        let schedule = &self.state.subscription.reconcile_passes;
        let frontier = lifecycle.frontier().await?;
        let (starts, through) = hours_to_add(frontier, now, schedule);
        if frontier != Some(through) {
            lifecycle.add_hours(&starts, through).await?;
        }
        let hours = lifecycle.hours().await?;
        self.guess_density(&hours);
        let mut owed = Vec::new();
        for mut hour in hours {
            match pass_due(hour.to, hour.passes, schedule, now) {
                Due::Now(at) => owed.push((at, hour)),
                Due::Later => {}
                // A schedule shortened since, or an hour Graph no longer keeps: nothing to list.
                Due::Never => {
                    let passes = hour.passes;
                    drop(
                        lifecycle
                            .hour_passed(&mut hour, passes, true, 0, None)
                            .await?,
                    );
                }
            }
        }
        owed.sort_by_key(|(at, hour)| (*at, hour.from));
        let mut complete = true;
        for (_, mut hour) in owed {
            match self.pass(&mut hour).await {
                Ok(()) => {}
                Err(Stop::OutOfTime | Stop::Cut) => return Ok(false),
                Err(stop) => complete = self.note(stop)? && complete,
            }
        }
        Ok(complete)
    }

    /// Where this run has listed nothing yet, takes the density of the latest hour listed before
    /// (by an earlier run) as the guess for an hour not listed before. Without it a run's first new
    /// hour was one slice: a large tenant's business hour (some 440 pages) did not fit the budget,
    /// and the next run listed it all again (794 requests for 438 pages in the scale benchmark).
    fn guess_density(&mut self, hours: &[Hour]) {
        if self.density.is_some() {
            return;
        }
        let Some(density) = latest_density(hours.iter().map(|h| h.density)) else {
            return;
        };
        self.density = Some(density);
        self.slice_hint = slice_for_density(density, MAX_SLICE);
    }

    /// Lists one hour from where its running pass stopped, keeping its place after each slice.
    async fn pass(&mut self, hour: &mut Hour) -> Result<(), Stop> {
        let lifecycle = &self.state.lifecycle;
        let mut slice = if hour.slice_seconds > 0 {
            hour.slice_seconds
        } else {
            self.slice_hint
        };
        // An hour not listed before is guessed to be as dense as the last one listed.
        let mut density = hour.density.or(self.density);
        // A pass resumed from an earlier run listed its first slices then: it counts as one pass
        // only, never for the passes that fell due since (they must list those slices again).
        let resumed = hour.next > hour.from;
        let began = self.state.clock.now();
        while hour.next < hour.to {
            let from = hour.next;
            match self
                .sized_slice(from, hour.to, MAX_SLICE, &mut slice, &mut density)
                .await
            {
                Ok(to) if to < hour.to => {
                    let progress = lifecycle.hour_progress(hour, to, slice, density).await?;
                    if progress.is_err() {
                        tracing::warn!(hour = %hour.from, "another sweep moved this hour on; left to it");
                        return Ok(());
                    }
                }
                Ok(to) => hour.next = to,
                Err(Stop::Cut) => {
                    drop(lifecycle.hour_progress(hour, from, slice, density).await?);
                    return Err(Stop::Cut);
                }
                Err(other) => return Err(other),
            }
        }
        let schedule = &self.state.subscription.reconcile_passes;
        let passes = if resumed {
            hour.passes + 1
        } else {
            passes_after(hour.to, hour.passes, schedule, began)
        };
        let done = passes as usize >= schedule.len();
        if lifecycle
            .hour_passed(hour, passes, done, slice, density)
            .await?
            .is_ok()
        {
            self.report.passes += 1;
            tracing::info!(hour = %hour.from, passes, "an hour of calls was listed");
        }
        Ok(())
    }

    /// Lists the next slice of `[from, end)`: `slice` seconds (about [`SLICE_CALLS`] calls at
    /// `density`), narrowed to what fits the budget. Updates `slice` (at most `longest`) and
    /// `density` from what it saw, and returns where the slice ended. When the budget cuts it
    /// short, what it listed is listed again by the next run: the calls are at least as dense as
    /// seen, and a slice half as wide makes sure that the next try fits.
    ///
    /// [`SLICE_CALLS`]: crate::domain::subscription::SLICE_CALLS
    async fn sized_slice(
        &mut self,
        from: OffsetDateTime,
        end: OffsetDateTime,
        longest: time::Duration,
        slice: &mut i64,
        density: &mut Option<f64>,
    ) -> Result<OffsetDateTime, Stop> {
        // None is started where not even the narrowest would fit: listing that the budget cuts
        // short is listing done again.
        let Some(fits) = self.fitting_slice(*slice, *density) else {
            return Err(Stop::OutOfTime);
        };
        let to = (from + time::Duration::seconds(fits)).min(end);
        let listed = self.report.listed;
        let result = self.slice(from, to).await;
        self.slices += 1;
        let (seconds, calls) = ((to - from).whole_seconds(), self.report.listed - listed);
        #[allow(clippy::cast_precision_loss)]
        let seen = calls as f64 / seconds.max(1) as f64;
        if result.is_err() {
            self.report.relisted += calls;
        }
        match result {
            Ok(()) => {
                *density = Some(seen);
                *slice = next_slice_seconds(seconds, calls, longest);
                // The guess for the next hour not listed yet comes from the last slice that had
                // calls: after an empty hour (a night, a look-back before the deployment) a busy
                // one would otherwise be guessed empty and listed as one slice.
                if calls > 0 {
                    self.density = *density;
                    self.slice_hint = (*slice).min(MAX_SLICE.whole_seconds());
                }
                Ok(to)
            }
            Err(Stop::Cut) => {
                // The slice held more than was seen of it: at least half as wide next time, and
                // narrower still where what was seen already fills more than a slice.
                *density = Some(density.unwrap_or(0.0).max(seen));
                *slice = next_slice_seconds(seconds, calls, longest)
                    .min(seconds / 2)
                    .max(MIN_SLICE.whole_seconds());
                Err(Stop::Cut)
            }
            Err(other) => Err(other),
        }
    }

    /// `slice` seconds, or fewer so that the slice fits the rest of the budget at `density` (calls
    /// per second of start time) and the page time seen so far; `None` when not even
    /// [`MIN_SLICE`] would.
    fn fitting_slice(&self, slice: i64, density: Option<f64>) -> Option<i64> {
        let Some(density) = density.filter(|d| *d > 0.0) else {
            return Some(slice);
        };
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs_f64();
        // Pages are filled to nine tenths in the estimate: a density is only a guess.
        let pages = (left / self.page_seconds).floor();
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let seconds = (pages * 0.9 * LIST_PAGE / density).min(slice as f64) as i64;
        if seconds >= MIN_SLICE.whole_seconds() {
            Some(seconds)
        } else if self.slices == 0 {
            // A run lists at least one slice, however short its budget: else none would progress.
            Some(MIN_SLICE.whole_seconds().min(slice))
        } else {
            None
        }
    }

    /// Sweeps a waiting span oldest first in slices sized as the hours' are, recording its
    /// progress after each slice. `false`: out of time.
    async fn span(&mut self, window: &Window) -> Result<bool, Stop> {
        let lifecycle = &self.state.lifecycle;
        // Graph lists nothing older than its retention.
        let mut at = window.next.max(self.state.clock.now() - RETENTION);
        let mut density = window.density.or(self.density);
        // A span not listed before starts as dense as the last slice listed; where none was, or
        // it was empty, with an hour, as an hour's pass does: six hours unseen could hold a
        // large tenant's business day, which no budget lists.
        let mut slice = match (window.slice_seconds, density) {
            (s, _) if s > 0 => s,
            (_, Some(d)) if d > 0.0 => slice_for_density(d, MAX_SPAN_SLICE),
            _ => MAX_SLICE.whole_seconds(),
        };
        while at < window.to {
            match self
                .sized_slice(at, window.to, MAX_SPAN_SLICE, &mut slice, &mut density)
                .await
            {
                Ok(to) => {
                    at = to;
                    lifecycle.advance_window(window, to, slice, density).await?;
                }
                Err(Stop::OutOfTime) => return Ok(false),
                Err(Stop::Cut) => {
                    lifecycle.advance_window(window, at, slice, density).await?;
                    return Ok(false);
                }
                Err(other) => return Err(other),
            }
        }
        // Nothing (or nothing within retention) was left of it: it is done.
        lifecycle
            .advance_window(window, window.to, slice, density)
            .await?;
        Ok(true)
    }

    /// Lists the calls started in `[from, to)` and queues those not stored at the listed version.
    /// [`Stop::OutOfTime`] when the budget is spent before it starts; [`Stop::Cut`] when it runs
    /// out between two pages.
    async fn slice(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> Result<(), Stop> {
        if self.out_of_time() {
            return Err(Stop::OutOfTime);
        }
        // Only the records of this slice are looked up: memory and storage reads follow the calls
        // listed, however large the day.
        let stored = self.state.records.stored_versions(from, to).await?;
        let graph = &self.state.graph;
        let mut asked = tokio::time::Instant::now();
        let mut response = graph.call_record_list(from, to).await?;
        for _ in 0..MAX_PAGES {
            let took = asked.elapsed().as_secs_f64();
            self.page_seconds = 0.7 * self.page_seconds + 0.3 * took;
            let page: ListedPage = serde_json::from_slice(&response.body)
                .map_err(|_| Stop::Pages("a call-record list page did not read as one"))?;
            let mut jobs = Vec::new();
            for listed in page.value {
                self.report.listed += 1;
                let id = normalize_id(&listed.id);
                if !is_valid_id(&id) {
                    tracing::warn!("Graph listed a call record whose id cannot be a key; skipped");
                    continue;
                }
                let version = match listed.start_date_time {
                    Some(_) => stored.get(&id).copied(),
                    None => self.undated_version(&id).await?,
                };
                if needs_fetch(listed.version, version) && self.queued.insert(id.clone()) {
                    jobs.push(job(self.state, id, "reconcile"));
                }
            }
            if !jobs.is_empty() {
                self.state
                    .queue
                    .send_all_json(&jobs, ENQUEUE_CONCURRENCY)
                    .await?;
                self.report.enqueued += jobs.len() as u64;
                tracing::info!(queued = jobs.len(), %from, %to, "records missing or out of date queued");
            }
            match page.next_link {
                None => return Ok(()),
                Some(_) if self.out_of_time() => return Err(Stop::Cut),
                Some(next) => {
                    asked = tokio::time::Instant::now();
                    response = graph.call_record_list_next(&next).await?;
                }
            }
        }
        Err(Stop::Pages("the call-record list pages without end"))
    }

    async fn undated_version(&mut self, id: &str) -> Result<Option<i64>, StoreError> {
        if self.undated.is_none() {
            self.undated = Some(self.state.records.stored_versions_without_start().await?);
        }
        Ok(self.undated.as_ref().and_then(|v| v.get(id)).copied())
    }

    /// Queues once more each record given up on that Graph still keeps and that was not already
    /// retried since it was given up.
    async fn retry_given_up(&mut self) -> Result<(), StoreError> {
        let now = self.state.clock.now();
        for row in self.state.records.given_up().await? {
            let retries = row.get_i32("Retries").unwrap_or(0);
            // A retry's job is received anew; Graph's retention counts from the first.
            let first_received = row
                .get_datetime("FirstReceivedAt")
                .or_else(|| row.get_datetime("ReceivedAt"));
            if !retry_given_up(
                first_received,
                row.get_datetime("GaveUpAt"),
                (row.get_datetime("RetriedAt"), retries),
                now,
            ) {
                continue;
            }
            let id = normalize_id(&row.row_key);
            if !is_valid_id(&id) {
                continue;
            }
            self.state
                .queue
                .send_json(&job(self.state, id.clone(), "retry"), 0)
                .await?;
            self.state
                .records
                .mark_retried(&row.row_key, retries + 1, first_received, now)
                .await?;
            self.report.retried += 1;
            tracing::info!(call_record_id = %id, "a record given up on is tried again");
        }
        Ok(())
    }
}

/// A fetch the app asks for itself (`change_type` says why: `reconcile`, `retry`, `reprocess`).
pub(crate) fn job(state: &Services, id: String, why: &str) -> CallRecordJob {
    CallRecordJob {
        id,
        change_type: why.to_owned(),
        tenant_id: state.notifications.tenant_id.clone(),
        subscription_id: String::new(),
        received_at: state.clock.now(),
        attempt: 0,
        not_before: None,
        repair: false,
    }
}
