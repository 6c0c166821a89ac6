//! Event Grid delivery in the tests: the simulator's partner topic hands each CloudEvent to a
//! sink that writes it into the app's call-record queue, as an Event Grid event subscription with
//! a Storage queue destination does, in either encoding (`Encoding`).

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use teams_cdr_functions::AppOptions;
use teams_cdr_functions::QueueStore;
use teams_cdr_functions::config::{Config, EventGridTopic, NotificationDelivery};
use teams_cdr_sim::{EventGridSink, RunningSim, SimConfig};

use super::fetch::{FetchApp, spawn_fetch_app};
use super::graph::start_sim;

/// How Event Grid writes a queue message: base64 of the event (Microsoft's SDK samples, users'
/// reports) or the event's JSON as is (one of Microsoft's pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Base64,
    Plain,
}

impl Encoding {
    /// `event` as Event Grid would write it.
    pub fn encode(self, event: &str) -> String {
        match self {
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(event),
            Self::Plain => event.to_owned(),
        }
    }
}

/// The partner topic the tests' apps name.
pub fn topic() -> EventGridTopic {
    EventGridTopic {
        subscription_id: "8d2b7a3e-0000-4000-8000-000000000001".to_owned(),
        resource_group: "rg-teams-cdr".to_owned(),
        partner_topic: "teams-cdr-callrecords".to_owned(),
        location: "westeurope".to_owned(),
    }
}

/// Where the simulator's Event Grid writes: set to an app's queue once the app exists.
pub type Destination = Arc<OnceLock<QueueStore>>;

/// A simulator whose Event Grid writes into `Destination`'s queue, in `encoding`.
pub async fn event_grid_sim(sim: SimConfig, encoding: Encoding) -> (Arc<RunningSim>, Destination) {
    let queue: Destination = Arc::default();
    let target = Arc::clone(&queue);
    let sink: EventGridSink = Arc::new(move |event: String| {
        let target = Arc::clone(&target);
        Box::pin(async move {
            match target.get() {
                Some(queue) => queue.send_text(encoding.encode(&event), 0).await.is_ok(),
                // Not wired yet: Event Grid retries.
                None => false,
            }
        })
    });
    let sim = start_sim(SimConfig {
        event_grid: Some(sink),
        ..sim
    })
    .await;
    (Arc::new(sim), queue)
}

/// An app on `sim` with `NOTIFICATION_DELIVERY=eventGrid` (after `tweak`), its queue made the
/// destination.
pub async fn spawn_event_grid_app(
    sim: Arc<RunningSim>,
    destination: &Destination,
    tweak: impl FnOnce(&mut Config, &mut AppOptions),
) -> FetchApp {
    let app = spawn_fetch_app(sim, |config, options| {
        config.subscription.delivery = NotificationDelivery::EventGrid(topic());
        tweak(config, options);
    })
    .await;
    let _ = destination.set(app.queue.clone());
    app
}

/// [`event_grid_sim`] and [`spawn_event_grid_app`] in one.
pub async fn event_grid_app(
    sim: SimConfig,
    encoding: Encoding,
    tweak: impl FnOnce(&mut Config, &mut AppOptions),
) -> FetchApp {
    let (sim, destination) = event_grid_sim(sim, encoding).await;
    spawn_event_grid_app(sim, &destination, tweak).await
}
