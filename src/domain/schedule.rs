//! Timer schedules: the six-field NCRONTAB expressions of `handlers/*/function.json`
//! (`{second} {minute} {hour} {day} {month} {day-of-week}`, Sunday = 0, UTC), parsed by `croner`.
//! The Functions host reads the same expressions, so both run modes fire at the same times.
//! See <https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions>.

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use time::OffsetDateTime;

/// A schedule that does not parse as a six-field NCRONTAB expression.
#[derive(Debug, thiserror::Error)]
#[error("`{expression}` is not a six-field NCRONTAB schedule ({reason})")]
pub(crate) struct ScheduleError {
    expression: String,
    reason: String,
}

/// A parsed NCRONTAB schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// # Errors
    /// [`ScheduleError`] for anything but six fields croner accepts.
    pub(crate) fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let error = |reason: String| ScheduleError {
            expression: expression.to_owned(),
            reason,
        };
        // Six fields exactly: NCRONTAB has no year field, and the host refuses five.
        if expression.split_whitespace().count() != 6 {
            return Err(error("it must have six fields, seconds first".to_owned()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(expression)
            .map_err(|e| error(e.to_string()))?;
        Ok(Self { cron })
    }

    /// The first time strictly after `after` that the schedule names (UTC).
    pub(crate) fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let nanos = after.unix_timestamp_nanos();
        let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
        let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
        let start = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(next.timestamp()) * 1_000_000_000
                + i128::from(next.timestamp_subsec_nanos()),
        )
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_fifteen_minutes_fires_on_the_quarter_hours() {
        let schedule = Schedule::parse("0 */15 * * * *").unwrap();
        let t = datetime!(2026-11-28 10:07:31.5 UTC);
        let first = schedule.next_after(t).unwrap();
        assert_eq!(first, datetime!(2026-11-28 10:15 UTC));
        assert_eq!(
            schedule.next_after(first).unwrap(),
            datetime!(2026-11-28 10:30 UTC)
        );
    }

    #[test]
    fn day_of_week_counts_from_sunday_as_zero() {
        // 2026-11-29 is a Sunday.
        let schedule = Schedule::parse("0 30 9 * * 0").unwrap();
        assert_eq!(
            schedule
                .next_after(datetime!(2026-11-28 12:00 UTC))
                .unwrap(),
            datetime!(2026-11-29 09:30 UTC)
        );
    }

    #[test]
    fn five_fields_or_nonsense_are_refused_with_the_expression() {
        for bad in [
            "*/15 * * * *",
            "0 */15 * * * * 2026",
            "every 15 minutes",
            "61 * * * * *",
        ] {
            let error = Schedule::parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }
}
