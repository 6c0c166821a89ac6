//! The one retry policy of the Graph client: which outcomes are worth another try, how long to wait
//! before it, and when to stop. Pure functions only; the loop that applies them is
//! [`GraphClient`](super::GraphClient)'s `send`, and nothing else in the crate retries Graph calls
//! (the credential's own pipeline retry is switched off in `auth`, so retries do not stack).
//!
//! - Transient: `408`, `429`, `500`, `502`, `503`, `504`, transport failures (connect, timeout, a
//!   connection cut before the body was read) and token requests that failed the same way.
//!   Everything else is final: retrying a `400` or a `403` only burns the throttling budget.
//! - The wait before retry `n` (from 0) is `max(Retry-After, min(initial · 2ⁿ, max_delay)) + jitter`:
//!   Graph's throttling guidance says to wait at least `Retry-After`
//!   (<https://learn.microsoft.com/graph/throttling#best-practices-to-handle-throttling>).
//! - A `Retry-After` longer than `max_inline_retry_after` is not slept here: the caller gets
//!   `GraphError::Throttled` and re-enqueues the work with that delay (the queue's redelivery covers
//!   long waits, in-process retries only blips).
//! - Retrying stops after `max_retries` retries, or when the next wait would end after `max_elapsed`
//!   since the first try, whichever comes first.

use std::time::{Duration, SystemTime};

use crate::config::GraphConfig;

/// How one Graph request is retried. Every delay is a field, so tests run with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (`GRAPH_MAX_RETRIES`).
    pub max_retries: u32,
    /// No wait may end later than this after the first try (`GRAPH_MAX_RETRY_ELAPSED_SECONDS`).
    pub max_elapsed: Duration,
    /// The first backoff; doubled for each further retry.
    pub initial_delay: Duration,
    /// Cap of the exponential part (a longer `Retry-After` still wins).
    pub max_delay: Duration,
    /// At most this much random delay is added to every wait, so that requests throttled together
    /// do not all come back in the same instant.
    pub jitter: Duration,
    /// A `Retry-After` longer than this is returned to the caller instead of slept
    /// (`GRAPH_MAX_INLINE_RETRY_AFTER_SECONDS`).
    pub max_inline_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            max_elapsed: Duration::from_secs(60),
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(16),
            jitter: Duration::from_millis(250),
            max_inline_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The policy the configuration describes; the delays not exposed as settings keep their defaults.
    pub fn from_config(config: &GraphConfig) -> Self {
        Self {
            max_retries: config.max_retries,
            max_elapsed: config.max_retry_elapsed,
            max_inline_retry_after: config.max_inline_retry_after,
            ..Self::default()
        }
    }

    /// The exponential part of the wait before retry `retry` (0 = the first retry), capped.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// What to do after a failed try. `retries` is how many retries were already made, `elapsed`
    /// the time since the first try began, `unit` a random number in `[0, 1)` for the jitter.
    pub(crate) fn next_step(
        &self,
        failure: Failure,
        retries: u32,
        elapsed: Duration,
        unit: f64,
    ) -> Step {
        if !failure.is_transient() {
            return Step::Stop;
        }
        let retry_after = failure.retry_after();
        if retry_after.is_some_and(|after| after > self.max_inline_retry_after) {
            return Step::Stop;
        }
        if retries >= self.max_retries {
            return Step::Stop;
        }
        let jitter = self.jitter.mul_f64(unit.clamp(0.0, 1.0));
        let wait = retry_after
            .unwrap_or(Duration::ZERO)
            .max(self.backoff(retries))
            .saturating_add(jitter);
        if elapsed.saturating_add(wait) > self.max_elapsed {
            return Step::Stop;
        }
        Step::Retry(wait)
    }
}

/// How one try failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Graph answered with a status that is not 2xx (and maybe a `Retry-After`).
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No complete answer: connection refused or cut, timeout, body not fully read.
    Transport,
    /// No token; `transient` when the token endpoint was unreachable or failing (not a bad secret).
    Token { transient: bool },
    /// Our own refusal or a response we cannot use: never retried.
    Final,
}

impl Failure {
    fn is_transient(self) -> bool {
        match self {
            Self::Status { status, .. } => is_transient_status(status),
            Self::Transport => true,
            Self::Token { transient } => transient,
            Self::Final => false,
        }
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => retry_after,
            _ => None,
        }
    }
}

/// What the request loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Sleep this long, then try again.
    Retry(Duration),
    /// Give up and return the last failure.
    Stop,
}

