//! What the function handlers can reach ([`Services`]): the clients, the settings they act on and
//! the clock. Its own module so that `functions` and `api` (which read it) and `app` (which builds
//! it and mounts the functions) depend on it without depending on each other. Handlers that need
//! only part of it take a substate ([`Auth`], [`ReadApi`]) through axum's `FromRef`.
//!
//! (Not to be confused with the `AppState` *table*, whose rows `store::app_state` lays out.)

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use axum::extract::FromRef;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{
    DirectoryConfig, NotificationConfig, ReadApiConfig, ReportsConfig, RetentionConfig,
    SubscriptionConfig,
};
use crate::domain::fetch::FetchPolicy;
use crate::domain::health::Status;
use crate::graph::GraphClient;
use crate::store::callrecords::CallRecordStore;
use crate::store::feed::FeedStore;
use crate::store::health::{HealthStore, Marks};
use crate::store::lifecycle::LifecycleStore;
use crate::store::purge::Purger;
use crate::store::queue::QueueStore;
use crate::store::reports::ReportStore;
use crate::store::users::UserStore;

/// What the handlers can reach. Cheap to clone (all shared).
#[derive(Clone)]
pub(crate) struct Services {
    /// Who may call the guarded routes (the run mode and `READ_API_KEYS`).
    pub(crate) auth: Auth,
    pub(crate) notifications: Arc<NotificationConfig>,
    pub(crate) queue: QueueStore,
    pub(crate) graph: GraphClient,
    pub(crate) records: CallRecordStore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fetch_policy: Arc<FetchPolicy>,
    /// The longest visibility delay a message is given; a message due later comes back early and is
    /// put back.
    pub(crate) max_queue_delay: Duration,
    /// The report tables and checkpoints, and how the pulls run.
    pub(crate) reports: ReportStore,
    pub(crate) reports_config: Arc<ReportsConfig>,
    /// Webhook items rejected and not yet counted in `AppState`.
    pub(crate) rejections: Arc<RejectionTally>,
    /// The subscription's and reconciliation's rows in `AppState`, and their settings.
    pub(crate) lifecycle: LifecycleStore,
    pub(crate) subscription: Arc<SubscriptionConfig>,
    /// The poison queue of the call-record queue (the health check counts it).
    pub(crate) poison: QueueStore,
    /// What the health check reads, and the activity marks it needs.
    pub(crate) health: HealthStore,
    pub(crate) marks: Arc<Marks>,
    /// The last anonymous verdict and when it was reached: the anonymous route answers from it for
    /// a few seconds, so that polling it cannot turn into storage load.
    pub(crate) verdict: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, Status)>>>,
    pub(crate) verdict_ttl: Duration,
    /// The data tables, for `Purge`, and how long rows are kept.
    pub(crate) purger: Purger,
    pub(crate) retention: Arc<RetentionConfig>,
    /// The read API's log and scans, and its settings.
    pub(crate) read: ReadApi,
    /// The `Users` table and the directory the call rows read, and the sync's settings.
    pub(crate) users: UserStore,
    pub(crate) directory: Arc<DirectoryConfig>,
}

/// What the read API's handlers reach: the ingestion log and the stored documents, its settings,
/// who may read, and the clock (for the consumers' read marks).
#[derive(Clone)]
pub(crate) struct ReadApi {
    pub(crate) auth: Auth,
    pub(crate) feed: FeedStore,
    pub(crate) records: CallRecordStore,
    pub(crate) config: Arc<ReadApiConfig>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl FromRef<Services> for ReadApi {
    fn from_ref(services: &Services) -> Self {
        services.read.clone()
    }
}

impl FromRef<Services> for Auth {
    fn from_ref(services: &Services) -> Self {
        services.auth.clone()
    }
}

/// (webhook, reason) → (count, last seen).
pub(crate) type Pending = BTreeMap<(&'static str, &'static str), (u32, OffsetDateTime)>;

/// Rejected items not yet added to the `AppState` counters, per webhook and reason, with the time
/// last seen. One flusher per process writes them, so a flood of bad posts (the webhooks are
/// anonymous) costs a few storage requests a second, not two per post.
#[derive(Debug, Default)]
pub(crate) struct RejectionTally {
    pending: Mutex<Pending>,
    /// A flusher task is running (`functions::webhook`).
    pub(crate) flushing: AtomicBool,
}

impl RejectionTally {
    pub(crate) fn add(
        &self,
        what: &'static str,
        reason: &'static str,
        count: u32,
        now: OffsetDateTime,
    ) {
        let mut pending = self.lock();
        let entry = pending.entry((what, reason)).or_insert((0, now));
        entry.0 = entry.0.saturating_add(count);
        entry.1 = entry.1.max(now);
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Only whole values are written under the lock; a panic elsewhere cannot leave it torn.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
