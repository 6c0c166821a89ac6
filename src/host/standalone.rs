//! Standalone mode's stand-in for the Functions host's queue trigger, so that a local run, a
//! container or a VM fetches call records with no host in front.
//!
//! It keeps the host's semantics (<https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger>):
//! messages are received in batches and kept hidden while they run (the hiding renewed, so that a
//! message of a process that died reappears within a minute); a message is deleted when its
//! invocation succeeds and hidden for `visibilityTimeout` when it fails; after `maxDequeueCount`
//! failed deliveries it moves, unchanged, to `{queue}-poison`; an empty queue is polled less and
//! less often. Each message is invoked through the handler's own `POST /{FunctionName}` route with
//! the documented invocation payload, so it takes exactly the path the host's invocations take.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::INVOCATION_ID_HEADER;
use crate::store::queue::{QueueStore, ReceivedMessage};

/// What the consumer does; the defaults are the host's (`host.json`).
#[derive(Debug, Clone)]
pub(crate) struct ConsumerOptions {
    pub(crate) function: &'static str,
    pub(crate) binding: &'static str,
    pub(crate) batch_size: u8,
    /// `newBatchThreshold`: the next batch is received once no more than this many run, so that
    /// one slow message does not hold up the others (up to `batch_size + new_batch_threshold` at
    /// once).
    pub(crate) new_batch_threshold: u8,
    /// How long a running message is hidden; renewed at a third of it while the invocation runs.
    pub(crate) running_visibility: Duration,
    /// `visibilityTimeout`: how long a failed message waits before its next delivery.
    pub(crate) retry_visibility: Duration,
    pub(crate) max_dequeue_count: u32,
    pub(crate) max_poll_interval: Duration,
}

/// Runs until `stop` turns true, then lets the invocations in flight finish.
pub(crate) async fn run(
    queue: QueueStore,
    poison: QueueStore,
    handler: SocketAddr,
    options: ConsumerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let delivery = Delivery {
        client: reqwest::Client::new(),
        url: format!("http://{handler}/{}", options.function),
        queue: queue.clone(),
        poison,
        options: options.clone(),
    };
    let mut idle = Duration::from_millis(100);
    tracing::info!(
        queue = queue.name(),
        function = options.function,
        "queue consumer started"
    );
    // Tasks, so that deliveries and their renewals go on while this loop waits on the queue.
    let mut running = tokio::task::JoinSet::new();
    while !*stop.borrow() {
        if running.len() > usize::from(options.new_batch_threshold) {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let visibility = secs(options.running_visibility);
        let messages = match queue.receive(options.batch_size, visibility).await {
            Ok(messages) => messages,
            // A fresh storage account has no queue until the first notification: create it.
            Err(crate::store::StoreError::NotFound) => {
                if let Err(e) = queue.ensure_exists().await {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "queue consumer cannot create its queue");
                }
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "queue consumer cannot receive");
                Vec::new()
            }
        };
        if messages.is_empty() {
            // A message that finishes may be followed by more: look again then, or after `idle`.
            tokio::select! {
                Some(_) = running.join_next() => {}
                () = tokio::time::sleep(idle) => {}
                _ = stop.changed() => {}
            }
            idle = (idle * 2).min(options.max_poll_interval);
            continue;
        }
        idle = Duration::from_millis(100);
        for message in messages {
            running.spawn(delivery.clone().deliver(message));
        }
    }
    // What runs is finished (within the app's shutdown grace).
    while running.join_next().await.is_some() {}
    tracing::info!("queue consumer stopped");
}

/// What one delivery needs, owned, so that it runs as a task of its own.
#[derive(Clone)]
struct Delivery {
    client: reqwest::Client,
    url: String,
    queue: QueueStore,
    poison: QueueStore,
    options: ConsumerOptions,
}

impl Delivery {
    async fn deliver(self, mut message: ReceivedMessage) {
        let Self {
            client,
            url,
            queue,
            poison,
            options,
        } = self;
        // The text as stored, as the host hands it over (`messageEncoding: none`): the handler
        // decodes (`domain::event::message_text`).
        let text = message.text.clone();
        let payload = json!({
            "Data": { options.binding: text },
            "Metadata": {
                "DequeueCount": message.dequeue_count,
                "Id": message.id,
                "PopReceipt": message.pop_receipt,
            },
        });
        let invocation_id = new_invocation_id();
        let invocation = client
            .post(&url)
            .header(INVOCATION_ID_HEADER, &invocation_id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_string())
            .send();
        tokio::pin!(invocation);
        let mut renew = tokio::time::interval(options.running_visibility / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut renewing = true;
        let succeeded = loop {
            tokio::select! {
                answer = &mut invocation => break answer.is_ok_and(|r| r.status().is_success()),
                _ = renew.tick(), if renewing => {
                    // Still running: keep it hidden. Should this fail, the message may be delivered
                    // twice, which the fetch takes in its stride (a version is stored once); the
                    // receipt may be stale by then, so renewing stops.
                    if let Err(e) = queue.set_visibility(&mut message, secs(options.running_visibility)).await {
                        tracing::warn!(message_id = %message.id, error = %crate::telemetry::error_chain(&e), "could not keep a running message hidden");
                        renewing = false;
                    }
                }
            }
        };
        let outcome = if succeeded {
            queue.delete(&message).await
        } else if message.dequeue_count >= options.max_dequeue_count {
            tracing::error!(
                message_id = %message.id,
                dequeue_count = message.dequeue_count,
                "message failed too often; moved to the poison queue"
            );
            match poison.send_text(message.text.clone(), 0).await {
                Ok(()) => queue.delete(&message).await,
                Err(e) => Err(e),
            }
        } else {
            queue
                .set_visibility(&mut message, secs(options.retry_visibility))
                .await
        };
        if let Err(e) = outcome {
            tracing::warn!(message_id = %message.id, error = %crate::telemetry::error_chain(&e), "queue consumer could not settle a message");
        }
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// A random GUID-shaped invocation id, as the host sends.
fn new_invocation_id() -> String {
    let (a, b) = (crate::random::bits(), crate::random::bits());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
