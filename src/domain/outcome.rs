//! How a call ended, for accounting: the `Outcome` and `TalkSeconds` columns of report rows and
//! the `Outcome` of call records, from the documented fields of each row alone. The rules and their
//! sources are in INTEGRATION ("Outcome and talk time"). Pure logic, no IO.

use time::OffsetDateTime;

/// How a call ended, for accounting (`Outcome` on every report row and call record): the classes a
/// call-accounting product sorts calls into. The rules, and which documented fields decide them,
/// are in INTEGRATION ("Outcome and talk time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answered,
    /// Nobody answered: it rang out, or the caller hung up first.
    Unanswered,
    /// The callee was busy or declined.
    Busy,
    Failed,
    /// Graph's documented fields do not decide it (call records only).
    Unknown,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Unanswered => "unanswered",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

/// SIP final responses for a callee who is busy or declines: 486 Busy Here, 600 Busy Everywhere,
/// 603 Decline (RFC 3261 §21.4.24, §21.6.1, §21.6.2).
const SIP_BUSY: [i64; 3] = [486, 600, 603];
/// SIP final responses for a call nobody answered: 408 Request Timeout, 480 Temporarily
/// Unavailable, 487 Request Terminated (the caller cancelled: hung up while it rang).
const SIP_UNANSWERED: [i64; 3] = [408, 480, 487];

/// The outcome of a Direct Routing row. `successfulCall` decides whether it was answered; where Graph
/// left it out, an `endDateTime`, which "only exists for successful (fully established) calls".
/// A call that was not answered is classed by its `finalSipCode`.
pub(crate) fn direct_routing_outcome(
    successful: Option<bool>,
    final_sip_code: Option<i64>,
    has_end: bool,
) -> Outcome {
    if successful.unwrap_or(has_end) {
        return Outcome::Answered;
    }
    match final_sip_code {
        Some(code) if SIP_BUSY.contains(&code) => Outcome::Busy,
        Some(code) if SIP_UNANSWERED.contains(&code) => Outcome::Unanswered,
        _ => Outcome::Failed,
    }
}

/// Seconds of conversation: for an answered Direct Routing call, end minus start (Graph's `duration`,
/// whole seconds, where a time is missing); 0 for every other outcome. `None` where an answered
/// call has neither, or its times disagree.
pub(crate) fn direct_routing_talk_seconds(
    outcome: Outcome,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    duration: Option<i64>,
) -> Option<f64> {
    if outcome != Outcome::Answered {
        return Some(0.0);
    }
    #[allow(clippy::cast_precision_loss)]
    match (start, end) {
        (Some(start), Some(end)) => {
            let seconds = (end - start).as_seconds_f64();
            (seconds >= 0.0).then_some(seconds)
        }
        _ => duration.filter(|d| *d >= 0).map(|d| d as f64),
    }
}

/// Seconds of conversation of a PSTN (Calling Plan, Operator Connect) row: a row is a connected
/// call, and `duration` is "how long the call was connected, in seconds"; end minus start where
/// Graph left `duration` out.
pub(crate) fn pstn_talk_seconds(
    duration: Option<i64>,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    match duration {
        Some(d) if d >= 0 => Some(d as f64),
        Some(_) => None,
        None => {
            let seconds = (end? - start?).as_seconds_f64();
            (seconds >= 0.0).then_some(seconds)
        }
    }
}

