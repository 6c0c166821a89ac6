//! Reading the PSTN and Direct Routing reports: one window's first page, then its next links, each
//! under the reports' rate limit (50 requests per 60 s). The pages are handed over as Graph sent them.

use time::OffsetDateTime;

use super::{GraphClient, GraphError, GraphResponse, RateKey};
use crate::domain::reports::{Report, Window};

impl GraphClient {
    /// The first page of `report` for `window`:
    /// `GET communications/callRecords/{function}(fromDateTime=…,toDateTime=…)`.
    ///
    /// # Errors
    /// [`GraphError`] after the client's own retries.
    pub(crate) async fn report_page(
        &self,
        report: Report,
        window: Window,
    ) -> Result<GraphResponse, GraphError> {
        let path = format!(
            "communications/callRecords/{}(fromDateTime={},toDateTime={})",
            report.function(),
            literal(window.from),
            literal(window.to)
        );
        self.get(&path, RateKey::Report(report.function())).await
    }

    /// A page behind an `@odata.nextLink` of a report.
    ///
    /// # Errors
    /// As [`GraphClient::report_page`]; a link to another host is refused unsent.
    pub(crate) async fn report_next_page(
        &self,
        report: Report,
        next: &str,
    ) -> Result<GraphResponse, GraphError> {
        self.get_url(next, RateKey::Report(report.function())).await
    }
}

/// A `DateTimeOffset` literal in UTC, to the second (`2026-11-28T10:15:07Z`).
pub(crate) fn literal(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_are_written_as_utc_literals() {
        assert_eq!(
            literal(datetime!(2026-11-28 11:15:07.9 +01:00)),
            "2026-11-28T10:15:07Z"
        );
    }
}
