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
    /// `CallRecords` partitions that writers since the last commit may have written a row to.
    pub(crate) writing_days: Vec<String>,
    /// The fetch of this record was given up once (an `AppState` failure row exists).
    pub(crate) failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Committed {
    pub(crate) version: i64,
    pub(crate) day: String,
    pub(crate) body_entities: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Write,
    /// The committed version is this one or newer.
    Skip(i64),
    /// A writer's lease runs this much longer.
    Wait(Duration),
}

/// Whether `version` should be written at `now`. `repair` rewrites a committed version equal to ours
/// (after a writer that lost its lease may have overwritten some of its rows).
pub(crate) fn decide(
    stored: Option<&StoredState>,
    version: i64,
    now: OffsetDateTime,
    repair: bool,
) -> Decision {
    let Some(stored) = stored else {
        return Decision::Write;
    };
    if let Some(c) = &stored.committed
        && (c.version > version || (c.version == version && !repair))
    {
        return Decision::Skip(c.version);
    }
    match stored.writing {
        // Someone holds the record. It may be a live writer, or this very message's previous
        // delivery that crashed (its lease outlives it): only the lease's end tells them apart, so
        // come back then rather than skip. (Skipping here once lost records: `tests/crash.rs`.)
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
        StoredState {
            committed: Some(Committed {
                version,
                day: "2026-11-27".into(),
                body_entities: 1,
            }),
            ..StoredState::default()
        }
    }

    #[test]
    fn a_new_record_is_written() {
        assert_eq!(decide(None, 1, NOW, false), Decision::Write);
    }

    #[test]
    fn the_same_or_an_older_version_is_not_written_again() {
        assert_eq!(
            decide(Some(&committed(2)), 2, NOW, false),
            Decision::Skip(2)
        );
        assert_eq!(
            decide(Some(&committed(2)), 1, NOW, false),
            Decision::Skip(2)
        );
        assert_eq!(decide(Some(&committed(1)), 2, NOW, false), Decision::Write);
    }

    #[test]
    fn a_repair_rewrites_the_same_version_but_never_an_older_one() {
        assert_eq!(decide(Some(&committed(2)), 2, NOW, true), Decision::Write);
        assert_eq!(decide(Some(&committed(2)), 1, NOW, true), Decision::Skip(2));
    }

    #[test]
    fn a_live_lease_makes_us_wait_whatever_version_it_writes() {
        let writing = |v, until| StoredState {
            writing: Some((v, until)),
            ..StoredState::default()
        };
        let later = NOW + time::Duration::seconds(30);
        for v in [1, 2, 3] {
            assert_eq!(
                decide(Some(&writing(v, later)), 2, NOW, false),
                Decision::Wait(Duration::from_secs(30)),
                "writer of v{v}"
            );
        }
        // An expired lease is a crashed writer: take over.
        let earlier = NOW - time::Duration::seconds(1);
        assert_eq!(
            decide(Some(&writing(2, earlier)), 2, NOW, false),
            Decision::Write
        );
    }
}
