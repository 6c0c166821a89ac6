//! `Lifecycle` (`POST /api/lifecycle`): Graph's lifecycle notifications for our subscription.
//!
//! Graph validates this URL with the same handshake as the notification URL when the subscription is
//! created. Events are authenticated like notifications (client state, tenant) and then:
//! - `reauthorizationRequired`: the subscription is reauthorized, or renewed when it expires within
//!   a day (a renewal reauthorizes too); Graph repeats the event until one of them happens, and one
//!   answer per 10 minutes suffices, whichever instance gives it;
//! - `subscriptionRemoved`: `MaintainSubscription` runs now: it creates a new subscription and
//!   queues the gap for reconciliation;
//! - `missed`: a reconciliation sweep runs now (Graph documents this event for other resources;
//!   handled in case it comes);
//! - anything else, and any event for a subscription that is not ours, is logged and ignored.
//!
//! Graph wants an answer within 3 s: the answer is `202` at once and the work goes on in the
//! background. Should the process end first, nothing is lost: the timers (`MaintainSubscription`
//! every 2 hours, `Reconcile` hourly) do the same work.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::webhook::{collection, expectations, note_rejections, validation_response};
use crate::domain::notification::LifecycleEvent;
use crate::domain::subscription::{REAUTHORIZE_QUIET, RENEW_WITHIN};
use crate::error::ApiError;
use crate::graph::GraphError;
use crate::services::Services;
use crate::telemetry::error_chain;

/// What an event asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reauthorize,
    Recreate,
    Reconcile,
}

fn action(event: &str) -> Option<Action> {
    match event {
        e if e.eq_ignore_ascii_case("reauthorizationRequired") => Some(Action::Reauthorize),
        e if e.eq_ignore_ascii_case("subscriptionRemoved") => Some(Action::Recreate),
        e if e.eq_ignore_ascii_case("missed") => Some(Action::Reconcile),
        _ => None,
    }
}

pub(crate) async fn handle(
    State(state): State<Services>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::webhook::webhooks_on(&state)?;
    if let Some(response) = validation_response(query.as_deref()) {
        tracing::info!("answered the Graph validation handshake for the lifecycle URL");
        return Ok(response);
    }
    let (events, rejected) =
        collection(body)?.triage_lifecycle(&expectations(&state.notifications));
    note_rejections(&state, "lifecycle", &rejected);
    let mut actions = Vec::new();
    for event in &events {
        match action(&event.event) {
            Some(action) => {
                tracing::info!(lifecycle_event = %event.event, subscription_id = %event.subscription_id, "Graph lifecycle event received");
                if !actions.contains(&(action, event.subscription_id.clone())) {
                    actions.push((action, event.subscription_id.clone()));
                }
            }
            None => tracing::warn!(
                lifecycle_event = %event.event,
                subscription_id = %event.subscription_id,
                "unknown lifecycle event; ignored"
            ),
        }
    }
    if !actions.is_empty() {
        let span = tracing::info_span!("lifecycle_work");
        tokio::spawn(
            async move {
                for (action, subscription_id) in actions {
                    act(&state, action, &subscription_id).await;
                }
            }
            .instrument(span),
        );
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Does what an authenticated lifecycle event asks (from the webhook or from Event Grid); an
/// unknown event is logged and ignored.
pub(crate) async fn act_on(state: &Services, event: &LifecycleEvent) {
    match action(&event.event) {
        Some(action) => {
            tracing::info!(lifecycle_event = %event.event, subscription_id = %event.subscription_id, "Graph lifecycle event received");
            act(state, action, &event.subscription_id).await;
        }
        None => tracing::warn!(
            lifecycle_event = %event.event,
            subscription_id = %event.subscription_id,
            "unknown lifecycle event; ignored"
        ),
    }
}

/// Does what one event asks, if the event is about our subscription. Failures are logged; the
/// timers try again.
async fn act(state: &Services, action: Action, subscription_id: &str) {
    let recorded = match state.lifecycle.subscription().await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot read the subscription's state; the timers will act");
            return;
        }
    };
    let ours = recorded
        .id
        .as_deref()
        .is_some_and(|id| id.eq_ignore_ascii_case(subscription_id));
    if !ours {
        tracing::warn!(
            subscription_id,
            ?action,
            "lifecycle event for a subscription that is not ours; ignored"
        );
        return;
    }
    let result = match action {
        Action::Reauthorize => reauthorize(state, subscription_id, recorded.expires).await,
        Action::Recreate => super::maintain_subscription::run(state)
            .await
            .map(|outcome| tracing::info!(?outcome, "subscription maintained after its removal")),
        Action::Reconcile => missed(state).await,
    };
    if let Err(e) = result {
        tracing::error!(error = %error_chain(&e), ?action, "lifecycle event not acted on; the timers will try again");
    }
}

/// Graph says it missed notifications: the calls of the look-back are listed now, not only at
/// their hours' next passes.
async fn missed(state: &Services) -> Result<(), crate::error::InvocationError> {
    let now = state.clock.now();
    let lookback =
        time::Duration::try_from(state.subscription.reconcile_lookback()).unwrap_or_default();
    state
        .lifecycle
        .add_window(now - lookback, now, "missed", now)
        .await?;
    super::reconcile::run(state).await.map(|_| ())
}

async fn reauthorize(
    state: &Services,
    id: &str,
    expires: Option<time::OffsetDateTime>,
) -> Result<(), crate::error::InvocationError> {
    let now = state.clock.now();
    if !state
        .lifecycle
        .reauthorize_turn(now, REAUTHORIZE_QUIET)
        .await?
    {
        tracing::info!(
            outcome = "skipped",
            "reauthorizationRequired already answered within 10 minutes"
        );
        return Ok(());
    }
    let renew = expires.is_none_or(|t| t - now < RENEW_WITHIN);
    if renew {
        super::maintain_subscription::run(state).await.map(|_| ())
    } else {
        match state.graph.reauthorize_subscription(id).await {
            Ok(()) => {
                tracing::info!(outcome = "reauthorized", "subscription reauthorized");
                Ok(())
            }
            // Gone: make a new one.
            Err(GraphError::NotFound) => super::maintain_subscription::run(state).await.map(|_| ()),
            Err(e) => Err(e.into()),
        }
    }
}
