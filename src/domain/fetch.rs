//! When to try a call-record fetch again, and when to stop: pure rules over the job, the outcome and
//! the time, so they are tested without a queue or a clock.
//!
//! The queue's own redelivery (5 dequeues, 30 s apart) is far too short for what Graph does: the first
//! version of a record appears up to 150 minutes after the call, throttling asks for seconds to
//! minutes, and an outage or a missing permission can last hours. So these outcomes don't fail the
//! invocation: the function puts the job back on the queue with a delay and `attempt + 1`, and only
//! storage failures (where putting it back would fail too) are left to the host's retries and its
//! poison queue.
//! See <https://learn.microsoft.com/graph/api/callrecords-callrecord-get> ("404 Not Found … up to
//! 150 minutes").

use std::time::Duration;

use time::OffsetDateTime;

use super::job::CallRecordJob;

/// Delays and horizons of the fetch retries. All from configuration in production; tests shorten them.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// First delay after a `404`; doubled per attempt up to [`FetchPolicy::not_found_max_delay`].
    pub not_found_initial: Duration,
    pub not_found_max_delay: Duration,
    /// How long after the notification a `404` is still "not yet available".
    pub not_found_horizon: Duration,
    /// Graph keeps call records this long: a `404` for an older one is final.
    pub record_retention: Duration,
    /// First delay after Graph failed (5xx, timeouts) or refused our token (401/403); doubled per
    /// attempt up to [`FetchPolicy::failure_max_delay`].
    pub failure_initial: Duration,
    pub failure_max_delay: Duration,
    /// How long after the notification a failing fetch is still retried (a refused one is retried
    /// for [`FetchPolicy::record_retention`]: it waits for an admin).
    pub failure_horizon: Duration,
    /// Added to every delay, up to this fraction of it, so retries of many records spread out.
    pub jitter: f64,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            not_found_initial: Duration::from_secs(120),
            not_found_max_delay: Duration::from_secs(30 * 60),
            not_found_horizon: Duration::from_secs(8 * 3600),
            record_retention: Duration::from_secs(30 * 24 * 3600),
            failure_initial: Duration::from_secs(60),
            failure_max_delay: Duration::from_secs(60 * 60),
            failure_horizon: Duration::from_secs(3 * 24 * 3600),
            jitter: 0.1,
        }
    }
}

/// What went wrong with one fetch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Setback {
    NotFound,
    Throttled {
        retry_after: Duration,
    },
    /// Graph failed after the client's own retries (5xx, timeouts, cut connections).
    Unavailable,
    /// Graph refused the app's token (401/403): a permission or configuration problem.
    Refused,
    /// Another writer holds the record for this long (or a crashed one's lease has not run out).
    /// Counted like a failure, so that a lease that never ends cannot keep a job cycling forever.
    Busy {
        retry_in: Duration,
    },
}

/// Why a fetch was given up; stored with the failure for the health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// `404` for a record older than Graph keeps them.
    Expired,
    /// Still `404` at the end of the not-yet-available horizon.
    NeverAvailable,
    /// Still failing or refused at the end of the failure horizon.
    KeptFailing,
    /// Graph rejected the request itself (a `400`-class answer other than 401/403/404/429).
    Rejected,
    /// Graph's answer does not parse as a call record.
    Unreadable,
    /// Storage refused a write in a way another try cannot change (a rule of the Table service).
    StorageRefused,
}

impl GiveUp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NeverAvailable => "neverAvailable",
            Self::KeptFailing => "keptFailing",
            Self::Rejected => "rejected",
            Self::Unreadable => "unreadable",
            Self::StorageRefused => "storageRefused",
        }
    }
}

/// What to do with the job after a setback.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// Put it back on the queue, to be fetched again not before `due`.
    RetryAt {
        due: OffsetDateTime,
        job: CallRecordJob,
    },
    GiveUp(GiveUp),
}

