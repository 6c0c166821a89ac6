//! `FetchCallRecord` (queue trigger on `callrecord-ids`): reads one call record completely from
//! Graph and stores it, keeping the highest `version`.
//!
//! The invocation succeeds (2xx, the host deletes the message) whenever the outcome is settled:
//! stored, already stored, put back on the queue for later (not yet available, throttled, Graph
//! failing or refusing our token; see [`crate::domain::fetch`]), given up and recorded, or an
//! unreadable message dropped and recorded. It fails (5xx, the host retries and finally poisons the
//! message) only when storage fails, because then neither the result nor the retry could be saved.

use std::hash::BuildHasher as _;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::app::AppState;
use crate::domain::callrecord::flatten;
use crate::domain::fetch::{self, GiveUp, Next, Setback};
use crate::domain::job::CallRecordJob;
use crate::domain::notification::is_valid_id;
use crate::domain::write::{Decision, decide};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::graph::callrecords::FetchError;
use crate::host::invocation::{InvocationResponse, QueueInvocation};
use crate::store::callrecords::Saved;

/// The `name` of the queue-trigger binding in `handlers/FetchCallRecord/function.json`.
pub(crate) const BINDING: &str = "job";

/// The longest the Graph part of one fetch may take (every page, with the client's waits).
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

pub(crate) async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InvocationResponse>, InvocationError> {
    // A payload we cannot read (a renamed binding, a new host shape) fails the invocation: the
    // host retries the message and then moves it to the poison queue, where it stays visible,
    // instead of it being deleted unread.
    let invocation = QueueInvocation::decode(&body, BINDING)?;
    let job = match serde_json::from_str::<CallRecordJob>(&invocation.message) {
        Ok(job) if is_valid_id(&job.id) => job,
        parsed => {
            let reason = match parsed {
                Ok(_) => "invalid call record id",
                Err(_) => "not a call-record job",
            };
            let message_id = invocation
                .message_id
                .clone()
                .unwrap_or_else(|| crate::host::invocation_id(&headers));
            state
                .records
                .record_dropped(&message_id, reason, &invocation.message, state.clock.now())
                .await?;
            tracing::warn!(
                reason,
                message_id,
                length = invocation.message.len(),
                outcome = "dropped",
                "queue message dropped"
            );
            return Ok(Json(InvocationResponse::done()));
        }
    };
    let span = tracing::info_span!(
        "fetch_call_record",
        invocation_id = %crate::host::invocation_id(&headers),
        call_record_id = %job.id,
        attempt = job.attempt,
        dequeue_count = invocation.dequeue_count,
    );
    fetch(&state, job).instrument(span).await?;
    Ok(Json(InvocationResponse::done()))
}

async fn fetch(state: &AppState, job: CallRecordJob) -> Result<(), InvocationError> {
    let now = state.clock.now();
    if let Some(due) = job.not_before.filter(|due| *due > now) {
        // Surfaced before its time (the queue's delay is capped): back it goes, untouched.
        put_back(state, &job, due, now).await?;
        tracing::debug!(outcome = "early", %due, "not due yet");
        return Ok(());
    }
    let first = match state.graph.call_record_first_page(&job.id).await {
        Ok(first) => first,
        Err(e) => return setback(state, &job, e).await,
    };
    let version = first.version;
    let read = state.records.read(&job.id).await?;
    if let Some(stored) = read.state()
        && let Decision::Skip(stored) = decide(Some(&stored), version, now, job.repair)
    {
        // Saves the remaining pages: the same version is stored already (a duplicate
        // notification, a redelivery) or a newer one (an out-of-order notification).
        tracing::info!(version, stored, outcome = "unchanged", "already stored");
        return Ok(());
    }
    // Bounded well below the host's function timeout, so that a fetch Graph keeps slow is put back
    // by us rather than abandoned by the host while it still runs.
    let (document, count) = match tokio::time::timeout(
        FETCH_DEADLINE,
        state.graph.complete_call_record(&job.id, first),
    )
    .await
    {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return setback(state, &job, e).await,
        Err(_) => return setback(state, &job, FetchError::Deadline).await,
    };
    let (summary, sessions) = match flatten(&document) {
        // The rows are keyed by the id we were asked for: a document about another record is not
        // one we can store under it.
        Ok(flat) if flat.0.id.eq_ignore_ascii_case(&job.id) => flat,
        Ok(flat) => {
            let detail = format!("Graph answered with record {}", flat.0.id);
            return give_up(state, &job, GiveUp::Unreadable, &detail).await;
        }
        Err(e) => return give_up(state, &job, GiveUp::Unreadable, &e.to_string()).await,
    };
    let clock = state.clock.clone();
    let saved = state
        .records
        .save(
            &document,
            &summary,
            &sessions,
            job.repair,
            read,
            &move || clock.now(),
        )
        .await?;
    match saved {
        Saved::Written => {
            tracing::info!(
                version,
                sessions = sessions.len(),
                participants = summary.participant_count,
                bytes = document.len(),
                graph_requests = count.requests,
                outcome = "stored",
                "call record stored"
            );
        }
        Saved::Unchanged { stored } => {
            tracing::info!(version, stored, outcome = "unchanged", "already stored");
        }
        Saved::Busy { retry_in } => {
            // Another writer holds the record; come back when its lease has run out.
            let now = state.clock.now();
            let due = now + retry_in + time::Duration::seconds(1);
            put_back(state, &job, due, now).await?;
            tracing::info!(outcome = "busy", %due, "another writer holds the record");
        }
        Saved::Superseded { retry_in } => {
            // We may have written rows after another writer took over: have the record rewritten
            // at its latest version once that writer is done.
            let now = state.clock.now();
            let mut repair = job.clone();
            repair.repair = true;
            put_back(state, &repair, now + retry_in, now).await?;
            tracing::warn!(
                outcome = "superseded",
                "another writer took over the record; a repair is queued"
            );
        }
    }
    Ok(())
}

