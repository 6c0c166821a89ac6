//! Who may write which version of a call record, given what its state row says: the rule that keeps
//! the highest version and keeps two writers apart. Pure, so it is tested on its own; the protocol
//! that applies it is in `store::callrecords`.

use std::time::Duration;

use time::OffsetDateTime;

/// What is stored for a record, as its state row says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StoredState {
    /// The committed version and where its rows are.
    pub(crate) committed: Option<Committed>,
    /// A writer at work (or one that crashed): the version it writes and when its lease ends.
    pub(crate) writing: Option<(i64, OffsetDateTime)>,
    /// The body key prefix that writer writes its parts under (absent in rows of older releases).
    pub(crate) writing_body: Option<String>,
    /// `CallRecords` partitions that writers since the last commit may have written a row to.
    pub(crate) writing_days: Vec<String>,
    /// The fetch of this record was given up once (an `AppState` failure row exists).
    pub(crate) failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Committed {
    pub(crate) version: i64,
    /// The stored document's `lastModifiedDateTime`: tells versions apart where Graph sent none.
    pub(crate) last_modified: Option<OffsetDateTime>,
    pub(crate) day: String,
    /// The row-key prefix of the committed document's body parts, and how many entities they fill.
    pub(crate) body_prefix: String,
    pub(crate) body_entities: u32,
}

/// Which data a fetch read: its `version` (0 when Graph sent none) and `lastModifiedDateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub(crate) version: i64,
    pub(crate) last_modified: Option<OffsetDateTime>,
}

impl Incoming {
    /// Newer than what is committed: a higher `version`, or the same one modified later. Graph
    /// raises `version` with every update, but some records come without one (stored as 0): for
    /// those, and as a tie-breaker, the later `lastModifiedDateTime` keeps the newest data. An
    /// absent time is older than any time.
    fn is_newer_than(&self, committed: &Committed) -> bool {
        self.version > committed.version
            || (self.version == committed.version && self.last_modified > committed.last_modified)
    }

    /// The same data as what is committed (so a repair may rewrite it).
    fn is_same_as(&self, committed: &Committed) -> bool {
        self.version == committed.version && self.last_modified == committed.last_modified
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Write,
    /// The committed version is this one or newer.
    Skip(i64),
    /// A writer's lease runs this much longer.
    Wait(Duration),
}

/// Whether `incoming` should be written at `now`. `repair` rewrites committed data equal to ours
/// (after a writer that lost its lease may have overwritten some of its rows).
pub(crate) fn decide(
    stored: Option<&StoredState>,
    incoming: Incoming,
    now: OffsetDateTime,
    repair: bool,
) -> Decision {
    let Some(stored) = stored else {
        return Decision::Write;
    };
    if let Some(c) = &stored.committed
        && !incoming.is_newer_than(c)
        && !(repair && incoming.is_same_as(c))
    {
        return Decision::Skip(c.version);
    }
    match stored.writing {
        // Someone holds the record. It may be a live writer, or this very message's previous
        // delivery that crashed (its lease outlives it): only the lease's end tells them apart, so
        // come back then rather than skip. (Skipping here once lost records: `tests/it/crash.rs`.)
        Some((_, until)) if until > now => {
            Decision::Wait(Duration::try_from(until - now).unwrap_or(Duration::ZERO))
        }
        _ => Decision::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-27 10:00 UTC);

    fn committed(version: i64) -> StoredState {
        committed_at(version, None)
    }

    fn committed_at(version: i64, last_modified: Option<OffsetDateTime>) -> StoredState {
        StoredState {
            committed: Some(Committed {
                version,
                last_modified,
                day: "2026-11-27".into(),
                body_prefix: "body-".into(),
                body_entities: 1,
            }),
            ..StoredState::default()
        }
    }

    fn v(version: i64) -> Incoming {
        Incoming {
            version,
            last_modified: None,
        }
    }

    #[test]
    fn a_new_record_is_written() {
        assert_eq!(decide(None, v(1), NOW, false), Decision::Write);
    }

    #[test]
    fn the_same_or_an_older_version_is_not_written_again() {
        assert_eq!(
            decide(Some(&committed(2)), v(2), NOW, false),
            Decision::Skip(2)
        );
        assert_eq!(
            decide(Some(&committed(2)), v(1), NOW, false),
            Decision::Skip(2)
        );
        assert_eq!(
            decide(Some(&committed(1)), v(2), NOW, false),
            Decision::Write
        );
    }

    #[test]
    fn a_repair_rewrites_the_same_version_but_never_an_older_one() {
        assert_eq!(
            decide(Some(&committed(2)), v(2), NOW, true),
            Decision::Write
        );
        assert_eq!(
            decide(Some(&committed(2)), v(1), NOW, true),
            Decision::Skip(2)
        );
    }

    #[test]
    fn a_live_lease_makes_us_wait_whatever_version_it_writes() {
        let writing = |version, until| StoredState {
            writing: Some((version, until)),
            ..StoredState::default()
        };
        let later = NOW + time::Duration::seconds(30);
        for version in [1, 2, 3] {
            assert_eq!(
                decide(Some(&writing(version, later)), v(2), NOW, false),
                Decision::Wait(Duration::from_secs(30)),
                "writer of v{version}"
            );
        }
        // An expired lease is a crashed writer: take over.
        let earlier = NOW - time::Duration::seconds(1);
        assert_eq!(
            decide(Some(&writing(2, earlier)), v(2), NOW, false),
            Decision::Write
        );
    }

    #[test]
    fn without_a_version_the_later_modification_is_newer_and_an_earlier_one_never_replaces_it() {
        let t1 = datetime!(2026-11-27 09:00 UTC);
        let t2 = datetime!(2026-11-27 09:30 UTC);
        let at = |t| Incoming {
            version: 0,
            last_modified: Some(t),
        };
        assert_eq!(
            decide(Some(&committed_at(0, Some(t1))), at(t2), NOW, false),
            Decision::Write
        );
        assert_eq!(
            decide(Some(&committed_at(0, Some(t2))), at(t2), NOW, false),
            Decision::Skip(0)
        );
        assert_eq!(
            decide(Some(&committed_at(0, Some(t2))), at(t1), NOW, false),
            Decision::Skip(0)
        );
        // Not even a repair goes back in time.
        assert_eq!(
            decide(Some(&committed_at(0, Some(t2))), at(t1), NOW, true),
            Decision::Skip(0)
        );
        assert_eq!(
            decide(Some(&committed_at(0, Some(t2))), at(t2), NOW, true),
            Decision::Write
        );
        // A time beats none; a higher version beats any time.
        assert_eq!(
            decide(Some(&committed_at(0, None)), at(t1), NOW, false),
            Decision::Write
        );
        assert_eq!(
            decide(Some(&committed_at(3, Some(t2))), at(t1), NOW, false),
            Decision::Skip(3)
        );
        assert_eq!(
            decide(
                Some(&committed_at(3, Some(t2))),
                Incoming {
                    version: 4,
                    last_modified: None
                },
                NOW,
                false
            ),
            Decision::Write
        );
    }
}
