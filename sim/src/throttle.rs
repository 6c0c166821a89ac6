//! Graph's documented throttling limits, on tokio's clock (the system's unless a benchmark pauses it): 40 requests / 20 s per call record, 40 / 20 s
//! for the list, 50 / 60 s per report, 1,500 / 20 s per app. A request over a limit gets `429` with
//! the seconds until the window has room again; a client that comes back sooner is counted in the
//! ledger as a Retry-After violation.
//! See <https://learn.microsoft.com/graph/throttling-limits#cloud-communication-service-limits>.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, which is the system's unless a benchmark pauses it (benches/scale.rs stops it
// while storage answers, so that the simulator's windows and the app's agree).
use tokio::time::Instant;

/// One limit: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub requests: usize,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_record: Limit,
    pub list: Limit,
    pub per_report: Limit,
    pub per_app: Limit,
}

impl Default for Limits {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            per_record: Limit {
                requests: 40,
                window: s(20),
            },
            list: Limit {
                requests: 40,
                window: s(20),
            },
            per_report: Limit {
                requests: 50,
                window: s(60),
            },
            per_app: Limit {
                requests: 1500,
                window: s(20),
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<String, VecDeque<Instant>>,
    /// Per window key (`app:{client}`, `record:{id}`, …): not before this instant (from a 429).
    blocked_until: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
pub struct Throttle {
    limits: Limits,
    state: Mutex<State>,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allow {
        violated_retry_after: bool,
    },
    Throttle {
        retry_after: Duration,
        violated_retry_after: bool,
    },
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::default(),
        }
    }

    /// Counts a request by `client` against the per-app limit and, if given, one more keyed limit.
    pub fn check(&self, client: &str, keyed: Option<(&str, Limit)>, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let app_key = format!("app:{client}");
        let keys: Vec<(String, Limit)> = std::iter::once((app_key.as_str(), self.limits.per_app))
            .chain(keyed)
            .map(|(k, l)| (k.to_owned(), l))
            .collect();
        // Coming back early only counts for what the 429 was about: this record, or the app-wide
        // limit; another record is not blocked by one record's 429.
        let violated = keys
            .iter()
            .any(|(k, _)| state.blocked_until.get(k).is_some_and(|until| now < *until));
        let mut wait = Duration::ZERO;
        let mut full = Vec::new();
        for (key, limit) in &keys {
            let window = state.windows.entry(key.clone()).or_default();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.window)
            {
                window.pop_front();
            }
            if window.len() >= limit.requests
                && let Some(oldest) = window.front()
            {
                let key_wait = limit.window - now.duration_since(*oldest);
                wait = wait.max(key_wait);
                full.push((key.clone(), key_wait));
            }
        }
        if wait > Duration::ZERO {
            for (key, key_wait) in full {
                state.blocked_until.insert(key, now + key_wait);
            }
            return Verdict::Throttle {
                retry_after: wait,
                violated_retry_after: violated,
            };
        }
        for (key, _) in &keys {
            state.windows.entry(key.clone()).or_default().push_back(now);
        }
        Verdict::Allow {
            violated_retry_after: violated,
        }
    }

    /// Records that `client` was told to wait `for_` about `keyed` (or the whole app), by fault
    /// injection rather than a limit.
    pub fn block(&self, client: &str, keyed: Option<&str>, for_: Duration, now: Instant) {
        let key = keyed.map_or_else(|| format!("app:{client}"), str::to_owned);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.blocked_until.insert(key, now + for_);
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_41st_request_on_one_record_in_20_seconds_is_throttled_until_the_window_has_room() {
        let throttle = Throttle::new(Limits::default());
        let t0 = Instant::now();
        let limit = Limits::default().per_record;
        for i in 0..40 {
            let at = t0 + Duration::from_millis(i * 100);
            assert!(
                matches!(
                    throttle.check("c", Some(("rec:a", limit)), at),
                    Verdict::Allow { .. }
                ),
                "request {i}"
            );
        }
        let at = t0 + Duration::from_secs(5);
        let Verdict::Throttle {
            retry_after,
            violated_retry_after,
        } = throttle.check("c", Some(("rec:a", limit)), at)
        else {
            panic!("41st request allowed");
        };
        assert_eq!(retry_after, Duration::from_secs(15));
        assert!(!violated_retry_after);
        // Another record is not affected; coming back early to the same one is counted.
        assert_eq!(
            throttle.check("c", Some(("rec:b", limit)), at + Duration::from_secs(1)),
            Verdict::Allow {
                violated_retry_after: false
            }
        );
        assert!(matches!(
            throttle.check("c", Some(("rec:a", limit)), at + Duration::from_secs(2)),
            Verdict::Throttle {
                violated_retry_after: true,
                ..
            }
        ));
        assert!(matches!(
            throttle.check("c", Some(("rec:a", limit)), t0 + Duration::from_secs(21)),
            Verdict::Allow { .. }
        ));
    }
}