/// The next step after `setback` for `job`, at `now`. `unit` in `[0, 1)` draws the jitter.
pub(crate) fn after(
    job: &CallRecordJob,
    setback: Setback,
    now: OffsetDateTime,
    policy: &FetchPolicy,
    unit: f64,
) -> Next {
    let age = now - job.received_at;
    let (base, horizon) = match setback {
        Setback::NotFound if age > policy.record_retention => return Next::GiveUp(GiveUp::Expired),
        Setback::NotFound => (
            backoff(
                policy.not_found_initial,
                policy.not_found_max_delay,
                job.attempt,
            ),
            policy.not_found_horizon,
        ),
        // Graph said how long to wait: wait exactly that, plus jitter, whatever the attempt.
        Setback::Throttled { retry_after } => (retry_after, policy.failure_horizon),
        // Come back when the lease has run out.
        Setback::Busy { retry_in } => (retry_in, policy.failure_horizon),
        Setback::Unavailable => (
            backoff(
                policy.failure_initial,
                policy.failure_max_delay,
                job.attempt,
            ),
            policy.failure_horizon,
        ),
        // A permission problem waits for an admin, as long as Graph keeps the record.
        Setback::Refused => (
            backoff(
                policy.failure_initial,
                policy.failure_max_delay,
                job.attempt,
            ),
            policy.record_retention,
        ),
    };
    if age >= horizon {
        return Next::GiveUp(match setback {
            Setback::NotFound => GiveUp::NeverAvailable,
            _ => GiveUp::KeptFailing,
        });
    }
    // Capped at a week (a `Retry-After` could say anything), and so never past what the date allows.
    let delay = base
        .min(MAX_DELAY)
        .mul_f64(1.0 + policy.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
    let due = now.saturating_add(time::Duration::try_from(delay).unwrap_or(time::Duration::WEEK));
    let mut next = job.clone();
    next.attempt = job.attempt.saturating_add(1);
    next.not_before = Some(due);
    Next::RetryAt { due, job: next }
}

/// The longest a job is put back for.
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `initial * 2^attempt`, capped.
fn backoff(initial: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(30));
    initial.saturating_mul(factor).min(cap)
}

