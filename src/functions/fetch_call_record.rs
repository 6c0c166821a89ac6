//! `FetchCallRecord` (queue trigger on `callrecord-ids`): reads one call record completely from
//! Graph and stores it, keeping the highest `version`.
//!
//! The invocation succeeds (2xx, the host deletes the message) whenever the outcome is settled:
//! stored, already stored, put back on the queue for later (not yet available, throttled, Graph
//! failing or refusing our token; see [`crate::domain::fetch`]), given up and recorded, or an
//! unreadable message dropped and recorded. It fails (5xx, the host retries and finally poisons the
//! message) only when storage fails, because then neither the result nor the retry could be saved.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::domain::callrecord::parse_time;
use crate::domain::callrecord::{attribute, flatten};
use crate::domain::event::{EventAction, message_text};
use crate::domain::fetch::{self, GiveUp, Next, Setback};
use crate::domain::job::CallRecordJob;
use crate::domain::notification::is_valid_id;
use crate::domain::notification::normalize_id;
use crate::domain::write::{Decision, Incoming, decide};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::graph::callrecords::FetchError;
use crate::host::invocation::{InvocationResponse, QueueInvocation};
use crate::services::Services;
use crate::store::callrecords::Saved;
use crate::store::health::Activity;

/// The `name` of the queue-trigger binding in `handlers/FetchCallRecord/function.json`.
pub(crate) const BINDING: &str = "job";

