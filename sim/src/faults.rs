//! Fault injection, each switchable and seeded: the same seed and the same sequence of requests give
//! the same faults.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::rng::Rng;

/// How a `429` states its `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfter {
    /// Whole seconds (`Retry-After: 10`).
    Seconds(u32),
    /// Fractional seconds, as Graph sometimes sends (`Retry-After: 2.128`).
    Fractional(f64),
}

impl RetryAfter {
    pub fn header(self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::Fractional(s) => format!("{s:.3}"),
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Self::Seconds(s) => Duration::from_secs(u64::from(s)),
            Self::Fractional(s) => Duration::from_secs_f64(s.max(0.0)),
        }
    }
}

/// Which faults happen, and how often (probabilities per request or per notification).
#[derive(Debug, Clone)]
pub struct Faults {
    /// `429` with [`Faults::retry_after`] on Graph data requests (on top of the real limits).
    pub throttle_rate: f64,
    pub retry_after: RetryAfter,
    /// When set, every other `429` (by draw) carries this `Retry-After` instead: Graph sends whole
    /// and fractional seconds alike.
    pub retry_after_alternate: Option<RetryAfter>,
    /// `503` or `504` (alternating by draw) on Graph data requests.
    pub unavailable_rate: f64,
    /// Responses delayed by [`Faults::slow_by`].
    pub slow_rate: f64,
    pub slow_by: Duration,
    /// Connections closed before a complete response.
    pub reset_rate: f64,
    /// Token endpoint answers `503`.
    pub token_failure_rate: f64,
    /// ... and always does inside these windows (tenant clock): an identity outage of some minutes.
    pub token_outages: Vec<(OffsetDateTime, OffsetDateTime)>,
    /// A notification item delivered twice.
    pub duplicate_rate: f64,
    /// A notification item never delivered.
    pub drop_rate: f64,
    /// Items of a delivery batch shuffled (out-of-order delivery).
    pub reorder: bool,
    /// Notifications issued inside these windows (tenant clock) are never delivered, as in Graph's
    /// tenant-wide notification outages.
    pub delivery_outages: Vec<(OffsetDateTime, OffsetDateTime)>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle_rate: 0.0,
            retry_after: RetryAfter::Fractional(2.128),
            retry_after_alternate: None,
            unavailable_rate: 0.0,
            slow_rate: 0.0,
            slow_by: Duration::from_millis(500),
            reset_rate: 0.0,
            token_failure_rate: 0.0,
            token_outages: Vec::new(),
            duplicate_rate: 0.0,
            drop_rate: 0.0,
            reorder: false,
            delivery_outages: Vec::new(),
        }
    }
}

/// The fault (if any) for one Graph data request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestFault {
    None,
    Throttle(RetryAfter),
    Unavailable(u16),
    Reset,
}

/// Seeded fault decisions.
#[derive(Debug)]
pub struct FaultDice {
    pub config: Faults,
    requests: Mutex<Rng>,
    tokens: Mutex<Rng>,
    delivery: Mutex<Rng>,
}

impl FaultDice {
    pub fn new(config: Faults, seed: u64) -> Self {
        Self {
            config,
            requests: Mutex::new(Rng::derive(seed, "faults/requests")),
            tokens: Mutex::new(Rng::derive(seed, "faults/tokens")),
            delivery: Mutex::new(Rng::derive(seed, "faults/delivery")),
        }
    }

    fn roll<T>(rng: &Mutex<Rng>, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decides the fault and the extra delay for one Graph data request. Draws a fixed number of
    /// values per request, so one fault's rate does not shift another's sequence.
    pub fn request(&self) -> (RequestFault, Option<Duration>) {
        let c = &self.config;
        Self::roll(&self.requests, |rng| {
            let (throttle, unavailable, reset, slow, which) = (
                rng.next_f64(),
                rng.next_f64(),
                rng.next_f64(),
                rng.next_f64(),
                rng.next_u64(),
            );
            let fault = if throttle < c.throttle_rate {
                RequestFault::Throttle(match c.retry_after_alternate {
                    Some(other) if which % 4 >= 2 => other,
                    _ => c.retry_after,
                })
            } else if unavailable < c.unavailable_rate {
                RequestFault::Unavailable(if which % 2 == 0 { 503 } else { 504 })
            } else if reset < c.reset_rate {
                RequestFault::Reset
            } else {
                RequestFault::None
            };
            (fault, (slow < c.slow_rate).then_some(c.slow_by))
        })
    }

    /// Whether a token request at tenant time `at` fails.
    pub fn token_fails(&self, at: OffsetDateTime) -> bool {
        let drawn = Self::roll(&self.tokens, |rng| {
            rng.chance(self.config.token_failure_rate)
        });
        drawn
            || self
                .config
                .token_outages
                .iter()
                .any(|(from, to)| *from <= at && at < *to)
    }

    /// (dropped, duplicated) for one notification item.
    pub fn notification(&self) -> (bool, bool) {
        Self::roll(&self.delivery, |rng| {
            let (d, u) = (rng.next_f64(), rng.next_f64());
            (d < self.config.drop_rate, u < self.config.duplicate_rate)
        })
    }

    pub fn shuffle<T>(&self, items: &mut [T]) {
        if !self.config.reorder {
            return;
        }
        Self::roll(&self.delivery, |rng| {
            for i in (1..items.len()).rev() {
                let j = rng.range(0, i as u64 + 1) as usize;
                items.swap(i, j);
            }
        });
    }

    pub fn in_outage(&self, at: OffsetDateTime) -> bool {
        self.config
            .delivery_outages
            .iter()
            .any(|(from, to)| *from <= at && at < *to)
    }
}
