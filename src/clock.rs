//! The wall clock, passed in: the fetch's retry horizons and the write leases compare with it, and
//! tests replace it with the Graph simulator's clock so that hours of Graph time pass at once.
//!
//! Timestamps come from the clock; spans are of two kinds. Tenant spans (a record's 150 minutes,
//! a report's look-back, a subscription's expiry) are spans of the clock. Spans that bound real
//! work (a write lease, the feed's settle time, a `Retry-After`, a run's budget) are real: where
//! such a span meets a clock timestamp it goes through [`Clock::clock_span`], and where a clock span
//! becomes a real wait (a queue message's visibility, a sleep) it goes through [`Clock::real_span`].
//! Both are the identity but for the [`AcceleratedClock`] of the reliability test and the local
//! run, where a tenant day passes in minutes.

use std::time::Duration;

use time::OffsetDateTime;

/// Where the app reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;

    /// The clock span that passes while `real` passes.
    fn clock_span(&self, real: Duration) -> Duration {
        real
    }

    /// The real time that passes while the clock moves by `span`.
    fn real_span(&self, span: Duration) -> Duration {
        span
    }
}

/// The system clock (UTC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stood at `start` at the real time `real_start` and runs `factor` times faster than
/// real time (the `ACCELERATED_CLOCK` setting, standalone mode only). It is a function of the
/// system clock, so that every process given the same setting (the Graph simulator, the handler,
/// and the handler again after a restart) reads the same time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcceleratedClock {
    start: OffsetDateTime,
    real_start: OffsetDateTime,
    factor: f64,
}

impl AcceleratedClock {
    /// `factor` must be from 1 to 100,000.
    #[must_use]
    pub fn new(start: OffsetDateTime, real_start: OffsetDateTime, factor: f64) -> Option<Self> {
        (1.0..=100_000.0).contains(&factor).then_some(Self {
            start,
            real_start,
            factor,
        })
    }

    /// Reads `START,REAL_START,FACTOR`: two RFC 3339 times and a number, such as
    /// `2026-11-20T00:00:00Z,2026-11-29T06:30:00.25Z,480`.
    ///
    /// # Errors
    /// What is wrong with the value, in words.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let mut parts = value.split(',').map(str::trim);
        let (Some(start), Some(real_start), Some(factor), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("must be START,REAL_START,FACTOR");
        };
        let start = OffsetDateTime::parse(start, rfc3339).map_err(|_| "START is not RFC 3339")?;
        let real_start =
            OffsetDateTime::parse(real_start, rfc3339).map_err(|_| "REAL_START is not RFC 3339")?;
        let factor = factor.parse().map_err(|_| "FACTOR is not a number")?;
        Self::new(start, real_start, factor).ok_or("FACTOR must be from 1 to 100000")
    }

    /// The setting's value for this clock.
    #[must_use]
    pub fn setting(&self) -> String {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        format!(
            "{},{},{}",
            self.start.format(rfc3339).unwrap_or_default(),
            self.real_start.format(rfc3339).unwrap_or_default(),
            self.factor
        )
    }

    #[must_use]
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> OffsetDateTime {
        let real = OffsetDateTime::now_utc() - self.real_start;
        self.start + real * self.factor
    }

    fn clock_span(&self, real: Duration) -> Duration {
        // A `Retry-After` of centuries must not overflow into a panic.
        Duration::try_from_secs_f64(real.as_secs_f64() * self.factor).unwrap_or(Duration::MAX)
    }

    fn real_span(&self, span: Duration) -> Duration {
        span.div_f64(self.factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn an_accelerated_clock_reads_its_setting_back_and_converts_spans_both_ways() {
        let clock =
            AcceleratedClock::parse("2026-11-20T00:00:00Z, 2026-11-29T06:30:00.25Z, 480").unwrap();
        assert_eq!(AcceleratedClock::parse(&clock.setting()), Ok(clock));
        assert_eq!(
            clock.clock_span(Duration::from_secs(3)),
            Duration::from_secs(1440)
        );
        assert_eq!(
            clock.real_span(Duration::from_secs(1440)),
            Duration::from_secs(3)
        );
        assert_eq!(clock.clock_span(Duration::MAX), Duration::MAX);
        // Real time since REAL_START, 480 times over, after START.
        let elapsed = clock.now() - datetime!(2026-11-20 00:00 UTC);
        let real = OffsetDateTime::now_utc() - datetime!(2026-11-29 06:30:00.25 UTC);
        assert!((elapsed.as_seconds_f64() / real.as_seconds_f64() - 480.0).abs() < 0.01);
    }

    #[test]
    fn a_malformed_accelerated_clock_setting_is_refused() {
        for bad in [
            "",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,480,1",
            "yesterday,2026-11-20T00:00:00Z,480",
            "2026-11-20T00:00:00Z,now,480",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,fast",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,0.5",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,inf",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,NaN",
            "2026-11-20T00:00:00Z,2026-11-20T00:00:00Z,100001",
        ] {
            assert!(AcceleratedClock::parse(bad).is_err(), "{bad}");
        }
    }
}
