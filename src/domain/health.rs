//! Whether data flows: the rules that turn the state the functions record into `ok`, `degraded` or
//! `failing`, each finding with a stable code an admin can alert on. Pure: the caller reads the
//! signals and passes the time in.
//!
//! The rules (README "Health"):
//! - failing: no subscription recorded, or it has expired; Graph refused the app's token or
//!   permission after the subscription last worked;
//! - degraded: the subscription expires within 24 hours, or its last maintenance failed; messages on
//!   the poison queue; records given up on in the last 7 days; notifications rejected for a wrong
//!   client state in the last 24 hours (a redeployment with a new secret, before the subscription
//!   is replaced); a report not pulled successfully for 2 hours; no complete reconciliation sweep for
//!   3 hours; no complete purge for 2 days; with `DIRECTORY_SYNC` on, no complete directory sync
//!   for 25 hours; a Graph refusal in the last 24 hours that has since
//!   been followed by success;
//!   a feed read before but not for `CONSUMER_STALE_DAYS` (3); a feed's consumer whose cursor is
//!   within 7 days of `RETENTION_DAYS` (its unread rows are about to be deleted);
//! - ok otherwise.
//!
//! "Never happened" counts as stale only once the subscription is older than the staleness limit,
//! so a fresh installation is not degraded during its first hours.

use serde::Serialize;
use time::OffsetDateTime;

/// The overall verdict, worst finding first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Degraded,
    Failing,
}

/// One reason the verdict is not `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) status: Status,
    /// Stable, for alert rules: `subscriptionMissing`, `poisonMessages`, ….
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// The recorded subscription.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscriptionSignal {
    pub(crate) id: Option<String>,
    pub(crate) expires: Option<OffsetDateTime>,
    pub(crate) created: Option<OffsetDateTime>,
    pub(crate) last_success: Option<OffsetDateTime>,
    pub(crate) last_error: Option<String>,
}

/// One report's checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct ReportSignal {
    pub(crate) report: &'static str,
    pub(crate) last_success: Option<OffsetDateTime>,
    pub(crate) last_error: Option<String>,
}

/// Everything the rules read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    pub(crate) subscription: SubscriptionSignal,
    pub(crate) poison_messages: u64,
    /// When each record given up on was given up.
    pub(crate) given_up: Vec<OffsetDateTime>,
    /// Last time a notification was rejected for a wrong client state.
    pub(crate) client_state_rejected: Option<OffsetDateTime>,
    pub(crate) reports: Vec<ReportSignal>,
    /// Last complete reconciliation sweep.
    pub(crate) reconciled: Option<OffsetDateTime>,
    /// Graph's last refusal of our token or permission.
    pub(crate) graph_refused: Option<OffsetDateTime>,
    /// The last time anything that needs Graph worked (a renewal, a sweep, a pull, a record
    /// stored): a refusal before it has been fixed.
    pub(crate) graph_worked: Option<OffsetDateTime>,
    /// Last complete purge.
    pub(crate) purged: Option<OffsetDateTime>,
    /// Each feed a consumer has read.
    pub(crate) consumers: Vec<ConsumerSignal>,
    /// `CONSUMER_STALE_DAYS`, and how long rows are kept (`RETENTION_DAYS`).
    pub(crate) consumer_stale: std::time::Duration,
    pub(crate) retention: Option<std::time::Duration>,
    /// The directory sync, when `DIRECTORY_SYNC` is on.
    pub(crate) directory: Option<DirectorySignal>,
    /// Notifications come through Event Grid (`NOTIFICATION_DELIVERY=eventGrid`).
    pub(crate) event_grid: bool,
    /// The last notification (or event) accepted, and the last record stored.
    pub(crate) last_notification: Option<OffsetDateTime>,
    pub(crate) last_stored: Option<OffsetDateTime>,
}

