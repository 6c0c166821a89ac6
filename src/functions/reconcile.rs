//! `Reconcile` (timer, `RECONCILE_SCHEDULE`, hourly): the safety net under the notifications. Graph
//! sends no `missed` signal for call records and has had tenant-wide notification outages, so every
//! run lists the calls that started within `RECONCILE_LOOKBACK_HOURS` (26 by default) and queues
//! each record that is not stored, or is stored at a lower version than listed. Then it sweeps the
//! spans waiting in `AppState` (a lost subscription's gap, an admin's backfill), six hours at a
//! time, keeping its progress after each slice; and it sends the records given up on
//! (`FetchFailure`) that Graph still keeps to be fetched once more.
//!
//! One sweep at a time (a lease in `AppState`); a run stops at its time budget and the next one
//! goes on. Graph failing or throttling ends the run early and is recorded; only storage failing
//! fails the invocation. What is queued is fetched by `FetchCallRecord`, which stores a version
//! once however often it is queued.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::domain::job::CallRecordJob;
use crate::domain::notification::{is_valid_id, normalize_id};
use crate::domain::subscription::{
    ListedPage, RETENTION, last_slice, needs_fetch, next_slice, retry_given_up,
};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::columns::partition_day;
use crate::store::lifecycle::{LeaseRow, SweepReport, Window};

/// The `name` of the timer binding in `handlers/Reconcile/function.json`.
pub(crate) const BINDING: &str = "timer";
/// Far more pages than six hours of calls fill: past this, Graph is paging in circles.
const MAX_PAGES: usize = 10_000;
/// Queue writes of one page in flight at once.
const ENQUEUE_CONCURRENCY: usize = 32;
/// Passes over the waiting spans in one run (a span added while the run goes on is taken too).
const MAX_PASSES: usize = 4;

/// Why a span stopped early.
enum Stop {
    /// The run's time budget is spent.
    OutOfTime,
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
        days: HashMap::new(),
        queued: HashSet::new(),
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
        listed = report.listed,
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
    /// Stored versions per `CallRecords` partition (UTC start day) read so far.
    days: HashMap<String, HashMap<String, i64>>,
    /// Ids queued by this run: the look-back and a waiting span overlap, and a record queued once
    /// is not stored before the run ends.
    queued: HashSet<String>,
    deadline: tokio::time::Instant,
}

impl Sweep<'_> {
    /// The look-back, the waiting spans, the records given up on. `false`: incomplete (out of
    /// time, or a span stopped by Graph; the reason is in the report).
    async fn all(&mut self) -> Result<bool, StoreError> {
        let now = self.state.clock.now();
        let lookback = time::Duration::try_from(self.state.subscription.reconcile_lookback)
            .unwrap_or(time::Duration::ZERO);
        // Newest first: should the budget run out, what is left is what earlier runs swept.
        let mut complete = match self.span(now - lookback, now, None).await {
            Ok(done) => done,
            Err(stop) => self.note(stop)?,
        };
        if !complete && self.out_of_time() {
            return Ok(false);
        }
        'passes: for _ in 0..MAX_PASSES {
            let windows = self.state.lifecycle.windows().await?;
            if windows.is_empty() {
                break;
            }
            let mut progressed = false;
            for window in &windows {
                tracing::info!(from = %window.next, to = %window.to, reason = %window.reason, "sweeping a waiting span");
                // One span that Graph refuses or fails does not hold up the others.
                match self.span(window.next, window.to, Some(window)).await {
                    Ok(true) => progressed = true,
                    Ok(false) => return Ok(false),
                    Err(stop) => complete = self.note(stop)? && complete,
                }
                if self.out_of_time() {
                    return Ok(false);
                }
            }
            if !progressed {
                break 'passes;
            }
        }
        self.retry_given_up().await?;
        Ok(complete)
    }

    fn out_of_time(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Records why a span stopped; storage failing ends the run.
    fn note(&mut self, stop: Stop) -> Result<bool, StoreError> {
        let why = match stop {
            Stop::Store(e) => return Err(e),
            Stop::OutOfTime => return Ok(false),
            Stop::Graph(e) => e.to_string(),
            Stop::Pages(why) => why.to_owned(),
        };
        tracing::warn!(error = %why, "a span was not swept to its end; the next run goes on");
        self.report.error = Some(why);
        Ok(false)
    }

    /// Sweeps `[from, to)` slice by slice: a waiting span oldest first, recording its progress
    /// after each slice; the look-back (no `window`) newest first. `false`: out of time.
    async fn span(
        &mut self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        window: Option<&Window>,
    ) -> Result<bool, Stop> {
        // Graph lists nothing older than its retention.
        let from = from.max(self.state.clock.now() - RETENTION);
        let Some(window) = window else {
            let mut end = to;
            while let Some((start, _)) = last_slice(from, end) {
                if let Err(stop) = self.slice(start, end).await {
                    return match stop {
                        Stop::OutOfTime => Ok(false),
                        other => Err(other),
                    };
                }
                end = start;
            }
            return Ok(true);
        };
        let mut at = from;
        while let Some((a, b)) = next_slice(at, to) {
            match self.slice(a, b).await {
                Ok(()) => {}
                Err(Stop::OutOfTime) => return Ok(false),
                Err(other) => return Err(other),
            }
            at = b;
            self.state.lifecycle.advance_window(window, b).await?;
        }
        // Nothing (or nothing within retention) was left of it: it is done.
        self.state
            .lifecycle
            .advance_window(window, window.to)
            .await?;
        Ok(true)
    }

    /// Lists the calls started in `[from, to)` and queues those not stored at the listed version.
    /// Stops with [`Stop::OutOfTime`] between pages once the run's budget is spent.
    async fn slice(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> Result<(), Stop> {
        if self.out_of_time() {
            return Err(Stop::OutOfTime);
        }
        // Only the days of this slice are looked up: memory stays bounded however long the span.
        let (first_day, last_day) = (
            partition_day(Some(from)),
            partition_day(Some(to - time::Duration::NANOSECOND)),
        );
        self.days
            .retain(|day, _| *day >= first_day && *day <= last_day);
        let graph = &self.state.graph;
        let mut response = graph.call_record_list(from, to).await?;
        for _ in 0..MAX_PAGES {
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
                let day = partition_day(listed.start_date_time);
                let stored = self.stored_version(&day, &id).await?;
                if needs_fetch(listed.version, stored) && self.queued.insert(id.clone()) {
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
                Some(_) if self.out_of_time() => return Err(Stop::OutOfTime),
                Some(next) => response = graph.call_record_list_next(&next).await?,
            }
        }
        Err(Stop::Pages("the call-record list pages without end"))
    }

    async fn stored_version(&mut self, day: &str, id: &str) -> Result<Option<i64>, StoreError> {
        if !self.days.contains_key(day) {
            let versions = self.state.records.stored_versions(day).await?;
            self.days.insert(day.to_owned(), versions);
        }
        Ok(self.days.get(day).and_then(|d| d.get(id)).copied())
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
