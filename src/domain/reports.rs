//! The PSTN and Direct Routing reports: what each one is, which time windows a pull reads, and the
//! columns we derive for accounting. Pure: the time comes in, plans and values go out.
//!
//! Graph's reports (`getPstnCalls`, `getDirectRoutingCalls`) take a window of at most 90 days, filter
//! on the call's start, and publish rows late: the Teams admin center documents 24–48 hours for PSTN,
//! we assume up to 72. So every pull re-reads a short look-back before its checkpoint (rows a few
//! hours late), and once a day a deep look-back (rows days late), at a bounded cost: see
//! [`plan`] and the README's cadence section.
//! See <https://learn.microsoft.com/graph/api/callrecords-callrecord-getpstncalls> and
//! <https://learn.microsoft.com/graph/api/callrecords-callrecord-getdirectroutingcalls>.

use std::time::Duration;

use time::OffsetDateTime;

/// One of the two reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Report {
    Pstn,
    DirectRouting,
}

impl Report {
    pub(crate) const ALL: [Self; 2] = [Self::Pstn, Self::DirectRouting];

    /// The key of its checkpoint and the name in logs.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Pstn => "pstn",
            Self::DirectRouting => "directRouting",
        }
    }

    /// Graph's function under `communications/callRecords/`.
    pub(crate) fn function(self) -> &'static str {
        match self {
            Self::Pstn => "getPstnCalls",
            Self::DirectRouting => "getDirectRoutingCalls",
        }
    }

    /// The row times that decide a row's partition, first present wins: the call's start, which is
    /// what Graph filters the report on. A failed Direct Routing attempt has no start
    /// (`0001-01-01`): it is filed by its invite, which every Direct Routing row has and which comes
    /// before the start, so a time-range read by partition finds answered and failed calls alike.
    pub(crate) fn partition_times(self) -> &'static [&'static str] {
        match self {
            Self::Pstn => &["startDateTime", "endDateTime"],
            Self::DirectRouting => &["inviteDateTime", "startDateTime", "failureDateTime"],
        }
    }

    /// Which way the call went, as `callType` implies it: `inbound` or `outbound`, or `None` where
    /// it does not say (conference legs, values Graph adds later).
    /// PSTN: `user_in`, `user_out`, `user_out_transfer`, `ucap_in`, `emergency_out`, …;
    /// Direct Routing: `ByotIn`, `ByotOut`, `ByotOutUserForwarding`, `ByotOutUserTransfer`, ….
    pub(crate) fn direction(self, call_type: &str) -> Option<&'static str> {
        let t = call_type.to_ascii_lowercase();
        match self {
            Self::Pstn if t.ends_with("_in") || t.contains("_in_") => Some("inbound"),
            Self::Pstn if t.ends_with("_out") || t.contains("_out_") => Some("outbound"),
            Self::DirectRouting if t.starts_with("byotin") => Some("inbound"),
            Self::DirectRouting if t.starts_with("byotout") => Some("outbound"),
            _ => None,
        }
    }
}

/// Seconds from the invite to the answer (`answered`: the call's start), or to the failure of an
/// attempt that was not answered: how long it rang (Direct Routing). An attempt without a failure
/// time rang until its start, which Graph may set "equal to the invite or failure time" for failed
/// and unanswered calls. `None` without an invite, or when the times disagree.
pub(crate) fn ring_seconds(
    invite: Option<OffsetDateTime>,
    answered: bool,
    start: Option<OffsetDateTime>,
    failed: Option<OffsetDateTime>,
) -> Option<f64> {
    let rang_until = if answered { start } else { failed.or(start) };
    let seconds = (rang_until? - invite?).as_seconds_f64();
    (seconds >= 0.0).then_some(seconds)
}

/// How far back pulls read. From configuration (`REPORTS_*` settings).
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The first pull of a report reads this far back (`REPORTS_BACKFILL_DAYS`).
    pub backfill: Duration,
    /// Every pull starts this long before its checkpoint (`REPORTS_LOOKBACK_HOURS`).
    pub lookback: Duration,
    /// A deep pull starts this long before now (`REPORTS_DEEP_LOOKBACK_HOURS`): longer than the
    /// latest a row appears (72 h) plus the time between deep pulls, so that a row published late
    /// is inside some deep pull's range.
    pub deep_lookback: Duration,
    /// How often a pull is deep (`REPORTS_DEEP_EVERY_HOURS`).
    pub deep_every: Duration,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            backfill: Duration::from_secs(30 * 24 * 3600),
            lookback: Duration::from_secs(3 * 3600),
            deep_lookback: Duration::from_secs(96 * 3600),
            deep_every: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the state table says about a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Everything that started before this was stored completely (as Graph published it then).
    pub(crate) through: Option<OffsetDateTime>,
    /// When the last deep pull completed.
    pub(crate) last_deep: Option<OffsetDateTime>,
    /// A deep pull under way, cut short by a run's budget, has re-read everything before this:
    /// the next one goes on from here instead of starting over.
    pub(crate) deep_next: Option<OffsetDateTime>,
}

