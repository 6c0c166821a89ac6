//! What the health check reads, and the two activity marks it needs that nothing else records:
//! `AppState`/`Activity`/`notifications` and `…/stored` (`LastAt`: the last notification accepted,
//! the last record stored). Each process writes a mark at most once a minute, so a busy tenant
//! costs a storage request a minute, not one per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use table_storage::{EdmValue, Entity, Query, TableStore, WriteMode, filter, format_datetime};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use super::StoreError;
use super::app_state::{
    ACTIVITY_PARTITION, CONSUMER_PARTITION, DIRECTORY_SYNC,
    FETCH_FAILURE_PARTITION as FAILURE_PARTITION, GRAPH_STATUS,
    NOTIFICATION_REJECTED_PARTITION as REJECTED_PARTITION, PURGE, RECONCILE,
    REPORT_CHECKPOINT_PARTITION as CHECKPOINT_PARTITION, SUBSCRIPTION,
};
use crate::domain::health::{
    ConsumerSignal, DirectorySignal, ReportSignal, Signals, SubscriptionSignal,
};
use crate::domain::reports::Report;

/// At most one mark write per kind per process in this many seconds.
const MARK_EVERY_SECONDS: i64 = 60;

/// Which activity.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Activity {
    /// A notification accepted by the webhook.
    Notification,
    /// A call record stored.
    Stored,
}

impl Activity {
    fn key(self) -> &'static str {
        match self {
            Self::Notification => "notifications",
            Self::Stored => "stored",
        }
    }
}

/// When this process last wrote each mark (Unix seconds).
#[derive(Debug, Default)]
pub(crate) struct Marks {
    notification: AtomicI64,
    stored: AtomicI64,
}

impl Marks {
    /// Whether this caller writes the mark now (at most once a minute per process).
    pub(crate) fn due(&self, activity: Activity, now: OffsetDateTime) -> bool {
        let cell = match activity {
            Activity::Notification => &self.notification,
            Activity::Stored => &self.stored,
        };
        let now = now.unix_timestamp();
        let last = cell.load(Ordering::Relaxed);
        now - last >= MARK_EVERY_SECONDS
            && cell
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// The health check's reads.
#[derive(Debug)]
pub(crate) struct Observed {
    pub(crate) signals: Signals,
    /// For the details: the rows as they are, without secrets.
    pub(crate) details: Value,
    /// The directory sync's row, for the caller to add to the signals when the sync is on.
    pub(crate) directory: DirectorySignal,
}

#[derive(Clone)]
pub(crate) struct HealthStore {
    app_state: TableStore,
    ready: Arc<OnceCell<()>>,
}

fn time_text(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_datetime(t)))
}

fn text(row: Option<&Entity>, name: &str) -> Value {
    row.and_then(|r| r.get_str(name))
        .filter(|s| !s.is_empty())
        .map_or(Value::Null, |s| Value::String(s.to_owned()))
}

impl HealthStore {
    pub(crate) fn new(app_state: TableStore) -> Self {
        Self {
            app_state,
            ready: Arc::new(OnceCell::new()),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        super::ensure_once(&self.ready, &[&self.app_state]).await
    }

    /// Writes an activity mark (`LastAt`). Two instances may write out of order; the mark is
    /// then off by the time between them, which the health rules do not mind.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn mark(
        &self,
        activity: Activity,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.ready().await?;
        let row =
            Entity::new(ACTIVITY_PARTITION, activity.key()).with("LastAt", EdmValue::DateTime(at));
        self.app_state.upsert(&row, WriteMode::Merge).await?;
        Ok(())
    }

    async fn partition(&self, partition: &str) -> Result<Vec<Entity>, StoreError> {
        self.app_state
            .query_all(&Query::new().filter(filter::eq("PartitionKey", partition)))
            .await
    }