/// A Graph failure: try again later or give up, per [`fetch::after`].
async fn setback(
    state: &AppState,
    job: &CallRecordJob,
    error: FetchError,
) -> Result<(), InvocationError> {
    let kind = match &error {
        FetchError::Graph(GraphError::NotFound) => Setback::NotFound,
        FetchError::Graph(GraphError::Throttled { retry_after }) => Setback::Throttled {
            retry_after: *retry_after,
        },
        FetchError::Graph(
            refusal @ (GraphError::Unauthorized { .. } | GraphError::Credential(_)),
        ) => {
            // A permission or identity problem an admin must fix: the record waits for it, and the
            // health check sees the refusal at once.
            tracing::error!(error = %crate::store::error_chain(&error), "Graph refused the app");
            let (status, code) = match refusal {
                GraphError::Unauthorized { status, code } => (*status, code.as_str()),
                _ => (0, "credential"),
            };
            state
                .records
                .record_graph_refusal(status, code, state.clock.now())
                .await?;
            Setback::Refused
        }
        FetchError::Graph(GraphError::Transient(_)) => Setback::Unavailable,
        FetchError::Graph(GraphError::Fatal(_)) => {
            return give_up(
                state,
                job,
                GiveUp::Rejected,
                &crate::store::error_chain(&error),
            )
            .await;
        }
        FetchError::Page(_) | FetchError::Deadline => Setback::Unavailable,
    };
    let now = state.clock.now();
    match fetch::after(job, kind, now, &state.fetch_policy, jitter_unit()) {
        Next::RetryAt { due, job: next } => {
            put_back(state, &next, due, now).await?;
            tracing::info!(
                setback = ?kind,
                %due,
                next_attempt = next.attempt,
                outcome = "retry",
                "fetch put back on the queue"
            );
            Ok(())
        }
        Next::GiveUp(reason) => {
            give_up(state, job, reason, &crate::store::error_chain(&error)).await
        }
    }
}

async fn give_up(
    state: &AppState,
    job: &CallRecordJob,
    reason: GiveUp,
    detail: &str,
) -> Result<(), InvocationError> {
    state
        .records
        .record_failure(job, reason, detail, state.clock.now())
        .await?;
    tracing::error!(
        reason = reason.as_str(),
        detail,
        outcome = "gave_up",
        "call record given up; recorded for the health check"
    );
    Ok(())
}

/// Enqueues `job` again, hidden until `due` as far as the queue allows.
async fn put_back(
    state: &AppState,
    job: &CallRecordJob,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), InvocationError> {
    let mut job = job.clone();
    job.not_before = Some(due);
    let delay = fetch::queue_delay(due, now, state.max_queue_delay);
    // Whole seconds, rounded up: a message that surfaced a fraction early would be put back again.
    let secs =
        u32::try_from(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).unwrap_or(u32::MAX);
    state.queue.send_json(&job, secs).await?;
    Ok(())
}

/// A number in `[0, 1)` for retry jitter. `RandomState` is seeded randomly per instance, which is all
/// the randomness jitter needs.
fn jitter_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8) >> 11;
    // 53 random bits scaled into [0, 1): exact in an f64.
    bits as f64 / (1u64 << 53) as f64
}
