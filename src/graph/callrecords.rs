//! Reading one call record completely: the record with its sessions (and their segments), every
//! `sessions@odata.nextLink` page, then every `participants_v2` page. `$expand` takes one
//! relationship per request, so the minimum is 1 + extra session pages + participant pages.
//! See <https://learn.microsoft.com/graph/api/callrecords-callrecord-get> and
//! <https://learn.microsoft.com/graph/api/callrecords-callrecord-list-participants_v2>.

use super::pages::{FirstPage, ListPage, PageError};
use super::{GraphClient, GraphError, RateKey};

/// Why a call record could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Graph answered 2xx with something that is not the documented page layout, or paged without
    /// end.
    #[error("Graph sent a page we cannot read")]
    Page(#[from] PageError),
    /// A paging link Graph gave us answered `404`: the paging broke (the record itself exists),
    /// which is a failure worth a later try, not "not yet available".
    #[error("Graph no longer serves a page it linked to")]
    PageGone,
    /// The fetch took longer than its caller allows.
    #[error("the fetch took too long")]
    Deadline,
}

/// Where a stored document's participants came from (the `ParticipantsSource` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Participants {
    /// Every page of `participants_v2`.
    V2,
    /// `participants_v2` is not served for this record (Graph documents it for the global service
    /// only; US Government L4/L5 answer `400`/`404`/`501`): the document has the record's own
    /// deprecated `participants`, if Graph sent them, and no `participants_v2`.
    RecordOnly,
}

/// How many requests a fetch took, for logs and benchmarks, and where its participants came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchCount {
    pub(crate) requests: u32,
    pub(crate) participants: Participants,
}

impl GraphClient {
    /// The record with its first page of sessions: enough to know its `version`.
    ///
    /// # Errors
    /// [`GraphError::NotFound`] while the record is not yet available (or no longer is), and the
    /// other Graph errors after the client's own retries.
    pub(crate) async fn call_record_first_page(&self, id: &str) -> Result<FirstPage, FetchError> {
        let path = format!(
            "communications/callRecords/{}?$expand=sessions($expand=segments)",
            encode_segment(id)
        );
        let response = self.get(&path, RateKey::CallRecord(id.to_owned())).await?;
        Ok(FirstPage::parse(&response.body)?)
    }

    /// Follows every session page of `first`, reads every participant page and merges them into one
    /// document (Graph's bytes; see [`FirstPage::merge`]).
    ///
    /// # Errors
    /// As [`GraphClient::call_record_first_page`].
    pub(crate) async fn complete_call_record(
        &self,
        id: &str,
        mut first: FirstPage,
    ) -> Result<(Vec<u8>, FetchCount), FetchError> {
        let key = || RateKey::CallRecord(id.to_owned());
        let mut count = FetchCount {
            requests: 1,
            participants: Participants::V2,
        };
        let mut seen = std::collections::HashSet::new();
        while let Some(next) = first.sessions_next.take() {
            check_next(&mut seen, &next)?;
            let response = self.get_url(&next, key()).await.map_err(page_gone)?;
            count.requests += 1;
            let page = ListPage::parse(&response.body)?;
            first.sessions_next.clone_from(&page.next);
            first.add_sessions(&page);
        }
        let path = format!(
            "communications/callRecords/{}/participants_v2",
            encode_segment(id)
        );
        let mut response = match self.get(&path, key()).await {
            Ok(response) => response,
            // The record was just read, so this is the path that is not served, not the record.
            Err(
                GraphError::NotFound
                | GraphError::Rejected {
                    status: 400 | 404 | 501,
                    ..
                },
            ) => {
                count.requests += 1;
                count.participants = Participants::RecordOnly;
                tracing::info!(
                    "participants_v2 not served for this record; keeping its own participants"
                );
                return Ok((first.finish_without_participants(), count));
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            count.requests += 1;
            let page = ListPage::parse(&response.body)?;
            first.add_participants(&page);
            let Some(next) = page.next else { break };
            check_next(&mut seen, &next)?;
            response = self.get_url(&next, key()).await.map_err(page_gone)?;
        }
        Ok((first.finish(), count))
    }
}

/// A `404` on a link Graph gave us is a broken paging, not a record that is not yet available.
fn page_gone(error: GraphError) -> FetchError {
    match error {
        GraphError::NotFound => FetchError::PageGone,
        other => FetchError::Graph(other),
    }
}

/// Far more pages than any call record has (a 2,000-session meeting has 42): past this, Graph is
/// paging in circles.
const MAX_PAGES: usize = 1000;

/// Refuses a next link seen before (a loop) or one page too many.
fn check_next(seen: &mut std::collections::HashSet<String>, next: &str) -> Result<(), PageError> {
    if seen.len() >= MAX_PAGES || !seen.insert(next.to_owned()) {
        return Err(PageError::Endless);
    }
    Ok(())
}

/// Percent-encodes an id for use as one path segment. Graph's ids are GUIDs; anything else is
/// encoded rather than trusted, so a queue message cannot steer the request elsewhere.
fn encode_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(
            encode_segment("e523d2ed-2966-4b6b-925b-754a88034cc5"),
            "e523d2ed-2966-4b6b-925b-754a88034cc5"
        );
        assert_eq!(encode_segment("../x?y#"), "..%2Fx%3Fy%23");
    }
}
