//! `SyncDirectory` (timer, `DIRECTORY_SYNC_SCHEDULE`, hourly; does nothing unless `DIRECTORY_SYNC`
//! is on): keeps the `Users` table in step with Entra ID through Graph's users delta query.
//!
//! The first run reads every user (a full sync), later runs only what changed, from the delta link
//! the last sync ended with. Each page is written before the next is read, and the next link is
//! kept in `AppState` with it, so a run cut short by its budget, a crash or a throttled Graph goes
//! on from the page it stopped at. When Graph no longer accepts a link (a delta link older than
//! Graph's 7 days, or a sync state Graph reset), the sync starts a full sync again; a full sync
//! over the table changes only the users that differ. One run at a time (a lease in `AppState`).
//! The invocation fails only when storage fails; a Graph failure is recorded and the next run
//! tries again.

use crate::domain::directory::UserChange;
use crate::error::InvocationError;
use crate::graph::users::{DeltaPage, is_sync_state_gone};
use crate::services::Services;
use table_storage::EdmValue;

/// The `name` of the timer binding in `handlers/SyncDirectory/function.json`.
pub(crate) const BINDING: &str = "timer";

/// Far more pages than a directory has: past this, Graph is paging in circles.
const MAX_PAGES: u64 = 100_000;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(crate) pages: u64,
    /// Users whose row changed (new, changed, removed).
    pub(crate) changed: u64,
    /// New versions of a department or cost centre.
    pub(crate) versions: u64,
    /// Items that were not a user we can store (no object id).
    pub(crate) skipped: u64,
    /// The run read from the start of the directory (the first sync, or after Graph refused the
    /// link it had).
    pub(crate) full: bool,
    /// The run reached Graph's delta link: the table is in step.
    pub(crate) complete: bool,
    /// Why the run stopped before that (Graph's failure, the budget).
    pub(crate) stopped: Option<String>,
}

