//! `Purge` (timer, `PURGE_SCHEDULE`, daily): deletes the rows of calls that started more than
//! `RETENTION_DAYS` ago from every data table (the call records with their sessions and documents,
//! the PSTN and Direct Routing rows), never `AppState`. One run at a time (a lease in `AppState`);
//! a run stops after its budget and the next one goes on where it stopped: what is left is simply
//! what is still old (see `store::purge`).

use crate::error::InvocationError;
use crate::services::Services;
use crate::store::columns::partition_day;
use crate::store::lifecycle::LeaseRow;
use crate::store::purge::Purged;

/// The `name` of the timer binding in `handlers/Purge/function.json`.
pub(crate) const BINDING: &str = "timer";

/// One run; `None` when another run holds the lease.
///
/// # Errors
/// When storage fails (recorded on the `Purge` row too).
pub(crate) async fn run(state: &Services) -> Result<Option<Purged>, InvocationError> {
    let retention = &state.retention;
    let now = state.clock.now();
    let owner = crate::random::token();
    let Some(held) = state
        .lifecycle
        .claim(
            LeaseRow::Purge,
            &owner,
            now,
            now + state.clock.clock_span(retention.budget * 2),
        )
        .await?
    else {
        tracing::info!(outcome = "skipped", "another purge is running");
        return Ok(None);
    };
    // Whole days: a call is kept until the end of its start day's last retained day.
    let cutoff = partition_day(Some(now - time::Duration::days(i64::from(retention.days))));
    let deadline = tokio::time::Instant::now() + retention.budget;
    let mut result = state.purger.purge_before(&cutoff, deadline).await;
    // The read API's log goes by when entries were appended: as long as the rows they copy.
    let mut feed_entries = 0;
    if let Ok(purged) = &mut result
        && purged.complete
    {
        match state
            .read
            .feed
            .purge(
                now - time::Duration::days(i64::from(retention.days)),
                deadline,
            )
            .await
        {
            Ok((n, complete)) => {
                feed_entries = n;
                purged.complete = complete;
            }
            Err(e) => result = Err(e),
        }
    }
    let done = state.clock.now();
    match result {
        Ok(purged) => {
            tracing::info!(
                %cutoff,
                call_records = purged.call_records,
                report_rows = purged.report_rows,
                feed_entries,
                complete = purged.complete,
                "purged"
            );
            state
                .lifecycle
                .purge_done(
                    held,
                    (purged.call_records, purged.report_rows, purged.complete),
                    None,
                    done,
                )
                .await?;
            Ok(Some(purged))
        }
        Err(e) => {
            let text = format!("storage failed: {e}");
            state
                .lifecycle
                .purge_done(held, (0, 0, false), Some(&text), done)
                .await?;
            Err(e.into())
        }
    }
}
