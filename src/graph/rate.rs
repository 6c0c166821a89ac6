//! The client-side rate limiter: the Graph client never knowingly sends a request over one of Graph's
//! documented call-record limits, and never sends one for a key whose `429` `Retry-After` has not
//! passed yet. A request over a limit waits (a tokio sleep) for a slot instead of being sent.
//!
//! Limits (<https://learn.microsoft.com/graph/throttling-limits#call-records-limits> and
//! `#pstn-call-records-limits`), each a sliding window:
//! - per call record: 40 requests / 20 s (the record, its session and participant pages);
//! - listing call records: 40 / 20 s;
//! - per app per tenant, all call-record requests together: 1,500 / 20 s;
//! - per PSTN / Direct Routing report collection: 50 / 60 s (one window for both reports here).
//!
//! A `429` holds back its own key until its `Retry-After`; one for a call record also slows every
//! call-record request of the instance (its share of the per-app limit, which several instances
//! exceed together, drops by an eighth, to half at most, and recovers once `429`s stop).
//!
//! Windows of idle keys are forgotten, so memory stays bounded by the keys of the last window.
//! This module knows nothing of HTTP; the time is passed in, so the window math is tested with
//! made-up instants.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// One call record by id (the record and its session and participant pages): 40 / 20 s.
    CallRecord(String),
    /// The call-record list: 40 / 20 s.
    CallRecordList,
    /// One report by its function name (`getPstnCalls`, `getDirectRoutingCalls`): 50 / 60 s each.
    Report(&'static str),
    /// Anything else (subscriptions): no client-side limit, but a `429` still blocks it.
    Other,
}

/// At most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: usize,
    pub window: Duration,
}

/// The limits the client keeps to. [`RateLimits::default`] are Graph's documented ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_record: RateLimit,
    pub list: RateLimit,
    pub report: RateLimit,
    /// All call-record requests (records and list) of the app in the tenant.
    pub call_records_app: RateLimit,
    /// Added to every window: our clock starts a window when the request leaves, Graph's when it
    /// arrives, a little later; without a margin the 41st request could arrive just too early.
    pub margin: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        let limit = |requests, seconds| RateLimit {
            requests,
            window: Duration::from_secs(seconds),
        };
        Self {
            per_record: limit(40, 20),
            list: limit(40, 20),
            report: limit(50, 60),
            call_records_app: limit(1500, 20),
            margin: Duration::from_millis(500),
        }
    }
}

/// A window or block is kept per one of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bucket {
    Record(String),
    List,
    Report(&'static str),
    CallRecordsApp,
    Other,
}

#[derive(Debug, Default)]
struct State {
    /// Send times within the window, oldest first.
    windows: HashMap<Bucket, VecDeque<Instant>>,
    /// Not before this instant (from a `429`'s `Retry-After`).
    blocked_until: HashMap<Bucket, Instant>,
    /// Eighths of the per-app share this instance now keeps to (8: all of it): a `429` for a
    /// call record takes it down by one, to no less than half; a window without one gives it back.
    app_eighths: usize,
    /// The last `429` for a call record, and the last change of `app_eighths`.
    last_429: Option<Instant>,
    last_change: Option<Instant>,
    /// Prune idle buckets when there are more than this many.
    prune_at: usize,
}

/// Sliding-window limiter shared by all clones of one Graph client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: RateLimits,
    state: Mutex<State>,
}