/// The longest the Graph part of one fetch may take (every page, with the client's waits).
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);
/// How often an instance asks whether the directory sync changed the `Users` table (one `AppState`
/// read), rather than on every record: a user's move reaches the records fetched this much later.
const DIRECTORY_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) async fn handle(
    State(state): State<Services>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InvocationResponse>, InvocationError> {
    // A payload we cannot read (a renamed binding, a new host shape) fails the invocation: the
    // host retries the message and then moves it to the poison queue, where it stays visible,
    // instead of it being deleted unread.
    let invocation = QueueInvocation::decode(&body, BINDING)?;
    // Our jobs, or (Event Grid delivery) Graph's CloudEvents, in either encoding (`domain::event`).
    let text = message_text(&invocation.message);
    let parsed = text
        .as_deref()
        .map(|text| (text, serde_json::from_str::<CallRecordJob>(text)));
    let job = match parsed {
        // Normalised here too: messages written by older releases, or by an admin, keep Graph's
        // spelling.
        Some((_, Ok(mut job))) if is_valid_id(&job.id) => {
            job.id = normalize_id(&job.id);
            job
        }
        parsed => {
            if let Some((text, _)) = &parsed
                && let Some(action) = crate::domain::event::classify(
                    text,
                    &super::webhook::expectations(&state.notifications),
                    state.clock.now(),
                )
            {
                let span = tracing::info_span!(
                    "event",
                    invocation_id = %crate::host::invocation_id(&headers),
                    dequeue_count = invocation.dequeue_count,
                );
                event(&state, action).instrument(span).await?;
                return Ok(Json(InvocationResponse::done()));
            }
            let reason = match parsed {
                Some((_, Ok(_))) => "invalid call record id",
                Some((_, Err(_))) => "not a call-record job",
                None => "neither JSON nor base64 of it",
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

/// What a CloudEvent from Event Grid asks: the same fetch as a job (its retries are put back as
/// jobs), a lifecycle event acted on as the `Lifecycle` webhook would, or a rejection counted.
/// Nothing of an event is retried for ever: only a failing fetch fails the invocation, as a job's
/// would.
async fn event(state: &Services, action: EventAction) -> Result<(), InvocationError> {
    match action {
        EventAction::Fetch(job) => {
            super::health::note_activity(state, Activity::Notification);
            let span = tracing::info_span!(
                "fetch_call_record",
                call_record_id = %job.id,
                delivery = "eventGrid",
            );
            fetch(state, job).instrument(span).await
        }
        EventAction::Lifecycle(event) => {
            super::lifecycle::act_on(state, &event).await;
            Ok(())
        }
        EventAction::Rejected(reason) => {
            super::webhook::note_rejections(state, "eventGrid", &[reason]);
            tracing::warn!(
                reason = reason.as_str(),
                outcome = "rejected",
                "Event Grid event dropped"
            );
            Ok(())
        }
    }
}

async fn fetch(state: &Services, job: CallRecordJob) -> Result<(), InvocationError> {
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
    let incoming = Incoming {
        version: first.version,
        last_modified: parse_time(first.last_modified.as_deref()),
    };
    let version = incoming.version;
    let read = state.records.read(&job.id).await?;
    if let Some(stored) = read.state() {
        // Decided before the remaining pages are fetched: a duplicate or stale notification, or
        // one that meets another writer at work, costs one Graph request.
        match decide(Some(&stored), incoming, now, job.repair) {
            Decision::Skip(committed) => {
                if stored.failed {
                    state.records.clear_failure(&job.id).await?;
                }
                tracing::info!(
                    version,
                    stored = committed,
                    outcome = "unchanged",
                    "already stored"
                );
                return Ok(());
            }
            Decision::Wait(retry_in) => return busy(state, &job, retry_in).await,
            Decision::Write => {}
        }
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
    let (mut summary, mut sessions) = match flatten(&document) {
        // The rows are keyed by the id we were asked for: a document about another record is not
        // one we can store under it.
        Ok(flat) if flat.0.id.eq_ignore_ascii_case(&job.id) => flat,
        Ok(flat) => {
            let detail = format!("Graph answered with record {}", flat.0.id);
            return give_up(state, &job, GiveUp::Unreadable, &detail).await;
        }
        Err(e) => return give_up(state, &job, GiveUp::Unreadable, &e.to_string()).await,
    };
    // One key for reading and writing: the job's id, normalised where it entered.
    summary.id.clone_from(&job.id);
    // Department and cost centre of the parties (none while DIRECTORY_SYNC is off).
    let directory = state.users.snapshot(DIRECTORY_RECHECK).await?;
    attribute(&mut sessions, summary.start, &directory);
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
                unreadable_sessions = summary.unreadable_sessions,
                participants = summary.participant_count,
                participants_source = summary.participants_source,
                bytes = document.len(),
                graph_requests = count.requests,
                outcome = "stored",
                "call record stored"
            );
            super::health::note_activity(state, Activity::Stored);
        }
        Saved::Unchanged { stored, failed } => {
            if failed {
                state.records.clear_failure(&job.id).await?;
            }
            tracing::info!(version, stored, outcome = "unchanged", "already stored");
        }
        Saved::Busy { retry_in } => busy(state, &job, retry_in).await?,
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
        Saved::Refused { reason } => {
            return give_up(state, &job, GiveUp::StorageRefused, &reason).await;
        }
    }
    Ok(())
}

/// Another writer holds the record: come back when its lease has run out. Counted as an attempt
/// against the failure horizon, so that a lease that never ends cannot keep the job cycling.
async fn busy(
    state: &Services,
    job: &CallRecordJob,
    retry_in: std::time::Duration,
) -> Result<(), InvocationError> {
    let retry_in = retry_in + std::time::Duration::from_secs(1);
    retry_or_give_up(
        state,
        job,
        Setback::Busy { retry_in },
        "another writer holds the record",
    )
    .await
}

/// What a failed fetch means for the job: a [`Setback`] to retry after, or a reason to give up
/// at once. Pure, so that every error's class is tested on its own. `throttled_for` is how long the
/// record's requests are still held back by a `429` (a deadline that ran out while the client
/// waited for that is throttling, not a Graph failure).
pub(crate) fn classify(
    error: &FetchError,
    throttled_for: std::time::Duration,
) -> Result<Setback, GiveUp> {
    match error {
        FetchError::Graph(GraphError::NotFound) => Ok(Setback::NotFound),
        FetchError::Graph(GraphError::Throttled { retry_after }) => Ok(Setback::Throttled {
            retry_after: *retry_after,
        }),
        FetchError::Graph(GraphError::Unauthorized { .. } | GraphError::Credential(_)) => {
            Ok(Setback::Refused)
        }
        FetchError::Graph(GraphError::Transient(_))
        | FetchError::Page(_)
        | FetchError::PageGone => Ok(Setback::Unavailable),
        FetchError::Deadline if !throttled_for.is_zero() => Ok(Setback::Throttled {
            retry_after: throttled_for,
        }),
        FetchError::Deadline => Ok(Setback::Unavailable),
        FetchError::Graph(GraphError::Rejected { .. } | GraphError::Fatal(_)) => {
            Err(GiveUp::Rejected)
        }
    }
}

/// A Graph failure: try again later or give up, per [`classify`] and [`fetch::after`].
async fn setback(
    state: &Services,
    job: &CallRecordJob,
    error: FetchError,
) -> Result<(), InvocationError> {
    let detail = crate::telemetry::error_chain(&error);
    let throttled_for = state.graph.throttled_for(&job.id);
    let kind = match classify(&error, throttled_for) {
        // Graph's `Retry-After` is real time; the retry is planned on the app's clock.
        Ok(Setback::Throttled { retry_after }) => Setback::Throttled {
            retry_after: state.clock.clock_span(retry_after),
        },
        Ok(kind) => kind,
        Err(reason) => return give_up(state, job, reason, &detail).await,
    };
    if let FetchError::Graph(
        refusal @ (GraphError::Unauthorized { .. } | GraphError::Credential(_)),
    ) = &error
    {
        // A permission or identity problem an admin must fix: the record waits for it, and the
        // health check sees the refusal at once.
        tracing::error!(error = %detail, "Graph refused the app");
        let (status, code) = match refusal {
            GraphError::Unauthorized { status, code } => (*status, code.as_str()),
            _ => (0, "credential"),
        };
        state
            .records
            .record_graph_refusal(status, code, state.clock.now())
            .await?;
    }
    retry_or_give_up(state, job, kind, &detail).await
}

/// Puts the job back per [`fetch::after`], or gives it up at the end of its horizon.
async fn retry_or_give_up(
    state: &Services,
    job: &CallRecordJob,
    kind: Setback,
    detail: &str,
) -> Result<(), InvocationError> {
    let now = state.clock.now();
    match fetch::after(job, kind, now, &state.fetch_policy, crate::random::unit()) {
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
        Next::GiveUp(reason) => give_up(state, job, reason, detail).await,
    }
}

async fn give_up(
    state: &Services,
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
    state: &Services,
    job: &CallRecordJob,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), InvocationError> {
    let mut job = job.clone();
    job.not_before = Some(due);
    // `due` is on the app's clock; the queue waits in real time.
    let delay = state
        .clock
        .real_span(fetch::queue_delay(due, now, std::time::Duration::MAX))
        .min(state.max_queue_delay);
    // Whole seconds, rounded up: a message that surfaced a fraction early would be put back again.
    let secs =
        u32::try_from(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).unwrap_or(u32::MAX);
    state.queue.send_json(&job, secs).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_fetch_error_has_its_class() {
        let none = Duration::ZERO;
        let graph = |e| FetchError::Graph(e);
        assert_eq!(
            classify(&graph(GraphError::NotFound), none),
            Ok(Setback::NotFound)
        );
        assert_eq!(
            classify(
                &graph(GraphError::Throttled {
                    retry_after: Duration::from_secs(7)
                }),
                none
            ),
            Ok(Setback::Throttled {
                retry_after: Duration::from_secs(7)
            })
        );
        let refused = GraphError::Unauthorized {
            status: 403,
            code: "Forbidden".into(),
        };
        assert_eq!(classify(&graph(refused), none), Ok(Setback::Refused));
        assert_eq!(
            classify(&graph(GraphError::Credential("x".into())), none),
            Ok(Setback::Refused)
        );
        assert_eq!(
            classify(&graph(GraphError::Transient("x".into())), none),
            Ok(Setback::Unavailable)
        );
        // A link Graph gave us that answers 404 is a broken paging, not "not yet available".
        assert_eq!(
            classify(&FetchError::PageGone, none),
            Ok(Setback::Unavailable)
        );
        let rejected = GraphError::Rejected {
            status: 400,
            detail: "x".into(),
        };
        assert_eq!(classify(&graph(rejected), none), Err(GiveUp::Rejected));
        assert_eq!(
            classify(&FetchError::Deadline, none),
            Ok(Setback::Unavailable)
        );
    }

    #[test]
    fn a_deadline_that_ran_out_while_a_429_held_the_record_back_waits_for_its_retry_after() {
        let held = Duration::from_secs(90);
        assert_eq!(
            classify(&FetchError::Deadline, held),
            Ok(Setback::Throttled { retry_after: held })
        );
    }
}
