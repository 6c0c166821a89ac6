//! Reading Entra ID's users through Graph's delta query (`GET users/delta`): the first page of a
//! full sync, then the `@odata.nextLink` and `@odata.deltaLink` Graph hands out, followed verbatim.
//! Directory reads have no call-record or report limit of their own; a `429` still holds them back.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{GraphClient, GraphError, GraphResponse, RateKey};
use crate::domain::directory::SELECT;

/// One page of a users delta query: its users, and either the next page or the delta link. Not
/// `Debug`: the links carry Graph's delta token.
#[derive(Default, Deserialize)]
pub(crate) struct DeltaPage<'a> {
    #[serde(default, borrow)]
    pub(crate) value: Vec<&'a RawValue>,
    #[serde(rename = "@odata.nextLink")]
    pub(crate) next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    pub(crate) delta: Option<String>,
}

impl<'a> DeltaPage<'a> {
    /// # Errors
    /// When the body is not a collection page.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl GraphClient {
    /// The first page of a full sync: `GET users/delta?$select=…`. Graph carries the selection
    /// into every next and delta link.
    ///
    /// # Errors
    /// [`GraphError`] after the client's own retries.
    pub(crate) async fn users_delta(&self) -> Result<GraphResponse, GraphError> {
        self.get(&format!("users/delta?$select={SELECT}"), RateKey::Other)
            .await
    }

    /// The page behind a next or delta link of the users delta query.
    ///
    /// # Errors
    /// As [`GraphClient::users_delta`]; a link to another host is refused unsent.
    pub(crate) async fn users_delta_link(&self, link: &str) -> Result<GraphResponse, GraphError> {
        self.get_url(link, RateKey::Other).await
    }
}

/// Whether Graph said the delta state behind a link is gone (expired after Graph's 7 days, or
/// reset on Graph's side): the sync must start again from a full read. Graph documents `400` with
/// `syncStateNotFound` for an expired directory token, and `410 Gone` for a state it cannot serve.
pub(crate) fn is_sync_state_gone(error: &GraphError) -> bool {
    match error {
        GraphError::Rejected { status: 410, .. } => true,
        GraphError::Rejected {
            status: 400,
            detail,
        } => {
            let detail = detail.to_ascii_lowercase();
            ["syncstatenotfound", "resyncrequired", "syncstateinvalid"]
                .iter()
                .any(|code| detail.starts_with(code))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_or_gone_sync_state_starts_a_full_sync_and_other_refusals_do_not() {
        let rejected = |status, detail: &str| GraphError::Rejected {
            status,
            detail: detail.to_owned(),
        };
        assert!(is_sync_state_gone(&rejected(
            400,
            "syncStateNotFound: The sync state generation is not found. (/v1.0/users/delta)"
        )));
        assert!(is_sync_state_gone(&rejected(
            410,
            "Gone: (/v1.0/users/delta)"
        )));
        assert!(!is_sync_state_gone(&rejected(
            400,
            "BadRequest: Invalid $select"
        )));
        assert!(!is_sync_state_gone(&GraphError::NotFound));
    }

    #[test]
    fn a_page_has_its_users_and_one_of_its_links() {
        let body = br#"{"@odata.context":"x","value":[{"id":"a"},{"id":"b","@removed":{"reason":"deleted"}}],
            "@odata.deltaLink":"https://graph.microsoft.com/v1.0/users/delta?$deltatoken=t"}"#;
        let page = DeltaPage::parse(body).unwrap();
        assert_eq!(page.value.len(), 2);
        assert!(page.next.is_none());
        assert!(page.delta.unwrap().ends_with("$deltatoken=t"));
    }
}