/// How long the queue should hide a message due at `due`: never negative, and never longer than the
/// queue allows (7 days for Azure Storage queues); a message that surfaces early is put back.
pub(crate) fn queue_delay(due: OffsetDateTime, now: OffsetDateTime, max: Duration) -> Duration {
    let wait = due - now;
    if wait.is_negative() {
        return Duration::ZERO;
    }
    Duration::try_from(wait).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn job(attempt: u32, received_at: OffsetDateTime) -> CallRecordJob {
        CallRecordJob {
            id: "r".into(),
            change_type: "created".into(),
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            received_at,
            attempt,
            not_before: None,
            repair: false,
        }
    }

    fn due_after(next: &Next, now: OffsetDateTime) -> Duration {
        match next {
            Next::RetryAt { due, .. } => Duration::try_from(*due - now).unwrap(),
            Next::GiveUp(g) => panic!("gave up: {g:?}"),
        }
    }

    #[test]
    fn not_found_retries_cover_the_horizon_with_a_bounded_number_of_fetches() {
        let policy = FetchPolicy::default();
        let received = datetime!(2026-11-27 10:00 UTC);
        let mut now = received;
        let mut current = job(0, received);
        let mut fetches = 1;
        loop {
            match after(&current, Setback::NotFound, now, &policy, 0.0) {
                Next::RetryAt { due, job } => {
                    now = due;
                    current = job;
                    fetches += 1;
                }
                Next::GiveUp(reason) => {
                    assert_eq!(reason, GiveUp::NeverAvailable);
                    break;
                }
            }
        }
        assert!(
            now - received >= time::Duration::hours(8),
            "gave up at {now}"
        );
        assert!(fetches <= 22, "{fetches} fetches");
    }

    #[test]
    fn not_found_delays_grow_and_are_capped() {
        let policy = FetchPolicy::default();
        let now = datetime!(2026-11-27 10:00 UTC);
        let delays: Vec<_> = (0..8)
            .map(|a| {
                due_after(
                    &after(&job(a, now), Setback::NotFound, now, &policy, 0.0),
                    now,
                )
            })
            .collect();
        assert_eq!(delays[0], Duration::from_secs(120));
        assert_eq!(delays[1], Duration::from_secs(240));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[7], Duration::from_secs(1800));
    }

    #[test]
    fn not_found_for_a_record_older_than_graph_keeps_gives_up_at_once() {
        let now = datetime!(2026-11-27 10:00 UTC);
        let old = job(0, now - time::Duration::days(31));
        assert_eq!(
            after(&old, Setback::NotFound, now, &FetchPolicy::default(), 0.5),
            Next::GiveUp(GiveUp::Expired)
        );
    }

    #[test]
    fn throttled_waits_for_retry_after_plus_bounded_jitter() {
        let policy = FetchPolicy::default();
        let now = datetime!(2026-11-27 10:00 UTC);
        let setback = Setback::Throttled {
            retry_after: Duration::from_millis(2128),
        };
        let low = due_after(&after(&job(3, now), setback, now, &policy, 0.0), now);
        let high = due_after(&after(&job(3, now), setback, now, &policy, 0.999), now);
        assert_eq!(low, Duration::from_millis(2128));
        assert!(
            high > low && high <= Duration::from_millis(2341),
            "{high:?}"
        );
    }

    #[test]
    fn failures_are_retried_until_their_horizon_then_given_up() {
        let policy = FetchPolicy::default();
        let now = datetime!(2026-11-27 10:00 UTC);
        let next = after(&job(0, now), Setback::Refused, now, &policy, 0.0);
        let Next::RetryAt { job: retry, .. } = &next else {
            panic!("{next:?}")
        };
        assert_eq!(retry.attempt, 1);
        assert!(retry.not_before.is_some());
        let late = job(40, now - time::Duration::days(4));
        assert_eq!(
            after(&late, Setback::Unavailable, now, &policy, 0.0),
            Next::GiveUp(GiveUp::KeptFailing)
        );
    }

    #[test]
    fn refused_fetches_wait_for_an_admin_as_long_as_graph_keeps_the_record() {
        let policy = FetchPolicy::default();
        let now = datetime!(2026-11-27 10:00 UTC);
        let weekend = job(60, now - time::Duration::days(4));
        assert!(matches!(
            after(&weekend, Setback::Refused, now, &policy, 0.0),
            Next::RetryAt { .. }
        ));
        let month = job(700, now - time::Duration::days(31));
        assert_eq!(
            after(&month, Setback::Refused, now, &policy, 0.0),
            Next::GiveUp(GiveUp::KeptFailing)
        );
    }

    #[test]
    fn an_absurd_retry_after_is_capped_at_a_week() {
        let now = datetime!(2026-11-27 10:00 UTC);
        let setback = Setback::Throttled {
            retry_after: Duration::from_secs(u64::MAX / 4),
        };
        let delay = due_after(
            &after(&job(0, now), setback, now, &FetchPolicy::default(), 0.0),
            now,
        );
        assert_eq!(delay, MAX_DELAY);
    }

    #[test]
    fn queue_delay_is_clamped_to_zero_and_to_the_queue_maximum() {
        let now = datetime!(2026-11-27 10:00 UTC);
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(
            queue_delay(now - time::Duration::minutes(1), now, week),
            Duration::ZERO
        );
        assert_eq!(
            queue_delay(now + time::Duration::minutes(2), now, week),
            Duration::from_secs(120)
        );
        assert_eq!(queue_delay(now + time::Duration::days(9), now, week), week);
    }

    #[test]
    fn busy_put_backs_count_attempts_and_end_at_the_failure_horizon() {
        let policy = FetchPolicy::default();
        let now = datetime!(2026-11-27 10:00 UTC);
        let busy = Setback::Busy {
            retry_in: Duration::from_secs(300),
        };
        let Next::RetryAt { due, job: next } = after(&job(2, now), busy, now, &policy, 0.0) else {
            panic!("gave up at once")
        };
        assert_eq!(next.attempt, 3);
        assert_eq!(
            Duration::try_from(due - now).unwrap(),
            Duration::from_secs(300)
        );
        let stuck = job(900, now - time::Duration::days(3));
        assert_eq!(
            after(&stuck, busy, now, &policy, 0.0),
            Next::GiveUp(GiveUp::KeptFailing)
        );
    }
}
