//! The subscription's life and reconciliation, as decisions without IO: which of the app's Graph
//! subscriptions is ours and which must go, how far a renewal reaches, which time span a
//! reconciliation covers after the subscription was lost, how a span is cut into slices, when an
//! hour of calls is owed its next listing (pass), and which listed records must be fetched.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::secret::secrets_equal;

/// Graph's longest subscription life for call records.
pub(crate) const MAX_LIFETIME: time::Duration = time::Duration::minutes(4230);
/// Asked for less than the maximum by this much: Graph refuses an expiry past its own clock plus
/// 4,230 minutes, and ours may run ahead of it.
const CLOCK_MARGIN: time::Duration = time::Duration::minutes(5);
/// Graph keeps call records this long; nothing older can be listed or fetched.
pub(crate) const RETENTION: time::Duration = time::Duration::days(30);
/// An hour's pass, or a waiting span, is listed in slices of about this many calls (30 pages of
/// 60, some 15 s at Graph's list limit): progress is kept after each, so a run cut short lists at
/// most about this much again, and a sparse hour is one request.
pub(crate) const SLICE_CALLS: u64 = 1_800;
/// The longest slice of an hour's pass: the whole hour.
pub(crate) const MAX_SLICE: time::Duration = time::Duration::HOUR;
/// The longest slice of a waiting span: a quiet tenant's 26-hour gap is five requests.
pub(crate) const MAX_SPAN_SLICE: time::Duration = time::Duration::hours(6);
/// The shortest: a slice cut short is halved for the next try, down to this.
pub(crate) const MIN_SLICE: time::Duration = time::Duration::minutes(1);
/// At most this many hours get their rows at once: Graph's retention (a deployment that did not
/// run for longer than that has nothing older to list).
const MAX_NEW_HOURS: i64 = 30 * 24;
/// The answer to one `reauthorizationRequired` suffices for this long: Graph repeats the event
/// until it is acted on, and each repeat must not cost another request.
pub(crate) const REAUTHORIZE_QUIET: time::Duration = time::Duration::minutes(10);
/// A subscription expiring within this is renewed in answer to `reauthorizationRequired` (a
/// renewal reauthorizes too); one further out is only reauthorized.
pub(crate) const RENEW_WITHIN: time::Duration = time::Duration::hours(24);

/// A subscription as Graph lists it (the fields we read; the rest is ignored).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Seen {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) resource: String,
    #[serde(default)]
    pub(crate) change_type: String,
    #[serde(default)]
    pub(crate) notification_url: Option<String>,
    #[serde(default)]
    pub(crate) lifecycle_notification_url: Option<String>,
    #[serde(default)]
    pub(crate) expiration_date_time: Option<String>,
    /// Graph echoes the client state it was given; absent or null when it does not.
    #[serde(default)]
    pub(crate) client_state: Option<String>,
}

impl Seen {
    pub(crate) fn expires(&self) -> Option<OffsetDateTime> {
        self.expiration_date_time
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    }
}

/// One page of `GET /communications/callRecords` as reconciliation reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct ListedPage {
    #[serde(default)]
    pub(crate) value: Vec<Listed>,
    #[serde(rename = "@odata.nextLink")]
    pub(crate) next_link: Option<String>,
}

/// A listed call record: what tells whether the stored copy is current.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listed {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) version: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(crate) start_date_time: Option<OffsetDateTime>,
}

/// What our subscription must be.
pub(crate) struct Wanted<'a> {
    pub(crate) resource: &'a str,
    pub(crate) change_type: &'a str,
    pub(crate) notification_url: &'a str,
    pub(crate) lifecycle_url: &'a str,
    pub(crate) client_state: &'a [u8],
}

