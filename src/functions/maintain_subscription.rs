//! `MaintainSubscription` (timer, `SUBSCRIPTION_SCHEDULE`, every 2 hours, and at start-up):
//! keeps exactly one Graph subscription to call records alive, pointed at this deployment.
//!
//! A run takes the lease in `AppState` (another run, on another instance or from a lifecycle event,
//! skips), lists the app's subscriptions, deletes every one to the resource that is not ours
//! (another host name, another client state, a duplicate), renews ours to Graph's maximum, and
//! creates one when there is none or the renewal finds it gone (Graph then validates both webhook
//! URLs). A `409` on create means one exists after all (created by a concurrent run, or by our own
//! create whose answer was lost): it is listed and renewed. When the subscription had to be
//! recreated, the calls of the time it may have been missing are queued for reconciliation.

use secrecy::ExposeSecret as _;

use crate::config::NotificationDelivery;
use crate::domain::secret::fingerprint;
use crate::domain::subscription::{Seen, Wanted, gap, plan, renewal_expiry};
use crate::error::InvocationError;
use crate::graph::GraphError;
use crate::graph::subscriptions::{CHANGE_TYPE, NewSubscription, RESOURCE};
use crate::services::Services;
use crate::store::lifecycle::LeaseRow;

/// The `name` of the timer binding in `handlers/MaintainSubscription/function.json`.
pub(crate) const BINDING: &str = "timer";
/// Longer than a run can last under the host (`functionTimeout`, 10 minutes in `host.json`), so
/// that two runs never overlap: a run is a few Graph requests, each bounded by the client's retry
/// budget, and two validation handshakes of up to 10 s.
const LEASE: time::Duration = time::Duration::minutes(15);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Maintained {
    Renewed,
    /// A new subscription; with the span queued for reconciliation, if one was.
    Created,
    /// Another run holds the lease.
    Skipped,
}

/// One run (the timer, a lifecycle event, the admin route).
///
/// # Errors
/// When a webhook URL is not configured, Graph fails or refuses, or storage fails. The error is
/// also recorded on the `Subscription` row for the health check.
pub(crate) async fn run(state: &Services) -> Result<Maintained, InvocationError> {
    let config = &state.subscription;
    let now = state.clock.now();
    let owner = crate::random::token();
    let Some(held) = state
        .lifecycle
        .claim(LeaseRow::Subscription, &owner, now, now + LEASE)
        .await?
    else {
        tracing::info!(
            outcome = "skipped",
            "another run is maintaining the subscription"
        );
        return Ok(Maintained::Skipped);
    };
    // Where Graph delivers: the two webhooks, or (eventGrid) the partner topic for both, in
    // Graph's `EventGrid:` form. A change of mode changes the URLs, so `plan` replaces the
    // subscription, as it does for a new host name.
    let urls = match &config.delivery {
        NotificationDelivery::Webhook => config
            .notification_url
            .as_ref()
            .zip(config.lifecycle_url.as_ref())
            .map(|(n, l)| (n.as_str().to_owned(), l.as_str().to_owned())),
        NotificationDelivery::EventGrid(topic) => Some((topic.url(), topic.url())),
    };
    let Some((notification_url, lifecycle_url)) = urls else {
        const MISSING: &str = "NOTIFICATION_URL and LIFECYCLE_NOTIFICATION_URL must be set for the \
                               app to subscribe to call records";
        // On the row too, where the health check's `subscriptionMissing` points.
        state
            .lifecycle
            .subscription_failed(held, MISSING, now)
            .await?;
        return Err(InvocationError::Config(MISSING));
    };
    let recorded = state.lifecycle.subscription().await?;
    let client_state = state.notifications.client_state.expose_secret();
    let wanted = Wanted {
        resource: RESOURCE,
        change_type: CHANGE_TYPE,
        notification_url: &notification_url,
        lifecycle_url: &lifecycle_url,
        client_state: client_state.as_bytes(),
    };
    let fingerprint = fingerprint(client_state.as_bytes());
    // Which listed subscription we may keep: one whose client state Graph shows equal (`plan`
    // checks), or the one we recorded as made with the client state configured now. One Graph
    // shows without a client state that we cannot vouch for (another secret after a redeployment,
    // or a row lost) is replaced: its notifications might all be rejected.
    let vouched = recorded
        .id
        .as_deref()
        .filter(|_| recorded.client_state.as_deref() == Some(fingerprint.as_str()));
    let ensured = match ensure(state, &wanted, client_state, vouched).await {
        Ok(ensured) => ensured,
        Err(e) => {
            let text = e.to_string();
            tracing::error!(error = %text, "the subscription could not be maintained");
            state
                .lifecycle
                .subscription_failed(held, &text, state.clock.now())
                .await?;
            return Err(e.into());
        }
    };
    let seen = ensured.seen;
    // New to us: created by this run, or not the one we knew (adopted from the listing).
    let new = ensured.created || recorded.id.as_deref() != Some(seen.id.as_str());
    let now = state.clock.now();
    state
        .lifecycle
        .subscription_confirmed(
            held,
            &seen.id,
            seen.expires(),
            // Only a subscription this run created is known to carry the configured secret.
            ensured.created.then_some(fingerprint.as_str()),
            ensured.left_over.as_deref(),
            now,
        )
        .await?;
    if !new {
        tracing::info!(subscription_id = %seen.id, expires = ?seen.expires(), outcome = "renewed", "subscription renewed");
        return Ok(Maintained::Renewed);
    }
    tracing::info!(
        subscription_id = %seen.id,
        previous = ?recorded.id,
        expires = ?seen.expires(),
        outcome = "created",
        "subscription created"
    );
    if let Some((from, to)) = gap(
        recorded.last_good,
        now,
        config
            .reconcile_lookback()
            .try_into()
            .unwrap_or(time::Duration::ZERO),
    ) {
        state
            .lifecycle
            .add_window(from, to, "subscriptionRecreated", now)
            .await?;
        tracing::warn!(%from, %to, "the subscription was missing; the calls of that time are queued for reconciliation");
        super::reconcile::start_in_background(state);
    }
    Ok(Maintained::Created)
}

