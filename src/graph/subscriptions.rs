//! The Graph requests of the subscription's life and of reconciliation: list, create, renew,
//! reauthorize and delete subscriptions
//! (<https://learn.microsoft.com/graph/api/resources/subscription>), and list call records by start
//! time (<https://learn.microsoft.com/graph/api/callrecords-cloudcommunications-list-callrecords>).
//! Bodies are read into the small views below; what to do with them is `domain::subscription`'s.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::reports::literal as graph_time;
use super::{GraphClient, GraphError, GraphResponse, RateKey};
use crate::domain::notification::is_valid_id;
use crate::domain::subscription::Seen;

/// The one resource the app subscribes to.
pub(crate) const RESOURCE: &str = "/communications/callRecords";
/// `updated` too: Graph issues a record again, with a higher `version`, when late data arrives.
pub(crate) const CHANGE_TYPE: &str = "created,updated";
/// More pages of subscriptions than an app ever has: past this Graph is paging in circles.
const MAX_PAGES: usize = 100;

/// What a new subscription asks for.
pub(crate) struct NewSubscription<'a> {
    pub(crate) notification_url: &'a str,
    pub(crate) lifecycle_url: &'a str,
    pub(crate) client_state: &'a str,
    pub(crate) expires: OffsetDateTime,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Seen>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(response: &GraphResponse) -> Result<T, GraphError> {
    serde_json::from_slice(&response.body).map_err(|e| GraphError::Rejected {
        status: response.status,
        detail: format!("the answer is not what Graph documents: {e}"),
    })
}

/// A subscription id goes into a path: only the characters of an id get there.
fn checked(id: &str) -> Result<&str, GraphError> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(GraphError::Fatal("not a subscription id".into()))
    }
}

impl GraphClient {
    /// Every subscription of this app (Graph lists only the calling app's), all pages.
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries; an unreadable page is `Rejected`.
    pub(crate) async fn list_subscriptions(&self) -> Result<Vec<Seen>, GraphError> {
        let mut page: Page = parse(&self.get("subscriptions", RateKey::Other).await?)?;
        let mut all = std::mem::take(&mut page.value);
        for _ in 0..MAX_PAGES {
            let Some(next) = page.next_link.take() else {
                return Ok(all);
            };
            page = parse(&self.get_url(&next, RateKey::Other).await?)?;
            all.append(&mut page.value);
        }
        Err(GraphError::Fatal(
            "the subscription list pages without end".into(),
        ))
    }

    /// `POST /subscriptions`. Graph validates both URLs (the handshake) before it answers `201`;
    /// a subscription for the same resource and change types is a `409` (`Rejected`).
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries.
    pub(crate) async fn create_subscription(
        &self,
        new: &NewSubscription<'_>,
    ) -> Result<Seen, GraphError> {
        let body = json!({
            "changeType": CHANGE_TYPE,
            "notificationUrl": new.notification_url,
            "lifecycleNotificationUrl": new.lifecycle_url,
            "resource": RESOURCE,
            "expirationDateTime": graph_time(new.expires),
            "clientState": new.client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        let response = self
            .send_json(Method::POST, "subscriptions", Some(&body), RateKey::Other)
            .await?;
        parse(&response)
    }

    /// `PATCH /subscriptions/{id}` with a new expiry. `NotFound` when Graph no longer has it.
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries.
    pub(crate) async fn renew_subscription(
        &self,
        id: &str,
        expires: OffsetDateTime,
    ) -> Result<Seen, GraphError> {
        let body = json!({ "expirationDateTime": graph_time(expires) });
        let path = format!("subscriptions/{}", checked(id)?);
        let response = self
            .send_json(Method::PATCH, &path, Some(&body), RateKey::Other)
            .await?;
        parse(&response)
    }

    /// `POST /subscriptions/{id}/reauthorize`: the answer to `reauthorizationRequired`.
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries; `NotFound` when Graph no longer has it.
    pub(crate) async fn reauthorize_subscription(&self, id: &str) -> Result<(), GraphError> {
        let path = format!("subscriptions/{}/reauthorize", checked(id)?);
        self.send_json(Method::POST, &path, None, RateKey::Other)
            .await
            .map(|_| ())
    }

    /// `DELETE /subscriptions/{id}`; one already gone counts as deleted.
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries.
    pub(crate) async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let path = format!("subscriptions/{}", checked(id)?);
        match self
            .send_json(Method::DELETE, &path, None, RateKey::Other)
            .await
        {
            Ok(_) | Err(GraphError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The first page of the call records that started in `[from, to)`: id, version and start
    /// only, which is all reconciliation compares.
    ///
    /// # Errors
    /// [`GraphError`] after the client's retries.
    pub(crate) async fn call_record_list(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<GraphResponse, GraphError> {
        let filter = format!(
            "startDateTime ge {} and startDateTime lt {}",
            graph_time(from),
            graph_time(to)
        );
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("$filter", &filter)
            .append_pair("$select", "id,version,startDateTime,lastModifiedDateTime")
            .finish();
        self.get(
            &format!("communications/callRecords?{query}"),
            RateKey::CallRecordList,
        )
        .await
    }

    /// A page behind the list's `@odata.nextLink`.
    ///
    /// # Errors
    /// As [`GraphClient::call_record_list`]; a link to another host is refused unsent.
    pub(crate) async fn call_record_list_next(
        &self,
        next: &str,
    ) -> Result<GraphResponse, GraphError> {
        self.get_url(next, RateKey::CallRecordList).await
    }
}