    /// Reads every row the rules and the details need: a handful of small partitions.
    ///
    /// # Errors
    /// When storage fails or refuses.
    pub(crate) async fn observe(&self, now: OffsetDateTime) -> Result<Observed, StoreError> {
        self.ready().await?;
        let subscription = self.app_state.get(SUBSCRIPTION.0, SUBSCRIPTION.1).await?;
        let reconcile = self.app_state.get(RECONCILE.0, RECONCILE.1).await?;
        let activity = self.partition(ACTIVITY_PARTITION).await?;
        let refused = self.app_state.get(GRAPH_STATUS.0, GRAPH_STATUS.1).await?;
        let purge = self.app_state.get(PURGE.0, PURGE.1).await?;
        let directory = self
            .app_state
            .get(DIRECTORY_SYNC.0, DIRECTORY_SYNC.1)
            .await?;
        let rejected = self.partition(REJECTED_PARTITION).await?;
        let checkpoints = self.partition(CHECKPOINT_PARTITION).await?;
        let consumers = self.partition(CONSUMER_PARTITION).await?;
        // Only what the rules look at (the last 7 days): the partition keeps records that never
        // came back, and an anonymous caller must not be able to make this read grow.
        let given_up = self
            .app_state
            .query_all(
                &Query::new()
                    .filter(filter::and(
                        filter::eq("PartitionKey", FAILURE_PARTITION),
                        filter::cmp(
                            "GaveUpAt",
                            filter::Op::Ge,
                            EdmValue::DateTime(now - time::Duration::days(7)),
                        ),
                    ))
                    .select(["RowKey", "GaveUpAt", "Reason"]),
            )
            .await?;

        let sub = subscription.as_ref();
        let at = |row: Option<&Entity>, name: &str| row.and_then(|r| r.get_datetime(name));
        let signals = Signals {
            subscription: SubscriptionSignal {
                id: sub
                    .and_then(|r| r.get_str("SubscriptionId"))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                expires: at(sub, "ExpirationDateTime"),
                created: at(sub, "CreatedAt"),
                last_success: at(sub, "LastSuccessAt"),
                last_error: sub.and_then(|r| r.get_str("LastError")).map(str::to_owned),
            },
            poison_messages: 0,
            given_up: given_up
                .iter()
                .filter_map(|r| r.get_datetime("GaveUpAt"))
                .collect(),
            client_state_rejected: rejected
                .iter()
                .filter(|r| {
                    r.row_key == "notification-client_state"
                        || r.row_key == "eventGrid-client_state"
                })
                .filter_map(|r| r.get_datetime("LastSeenAt"))
                .max(),
            reports: Report::ALL
                .iter()
                .map(|report| {
                    let row = checkpoints.iter().find(|r| r.row_key == report.key());
                    ReportSignal {
                        report: report.key(),
                        last_success: at(row, "LastSuccessAt"),
                        last_error: row.and_then(|r| r.get_str("LastError")).map(str::to_owned),
                    }
                })
                .collect(),
            reconciled: at(reconcile.as_ref(), "LastSuccessAt"),
            graph_refused: at(refused.as_ref(), "At"),
            graph_worked: None,
            purged: at(purge.as_ref(), "LastSuccessAt"),
            consumers: consumers
                .iter()
                .map(|row| ConsumerSignal {
                    feed: row.get_str("Feed").unwrap_or(&row.row_key).to_owned(),
                    consumer: row.get_str("Consumer").unwrap_or_default().to_owned(),
                    last_read: row.get_datetime("LastReadAt"),
                    cursor_at: row.get_datetime("CursorAt"),
                })
                .collect(),
            consumer_stale: std::time::Duration::MAX,
            retention: None,
            // Set by the caller, which knows whether the sync is on, and below.
            directory: None,
            event_grid: false,
            last_notification: None,
            last_stored: None,
        };
        let mut signals = signals;
        let stored = at(
            activity
                .iter()
                .find(|r| r.row_key == Activity::Stored.key()),
            "LastAt",
        );
        signals.last_stored = stored;
        signals.last_notification = at(
            activity
                .iter()
                .find(|r| r.row_key == Activity::Notification.key()),
            "LastAt",
        );
        signals.graph_worked = [
            signals.subscription.last_success,
            signals.reconciled,
            stored,
        ]
        .into_iter()
        .chain(signals.reports.iter().map(|r| r.last_success))
        .flatten()
        .max();
        let activity_at =
            |key: &str| time_text(at(activity.iter().find(|r| r.row_key == key), "LastAt"));
        let count = |row: Option<&Entity>, name: &str| row.and_then(|r| r.get_i64(name));
        let details = json!({
            "subscription": {
                "id": signals.subscription.id,
                "expires": time_text(signals.subscription.expires),
                "createdAt": time_text(signals.subscription.created),
                "lastRenewedAt": time_text(signals.subscription.last_success),
                "lastError": text(sub, "LastError"),
                "lastErrorAt": time_text(at(sub, "LastErrorAt")),
            },
            "lastNotificationAt": activity_at(Activity::Notification.key()),
            "lastRecordStoredAt": activity_at(Activity::Stored.key()),
            "givenUp": {
                "last7Days": given_up.len(),
                "lastAt": time_text(signals.given_up.iter().max().copied()),
            },
            "rejected": rejected.iter().map(|r| json!({
                "webhook": text(Some(r), "Webhook"),
                "reason": text(Some(r), "Reason"),
                "count": r.get_i64("Count"),
                "lastSeenAt": time_text(r.get_datetime("LastSeenAt")),
            })).collect::<Vec<_>>(),
            "reports": Report::ALL.iter().map(|report| {
                let row = checkpoints.iter().find(|r| r.row_key == report.key());
                json!({
                    "report": report.key(),
                    "checkpoint": time_text(at(row, "Through")),
                    "lastSuccessAt": time_text(at(row, "LastSuccessAt")),
                    "lastError": text(row, "LastError"),
                })
            }).collect::<Vec<_>>(),
            "reconcile": {
                "lastRunAt": time_text(at(reconcile.as_ref(), "LastRunAt")),
                "lastSuccessAt": time_text(signals.reconciled),
                "lastListed": count(reconcile.as_ref(), "LastListed"),
                "lastRelisted": count(reconcile.as_ref(), "LastRelisted"),
                "lastQueued": count(reconcile.as_ref(), "LastEnqueued"),
                "lastError": text(reconcile.as_ref(), "LastError"),
            },
            "purge": {
                "lastRunAt": time_text(at(purge.as_ref(), "LastRunAt")),
                "lastSuccessAt": time_text(signals.purged),
                "lastDeletedCallRecords": count(purge.as_ref(), "LastDeletedCallRecords"),
                "lastError": text(purge.as_ref(), "LastError"),
            },
            "consumers": consumers.iter().map(|row| json!({
                "feed": text(Some(row), "Feed"),
                "consumer": text(Some(row), "Consumer"),
                "lastReadAt": time_text(row.get_datetime("LastReadAt")),
                "cursorAt": time_text(row.get_datetime("CursorAt")),
            })).collect::<Vec<_>>(),
            "directory": {
                "lastSyncAt": time_text(at(directory.as_ref(), "LastSyncAt")),
                "lastFullSyncAt": time_text(at(directory.as_ref(), "LastFullSyncAt")),
                "lastRunAt": time_text(at(directory.as_ref(), "LastRunAt")),
                "users": count(directory.as_ref(), "Users"),
                "lastChanged": count(directory.as_ref(), "LastChanged"),
                "lastError": text(directory.as_ref(), "LastError"),
                "lastErrorAt": time_text(at(directory.as_ref(), "LastErrorAt")),
            },
            "graph": {
                "lastRefusalAt": time_text(signals.graph_refused),
                "lastRefusalStatus": refused.as_ref().and_then(|r| r.get_i32("Status")),
                "lastRefusalCode": text(refused.as_ref(), "Code"),
            },
        });
        Ok(Observed {
            signals,
            details,
            directory: DirectorySignal {
                last_sync: at(directory.as_ref(), "LastSyncAt"),
                first_run: at(directory.as_ref(), "FirstRunAt"),
                last_error: directory
                    .as_ref()
                    .and_then(|r| r.get_str("LastError"))
                    .map(str::to_owned),
            },
        })
    }
}