/// One request's range, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) from: OffsetDateTime,
    pub(crate) to: OffsetDateTime,
}

/// The windows of one pull, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) windows: Vec<Window>,
    /// Reaches back the deep look-back: completing it moves `last_deep`.
    pub(crate) deep: bool,
}

/// Windows are cut at UTC midnight: a window is at most a day (a partition), far inside Graph's 90
/// days, and the checkpoint advances day by day through a back-fill.
const DAY: time::Duration = time::Duration::DAY;

/// The windows a pull at `now` reads, given the checkpoint, as `[from, to)` back to back:
/// `getPstnCalls`' `toDateTime` is inclusive, so a row exactly on a window's end is read by both
/// windows (harmless: writes are upserts by row id); `getDirectRoutingCalls`' is exclusive, so
/// it is read once. Either way no row falls between two windows.
///
/// - first pull: the back-fill, `[now − backfill, now)`;
/// - later: `[through − lookback, now)`, and from `now − deep_lookback` when a deep pull is due,
///   or from where the deep pull under way stopped (`deep_next`).
pub(crate) fn plan(
    checkpoint: &Checkpoint,
    now: OffsetDateTime,
    settings: &ReportSettings,
) -> Plan {
    let end = now.replace_nanosecond(0).unwrap_or(now);
    let ago = |d: Duration| end - time::Duration::try_from(d).unwrap_or(time::Duration::ZERO);
    let (mut start, deep) = match checkpoint.through {
        None => (
            ago(settings.backfill),
            settings.backfill >= settings.deep_lookback,
        ),
        Some(through) => {
            let start = through.min(end)
                - time::Duration::try_from(settings.lookback).unwrap_or(time::Duration::ZERO);
            let due = checkpoint.last_deep.is_none_or(|last| {
                end - last >= time::Duration::try_from(settings.deep_every).unwrap_or(DAY)
            });
            (start, due)
        }
    };
    if deep {
        start = start.min(
            checkpoint
                .deep_next
                .unwrap_or_else(|| ago(settings.deep_lookback)),
        );
    }
    let mut windows = Vec::new();
    let mut from = start;
    while from < end {
        let midnight = from.replace_time(time::Time::MIDNIGHT) + DAY;
        let to = midnight.min(end);
        windows.push(Window { from, to });
        from = to;
    }
    Plan { windows, deep }
}

