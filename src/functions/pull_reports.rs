//! `PullReports` (timer, `REPORTS_SCHEDULE`, every 15 minutes by default): pulls the PSTN and the
//! Direct Routing report into `PstnCalls` and `DirectRoutingCalls`, one report after the other.
//!
//! For each report: take its lease in `AppState` (another pull of the same report, on another
//! instance or in standalone mode beside the host, skips and says so), plan the windows from the
//! checkpoint ([`crate::domain::reports::plan`]), and read them oldest first, page by page: each
//! page is written (upserts by row id) before the next is read, so memory stays flat whatever the
//! window holds, and the checkpoint moves past a window only once all of its pages are stored. A
//! pull that dies midway resumes from the last completed window; one that Graph throttles, refuses
//! or fails stops there and the next run goes on. The invocation fails only when storage fails.

use tracing::Instrument as _;

use crate::domain::directory::Directory;
use crate::domain::reports::{Plan, Report, Window, frontier_first, plan};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::graph::pages::ListPage;
use crate::services::Services;
use crate::store::StoreError;
use crate::store::reports::{BadRow, Finish, Held};

/// The `name` of the timer binding in `handlers/PullReports/function.json`.
pub(crate) const BINDING: &str = "timer";

/// Far more pages than one day of a report has: past this, Graph is paging in circles.
const MAX_PAGES: usize = 10_000;
/// Completed windows are written to the checkpoint once this many rows or this much time has gone
/// by since the last write, and at the end of the run: a write per window would cost more storage
/// requests than the rows of a quiet day, and a crash re-reads at most this much.
const CHECKPOINT_EVERY_ROWS: u64 = 10_000;
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Completed windows not yet written to the checkpoint.
struct Pending {
    through: Option<time::OffsetDateTime>,
    /// How far the deep pull under way has re-read.
    deep_next: Option<time::OffsetDateTime>,
    stored: u64,
    bad: Vec<BadRow>,
    since: tokio::time::Instant,
}

impl Pending {
    fn new() -> Self {
        Self {
            through: None,
            deep_next: None,
            stored: 0,
            bad: Vec::new(),
            since: tokio::time::Instant::now(),
        }
    }

    fn is_due(&self) -> bool {
        self.stored >= CHECKPOINT_EVERY_ROWS || self.since.elapsed() >= CHECKPOINT_EVERY
    }

    fn is_empty(&self) -> bool {
        self.through.is_none()
            && self.deep_next.is_none()
            && self.stored == 0
            && self.bad.is_empty()
    }
}

/// One run: both reports, one after the other.
///
/// # Errors
/// When storage fails.
pub(crate) async fn run(state: &Services) -> Result<(), InvocationError> {
    for report in Report::ALL {
        pull(state, report)
            .instrument(tracing::info_span!("report", report = report.key()))
            .await?;
    }
    Ok(())
}

/// Why a window stopped before its last page.
enum Stop {
    /// Graph throttled, failed or refused: the next run tries again from the checkpoint.
    Graph(GraphError),
    /// Graph's pages did not read as a report page, or paged without end.
    Pages(String),
    /// Another pull took the report over (our lease ran out).
    Taken,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

async fn pull(state: &Services, report: Report) -> Result<(), InvocationError> {
    let config = &state.reports_config;
    let owner = crate::random::token();
    let now = state.clock.now();
    let until = now + state.clock.clock_span(config.lease);
    let mut held = match state.reports.claim(report, &owner, now, until).await? {
        Ok(held) => held,
        Err(taken) => {
            tracing::info!(until = %taken.until, outcome = "skipped", "another pull holds this report");
            return Ok(());
        }
    };
    // The department and cost centre the rows get (none while DIRECTORY_SYNC is off); read once a
    // pull, so that a sync finished meanwhile counts from the next.
    let directory = state.users.snapshot(std::time::Duration::ZERO).await?;
    let Plan { windows, deep } = plan(&held.checkpoint, now, &config.settings);
    // New windows first (their rows are new to the read API's log, or were stored by a pull that
    // died before its checkpoint and are logged again: allowed), then the re-reads.
    let windows = frontier_first(&windows, held.checkpoint.through);
    let started = tokio::time::Instant::now();
    let mut finish = Finish::default();
    let mut rows = 0u64;
    let mut requests = 0u64;
    let mut completed = 0usize;
    let mut pending = Pending::new();
    for (window, fresh) in &windows {
        // A run reads at least one window, so that even a budget spent by the start goes on.
        if completed > 0 && started.elapsed() > config.run_budget {
            finish.error = Some("the run's time budget ran out; the next run goes on".to_owned());
            break;
        }
        match pull_window(state, &mut held, *window, *fresh, &directory, &mut requests).await {
            Ok((stored, bad)) => {
                rows += stored;
                completed += 1;
                // A new window complete: the checkpoint may move past it (new windows come in
                // time order; a re-read lies before the checkpoint and leaves it where it is).
                if *fresh {
                    pending.through = Some(window.to);
                } else if deep {
                    // The re-reads come oldest first: a deep pull cut short after this window
                    // goes on from its end next time, instead of starting over.
                    pending.deep_next = Some(window.to);
                }
                pending.stored += stored;
                pending.bad.extend(bad);
                if pending.is_due() && !flush(state, &mut held, &mut pending).await? {
                    return Ok(());
                }
            }
            Err(Stop::Store(e)) => return Err(e.into()),
            Err(Stop::Taken) => {
                tracing::warn!(
                    outcome = "taken_over",
                    "another pull took this report over; stopping"
                );
                return Ok(());
            }
            Err(Stop::Graph(e)) => {
                // A permission or identity problem an admin must fix, as for the fetch.
                let refusal = match &e {
                    GraphError::Unauthorized { status, code } => Some((*status, code.as_str())),
                    GraphError::Credential(_) => Some((0, "credential")),
                    _ => None,
                };
                if let Some((status, code)) = refusal {
                    state
                        .records
                        .record_graph_refusal(status, code, state.clock.now())
                        .await?;
                }
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "report pull stopped");
                finish.error = Some(e.to_string());
                break;
            }
            Err(Stop::Pages(what)) => {
                tracing::warn!(error = %what, "report pull stopped");
                finish.error = Some(what);
                break;
            }
        }
    }
    if !pending.is_empty() && !flush(state, &mut held, &mut pending).await? {
        return Ok(());
    }
    finish.complete = completed == windows.len();
    finish.deep_done = (finish.complete && deep).then_some(now);
    tracing::info!(
        windows = windows.len(),
        completed,
        deep,
        rows,
        graph_requests = requests,
        through = ?held.checkpoint.through,
        outcome = if finish.complete { "pulled" } else { "partial" },
        "report pulled"
    );
    state
        .reports
        .finish(held, &finish, state.clock.now())
        .await?;
    Ok(())
}

