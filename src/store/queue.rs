//! One Azure Storage queue, through the official `azure_storage_queue` client.
//!
//! Message text is base64 of the UTF-8 JSON, because that is what the Functions queue trigger decodes
//! by default (`host.json` sets `messageEncoding: base64` explicitly so the two cannot drift), while
//! the 1.x SDK writes text as-is.
//! A queue that does not exist is created when a send finds it missing, so a fresh Azurite or a
//! storage account whose queues were not pre-created still works, without a round trip at start-up.

use std::sync::Arc;

use azure_core::http::Url;
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde::Serialize;
use table_storage::{SdkFailure, StorageAuth, StorageRetry, StoreError, client_parts};
use tracing::instrument;

/// A message as received, for consumers (the standalone queue runner, tests).
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub id: String,
    pub pop_receipt: String,
    pub dequeue_count: u32,
    /// The message text as stored (base64 for messages this app wrote).
    pub text: String,
    /// When the queue drops the message unread (year 9999 for messages that never expire).
    pub expires_at: Option<time::OffsetDateTime>,
}

/// A handle on one queue. Cheap to clone.
#[derive(Clone)]
pub struct QueueStore {
    client: Arc<QueueClient>,
    name: Arc<str>,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl QueueStore {
    /// A client for queue `name` under the queue service `endpoint` (which ends in `/`).
    ///
    /// # Errors
    /// [`StoreError::Fatal`] for an unusable endpoint (e.g. a bearer token over `http://`).
    pub fn new(
        endpoint: &Url,
        name: &str,
        auth: &StorageAuth,
        http: reqwest::Client,
        retry: StorageRetry,
    ) -> Result<Self, StoreError> {
        let url = endpoint
            .join(name)
            .map_err(|e| StoreError::fatal(format!("queue URL: {e}")))?;
        let parts = client_parts(auth, http, retry);
        let options = QueueClientOptions {
            client_options: parts.options,
            ..Default::default()
        };
        let client =
            QueueClient::new(url, parts.credential, Some(options)).map_err(StoreError::from_sdk)?;
        Ok(Self {
            client: Arc::new(client),
            name: Arc::from(name),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the queue if it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when storage cannot be reached or refuses.
    #[instrument(skip_all, fields(queue = %self.name))]
    pub async fn ensure_exists(&self) -> Result<(), StoreError> {
        // Create answers 201 (created) or 204 (already there with the same metadata).
        self.client
            .create(None)
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Enqueues `message` as base64 JSON, visible after `delay` seconds (0 = at once).
    ///
    /// # Errors
    /// [`StoreError`]; the message is not stored when this fails.
    pub async fn send_json<T: Serialize>(
        &self,
        message: &T,
        delay_secs: u32,
    ) -> Result<(), StoreError> {
        self.send_text(encode(message)?, delay_secs).await
    }

    /// Enqueues `text` exactly as given (already in the queue's encoding): moving a received message
    /// to the poison queue unchanged, or (the tests) writing what another sender would, as Event
    /// Grid does.
    ///
    /// # Errors
    /// [`StoreError`]; the message is not stored when this fails.
    pub async fn send_text(&self, text: String, delay_secs: u32) -> Result<(), StoreError> {
        match self.send_once(text.clone(), delay_secs).await {
            // The queue does not exist (fresh Azurite, queue deleted): create it and try once more.
            Err(StoreError::NotFound) => {
                self.ensure_exists().await?;
                self.send_once(text, delay_secs).await
            }
            other => other,
        }
    }

    /// Enqueues every message (visible at once), at most `concurrency` writes in flight. Stops at
    /// the first failure; messages already written stay (consumers are idempotent).
    ///
    /// # Errors
    /// The first [`StoreError`].
    pub async fn send_all_json<T: Serialize>(
        &self,
        messages: &[T],
        concurrency: usize,
    ) -> Result<(), StoreError> {
        let texts = messages.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        // Owned futures (text and a cheap clone of the handle), so the stream is `Send + 'static`-friendly.
        stream::iter(texts.into_iter().map(|text| {
            let queue = self.clone();
            async move { queue.send_text(text, 0).await }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    async fn send_once(&self, text: String, delay_secs: u32) -> Result<(), StoreError> {
        let message = QueueMessage {
            message_text: Some(text),
        };
        let options = QueueClientSendMessageOptions {
            visibility_timeout: (delay_secs > 0)
                .then(|| i32::try_from(delay_secs).unwrap_or(i32::MAX)),
            // Never expire: the default time-to-live (7 days) is shorter than the longest a job
            // waits for Graph (30 days for a refused permission), and a message that expires is a
            // call lost without a trace. Every message we write is settled by a consumer.
            message_time_to_live: Some(-1),
            ..Default::default()
        };
        let content = message.try_into().map_err(StoreError::from_sdk)?;
        self.client
            .send_message(content, Some(options))
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Receives up to `max` (1..=32) messages, hiding them for `visibility_secs`.
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::NotFound`] when the queue does not exist.
    pub async fn receive(
        &self,
        max: u8,
        visibility_secs: u32,
    ) -> Result<Vec<ReceivedMessage>, StoreError> {
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(i32::from(max.clamp(1, 32))),
            visibility_timeout: Some(i32::try_from(visibility_secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let response = self
            .client
            .receive_messages(Some(options))
            .await
            .map_err(StoreError::from_sdk)?;
        let messages = response.into_model().map_err(StoreError::from_sdk)?;
        Ok(messages
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|m| ReceivedMessage {
                id: m.message_id.unwrap_or_default(),
                pop_receipt: m.pop_receipt.unwrap_or_default(),
                dequeue_count: m
                    .dequeue_count
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(0),
                text: m.message_text.unwrap_or_default(),
                expires_at: m.expiration_time,
            })
            .collect())
    }

    /// Hides a received message for `visibility_secs` from now (0: visible again at once), as the
    /// host does while a function runs and after it failed. Takes the new pop receipt, which the
    /// next update or the delete must use.
    ///
    /// # Errors
    /// [`StoreError`], also when the message is gone or its pop receipt is stale (Azurite answers
    /// `400 PopReceiptMismatch` for the latter).
    pub async fn set_visibility(
        &self,
        message: &mut ReceivedMessage,
        visibility_secs: u32,
    ) -> Result<(), StoreError> {
        let response = self
            .client
            .update_message(
                &message.id,
                &message.pop_receipt,
                i32::try_from(visibility_secs).unwrap_or(i32::MAX),
                None,
            )
            .await
            .map_err(StoreError::from_sdk)?;
        let receipt = azure_core::http::headers::HeaderName::from_static("x-ms-popreceipt");
        // Without the new receipt the message could be neither renewed nor deleted again.
        let receipt = response
            .headers()
            .get_optional_str(&receipt)
            .ok_or_else(|| {
                StoreError::Fatal(SdkFailure::text(
                    "Update Message answered without x-ms-popreceipt",
                ))
            })?;
        receipt.clone_into(&mut message.pop_receipt);
        Ok(())
    }

    /// Deletes a received message.
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::NotFound`] when it was already deleted or its pop receipt is stale.
    pub async fn delete(&self, message: &ReceivedMessage) -> Result<(), StoreError> {
        self.client
            .delete_message(&message.id, &message.pop_receipt, None)
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}

impl QueueStore {
    /// The queue's approximate number of messages, hidden ones included (the health check, tests).
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::NotFound`] when the queue does not exist.
    pub async fn approximate_count(&self) -> Result<u64, StoreError> {
        use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders as _;
        let response = self
            .client
            .get_properties(None)
            .await
            .map_err(StoreError::from_sdk)?;
        let count = response
            .approximate_messages_count()
            .map_err(StoreError::from_sdk)?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// The wire form of a message: base64 of its JSON.
fn encode<T: Serialize>(message: &T) -> Result<String, StoreError> {
    let json = serde_json::to_vec(message)
        .map_err(|e| StoreError::fatal(format!("serialising a queue message: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}