/// The windows of a plan in the order a pull reads them: first the ones at or after `through`
/// (never completed: each one done moves the checkpoint), then the re-reads before it (the
/// look-back, and the deep look-back). A window that straddles `through` is split there. A pull
/// whose re-reads alone outlast its time budget therefore still moves its checkpoint every run;
/// read in time order, such a pull would re-read the same days on every run and never get further.
pub(crate) fn frontier_first(
    windows: &[Window],
    through: Option<OffsetDateTime>,
) -> Vec<(Window, bool)> {
    let Some(through) = through else {
        return windows.iter().map(|w| (*w, true)).collect();
    };
    let mut fresh = Vec::new();
    let mut reread = Vec::new();
    for w in windows {
        if w.from >= through {
            fresh.push((*w, true));
        } else if w.to <= through {
            reread.push((*w, false));
        } else {
            reread.push((
                Window {
                    from: w.from,
                    to: through,
                },
                false,
            ));
            fresh.push((
                Window {
                    from: through,
                    to: w.to,
                },
                true,
            ));
        }
    }
    fresh.extend(reread);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn new_windows_come_before_re_reads_and_a_straddling_window_is_split() {
        let w = |from: OffsetDateTime, to: OffsetDateTime| Window { from, to };
        let windows = [
            w(
                datetime!(2026-11-25 00:00 UTC),
                datetime!(2026-11-26 00:00 UTC),
            ),
            w(
                datetime!(2026-11-26 00:00 UTC),
                datetime!(2026-11-27 00:00 UTC),
            ),
            w(
                datetime!(2026-11-27 00:00 UTC),
                datetime!(2026-11-28 00:00 UTC),
            ),
        ];
        let through = datetime!(2026-11-26 09:00 UTC);
        assert_eq!(
            frontier_first(&windows, Some(through)),
            vec![
                (w(through, datetime!(2026-11-27 00:00 UTC)), true),
                (windows[2], true),
                (windows[0], false),
                (w(datetime!(2026-11-26 00:00 UTC), through), false),
            ]
        );
        assert!(
            frontier_first(&windows, None)
                .iter()
                .all(|(_, fresh)| *fresh)
        );
    }

    const NOW: OffsetDateTime = datetime!(2026-11-28 10:15:07.25 UTC);

    fn contiguous(plan: &Plan) {
        for pair in plan.windows.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "gap or overlap in {plan:?}");
        }
        for w in &plan.windows {
            assert!(w.from < w.to && w.to - w.from <= DAY, "{w:?}");
        }
    }

    #[test]
    fn the_first_pull_back_fills_day_by_day_up_to_now() {
        let plan = plan(&Checkpoint::default(), NOW, &ReportSettings::default());
        contiguous(&plan);
        assert_eq!(
            plan.windows.first().unwrap().from,
            datetime!(2026-10-29 10:15:07 UTC)
        );
        assert_eq!(
            plan.windows.last().unwrap().to,
            datetime!(2026-11-28 10:15:07 UTC)
        );
        assert_eq!(plan.windows.len(), 31);
        assert!(
            plan.deep,
            "a 30-day back-fill reaches past the deep look-back"
        );
    }

    #[test]
    fn later_pulls_reread_the_look_back_and_go_deep_once_a_day() {
        let settings = ReportSettings::default();
        let shallow = Checkpoint {
            through: Some(datetime!(2026-11-28 10:00 UTC)),
            last_deep: Some(datetime!(2026-11-28 02:00 UTC)),
            deep_next: None,
        };
        let plan_now = plan(&shallow, NOW, &settings);
        contiguous(&plan_now);
        assert!(!plan_now.deep);
        assert_eq!(plan_now.windows.len(), 1);
        assert_eq!(plan_now.windows[0].from, datetime!(2026-11-28 07:00 UTC));

        let due = Checkpoint {
            last_deep: Some(datetime!(2026-11-27 10:00 UTC)),
            ..shallow
        };
        let deep = plan(&due, NOW, &settings);
        contiguous(&deep);
        assert!(deep.deep);
        assert_eq!(deep.windows[0].from, datetime!(2026-11-24 10:15:07 UTC));

        // A deep pull cut short goes on from where it stopped, not from the deep look-back.
        let resumed = Checkpoint {
            deep_next: Some(datetime!(2026-11-26 00:00 UTC)),
            ..due
        };
        let resumed = plan(&resumed, NOW, &settings);
        contiguous(&resumed);
        assert!(resumed.deep);
        assert_eq!(resumed.windows[0].from, datetime!(2026-11-26 00:00 UTC));
    }

    #[test]
    fn a_checkpoint_in_the_future_still_reads_up_to_now() {
        let ahead = Checkpoint {
            through: Some(NOW + time::Duration::hours(5)),
            last_deep: Some(NOW),
            deep_next: None,
        };
        let p = plan(&ahead, NOW, &ReportSettings::default());
        assert_eq!(
            p.windows.last().unwrap().to,
            datetime!(2026-11-28 10:15:07 UTC)
        );
        assert_eq!(p.windows[0].from, datetime!(2026-11-28 07:15:07 UTC));
    }

    #[test]
    fn direction_follows_the_call_type() {
        use Report::{DirectRouting, Pstn};
        assert_eq!(Pstn.direction("user_in"), Some("inbound"));
        assert_eq!(Pstn.direction("user_out"), Some("outbound"));
        assert_eq!(Pstn.direction("user_out_transfer"), Some("outbound"));
        assert_eq!(Pstn.direction("ucap_in"), Some("inbound"));
        assert_eq!(Pstn.direction("emergency_out"), Some("outbound"));
        assert_eq!(Pstn.direction("conf_something"), None);
        assert_eq!(DirectRouting.direction("ByotIn"), Some("inbound"));
        assert_eq!(
            DirectRouting.direction("ByotOutUserForwarding"),
            Some("outbound")
        );
        assert_eq!(DirectRouting.direction("Other"), None);
    }

    #[test]
    fn ring_time_runs_from_the_invite_to_the_answer_or_the_failure() {
        let invite = Some(datetime!(2019-11-01 00:00:21.949 UTC));
        let start = Some(datetime!(2019-11-01 00:00:25.105 UTC));
        let failure = Some(datetime!(2019-11-01 00:00:30 UTC));
        assert!((ring_seconds(invite, true, start, None).unwrap() - 3.156).abs() < 1e-9);
        assert!((ring_seconds(invite, false, None, failure).unwrap() - 8.051).abs() < 1e-9);
        // A failed attempt with a start too rang until it failed.
        assert!((ring_seconds(invite, false, start, failure).unwrap() - 8.051).abs() < 1e-9);
        assert!((ring_seconds(invite, false, start, None).unwrap() - 3.156).abs() < 1e-9);
        assert_eq!(ring_seconds(None, true, start, failure), None);
        assert_eq!(ring_seconds(start, true, invite, None), None);
    }
}