/// `/communications/callRecords` and `communications/callrecords` name the same resource.
fn same_resource(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

/// `created,updated` and `updated, created` are the same change types.
fn same_changes(a: &str, b: &str) -> bool {
    let set = |s: &str| {
        let mut v: Vec<String> = s
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    set(a) == set(b)
}

/// URLs compared as Graph compares them: the same text, give or take a trailing slash and the case
/// of scheme and host.
fn same_url(a: Option<&str>, b: &str) -> bool {
    // Graph's `EventGrid:?…` targets: the same parameters, in any order and case (Azure's names
    // are case-insensitive), so that a listing that writes them otherwise is not taken for another
    // target and replaced on every run.
    let event_grid = |s: &str| {
        let query = s
            .get(..10)
            .filter(|p| p.eq_ignore_ascii_case("eventgrid:"))
            .map(|_| s[10..].trim_start_matches('?'))?;
        let mut params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
            .collect();
        params.sort();
        Some(params)
    };
    if let (Some(a), Some(b)) = (a.and_then(event_grid), event_grid(b)) {
        return a == b;
    }
    let norm = |s: &str| match url::Url::parse(s) {
        Ok(u) => u.as_str().trim_end_matches('/').to_owned(),
        Err(_) => s.trim_end_matches('/').to_owned(),
    };
    a.is_some_and(|a| norm(a) == norm(b))
}

/// What to do with the subscriptions Graph lists for the app.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Ours, to renew (the one living longest, when there are several).
    pub(crate) keep: Option<Seen>,
    /// Subscriptions of the app to the same resource that are not the one we keep: duplicates, and
    /// leftovers of an earlier deployment (another host name, another client state). Graph allows
    /// one per resource and change type, and notifications to an old URL or with an old client
    /// state are lost or rejected, so they go.
    pub(crate) delete: Vec<String>,
}

/// Sorts the app's subscriptions into ours, those to delete, and others (left alone: another
/// resource is someone else's business).
pub(crate) fn plan(seen: Vec<Seen>, wanted: &Wanted<'_>) -> Plan {
    let mut ours: Vec<Seen> = Vec::new();
    let mut delete = Vec::new();
    for s in seen {
        if !same_resource(&s.resource, wanted.resource) {
            continue;
        }
        let fits = same_changes(&s.change_type, wanted.change_type)
            && same_url(s.notification_url.as_deref(), wanted.notification_url)
            // A listing without it cannot say it differs.
            && s.lifecycle_notification_url
                .as_deref()
                .is_none_or(|u| same_url(Some(u), wanted.lifecycle_url))
            // Graph may leave the client state out of a listing: only one it shows can differ.
            && s.client_state
                .as_deref()
                .is_none_or(|c| secrets_equal(c.as_bytes(), wanted.client_state));
        if fits {
            ours.push(s);
        } else {
            delete.push(s.id);
        }
    }
    ours.sort_by_key(|s| std::cmp::Reverse(s.expires()));
    let mut ours = ours.into_iter();
    let keep = ours.next();
    delete.extend(ours.map(|s| s.id));
    Plan { keep, delete }
}

/// The expiry asked for at `now`: as far as Graph allows, less a margin for clock skew.
pub(crate) fn renewal_expiry(now: OffsetDateTime) -> OffsetDateTime {
    now + MAX_LIFETIME - CLOCK_MARGIN
}

/// The calls whose notifications may have gone to a subscription that Graph no longer had: started
/// from `lookback` before the last time it was known to work until `now`, and within Graph's
/// retention. `None` when it never worked (a first install: the admin backfills what came before).
pub(crate) fn gap(
    last_good: Option<OffsetDateTime>,
    now: OffsetDateTime,
    lookback: time::Duration,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let from = (last_good? - lookback).max(now - RETENTION);
    (from < now).then_some((from, now))
}

/// The start of the hour `at` is in.
pub(crate) fn hour_floor(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(at)
}

/// The hours of call starts that get their rows now, and the new frontier: every hour that has
/// ended since `frontier` (on a fresh deployment, since the longest pass of `schedule` before
/// `now`, so that it owes passes for its whole look-back), within Graph's retention.
pub(crate) fn hours_to_add(
    frontier: Option<OffsetDateTime>,
    now: OffsetDateTime,
    schedule: &[std::time::Duration],
) -> (Vec<OffsetDateTime>, OffsetDateTime) {
    let through = hour_floor(now);
    let lookback = schedule
        .last()
        .and_then(|d| time::Duration::try_from(*d).ok())
        .unwrap_or(time::Duration::ZERO);
    let oldest = (through - time::Duration::hours(MAX_NEW_HOURS)).max(hour_floor(now - RETENTION));
    let mut at = frontier
        .map(hour_floor)
        .unwrap_or_else(|| hour_floor(through - lookback))
        .max(oldest);
    let mut starts = Vec::new();
    while at < through {
        starts.push(at);
        at += time::Duration::HOUR;
    }
    (starts, through.max(frontier.unwrap_or(through)))
}

/// The density (calls per second of start time) of the latest hour that had calls, from the
/// hours' densities oldest first: the guess for an hour not listed yet.
pub(crate) fn latest_density(
    densities: impl DoubleEndedIterator<Item = Option<f64>>,
) -> Option<f64> {
    densities.rev().find_map(|d| d.filter(|d| *d > 0.0))
}

/// The length of a slice of about [`SLICE_CALLS`] calls at `density` calls per second of start
/// time, within [`MIN_SLICE`] and `longest`.
pub(crate) fn slice_for_density(density: f64, longest: time::Duration) -> i64 {
    // Calls in an hour at that density: a density is a count over seconds, never huge.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let hourly = (density.max(0.0) * 3600.0).round() as u64;
    next_slice_seconds(3600, hourly, longest)
}

/// The length of the next slice, from how many calls the last one (`seconds` long) listed: about
/// [`SLICE_CALLS`], within [`MIN_SLICE`] and `longest`.
pub(crate) fn next_slice_seconds(seconds: i64, listed: u64, longest: time::Duration) -> i64 {
    let (min, max) = (MIN_SLICE.whole_seconds(), longest.whole_seconds());
    if listed == 0 {
        return max;
    }
    let scaled = i128::from(seconds) * i128::from(SLICE_CALLS) / i128::from(listed);
    i64::try_from(scaled.clamp(i128::from(min), i128::from(max))).unwrap_or(max)
}

/// When an hour's next pass is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Owed since then.
    Now(OffsetDateTime),
    Later,
    /// It has had every pass of the schedule, or Graph no longer keeps its calls.
    Never,
}