/// Graph statuses worth another try: request timeout, throttling, and the server-side failures
/// Graph documents as temporary (<https://learn.microsoft.com/graph/errors#http-status-codes>).
/// Storage has its own rule, in the `table_storage` crate; the two agree today by coincidence of
/// the platforms, not by sharing code.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Parses a `Retry-After` value: whole or fractional seconds (Graph sends `2.128`), or an HTTP date,
/// which counts from `now` (the response's `Date` when it has one, so that clock skew between us and
/// Graph does not matter). A date in the past means "now"; anything else unparseable (negative,
/// empty, `inf`) is `None`, and the backoff alone decides.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = value.parse().ok()?;
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            max_elapsed: Duration::from_secs(60),
            initial_delay: ms(100),
            max_delay: ms(1000),
            jitter: ms(50),
            max_inline_retry_after: Duration::from_secs(30),
        }
    }

    fn status(status: u16, retry_after: Option<Duration>) -> Failure {
        Failure::Status {
            status,
            retry_after,
        }
    }

    #[test]
    fn retry_after_parses_seconds_fractions_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let cases: &[(&str, Option<Duration>)] = &[
            ("10", Some(Duration::from_secs(10))),
            (" 0 ", Some(Duration::ZERO)),
            ("2.128", Some(ms(2128))),
            ("0.5", Some(ms(500))),
            (
                "Wed, 21 Oct 2026 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2026 07:27:00 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("-0.5", None),
            ("", None),
            ("soon", None),
            ("1.2.3", None),
            ("inf", None),
            ("NaN", None),
            ("1e3", None),
            ("+5", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                *expected,
                "Retry-After: {value:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let p = policy();
        let waits: Vec<Duration> = (0..6).map(|n| p.backoff(n)).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Huge retry counts saturate instead of overflowing.
        assert_eq!(p.backoff(200), ms(1000));
    }

    #[test]
    fn wait_is_the_backoff_plus_at_most_the_jitter() {
        let p = policy();
        for retries in 0..4 {
            for unit in [0.0, 0.3, 0.999_999] {
                let Step::Retry(wait) = p.next_step(status(503, None), retries, ms(0), unit) else {
                    panic!("503 after {retries} retries should be retried");
                };
                let base = p.backoff(retries);
                assert!(
                    wait >= base && wait <= base + p.jitter,
                    "retry {retries}, unit {unit}: {wait:?} outside {base:?}..={:?}",
                    base + p.jitter
                );
            }
        }
    }

    #[test]
    fn retry_after_wins_over_a_shorter_backoff_and_never_waits_less() {
        let p = policy();
        let after = ms(2128);
        assert_eq!(
            p.next_step(status(429, Some(after)), 0, ms(0), 0.0),
            Step::Retry(after)
        );
        assert_eq!(
            p.next_step(status(429, Some(after)), 0, ms(0), 1.0),
            Step::Retry(after + p.jitter)
        );
        // A tiny Retry-After does not shorten the backoff.
        assert_eq!(
            p.next_step(status(503, Some(ms(1))), 3, ms(0), 0.0),
            Step::Retry(ms(800))
        );
    }

    #[test]
    fn a_retry_after_above_the_inline_cap_is_not_slept() {
        let p = policy();
        assert_eq!(
            p.next_step(status(429, Some(Duration::from_secs(31))), 0, ms(0), 0.0),
            Step::Stop
        );
        assert!(matches!(
            p.next_step(status(429, Some(Duration::from_secs(30))), 0, ms(0), 0.0),
            Step::Retry(_)
        ));
    }

    #[test]
    fn retrying_stops_at_max_retries_or_max_elapsed_whichever_comes_first() {
        let p = policy();
        assert!(matches!(
            p.next_step(status(503, None), 3, ms(0), 0.0),
            Step::Retry(_)
        ));
        assert_eq!(p.next_step(status(503, None), 4, ms(0), 0.0), Step::Stop);
        // The next wait (100 ms) would end after the 60 s budget.
        assert_eq!(
            p.next_step(status(503, None), 0, ms(59_950), 0.0),
            Step::Stop
        );
        assert!(matches!(
            p.next_step(status(503, None), 0, ms(59_900), 0.0),
            Step::Retry(_)
        ));
        let none = RetryPolicy {
            max_retries: 0,
            ..p
        };
        assert_eq!(
            none.next_step(Failure::Transport, 0, ms(0), 0.0),
            Step::Stop
        );
    }

    #[test]
    fn every_status_is_classified() {
        let p = policy();
        let transient = [408, 429, 500, 502, 503, 504];
        for code in 100..600u16 {
            let retried = matches!(
                p.next_step(status(code, None), 0, ms(0), 0.0),
                Step::Retry(_)
            );
            assert_eq!(
                retried,
                transient.contains(&code),
                "status {code} classified wrongly"
            );
        }
    }

    #[test]
    fn transport_and_token_failures_are_classified() {
        let p = policy();
        let cases = [
            (Failure::Transport, true),
            (Failure::Token { transient: true }, true),
            (Failure::Token { transient: false }, false),
            (Failure::Final, false),
        ];
        for (failure, retried) in cases {
            assert_eq!(
                matches!(p.next_step(failure, 0, ms(0), 0.0), Step::Retry(_)),
                retried,
                "{failure:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a server puts in `Retry-After`, parsing it and turning it into the limiter's
        /// deadline never panics, and the retry step stays bounded by the policy.
        #[test]
        fn any_retry_after_header_is_parsed_and_applied_without_a_panic(
            value in proptest::prelude::prop_oneof![
                ".*",
                "[0-9]{1,40}(\\.[0-9]{0,40})?",
                "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4,6} [0-9:]{8} GMT",
            ],
            retries in 0u32..64,
        ) {
            let parsed = parse_retry_after(&value, SystemTime::now());
            let now = tokio::time::Instant::now();
            if let Some(after) = parsed {
                let until = super::super::rate::deadline(now, after);
                proptest::prop_assert!(until >= now);
            }
            let failure = status(429, parsed);
            if let Step::Retry(wait) = policy().next_step(failure, retries, Duration::ZERO, 0.5) {
                proptest::prop_assert!(wait <= Duration::from_secs(61));
            }
        }
    }

    #[test]
    fn a_retry_after_of_centuries_blocks_for_a_year_rather_than_overflowing() {
        let now = tokio::time::Instant::now();
        let parsed = parse_retry_after("18000000000000000000", SystemTime::now()).unwrap();
        let until = super::super::rate::deadline(now, parsed);
        assert_eq!(until - now, Duration::from_secs(365 * 24 * 3600));
    }
}
