//! Everything the simulator served and delivered, for tests to assert on: "N Graph requests were
//! needed for M records", "every notification was delivered or deliberately dropped", "the client
//! never came back before its Retry-After".

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// Which Graph endpoint a request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Token,
    ManagedIdentityToken,
    CallRecord,
    Sessions,
    Participants,
    ListCallRecords,
    PstnCalls,
    DirectRoutingCalls,
    /// `GET /users/delta`, every page.
    UsersDelta,
    /// `GET /subscriptions` and `GET /subscriptions/{id}`.
    Subscriptions,
    SubscriptionCreate,
    SubscriptionRenew,
    SubscriptionReauthorize,
    SubscriptionDelete,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    pub record_id: Option<String>,
    pub status: u16,
    pub at: OffsetDateTime,
}

/// What happened to one notification item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered 2xx.
    Delivered { attempts: u32 },
    /// Fault injection dropped it (Graph lost it): reconciliation must find the record.
    Dropped,
    /// Retries ran out, or it was issued during a delivery outage.
    Lost { attempts: u32 },
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub subscription_id: String,
    pub record_id: String,
    pub change_type: String,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Request>,
    notifications: Vec<Notification>,
    posts: u64,
    retry_after_violations: u64,
}

/// Shared, append-only record of the simulator's activity.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Inner>>);

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Append-only vectors and counters: a panic elsewhere leaves them consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn request(
        &self,
        endpoint: Endpoint,
        record_id: Option<&str>,
        status: u16,
        at: OffsetDateTime,
    ) {
        self.lock().requests.push(Request {
            endpoint,
            record_id: record_id.map(str::to_owned),
            status,
            at,
        });
    }

    pub(crate) fn notification(&self, n: Notification) {
        self.lock().notifications.push(n);
    }

    pub(crate) fn webhook_post(&self) {
        self.lock().posts += 1;
    }

    pub(crate) fn retry_after_violation(&self) {
        self.lock().retry_after_violations += 1;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Requests to `endpoint` (all statuses).
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// Requests about one call record (record, sessions and participants pages).
    pub fn count_for_record(&self, id: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.record_id.as_deref() == Some(id))
            .count()
    }

    /// Requests answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.lock().notifications.clone()
    }

    /// Webhook POSTs made (deliveries including retries and duplicates, not validations).
    pub fn webhook_posts(&self) -> u64 {
        self.lock().posts
    }

    /// Requests that came back before the `Retry-After` of an earlier `429` had passed.
    pub fn retry_after_violations(&self) -> u64 {
        self.lock().retry_after_violations
    }
}
