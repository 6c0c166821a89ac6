//! The tenant's clock: real time, or a manual clock tests move by hand, or real time sped up. Record
//! availability ("150 minutes after the call"), the 30-day window and report lateness follow it;
//! throttling windows and token lifetimes follow tokio's clock, which is real time unless a benchmark
//! pauses it (`benches/scale.rs`), as they do for a real client.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone)]
pub struct SimClock(Arc<Mutex<Mode>>);

#[derive(Debug)]
enum Mode {
    Real,
    Manual(OffsetDateTime),
    Accelerated {
        real_start: Instant,
        sim_start: OffsetDateTime,
        factor: f64,
    },
}

impl SimClock {
    pub fn real() -> Self {
        Self(Arc::new(Mutex::new(Mode::Real)))
    }

    /// Stands still at `at` until [`SimClock::advance`] moves it.
    pub fn manual(at: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(Mode::Manual(at))))
    }

    /// Starts at `at` and runs `factor` times faster than real time.
    pub fn accelerated(at: OffsetDateTime, factor: f64) -> Self {
        Self(Arc::new(Mutex::new(Mode::Accelerated {
            real_start: Instant::now(),
            sim_start: at,
            factor,
        })))
    }

    pub fn now(&self) -> OffsetDateTime {
        match &*self.lock() {
            Mode::Real => OffsetDateTime::now_utc(),
            Mode::Manual(at) => *at,
            Mode::Accelerated {
                real_start,
                sim_start,
                factor,
            } => *sim_start + Duration::seconds_f64(real_start.elapsed().as_secs_f64() * factor),
        }
    }

    /// Moves a manual or accelerated clock forward (a real clock cannot be moved: no effect).
    pub fn advance(&self, by: Duration) {
        match &mut *self.lock() {
            Mode::Real => {}
            Mode::Manual(at) => *at += by,
            Mode::Accelerated { sim_start, .. } => *sim_start += by,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mode> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