/// What [`ensure`] left behind.
struct Ensured {
    /// The live subscription.
    seen: Seen,
    /// Created by this run (so made with the configured client state).
    created: bool,
    /// Why a subscription that should go is still there (its deletion failed; the next run tries
    /// again). Ours is renewed first, so such a leftover never costs our subscription its life.
    left_over: Option<String>,
}

/// Lists, renews ours (or creates it), and deletes every other subscription to the resource:
/// duplicates, an earlier deployment's, ours made with another client state (`vouched` names the
/// one we may keep although Graph does not show its client state).
async fn ensure(
    state: &Services,
    wanted: &Wanted<'_>,
    client_state: &str,
    vouched: Option<&str>,
) -> Result<Ensured, GraphError> {
    let graph = &state.graph;
    let mut conflicts = 0;
    loop {
        let mut plan = plan(graph.list_subscriptions().await?, wanted);
        if let Some(keep) = plan
            .keep
            .take_if(|keep| keep.client_state.is_none() && Some(keep.id.as_str()) != vouched)
        {
            plan.delete.push(keep.id);
        }
        if let Some(keep) = plan.keep {
            match graph
                .renew_subscription(&keep.id, renewal_expiry(state.clock.now()))
                .await
            {
                Ok(renewed) => {
                    let left_over = delete_all(graph, &plan.delete, false).await?;
                    return Ok(Ensured {
                        seen: with_id(renewed, keep.id),
                        created: false,
                        left_over,
                    });
                }
                // Gone since it was listed: create one.
                Err(GraphError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // Graph allows one subscription per resource and change types: the others must go
        // before ours can be created.
        delete_all(graph, &plan.delete, true).await?;
        let new = NewSubscription {
            notification_url: wanted.notification_url,
            lifecycle_url: wanted.lifecycle_url,
            client_state,
            expires: renewal_expiry(state.clock.now()),
        };
        match graph.create_subscription(&new).await {
            Ok(created) => {
                return Ok(Ensured {
                    seen: created,
                    created: true,
                    left_over: None,
                });
            }
            // One exists after all: list again and renew it (once; a second conflict is Graph's
            // word against its own listing, reported as such).
            Err(GraphError::Rejected { status: 409, .. }) if conflicts == 0 => conflicts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Deletes `ids`. With `required`, the first failure is the run's error; without, failures are
/// logged and described for the `Subscription` row, and the next run tries again.
async fn delete_all(
    graph: &crate::graph::GraphClient,
    ids: &[String],
    required: bool,
) -> Result<Option<String>, GraphError> {
    let mut left_over = None;
    for id in ids {
        tracing::warn!(subscription_id = %id, "deleting a subscription that is not this deployment's (another URL or client state, or a duplicate)");
        if let Err(e) = graph.delete_subscription(id).await {
            if required {
                return Err(e);
            }
            tracing::warn!(subscription_id = %id, error = %e, "could not delete it; the next run tries again");
            left_over = Some(format!("could not delete subscription {id}: {e}"));
        }
    }
    Ok(left_over)
}

/// Graph's answer to a renewal holds the id; should it not, the one renewed is meant.
fn with_id(mut seen: Seen, id: String) -> Seen {
    if seen.id.is_empty() {
        seen.id = id;
    }
    seen
}