const MIN_PRUNE_AT: usize = 256;
/// The whole per-app share, in eighths; a run of `429`s slows the instance's call-record requests
/// down to half of it at most.
const FULL_SHARE: usize = 8;
const LEAST_SHARE: usize = 4;

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                prune_at: MIN_PRUNE_AT,
                app_eighths: FULL_SHARE,
                ..State::default()
            }),
        }
    }

    /// Waits until `key` may send, and takes the slot.
    pub(crate) async fn acquire(&self, key: &RateKey) {
        loop {
            match self.try_acquire(key, Instant::now()) {
                Ok(()) => return,
                Err(wait) => {
                    tracing::debug!(?key, wait_ms = wait.as_millis(), "waiting for a Graph slot");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Takes a slot for `key` at `now`, or says how long until one may be free.
    pub(crate) fn try_acquire(&self, key: &RateKey, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        self.recover(&mut state, now);
        let mut wait = blocked(&state, key, now);
        let windows = self.windows_for(key, state.app_eighths);
        for (bucket, limit) in &windows {
            let span = limit.window + self.limits.margin;
            let sent = state.windows.entry(bucket.clone()).or_default();
            while sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
                sent.pop_front();
            }
            if sent.len() >= limit.requests {
                // The slot frees when the oldest of the last `requests` sends leaves the window.
                let oldest = sent[sent.len() - limit.requests];
                wait = wait.max((oldest + span).saturating_duration_since(now));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (bucket, _) in &windows {
            state
                .windows
                .entry(bucket.clone())
                .or_default()
                .push_back(now);
        }
        if state.windows.len() + state.blocked_until.len() > state.prune_at {
            self.prune(&mut state, now);
        }
        Ok(())
    }

    /// How long `key` is still blocked by an earlier `429` (zero when it is not).
    pub(crate) fn blocked_for(&self, key: &RateKey, now: Instant) -> Duration {
        blocked(&self.lock(), key, now)
    }

    /// After a `429`: nothing for `key` is sent before `until`. For a call record, every request
    /// of the instance slows down as well: Graph's limit per app and tenant is shared by every
    /// instance, so a `429` for one record may say that all of them together ask too much. The
    /// instance's share drops by an eighth (once a window: a burst of `429`s is one signal), to no
    /// less than half, and comes back an eighth a window once none has come for a window.
    pub(crate) fn block(&self, key: &RateKey, until: Instant) {
        self.block_at(key, until, Instant::now());
    }

    fn block_at(&self, key: &RateKey, until: Instant, now: Instant) {
        let mut state = self.lock();
        let entry = state
            .blocked_until
            .entry(block_bucket(key))
            .or_insert(until);
        *entry = (*entry).max(until);
        if let RateKey::CallRecord(_) = key {
            let window = self.limits.call_records_app.window;
            state.last_429 = Some(now);
            if state
                .last_change
                .is_none_or(|at| now.duration_since(at) >= window)
                && state.app_eighths > LEAST_SHARE
            {
                state.app_eighths -= 1;
                state.last_change = Some(now);
                tracing::warn!(
                    share_eighths = state.app_eighths,
                    "Graph throttled a call record; this instance slows its call-record requests"
                );
            }
        }
    }

    /// Gives back an eighth of the share for each window without a `429`.
    fn recover(&self, state: &mut State, now: Instant) {
        let window = self.limits.call_records_app.window;
        if state.app_eighths < FULL_SHARE
            && state
                .last_429
                .is_none_or(|at| now.duration_since(at) >= window)
            && state
                .last_change
                .is_none_or(|at| now.duration_since(at) >= window)
        {
            state.app_eighths += 1;
            state.last_change = Some(now);
        }
    }

    /// The share of the per-app limit this instance keeps to now, in eighths.
    #[cfg(test)]
    fn share(&self) -> usize {
        self.lock().app_eighths
    }

    /// How many buckets are remembered (for the memory-bound test).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        let state = self.lock();
        state.windows.len() + state.blocked_until.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Only whole values are written under the lock; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn windows_for(&self, key: &RateKey, app_eighths: usize) -> Vec<(Bucket, RateLimit)> {
        let l = &self.limits;
        let app = RateLimit {
            requests: (l.call_records_app.requests * app_eighths / FULL_SHARE).max(1),
            ..l.call_records_app
        };
        match key {
            RateKey::CallRecord(id) => vec![
                (Bucket::Record(id.clone()), l.per_record),
                (Bucket::CallRecordsApp, app),
            ],
            RateKey::CallRecordList => vec![(Bucket::List, l.list), (Bucket::CallRecordsApp, app)],
            RateKey::Report(name) => vec![(Bucket::Report(name), l.report)],
            RateKey::Other => Vec::new(),
        }
    }

    /// Forgets windows with no send inside them and blocks that have passed.
    fn prune(&self, state: &mut State, now: Instant) {
        state.windows.retain(|bucket, sent| {
            let span = self.window_of(bucket) + self.limits.margin;
            sent.back().is_some_and(|t| now.duration_since(*t) < span)
        });
        state.blocked_until.retain(|_, until| *until > now);
        state.prune_at = MIN_PRUNE_AT.max(2 * (state.windows.len() + state.blocked_until.len()));
    }

    fn window_of(&self, bucket: &Bucket) -> Duration {
        let l = &self.limits;
        match bucket {
            Bucket::Record(_) => l.per_record.window,
            Bucket::List => l.list.window,
            Bucket::Report(_) => l.report.window,
            Bucket::CallRecordsApp => l.call_records_app.window,
            Bucket::Other => Duration::ZERO,
        }
    }
}

/// `now + wait`, for a wait that came from a header: a `Retry-After` of centuries would overflow
/// `Instant`'s addition (a panic); such a wait is held to a year, which no caller waits out anyway.
pub(crate) fn deadline(now: Instant, wait: Duration) -> Instant {
    const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(wait.min(LONGEST)).unwrap_or(now)
}

/// A `429` holds back the request's own key: one record's `Retry-After` is not the others'.
fn block_bucket(key: &RateKey) -> Bucket {
    match key {
        RateKey::CallRecord(id) => Bucket::Record(id.clone()),
        RateKey::CallRecordList => Bucket::List,
        RateKey::Report(name) => Bucket::Report(name),
        RateKey::Other => Bucket::Other,
    }
}

/// How long `key` is still held back by a `429` at `now`.
fn blocked(state: &State, key: &RateKey, now: Instant) -> Duration {
    state
        .blocked_until
        .get(&block_bucket(key))
        .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn limiter(margin: Duration) -> RateLimiter {
        RateLimiter::new(RateLimits {
            margin,
            ..RateLimits::default()
        })
    }

    fn record(id: &str) -> RateKey {
        RateKey::CallRecord(id.to_owned())
    }

    #[test]
    fn the_41st_request_for_one_record_waits_until_the_first_leaves_the_window() {
        let limiter = limiter(Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..40 {
            let at = t0 + Duration::from_millis(i * 100);
            assert_eq!(limiter.try_acquire(&record("a"), at), Ok(()), "request {i}");
        }
        let at = t0 + s(5);
        assert_eq!(limiter.try_acquire(&record("a"), at), Err(s(15)));
        // Another record has its own window.
        assert_eq!(limiter.try_acquire(&record("b"), at), Ok(()));
        // Once the first send is 20 s old there is room for one more, and then the second's turn.
        assert_eq!(limiter.try_acquire(&record("a"), t0 + s(20)), Ok(()));
        assert_eq!(
            limiter.try_acquire(&record("a"), t0 + s(20)),
            Err(Duration::from_millis(100))
        );
    }

    #[test]
    fn the_margin_lengthens_every_window() {
        let limiter = limiter(Duration::from_millis(500));
        let t0 = Instant::now();
        for _ in 0..40 {
            limiter.try_acquire(&RateKey::CallRecordList, t0).unwrap();
        }
        assert_eq!(
            limiter.try_acquire(&RateKey::CallRecordList, t0 + s(20)),
            Err(Duration::from_millis(500))
        );
    }

    #[test]
    fn reports_allow_50_per_minute() {
        let limiter = limiter(Duration::ZERO);
        let t0 = Instant::now();
        for _ in 0..50 {
            limiter
                .try_acquire(&RateKey::Report("getPstnCalls"), t0)
                .unwrap();
        }
        assert_eq!(
            limiter.try_acquire(&RateKey::Report("getPstnCalls"), t0 + s(1)),
            Err(s(59))
        );
        // Each report has its own 50.
        assert_eq!(
            limiter.try_acquire(&RateKey::Report("getDirectRoutingCalls"), t0),
            Ok(())
        );
        // Reports do not count against the call-record limits.
        assert_eq!(limiter.try_acquire(&RateKey::CallRecordList, t0), Ok(()));
    }

    #[test]
    fn the_app_wide_limit_counts_all_call_record_requests_together() {
        let limiter = RateLimiter::new(RateLimits {
            call_records_app: RateLimit {
                requests: 3,
                window: s(20),
            },
            margin: Duration::ZERO,
            ..RateLimits::default()
        });
        let t0 = Instant::now();
        limiter.try_acquire(&record("a"), t0).unwrap();
        limiter.try_acquire(&record("b"), t0).unwrap();
        limiter.try_acquire(&RateKey::CallRecordList, t0).unwrap();
        assert_eq!(limiter.try_acquire(&record("c"), t0 + s(1)), Err(s(19)));
        assert_eq!(limiter.try_acquire(&RateKey::Other, t0 + s(1)), Ok(()));
    }

    #[test]
    fn a_block_holds_back_only_its_own_key_until_it_passes() {
        let limiter = limiter(Duration::ZERO);
        let t0 = Instant::now();
        limiter.block(&record("a"), t0 + s(3));
        // A shorter block later does not shorten it.
        limiter.block(&record("a"), t0 + s(1));
        assert_eq!(limiter.try_acquire(&record("a"), t0), Err(s(3)));
        assert_eq!(limiter.blocked_for(&record("a"), t0 + s(1)), s(2));
        assert_eq!(limiter.blocked_for(&record("b"), t0), Duration::ZERO);
        assert_eq!(limiter.try_acquire(&record("b"), t0), Ok(()));
        assert_eq!(limiter.try_acquire(&record("a"), t0 + s(3)), Ok(()));
        limiter.block(&RateKey::Other, t0 + s(2));
        assert_eq!(limiter.try_acquire(&RateKey::Other, t0), Err(s(2)));
    }

    #[test]
    fn a_429_for_a_record_slows_every_call_record_request_of_the_instance_then_recovers() {
        let limiter = limiter(Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(limiter.share(), 8);
        // A burst of 429s within one window is one signal.
        limiter.block_at(&record("a"), t0, t0);
        limiter.block_at(&record("b"), t0, t0 + s(1));
        assert_eq!(limiter.share(), 7);
        // 1,500 × 7/8 = 1,312 call-record requests per 20 s now, records and list together.
        for n in 0..1312 {
            limiter
                .try_acquire(&record(&format!("r{n}")), t0 + s(1))
                .unwrap();
        }
        assert!(
            limiter
                .try_acquire(&RateKey::CallRecordList, t0 + s(1))
                .is_err()
        );
        // A 429 in each window: down to half, no lower.
        let mut at = t0;
        for _ in 0..10 {
            at += s(20);
            limiter.block_at(&record("a"), at, at);
        }
        assert_eq!(limiter.share(), 4);
        // A 429 for the list does not slow the fetches.
        limiter.block_at(&RateKey::CallRecordList, at, at);
        assert_eq!(limiter.share(), 4);
        // Windows without a 429 give it back, an eighth each.
        for expected in 5..=8 {
            at += s(20);
            let _ = limiter.try_acquire(&RateKey::Other, at);
            assert_eq!(limiter.share(), expected);
        }
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let limiter = limiter(Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..1000 {
            limiter
                .try_acquire(&record(&i.to_string()), t0 + Duration::from_millis(i))
                .unwrap();
        }
        assert!(limiter.remembered() <= 1001, "{}", limiter.remembered());
        // A minute later, one more request prunes everything that went idle.
        for i in 0..(MIN_PRUNE_AT as u64 + 1) {
            limiter
                .try_acquire(&record(&format!("late{i}")), t0 + s(60))
                .unwrap();
        }
        assert!(
            limiter.remembered() <= MIN_PRUNE_AT + 10,
            "{} buckets remembered",
            limiter.remembered()
        );
    }
}