/// When the hour ending at `to`, after `passes` passes, is owed its next one (`schedule`: how long
/// after `to` each pass is due).
pub(crate) fn pass_due(
    to: OffsetDateTime,
    passes: u32,
    schedule: &[std::time::Duration],
    now: OffsetDateTime,
) -> Due {
    let Some(offset) = schedule.get(passes as usize) else {
        return Due::Never;
    };
    if to <= now - RETENTION {
        return Due::Never;
    }
    let at = to + time::Duration::try_from(*offset).unwrap_or(time::Duration::ZERO);
    if at <= now { Due::Now(at) } else { Due::Later }
}

/// The passes an hour has had once a pass finishes at `now`: one more, and every pass that fell
/// due while it ran (a listing now covers them all: an hour that was owed two passes, after an
/// outage or on a fresh deployment, is listed once).
pub(crate) fn passes_after(
    to: OffsetDateTime,
    passes: u32,
    schedule: &[std::time::Duration],
    now: OffsetDateTime,
) -> u32 {
    let due = schedule
        .iter()
        .filter(|offset| {
            to + time::Duration::try_from(**offset).unwrap_or(time::Duration::ZERO) <= now
        })
        .count();
    (passes + 1).max(u32::try_from(due).unwrap_or(u32::MAX))
}

/// Whether a listed record must be fetched: not stored, or stored at a lower version than listed.
/// A listing without a version is fetched when nothing is stored (the fetch then decides).
pub(crate) fn needs_fetch(listed: Option<i64>, stored: Option<i64>) -> bool {
    match (listed, stored) {
        (_, None) => true,
        (Some(listed), Some(stored)) => listed > stored,
        (None, Some(_)) => false,
    }
}