/// One run; `None` when the sync is off or another run holds the lease.
///
/// # Errors
/// When storage fails.
pub(crate) async fn run(state: &Services) -> Result<Option<Synced>, InvocationError> {
    let config = &state.directory;
    if !config.enabled {
        tracing::debug!(outcome = "off", "DIRECTORY_SYNC is off");
        return Ok(None);
    }
    let now = state.clock.now();
    let owner = crate::random::token();
    let until = |now| now + state.clock.clock_span(config.budget * 2);
    let Some((mut held, sync)) = state.users.claim(&owner, now, until(now)).await? else {
        tracing::info!(outcome = "skipped", "another directory sync is running");
        return Ok(None);
    };
    let mut loaded = match state.users.load().await {
        Ok(loaded) => loaded,
        Err(e) => {
            // Recorded (the health check's `directoryStale` reads it) and the lease let go.
            let now = state.clock.now();
            let mut columns = vec![
                (
                    "LastError",
                    EdmValue::String(format!("storage failed: {e}")),
                ),
                ("LastErrorAt", EdmValue::DateTime(now)),
                ("LastRunAt", EdmValue::DateTime(now)),
            ];
            if sync.first_run.is_none() {
                columns.push(("FirstRunAt", EdmValue::DateTime(now)));
            }
            let _ = held.release(now, columns).await;
            return Err(e.into());
        }
    };
    let deadline = tokio::time::Instant::now() + config.budget;
    let mut link = sync.next_link.clone().or_else(|| sync.delta_link.clone());
    // A run that died after writing users but before moving the revision left readers on their
    // old copy: move it now, so that they read the table again whatever this run changes.
    let mut revision = sync.revision + i64::from(sync.unreleased);
    let mut done = Synced {
        // No delta link yet: a full read is under way (perhaps over several runs) or starts now.
        full: sync.delta_link.is_none(),
        ..Synced::default()
    };
    // Cleared once a full sync starts over: the old delta link must not be used again.
    let mut delta_link = sync.delta_link.clone();
    let mut restarted = false;
    // A next link of the full read was written since the restart (which replaced the refused one).
    let mut renewed_since_restart = false;
    let delta = loop {
        let answer = match &link {
            None => state.graph.users_delta().await,
            Some(link) => state.graph.users_delta_link(link).await,
        };
        let response = match answer {
            Ok(response) => response,
            Err(e) if link.is_some() && !restarted && is_sync_state_gone(&e) => {
                tracing::warn!(error = %e, "Graph no longer accepts the sync's link; a full sync starts");
                restarted = true;
                renewed_since_restart = false;
                done.full = true;
                link = None;
                delta_link = None;
                continue;
            }
            Err(e) => break Err(format!("Graph: {e}")),
        };
        let Ok(page) = DeltaPage::parse(&response.body) else {
            break Err("Graph's answer is not a users delta page".to_owned());
        };
        let mut changes = Vec::with_capacity(page.value.len());
        for item in &page.value {
            match UserChange::parse(item) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    tracing::warn!(reason = %e, "a users delta item was skipped");
                    done.skipped += 1;
                }
            }
        }
        let applied = state
            .users
            .apply(&mut loaded, &changes, state.clock.now())
            .await?;
        done.pages += 1;
        done.changed += applied.changed;
        done.versions += applied.versions;
        if applied.changed > 0 {
            revision += 1;
        }
        match (page.next, page.delta) {
            (Some(next), _) => {
                let now = state.clock.now();
                let columns = vec![
                    ("NextLink", EdmValue::String(next.clone())),
                    (
                        "DeltaLink",
                        EdmValue::String(delta_link.clone().unwrap_or_default()),
                    ),
                    ("Revision", EdmValue::Int64(revision)),
                ];
                if !held.renew(until(now), columns).await? {
                    tracing::warn!(outcome = "taken_over", "another sync took over; stopping");
                    return Ok(Some(done));
                }
                renewed_since_restart = true;
                link = Some(next);
                if done.pages >= MAX_PAGES {
                    break Err(format!("Graph paged past {MAX_PAGES} pages; stopped"));
                }
                if tokio::time::Instant::now() > deadline {
                    break Err("the run's time budget ran out; the next run goes on".to_owned());
                }
            }
            (None, Some(delta)) => break Ok(delta),
            (None, None) => {
                break Err("Graph's page has neither a next nor a delta link".to_owned());
            }
        }
    };
    let now = state.clock.now();
    let mut columns = vec![
        ("Revision", EdmValue::Int64(revision)),
        ("Users", EdmValue::Int64(loaded.users() as i64)),
        ("LastRunAt", EdmValue::DateTime(now)),
        ("LastChanged", EdmValue::Int64(done.changed as i64)),
    ];
    if restarted {
        columns.push(("LastRestartAt", EdmValue::DateTime(now)));
    }
    if sync.first_run.is_none() {
        columns.push(("FirstRunAt", EdmValue::DateTime(now)));
    }
    match delta {
        Ok(delta) => {
            done.complete = true;
            columns.extend([
                ("NextLink", EdmValue::String(String::new())),
                ("DeltaLink", EdmValue::String(delta)),
                ("LastSyncAt", EdmValue::DateTime(now)),
                ("LastError", EdmValue::String(String::new())),
            ]);
            if done.full {
                columns.push(("LastFullSyncAt", EdmValue::DateTime(now)));
            }
            tracing::info!(
                pages = done.pages,
                changed = done.changed,
                versions = done.versions,
                skipped = done.skipped,
                full = done.full,
                outcome = "in_step",
                "directory synced"
            );
        }
        Err(why) => {
            // The next run goes on from the last page written (`NextLink` as renewed), or from the
            // delta link when no page of this run was.
            if restarted && !renewed_since_restart {
                columns.push(("DeltaLink", EdmValue::String(String::new())));
                columns.push(("NextLink", EdmValue::String(String::new())));
            }
            columns.push(("LastError", EdmValue::String(why.clone())));
            columns.push(("LastErrorAt", EdmValue::DateTime(now)));
            tracing::warn!(
                pages = done.pages,
                changed = done.changed,
                outcome = "stopped",
                reason = %why,
                "directory sync stopped before its end"
            );
            done.stopped = Some(why);
        }
    }
    held.release(now, columns).await?;
    Ok(Some(done))
}