/// The directory sync's last runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirectorySignal {
    /// The last run that reached Graph's delta link.
    pub(crate) last_sync: Option<OffsetDateTime>,
    /// The first run: a sync that never completed is stale counting from it (the sync may have
    /// been turned on long after the installation).
    pub(crate) first_run: Option<OffsetDateTime>,
    pub(crate) last_error: Option<String>,
}

/// A feed's consumer, as its last read recorded it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSignal {
    pub(crate) feed: String,
    /// Which consumer (a hash of its key: `api::consumer_id`).
    pub(crate) consumer: String,
    pub(crate) last_read: Option<OffsetDateTime>,
    /// When the entries at the cursor of that read were appended.
    pub(crate) cursor_at: Option<OffsetDateTime>,
}

/// A consumer whose cursor is this close to the retention is warned before its rows go.
const PURGE_WARNING: time::Duration = time::Duration::days(7);

const EXPIRING: time::Duration = time::Duration::hours(24);
const GIVEN_UP_RECENT: time::Duration = time::Duration::days(7);
const REJECTED_RECENT: time::Duration = time::Duration::hours(24);
const REPORT_STALE: time::Duration = time::Duration::hours(2);
const RECONCILE_STALE: time::Duration = time::Duration::hours(3);
const REFUSED_RECENT: time::Duration = time::Duration::hours(24);
const PURGE_STALE: time::Duration = time::Duration::days(2);
/// A subscription this old, records stored since, and not one event: events do not arrive.
const EVENTS_SILENT: time::Duration = time::Duration::hours(3);
/// A day of hourly syncs, and one more run.
const DIRECTORY_STALE: time::Duration = time::Duration::hours(25);

