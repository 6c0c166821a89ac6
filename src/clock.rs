//! The wall clock, passed in: the fetch's retry horizons and the write leases compare with it, and
//! tests replace it with the Graph simulator's clock so that hours of Graph time pass at once.

use time::OffsetDateTime;

/// Where the app reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock (UTC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