/// The outcome of a call record, where its documented fields decide it:
/// - only a `peerToPeer` call is answered or not as a whole: a group call or meeting is `unknown`;
/// - a session without `failureInfo` (set "if the session failed"), or one that failed `midcall`
///   (after it was established): `answered`;
/// - every session failed at `callSetup`: `failed`;
/// - anything else (no readable session, failures at an `unknown` stage): `unknown`.
///
/// Participants do not decide it: Graph's own example of a peer-to-peer record with a completed
/// session lists one distinct participant, so a count of one cannot mean "the callee never joined".
/// `session_failures` holds each session's `failureInfo.stage` (`None`: no failure).
pub(crate) fn call_record_outcome(
    kind: Option<&str>,
    session_failures: &[Option<&str>],
) -> Outcome {
    if kind != Some("peerToPeer") || session_failures.is_empty() {
        return Outcome::Unknown;
    }
    if session_failures
        .iter()
        .any(|s| matches!(s, None | Some("midcall")))
    {
        return Outcome::Answered;
    }
    if session_failures.iter().all(|s| *s == Some("callSetup")) {
        return Outcome::Failed;
    }
    Outcome::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_successful_direct_routing_call_is_answered_whatever_its_sip_code() {
        // The documented row: successfulCall true, finalSipCode 0, "BYE".
        assert_eq!(
            direct_routing_outcome(Some(true), Some(0), true),
            Outcome::Answered
        );
        assert_eq!(
            direct_routing_outcome(Some(true), Some(487), false),
            Outcome::Answered
        );
        // Without successfulCall, an end time (successful calls only) says it was answered.
        assert_eq!(direct_routing_outcome(None, None, true), Outcome::Answered);
    }

    #[test]
    fn a_direct_routing_call_not_answered_is_busy_unanswered_or_failed_by_its_sip_code() {
        for code in [486, 600, 603] {
            assert_eq!(
                direct_routing_outcome(Some(false), Some(code), false),
                Outcome::Busy,
                "{code}"
            );
        }
        for code in [408, 480, 487] {
            assert_eq!(
                direct_routing_outcome(Some(false), Some(code), false),
                Outcome::Unanswered,
                "{code}"
            );
        }
        for code in [403, 404, 488, 500, 503, 0] {
            assert_eq!(
                direct_routing_outcome(Some(false), Some(code), false),
                Outcome::Failed,
                "{code}"
            );
        }
        assert_eq!(
            direct_routing_outcome(Some(false), None, false),
            Outcome::Failed
        );
        // successfulCall false wins over an end time.
        assert_eq!(
            direct_routing_outcome(Some(false), Some(486), true),
            Outcome::Busy
        );
        assert_eq!(
            direct_routing_outcome(None, Some(480), false),
            Outcome::Unanswered
        );
    }

    #[test]
    fn talk_time_is_end_minus_start_when_answered_and_zero_otherwise() {
        let start = Some(datetime!(2019-11-01 00:00:25.105 UTC));
        let end = Some(datetime!(2019-11-01 00:03:30.605 UTC));
        let talk = direct_routing_talk_seconds(Outcome::Answered, start, end, Some(185)).unwrap();
        assert!((talk - 185.5).abs() < 1e-9);
        assert_eq!(
            direct_routing_talk_seconds(Outcome::Answered, start, None, Some(185)),
            Some(185.0)
        );
        assert_eq!(
            direct_routing_talk_seconds(Outcome::Answered, end, start, None),
            None
        );
        assert_eq!(
            direct_routing_talk_seconds(Outcome::Answered, None, None, None),
            None
        );
        for outcome in [Outcome::Busy, Outcome::Unanswered, Outcome::Failed] {
            assert_eq!(
                direct_routing_talk_seconds(outcome, start, end, Some(185)),
                Some(0.0)
            );
        }
    }

    #[test]
    fn a_pstn_call_talks_for_its_connected_duration() {
        let start = Some(datetime!(2019-11-01 00:00:08.2589935 UTC));
        let end = Some(datetime!(2019-11-01 00:03:47.2589935 UTC));
        assert_eq!(pstn_talk_seconds(Some(219), start, end), Some(219.0));
        assert_eq!(pstn_talk_seconds(Some(0), start, end), Some(0.0));
        assert_eq!(pstn_talk_seconds(None, start, end), Some(219.0));
        assert_eq!(pstn_talk_seconds(Some(-1), start, end), None);
        assert_eq!(pstn_talk_seconds(None, end, start), None);
    }

    #[test]
    fn a_peer_to_peer_record_is_answered_or_failed_by_its_sessions() {
        let p2p = Some("peerToPeer");
        assert_eq!(call_record_outcome(p2p, &[None]), Outcome::Answered);
        assert_eq!(
            call_record_outcome(p2p, &[Some("midcall")]),
            Outcome::Answered
        );
        assert_eq!(
            call_record_outcome(p2p, &[Some("callSetup"), None]),
            Outcome::Answered
        );
        assert_eq!(
            call_record_outcome(p2p, &[Some("callSetup"), Some("callSetup")]),
            Outcome::Failed
        );
        assert_eq!(
            call_record_outcome(p2p, &[Some("callSetup"), Some("unknown")]),
            Outcome::Unknown
        );
    }

    #[test]
    fn a_meeting_or_a_record_without_sessions_has_no_outcome_graph_documents() {
        assert_eq!(
            call_record_outcome(Some("groupCall"), &[None]),
            Outcome::Unknown
        );
        assert_eq!(
            call_record_outcome(Some("unknown"), &[None]),
            Outcome::Unknown
        );
        assert_eq!(call_record_outcome(None, &[None]), Outcome::Unknown);
        assert_eq!(
            call_record_outcome(Some("peerToPeer"), &[]),
            Outcome::Unknown
        );
        assert_eq!(
            call_record_outcome(Some("peerToPeer"), &[Some("unknown")]),
            Outcome::Unknown
        );
    }
}
