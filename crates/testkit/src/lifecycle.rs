//! The app as it subscribes itself: listening on a known loopback port, so that its webhook URLs
//! can be configured before it starts and the simulator can validate and call them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use table_storage::Entity;
use teams_cdr_functions::config::Config;
use teams_cdr_functions::{AppOptions, CallRecordJob, StoreError};
use teams_cdr_sim::{Endpoint, RunningSim};
use url::Url;

use super::fetch::{FetchApp, spawn_fetch_app};
use super::free_port;
use super::host::{decode_text, timer_invocation};

/// Spawns the app with `NOTIFICATION_URL` and `LIFECYCLE_NOTIFICATION_URL` pointing at itself.
pub async fn spawn_subscribing_app(
    sim: impl Into<Arc<RunningSim>>,
    tweak: impl FnOnce(&mut Config, &mut AppOptions),
) -> FetchApp {
    let port = free_port();
    spawn_fetch_app(sim, |config, options| {
        config.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let url = |route: &str| Url::parse(&format!("http://127.0.0.1:{port}/api/{route}")).ok();
        config.subscription.notification_url = url("notifications");
        config.subscription.lifecycle_url = url("lifecycle");
        tweak(config, options);
    })
    .await
}

/// Moves tenant time on in steps, giving the simulator's delivery loop time to post (or publish)
/// what became due.
pub async fn pass_time(sim: &RunningSim, total: time::Duration, step: time::Duration) {
    let mut passed = time::Duration::ZERO;
    while passed < total {
        sim.clock().advance(step);
        passed += step;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
}

impl FetchApp {
    /// The ids of the stored call records, sorted.
    pub async fn stored_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rows(&self.tables.records)
            .await
            .into_iter()
            .map(|e| e.row_key)
            .collect();
        ids.sort();
        ids
    }

    /// One run of a timer function, as the host invokes it; the status it answered.
    pub async fn run_timer(&self, function: &str) -> u16 {
        self.host
            .invoke(function, &timer_invocation(false))
            .await
            .status()
            .as_u16()
    }

    /// The `AppState` row of our subscription.
    pub async fn subscription_row(&self) -> Option<Entity> {
        self.app_state_row("Subscription", "callRecords").await
    }

    /// The `AppState` row of the last reconciliation sweep, once a sweep has ended.
    pub async fn reconcile_row(&self) -> Option<Entity> {
        self.app_state_row("Reconcile", "status")
            .await
            .filter(|row| row.get_datetime("LastRunAt").is_some())
    }

    /// One `AppState` row (`None` before the table exists, too).
    async fn app_state_row(&self, partition: &str, row: &str) -> Option<Entity> {
        match self.tables.app_state.get(partition, row).await {
            Ok(row) => row,
            Err(StoreError::NotFound) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Takes every message off the queue: the jobs, in the order received.
    pub async fn take_queued(&self) -> Vec<CallRecordJob> {
        let mut jobs = Vec::new();
        loop {
            let batch = self.queue.receive(32, 60).await.unwrap();
            if batch.is_empty() {
                return jobs;
            }
            for message in batch {
                let text = decode_text(&message.text);
                jobs.push(serde_json::from_str(&text).unwrap());
                self.queue.delete(&message).await.unwrap();
            }
        }
    }

    /// The ids of every message on the queue, sorted, leaving each there hidden for a day instead
    /// of deleting it: for runs that queue tens of thousands of messages, whose deletion would make
    /// Azurite stall for minutes (its queue GC: docs/TESTING.md).
    pub async fn hide_queued_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let batch = self.queue.receive(32, 86_400).await.unwrap();
            if batch.is_empty() {
                ids.sort();
                return ids;
            }
            for message in batch {
                let job: CallRecordJob = serde_json::from_str(&decode_text(&message.text)).unwrap();
                ids.push(job.id);
            }
        }
    }

    /// The ids of [`FetchApp::take_queued`], sorted.
    pub async fn take_queued_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.take_queued().await.into_iter().map(|j| j.id).collect();
        ids.sort();
        ids
    }
}

/// Requests the simulator served at `endpoint`.
pub fn served(sim: &RunningSim, endpoint: Endpoint) -> usize {
    sim.ledger().count(endpoint)
}

/// Waits for background work (lifecycle events, a sweep started by one, a timer): polls `probe`
/// every 50 ms, for at most `limit`. `probe` answers `Ok` with what it waited for, or `Err` with
/// what it saw instead ([`when`] builds either from a condition).
///
/// # Errors
/// When `limit` passes first: [`GaveUp`], which shows the last thing `probe` saw, so that
/// `eventually(..).await.expect("what was awaited")` fails with it.
pub async fn eventually<T, S, F, Fut>(limit: Duration, mut probe: F) -> Result<T, GaveUp<S>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match probe().await {
            Ok(done) => return Ok(done),
            Err(seen) if started.elapsed() > limit => return Err(GaveUp { limit, seen }),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `Ok(seen)` when `done`, else `Err(seen)`: a probe for [`eventually`] from a condition and what
/// it was read from.
pub fn when<S>(done: bool, seen: S) -> Result<S, S> {
    if done { Ok(seen) } else { Err(seen) }
}

/// What [`eventually`] last saw when it gave up.
pub struct GaveUp<S> {
    pub limit: Duration,
    pub seen: S,
}

impl<S: std::fmt::Debug> std::fmt::Debug for GaveUp<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up after {:?}; last seen: {:?}",
            self.limit, self.seen
        )
    }
}