/// `: {error}` to end a finding's message with the last error, if there was one.
fn because(last_error: Option<&str>) -> String {
    last_error
        .filter(|e| !e.is_empty())
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

/// The verdict and its findings, worst first.
pub(crate) fn assess(s: &Signals, now: OffsetDateTime) -> (Status, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut find = |status, code, message: String| {
        findings.push(Finding {
            status,
            code,
            message,
        });
    };
    let sub = &s.subscription;
    match (&sub.id, sub.expires) {
        (None, _) => find(
            Status::Failing,
            "subscriptionMissing",
            "no Graph subscription has been created: no call is notified (see the subscription's last error)".into(),
        ),
        (Some(_), Some(expires)) if expires <= now => find(
            Status::Failing,
            "subscriptionExpired",
            format!("the Graph subscription expired at {expires}: no call is notified"),
        ),
        (Some(_), Some(expires)) if expires - now < EXPIRING => find(
            Status::Degraded,
            "subscriptionExpiring",
            format!("the Graph subscription expires at {expires} and has not been renewed"),
        ),
        _ => {}
    }
    if let Some(error) = sub.last_error.as_deref().filter(|e| !e.is_empty()) {
        find(
            Status::Degraded,
            "subscriptionError",
            format!("the last maintenance of the subscription failed: {error}"),
        );
    }
    if let Some(refused) = s.graph_refused {
        if s.graph_worked.is_none_or(|ok| refused > ok) {
            find(
                Status::Failing,
                "graphRefused",
                "Graph refuses the app's token or permission (CallRecords.Read.All): an admin must act".into(),
            );
        } else if now - refused < REFUSED_RECENT {
            find(
                Status::Degraded,
                "graphRefusedRecently",
                format!(
                    "Graph refused the app's token or permission at {refused}; it has worked since"
                ),
            );
        }
    }
    if s.poison_messages > 0 {
        find(
            Status::Degraded,
            "poisonMessages",
            format!(
                "{} messages on the poison queue: records whose storage failed five times (README: what an admin does)",
                s.poison_messages
            ),
        );
    }
    let recent_given_up = s
        .given_up
        .iter()
        .filter(|t| now - **t < GIVEN_UP_RECENT)
        .count();
    if recent_given_up > 0 {
        find(
            Status::Degraded,
            "recordsGivenUp",
            format!(
                "{recent_given_up} call records given up on in the last 7 days (AppState FetchFailure)"
            ),
        );
    }
    if let Some(at) = s
        .client_state_rejected
        .filter(|t| now - *t < REJECTED_RECENT)
    {
        find(
            Status::Degraded,
            "notificationsRejected",
            format!(
                "notifications with a wrong client state, last at {at}: the subscription carries another secret"
            ),
        );
    }
    // Staleness counts from the installation when something never happened.
    let installed = sub.created;
    let stale = |last: Option<OffsetDateTime>, limit: time::Duration| match last {
        Some(last) => now - last > limit,
        None => installed.is_some_and(|t| now - t > limit),
    };
    for report in &s.reports {
        if stale(report.last_success, REPORT_STALE) {
            let why = because(report.last_error.as_deref());
            find(
                Status::Degraded,
                "reportStale",
                format!(
                    "the {} report has not been pulled completely for 2 hours{why}",
                    report.report
                ),
            );
        }
    }
    if stale(s.purged, PURGE_STALE) {
        find(
            Status::Degraded,
            "purgeStale",
            "no complete purge for 2 days: rows older than RETENTION_DAYS are piling up".into(),
        );
    }
    // With Event Grid delivery the app cannot see the partner topic (it has no Azure role on it),
    // but it sees the consequence: records stored (by reconciliation) since the subscription was
    // made, and not one event. Only "not one since" is judged: a gap between events is a quiet
    // tenant as often as a broken topic, and a dropped event is reconciliation's business.
    if s.event_grid
        && let Some(created) = installed
        && now - created > EVENTS_SILENT
        && s.last_stored.is_some_and(|stored| stored > created)
        && s.last_notification.is_none_or(|n| n < created)
    {
        find(
            Status::Degraded,
            "eventGridSilent",
            format!(
                "no Event Grid event has arrived since the subscription was made at {created}, \
                 while records were stored: is the partner topic activated, with its event \
                 subscription to the queue (scripts/event-grid-connect.sh)? Reconciliation finds \
                 the calls meanwhile, hours late"
            ),
        );
    }
    if let Some(directory) = &s.directory
        && directory
            .last_sync
            .or(directory.first_run)
            .is_some_and(|t| now - t > DIRECTORY_STALE)
    {
        let why = because(directory.last_error.as_deref());
        find(
            Status::Degraded,
            "directoryStale",
            format!(
                "the directory has not been synced completely for 25 hours (DIRECTORY_SYNC): new \
                 call rows get the departments of the last sync{why}"
            ),
        );
    }
    if stale(s.reconciled, RECONCILE_STALE) {
        find(
            Status::Degraded,
            "reconcileStale",
            "no complete reconciliation sweep for 3 hours".into(),
        );
    }
    let stale_after = time::Duration::try_from(s.consumer_stale).unwrap_or(time::Duration::MAX);
    let retention = s.retention.and_then(|r| time::Duration::try_from(r).ok());
    for consumer in &s.consumers {
        // A consumer gone for longer than the retention is forgotten: its cursor points at rows
        // that are deleted, and an admin's one-off read must not degrade the verdict for ever.
        if consumer
            .last_read
            .zip(retention)
            .is_some_and(|(read, retention)| now - read > retention)
        {
            continue;
        }
        if let Some(read) = consumer.last_read
            && now - read > stale_after
        {
            find(
                Status::Degraded,
                "consumerStale",
                format!(
                    "the {} feed was last read by consumer {} at {read}: it has stopped \
                     (CONSUMER_STALE_DAYS)",
                    consumer.feed, consumer.consumer
                ),
            );
        }
        if let (Some(at), Some(retention)) = (consumer.cursor_at, retention)
            && now - at > retention - PURGE_WARNING
        {
            find(
                Status::Degraded,
                "consumerBehindRetention",
                format!(
                    "consumer {} of the {} feed is at rows stored {at}: rows it has not read are \
                     deleted within 7 days (RETENTION_DAYS)",
                    consumer.consumer, consumer.feed
                ),
            );
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.status));
    let status = findings.first().map_or(Status::Ok, |f| f.status);
    (status, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn healthy() -> Signals {
        Signals {
            subscription: SubscriptionSignal {
                id: Some("sub".into()),
                expires: Some(NOW + time::Duration::hours(60)),
                created: Some(NOW - time::Duration::days(10)),
                last_success: Some(NOW - time::Duration::hours(1)),
                last_error: Some(String::new()),
            },
            reports: vec![ReportSignal {
                report: "pstn",
                last_success: Some(NOW - time::Duration::minutes(10)),
                last_error: None,
            }],
            reconciled: Some(NOW - time::Duration::minutes(40)),
            graph_worked: Some(NOW - time::Duration::minutes(10)),
            purged: Some(NOW - time::Duration::hours(20)),
            ..Signals::default()
        }
    }

    fn codes(s: &Signals) -> (Status, Vec<&'static str>) {
        let (status, findings) = assess(s, NOW);
        (status, findings.iter().map(|f| f.code).collect())
    }

    #[test]
    fn consumers_are_stale_after_the_limit_behind_near_the_retention_and_forgotten_after_it() {
        let consumer = |read_days: i64, at_days: i64| ConsumerSignal {
            feed: "pstncalls".into(),
            consumer: "ab12cd34ef56".into(),
            last_read: Some(NOW - time::Duration::days(read_days)),
            cursor_at: Some(NOW - time::Duration::days(at_days)),
        };
        let mut s = healthy();
        s.consumer_stale = std::time::Duration::from_secs(3 * 86_400);
        s.retention = Some(std::time::Duration::from_secs(90 * 86_400));
        s.consumers = vec![consumer(1, 1)];
        assert_eq!(codes(&s), (Status::Ok, vec![]));
        s.consumers = vec![consumer(4, 4)];
        assert_eq!(codes(&s), (Status::Degraded, vec!["consumerStale"]));
        s.consumers = vec![consumer(0, 84)];
        assert_eq!(
            codes(&s),
            (Status::Degraded, vec!["consumerBehindRetention"])
        );
        // Gone for longer than the retention: forgotten.
        s.consumers = vec![consumer(91, 91)];
        assert_eq!(codes(&s), (Status::Ok, vec![]));
    }

    #[test]
    fn a_directory_sync_that_has_not_completed_for_a_day_is_degraded_only_when_it_is_on() {
        let mut s = healthy();
        s.directory = Some(DirectorySignal {
            last_sync: Some(NOW - time::Duration::hours(2)),
            first_run: Some(NOW - time::Duration::days(3)),
            last_error: None,
        });
        assert_eq!(codes(&s), (Status::Ok, vec![]));
        s.directory = Some(DirectorySignal {
            last_sync: Some(NOW - time::Duration::hours(26)),
            first_run: Some(NOW - time::Duration::days(3)),
            last_error: Some("Graph: Graph refused the request (HTTP 403, Forbidden)".into()),
        });
        let (status, findings) = assess(&s, NOW);
        assert_eq!(status, Status::Degraded);
        assert_eq!(findings[0].code, "directoryStale");
        assert!(
            findings[0].message.contains("HTTP 403"),
            "{}",
            findings[0].message
        );
        // Never completed: stale 25 hours after its first run, not before (just turned on).
        s.directory = Some(DirectorySignal {
            first_run: Some(NOW - time::Duration::hours(26)),
            ..DirectorySignal::default()
        });
        assert_eq!(codes(&s), (Status::Degraded, vec!["directoryStale"]));
        s.directory = Some(DirectorySignal {
            first_run: Some(NOW - time::Duration::hours(1)),
            ..DirectorySignal::default()
        });
        assert_eq!(codes(&s), (Status::Ok, vec![]));
        s.directory = Some(DirectorySignal::default());
        assert_eq!(codes(&s), (Status::Ok, vec![]), "not run yet");
        s.directory = None;
        assert_eq!(codes(&s), (Status::Ok, vec![]));
    }

    #[test]
    fn event_grid_delivery_that_announces_no_stored_record_is_degraded() {
        let mut s = healthy();
        s.event_grid = true;
        s.last_stored = Some(NOW - time::Duration::minutes(10));
        s.last_notification = Some(NOW - time::Duration::days(2));
        assert_eq!(
            codes(&s),
            (Status::Ok, vec![]),
            "a quiet spell after events"
        );
        // Records stored since the subscription was made (10 days ago), by reconciliation alone.
        s.last_notification = None;
        assert_eq!(codes(&s), (Status::Degraded, vec!["eventGridSilent"]));
        s.last_notification = Some(NOW - time::Duration::days(11));
        assert_eq!(codes(&s), (Status::Degraded, vec!["eventGridSilent"]));
        // A subscription just made (the connect script not yet run) is given 3 hours.
        s.subscription.created = Some(NOW - time::Duration::hours(1));
        assert_eq!(codes(&s), (Status::Ok, vec![]));
        // Webhook delivery is not judged by this rule.
        s.subscription.created = Some(NOW - time::Duration::days(10));
        s.event_grid = false;
        assert_eq!(codes(&s), (Status::Ok, vec![]));
    }

    #[test]
    fn everything_fresh_is_ok() {
        assert_eq!(codes(&healthy()), (Status::Ok, vec![]));
    }

    #[test]
    fn a_missing_or_expired_subscription_is_failing() {
        let mut s = healthy();
        s.subscription.expires = Some(NOW - time::Duration::minutes(1));
        assert_eq!(codes(&s), (Status::Failing, vec!["subscriptionExpired"]));
        s.subscription = SubscriptionSignal::default();
        assert_eq!(codes(&s).0, Status::Failing);
        assert!(codes(&s).1.contains(&"subscriptionMissing"));
    }

    #[test]
    fn poison_given_up_and_rejected_notifications_are_degraded() {
        let mut s = healthy();
        s.poison_messages = 2;
        s.given_up = vec![
            NOW - time::Duration::days(1),
            NOW - time::Duration::days(20),
        ];
        s.client_state_rejected = Some(NOW - time::Duration::hours(1));
        assert_eq!(
            codes(&s),
            (
                Status::Degraded,
                vec!["poisonMessages", "recordsGivenUp", "notificationsRejected"]
            )
        );
        // Old news is not.
        s = healthy();
        s.given_up = vec![NOW - time::Duration::days(20)];
        s.client_state_rejected = Some(NOW - time::Duration::days(2));
        assert_eq!(codes(&s), (Status::Ok, vec![]));
    }

    #[test]
    fn a_graph_refusal_is_failing_until_graph_works_again() {
        let mut s = healthy();
        s.graph_refused = Some(NOW - time::Duration::minutes(5));
        assert_eq!(codes(&s), (Status::Failing, vec!["graphRefused"]));
        // Anything that needs Graph working since (here, a record stored) clears it.
        s.graph_worked = Some(NOW - time::Duration::minutes(1));
        assert_eq!(codes(&s), (Status::Degraded, vec!["graphRefusedRecently"]));
    }

    #[test]
    fn stale_pulls_and_sweeps_are_degraded_but_not_on_a_fresh_install() {
        let mut s = healthy();
        s.reports[0].last_success = Some(NOW - time::Duration::hours(3));
        s.reconciled = None;
        assert_eq!(
            codes(&s),
            (Status::Degraded, vec!["reportStale", "reconcileStale"])
        );
        s.subscription.created = Some(NOW - time::Duration::minutes(30));
        s.reports[0].last_success = None;
        assert_eq!(codes(&s), (Status::Ok, vec![]));
    }

    #[test]
    fn an_expiring_subscription_or_a_failed_renewal_is_degraded() {
        let mut s = healthy();
        s.subscription.expires = Some(NOW + time::Duration::hours(5));
        s.subscription.last_error = Some("Graph is unavailable".into());
        assert_eq!(
            codes(&s),
            (
                Status::Degraded,
                vec!["subscriptionExpiring", "subscriptionError"]
            )
        );
    }
}