/// How often reconciliation sends a record given up on to be fetched again. Each try runs the
/// fetch's whole retry schedule (up to `FETCH_FAILURE_HORIZON_HOURS`), so a record that fails for
/// good stops costing requests after a few days.
pub(crate) const GIVEN_UP_RETRIES: i32 = 3;

/// Whether a record given up on is worth another try now: Graph still has it, it was retried fewer
/// than [`GIVEN_UP_RETRIES`] times, and not since it was last given up (a retry in flight may take
/// days).
pub(crate) fn retry_given_up(
    received_at: Option<OffsetDateTime>,
    gave_up_at: Option<OffsetDateTime>,
    (retried_at, retries): (Option<OffsetDateTime>, i32),
    now: OffsetDateTime,
) -> bool {
    let within_retention =
        received_at.is_some_and(|t| t > now - RETENTION) && retries < GIVEN_UP_RETRIES;
    let not_retried = match (retried_at, gave_up_at) {
        (None, _) => true,
        (Some(retried), Some(gave_up)) => retried < gave_up,
        (Some(_), None) => false,
    };
    within_retention && not_retried
}

/// Why a backfill range is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeError {
    Missing,
    Unparsable,
    Reversed,
    TooLong,
    Future,
}

impl RangeError {
    /// The answer the admin gets.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "`from` and `to` are required (RFC 3339 times, e.g. 2026-11-01T00:00:00Z)"
            }
            Self::Unparsable => {
                "`from` or `to` is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"
            }
            Self::Reversed => "`from` must be before `to`",
            Self::TooLong => {
                "the range may span at most 30 days (Graph keeps call records for 30 days)"
            }
            Self::Future => "`to` lies in the future",
        }
    }
}