/// Writes the pending windows to the checkpoint; `false` (logged) when another pull took the
/// report over and this one must stop.
async fn flush(
    state: &Services,
    held: &mut Held,
    pending: &mut Pending,
) -> Result<bool, InvocationError> {
    let marks = (pending.through, pending.deep_next);
    match keep_lease(state, held, marks, pending.stored, &pending.bad).await {
        Ok(()) => {
            *pending = Pending::new();
            Ok(true)
        }
        Err(Stop::Store(e)) => Err(e.into()),
        Err(_) => {
            tracing::warn!(
                outcome = "taken_over",
                "another pull took this report over; stopping"
            );
            Ok(false)
        }
    }
}

/// Reads every page of one window, storing each before the next. Returns the rows stored and the
/// rows refused.
async fn pull_window(
    state: &Services,
    held: &mut Held,
    window: Window,
    fresh: bool,
    directory: &Directory,
    requests: &mut u64,
) -> Result<(u64, Vec<BadRow>), Stop> {
    let report = held.report;
    let mut response = state
        .graph
        .report_page(report, window)
        .await
        .map_err(Stop::Graph)?;
    *requests += 1;
    let mut seen = std::collections::HashSet::new();
    let mut stored = 0;
    let mut bad = Vec::new();
    loop {
        let page = ListPage::parse(&response.body)
            .map_err(|e| Stop::Pages(format!("{} page: {e}", report.function())))?;
        let written = state
            .reports
            .write_page(report, &page.value, fresh, directory)
            .await?;
        log_bad_rows(&written.bad);
        stored += written.stored;
        bad.extend(written.bad);
        let Some(next) = page.next else {
            return Ok((stored, bad));
        };
        if seen.len() >= MAX_PAGES || !seen.insert(next.clone()) {
            return Err(Stop::Pages(format!(
                "{}: next links repeat or do not end",
                report.function()
            )));
        }
        // Renewed only when half of it has passed: a page costs no checkpoint write.
        let lease = state.clock.clock_span(state.reports_config.lease);
        if held.until() - state.clock.now() < lease / 2 {
            keep_lease(state, held, (None, None), 0, &[]).await?;
        }
        response = state
            .graph
            .report_next_page(report, &next)
            .await
            .map_err(Stop::Graph)?;
        *requests += 1;
    }
}

/// Adds a page's counts to the checkpoint row, moves it to `through` and the deep pull's place
/// to `deep_next` (`marks`) when given, and extends the lease; [`Stop::Taken`] when another pull took the report over.
async fn keep_lease(
    state: &Services,
    held: &mut Held,
    marks: (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>),
    stored: u64,
    bad: &[BadRow],
) -> Result<(), Stop> {
    let until = state.clock.now() + state.clock.clock_span(state.reports_config.lease);
    if state
        .reports
        .advance(held, marks, stored, bad, until)
        .await?
    {
        Ok(())
    } else {
        Err(Stop::Taken)
    }
}

/// Bad rows are logged by reason (never with their values) and counted on the checkpoint row.
fn log_bad_rows(bad: &[BadRow]) {
    for row in bad {
        tracing::warn!(reason = %row, "report row not stored");
    }
}