/// A backfill range as an admin gives it: both ends, `from` before `to`, at most 30 days, not in
/// the future. Parts older than Graph's retention are cut off later (they list nothing).
pub(crate) fn backfill_range(
    from: Option<&str>,
    to: Option<&str>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), RangeError> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(RangeError::Missing);
    };
    // An unescaped `+` of an offset (`…T00:00:00+02:00`) arrives as a space after form decoding.
    let parse = |s: &str| {
        let s = s.trim();
        OffsetDateTime::parse(s, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(&s.replace(' ', "+"), &Rfc3339))
            .map_err(|_| RangeError::Unparsable)
    };
    let (from, to) = (parse(from)?, parse(to)?);
    if from >= to {
        return Err(RangeError::Reversed);
    }
    if to - from > RETENTION {
        return Err(RangeError::TooLong);
    }
    // A minute of grace for an admin's clock.
    if to > now + time::Duration::minutes(1) {
        return Err(RangeError::Future);
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn wanted() -> Wanted<'static> {
        Wanted {
            resource: "/communications/callRecords",
            change_type: "created,updated",
            notification_url: "https://app.example/api/notifications",
            lifecycle_url: "https://app.example/api/lifecycle",
            client_state: b"secret",
        }
    }

    fn seen(id: &str, url: &str, expires: &str, client_state: Option<&str>) -> Seen {
        Seen {
            id: id.into(),
            resource: "communications/callrecords".into(),
            change_type: "updated, created".into(),
            notification_url: Some(url.into()),
            lifecycle_notification_url: Some("https://APP.example/api/lifecycle/".into()),
            expiration_date_time: Some(expires.into()),
            client_state: client_state.map(str::to_owned),
        }
    }

    #[test]
    fn the_longest_living_match_is_kept_and_every_other_subscription_to_the_resource_goes() {
        let other_resource = Seen {
            resource: "/users".into(),
            ..seen("users", "https://x/", "2026-11-30T00:00:00Z", None)
        };
        let listed = vec![
            seen(
                "short",
                "https://app.example/api/notifications",
                "2026-11-29T00:00:00Z",
                None,
            ),
            seen(
                "long",
                "https://app.example/api/notifications/",
                "2026-11-30T00:00:00Z",
                Some("secret"),
            ),
            seen(
                "old-host",
                "https://old.example/api/notifications",
                "2026-12-01T00:00:00Z",
                None,
            ),
            seen(
                "old-state",
                "https://app.example/api/notifications",
                "2026-12-01T00:00:00Z",
                Some("rotated"),
            ),
            other_resource,
        ];
        let plan = plan(listed, &wanted());
        assert_eq!(plan.keep.map(|s| s.id).as_deref(), Some("long"));
        let mut delete = plan.delete;
        delete.sort();
        assert_eq!(delete, ["old-host", "old-state", "short"]);
    }

    #[test]
    fn the_documented_list_page_reads_as_ids_versions_and_starts() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/graph/callrecords-list-filter-startdatetime.json"
        ))
        .unwrap();
        let page: ListedPage = serde_json::from_str(&text).unwrap();
        assert_eq!(page.value.len(), 1);
        let listed = &page.value[0];
        assert_eq!(listed.id, "3cf3bbc8-b21d-4f2e-bfd0-b13603ae6c65");
        assert_eq!(listed.version, Some(2));
        assert_eq!(
            listed.start_date_time,
            Some(datetime!(2023-09-25 09:28:38 UTC))
        );
        assert!(page.next_link.is_none());
    }

    #[test]
    fn an_event_grid_target_is_the_same_in_any_order_and_case_and_never_a_webhook() {
        let ours = "EventGrid:?azuresubscriptionid=8d2b7a3e-0000-4000-8000-000000000001&resourcegroup=rg-Teams&partnertopic=teams-cdr&location=westeurope";
        let listed = "eventgrid:?location=WestEurope&partnertopic=teams-cdr&resourcegroup=rg-teams&azuresubscriptionid=8D2B7A3E-0000-4000-8000-000000000001";
        assert!(same_url(Some(listed), ours));
        assert!(!same_url(Some(&listed.replace("teams-cdr", "other")), ours));
        assert!(!same_url(
            Some("https://app.example/api/notifications"),
            ours
        ));
        assert!(!same_url(
            Some(ours),
            "https://app.example/api/notifications"
        ));
    }

    #[test]
    fn nothing_listed_means_create() {
        assert_eq!(
            plan(Vec::new(), &wanted()),
            Plan {
                keep: None,
                delete: Vec::new()
            }
        );
    }

    #[test]
    fn a_renewal_stays_inside_graphs_limit() {
        let now = datetime!(2026-11-28 10:00 UTC);
        let expiry = renewal_expiry(now);
        assert!(expiry - now < MAX_LIFETIME);
        assert!(expiry - now > MAX_LIFETIME - time::Duration::minutes(10));
    }

    #[test]
    fn the_gap_reaches_back_a_lookback_before_the_last_good_time_and_no_further_than_retention() {
        let now = datetime!(2026-11-28 10:00 UTC);
        let lookback = time::Duration::hours(26);
        assert_eq!(gap(None, now, lookback), None);
        let good = datetime!(2026-11-27 10:00 UTC);
        assert_eq!(gap(Some(good), now, lookback), Some((good - lookback, now)));
        let ancient = datetime!(2026-09-01 00:00 UTC);
        assert_eq!(
            gap(Some(ancient), now, lookback),
            Some((now - RETENTION, now))
        );
    }

    fn hours(list: &[u64]) -> Vec<std::time::Duration> {
        list.iter()
            .map(|h| std::time::Duration::from_secs(h * 3600))
            .collect()
    }

    #[test]
    fn a_fresh_deployment_owes_passes_for_every_hour_of_its_look_back() {
        let now = datetime!(2026-11-20 09:40 UTC);
        let (starts, through) = hours_to_add(None, now, &hours(&[3, 26]));
        assert_eq!(through, datetime!(2026-11-20 09:00 UTC));
        assert_eq!(starts.len(), 26);
        assert_eq!(starts[0], datetime!(2026-11-19 07:00 UTC));
        assert_eq!(*starts.last().unwrap(), datetime!(2026-11-20 08:00 UTC));
        // The oldest of them still owes its last pass; none owes a pass twice.
        let oldest_to = starts[0] + time::Duration::HOUR;
        assert_eq!(
            pass_due(oldest_to, 0, &hours(&[3, 26]), now),
            Due::Now(oldest_to + time::Duration::hours(3))
        );
        assert_eq!(passes_after(oldest_to, 0, &hours(&[3, 26]), now), 1);
    }

    #[test]
    fn later_runs_add_the_hours_that_ended_since_and_nothing_twice() {
        let schedule = hours(&[3, 26]);
        let frontier = datetime!(2026-11-20 09:00 UTC);
        let (starts, through) =
            hours_to_add(Some(frontier), datetime!(2026-11-20 09:55 UTC), &schedule);
        assert!(starts.is_empty());
        assert_eq!(through, frontier);
        let (starts, through) =
            hours_to_add(Some(frontier), datetime!(2026-11-20 12:05 UTC), &schedule);
        assert_eq!(
            starts,
            [
                datetime!(2026-11-20 09:00 UTC),
                datetime!(2026-11-20 10:00 UTC),
                datetime!(2026-11-20 11:00 UTC)
            ]
        );
        assert_eq!(through, datetime!(2026-11-20 12:00 UTC));
        // After a long outage: every hour Graph still keeps, no more.
        let (starts, _) = hours_to_add(
            Some(frontier),
            frontier + time::Duration::days(45),
            &schedule,
        );
        assert_eq!(starts.len(), 30 * 24);
    }

    #[test]
    fn an_hour_is_owed_each_pass_of_the_schedule_once_and_then_none() {
        let schedule = hours(&[3, 8, 26]);
        let to = datetime!(2026-11-20 10:00 UTC);
        let at = |h: i64, m: i64| to + time::Duration::hours(h) + time::Duration::minutes(m);
        assert_eq!(pass_due(to, 0, &schedule, at(2, 59)), Due::Later);
        assert_eq!(pass_due(to, 0, &schedule, at(3, 0)), Due::Now(at(3, 0)));
        assert_eq!(passes_after(to, 0, &schedule, at(3, 5)), 1);
        assert_eq!(pass_due(to, 1, &schedule, at(7, 0)), Due::Later);
        assert_eq!(pass_due(to, 1, &schedule, at(9, 0)), Due::Now(at(8, 0)));
        // A pass that finishes once the next is due too counts for both.
        assert_eq!(passes_after(to, 1, &schedule, at(27, 0)), 3);
        assert_eq!(pass_due(to, 3, &schedule, at(100, 0)), Due::Never);
        // Graph keeps nothing older than 30 days.
        assert_eq!(pass_due(to, 1, &schedule, to + RETENTION), Due::Never);
    }

    #[test]
    fn slices_shrink_to_about_thirty_pages_of_dense_hours_and_grow_back_over_sparse_ones() {
        // A whole hour of 25,000 calls: about 4 minutes next time.
        assert_eq!(next_slice_seconds(3600, 25_000, MAX_SLICE), 259);
        assert_eq!(next_slice_seconds(3600, 900, MAX_SLICE), 3600);
        assert_eq!(next_slice_seconds(300, 0, MAX_SLICE), 3600);
        assert_eq!(next_slice_seconds(60, 100_000, MAX_SLICE), 60);
        // A span's slices grow to six hours where calls are few.
        assert_eq!(next_slice_seconds(3600, 100, MAX_SPAN_SLICE), 21_600);
        assert_eq!(next_slice_seconds(3600, 25_000, MAX_SPAN_SLICE), 259);
    }

    #[test]
    fn an_hour_not_listed_yet_is_guessed_as_dense_as_the_latest_hour_that_had_calls() {
        let hours = [Some(1.5), Some(7.3), Some(0.0), None];
        assert_eq!(latest_density(hours.into_iter()), Some(7.3));
        assert_eq!(latest_density([None, Some(0.0)].into_iter()), None);
        assert_eq!(latest_density(std::iter::empty()), None);
    }

    #[test]
    fn a_slice_from_a_density_holds_about_a_slice_of_calls() {
        // A large tenant's business hour (26,250 calls): about 247 s, 30 pages, not the hour.
        assert_eq!(slice_for_density(26_250.0 / 3600.0, MAX_SLICE), 246);
        // A night hour (5,625 calls).
        assert_eq!(slice_for_density(5_625.0 / 3600.0, MAX_SLICE), 1152);
        // Sparse or nothing seen: the longest.
        assert_eq!(slice_for_density(0.1, MAX_SLICE), 3600);
        assert_eq!(slice_for_density(1.0, MAX_SLICE), 1800);
        assert_eq!(slice_for_density(0.0, MAX_SLICE), 3600);
        assert_eq!(slice_for_density(0.1, MAX_SPAN_SLICE), 18_000);
    }

    #[test]
    fn a_record_is_fetched_when_missing_or_listed_newer() {
        assert!(needs_fetch(Some(1), None));
        assert!(needs_fetch(None, None));
        assert!(needs_fetch(Some(3), Some(2)));
        assert!(!needs_fetch(Some(2), Some(2)));
        assert!(!needs_fetch(Some(1), Some(2)));
        assert!(!needs_fetch(None, Some(1)));
    }

    #[test]
    fn a_given_up_record_is_retried_once_per_give_up_and_only_within_retention() {
        let now = datetime!(2026-11-28 10:00 UTC);
        let received = Some(now - time::Duration::days(3));
        let gave_up = Some(now - time::Duration::days(1));
        let hours_ago = Some(now - time::Duration::hours(2));
        let days_ago = Some(now - time::Duration::days(2));
        assert!(retry_given_up(received, gave_up, (None, 0), now));
        assert!(!retry_given_up(received, gave_up, (hours_ago, 1), now));
        assert!(retry_given_up(received, gave_up, (days_ago, 1), now));
        assert!(!retry_given_up(
            received,
            gave_up,
            (days_ago, GIVEN_UP_RETRIES),
            now
        ));
        let old = Some(now - time::Duration::days(31));
        assert!(!retry_given_up(old, gave_up, (None, 0), now));
        assert!(!retry_given_up(None, gave_up, (None, 0), now));
    }

    #[test]
    fn backfill_ranges_are_checked_before_anything_is_enqueued() {
        let now = datetime!(2026-11-28 10:00 UTC);
        let ok = backfill_range(
            Some("2026-11-01T00:00:00Z"),
            Some("2026-11-28T00:00:00Z"),
            now,
        );
        // `+02:00` sent unescaped in a query string arrives with a space.
        let offset = backfill_range(
            Some("2026-11-01T02:00:00 02:00"),
            Some("2026-11-28T00:00:00Z"),
            now,
        );
        assert_eq!(offset, ok);
        assert_eq!(
            ok,
            Ok((
                datetime!(2026-11-01 00:00 UTC),
                datetime!(2026-11-28 00:00 UTC)
            ))
        );
        let cases = [
            (None, Some("2026-11-28T00:00:00Z"), RangeError::Missing),
            (
                Some("yesterday"),
                Some("2026-11-28T00:00:00Z"),
                RangeError::Unparsable,
            ),
            (
                Some("2026-11-28T00:00:00Z"),
                Some("2026-11-01T00:00:00Z"),
                RangeError::Reversed,
            ),
            (
                Some("2026-11-28T00:00:00Z"),
                Some("2026-11-28T00:00:00Z"),
                RangeError::Reversed,
            ),
            (
                Some("2026-10-01T00:00:00Z"),
                Some("2026-11-28T00:00:00Z"),
                RangeError::TooLong,
            ),
            (
                Some("2026-11-28T00:00:00Z"),
                Some("2026-11-29T00:00:00Z"),
                RangeError::Future,
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                backfill_range(from, to, now),
                Err(expected),
                "{from:?} {to:?}"
            );
        }
    }
}
