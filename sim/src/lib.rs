//! A simulated Microsoft Graph tenant for tests, benchmarks and local runs: Graph cannot be reached
//! from our machines and Microsoft offers no emulator.
//!
//! The map of the crate:
//! - [`tenant`]: the generated tenant (users, call records with their versions, report rows).
//! - [`clock`]: the tenant's clock (real, manual or accelerated).
//! - `auth`: the Entra ID client-credentials and App Service managed-identity token endpoints, and
//!   the bearer check on every Graph request.
//! - `graph`: call records (with session and participant paging), the list, the PSTN and Direct
//!   Routing reports.
//! - `subscriptions`: subscriptions (create with the validation handshake, renew, delete) and the
//!   delivery of change and lifecycle notifications, with Graph's retries.
//! - [`faults`], [`throttle`]: injected faults and Graph's documented limits.
//! - [`ledger`]: everything served and delivered, for assertions.
//!
//! Start one with [`start`]; it serves on `127.0.0.1` at the port asked for (0 for a free one).

// Handlers return ready-made Graph error responses as their `Err`; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

mod auth;
pub mod clock;
pub mod directory;
pub mod faults;
mod graph;
pub mod ledger;
mod rng;
mod status;
mod subscriptions;
pub mod tenant;
pub mod throttle;
mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;

pub use clock::SimClock;
pub use faults::{Faults, RetryAfter};
pub use ledger::{Endpoint, Ledger, Outcome};
pub use subscriptions::SubscriptionView;
pub use tenant::{Tenant, TenantSpec};
pub use throttle::{Limit, Limits};

/// How notifications are delivered, in real time (scale these down in tests).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How often the simulator looks for newly issued records to notify about.
    pub tick: Duration,
    /// A webhook that has not answered within this is a failed delivery (Graph: 3 s).
    pub timeout: Duration,
    /// First retry after this, doubling each time (Graph retries for up to 4 hours).
    pub backoff_initial: Duration,
    pub max_attempts: u32,
    /// Items per POSTed collection.
    pub batch_max: usize,
    /// `reauthorizationRequired` is sent this long (tenant clock) before a subscription expires.
    pub reauthorization_lead: time::Duration,
    /// ... and sent again this often (tenant clock) until the subscription is reauthorized or
    /// renewed, as Graph repeats it until it is acted on.
    pub reauthorization_repeat: time::Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_secs(1),
            max_attempts: 8,
            batch_max: 100,
            reauthorization_lead: time::Duration::minutes(60),
            reauthorization_repeat: time::Duration::minutes(10),
        }
    }
}

/// Everything about one simulated tenant.
#[derive(Clone)]
pub struct SimConfig {
    pub tenant: TenantSpec,
    pub clock: SimClock,
    pub faults: Faults,
    pub limits: Limits,
    pub delivery: DeliveryConfig,
    /// The app registration accepted by the client-credentials endpoint.
    pub client_id: String,
    pub client_secret: String,
    /// The `X-IDENTITY-HEADER` value the managed-identity endpoint expects (`IDENTITY_HEADER`).
    pub identity_header: String,
    /// Graph requires HTTPS webhooks; the simulator also accepts `http://` on loopback addresses.
    pub allow_loopback_http_webhooks: bool,
    pub port: u16,
    /// Serve HTTPS with this certificate chain and key (PEM files) instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Client ids of the user-assigned identities assigned to the "app"; the managed-identity
    /// endpoint answers `400` for any other `client_id`, as App Service does.
    pub managed_identity_client_ids: Vec<String>,
    /// How long issued tokens are valid (real time).
    pub token_lifetime: Duration,
    /// Serve `participants_v2` (the path and the `$expand`) with this error status instead, as
    /// Graph's national clouds do (Graph documents the property for the global service only).
    pub participants_v2_unsupported: Option<u16>,
    /// List subscriptions with `clientState: null` (Graph's documentation does not promise that a
    /// listing echoes it), so that the app must remember which client state it subscribed with.
    pub hide_client_state_in_listings: bool,
    /// Users per `users/delta` page.
    pub users_delta_page: usize,
    /// Where Graph's Event Grid partner topic delivers: subscriptions with `EventGrid:` URLs are
    /// accepted only when set, and their events (CloudEvents 1.0, one per call) are handed to it
    /// instead of being posted to a webhook (the tests write them into the app's queue).
    pub event_grid: Option<EventGridSink>,
}

/// Takes one CloudEvent (JSON text) as Event Grid would deliver it; `true` once it is delivered.
pub type EventGridSink = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("tenant", &self.tenant)
            .field("port", &self.port)
            .field("event_grid", &self.event_grid.is_some())
            .finish_non_exhaustive()
    }
}

/// PEM files for HTTPS serving.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tenant: TenantSpec::default(),
            clock: SimClock::real(),
            faults: Faults::default(),
            limits: Limits::default(),
            delivery: DeliveryConfig::default(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: "sim-client-secret".into(),
            identity_header: "sim-identity-header".into(),
            allow_loopback_http_webhooks: true,
            port: 0,
            tls: None,
            managed_identity_client_ids: vec!["5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170".into()],
            token_lifetime: Duration::from_secs(3600),
            participants_v2_unsupported: None,
            hide_client_state_in_listings: false,
            users_delta_page: directory::USERS_PAGE,
            event_grid: None,
        }
    }
}

pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) base_url: String,
    pub(crate) tenant: RwLock<Tenant>,
    pub(crate) clock: SimClock,
    pub(crate) ledger: Ledger,
    pub(crate) dice: faults::FaultDice,
    pub(crate) throttle: throttle::Throttle,
    /// token → (client, expiry in real time)
    pub(crate) tokens: Mutex<HashMap<String, auth::Issued>>,
    pub(crate) subscriptions: Mutex<BTreeMap<String, subscriptions::Subscription>>,
    /// (subscription, record, version) already turned into notifications.
    pub(crate) notified: Mutex<HashSet<(String, String, u64)>>,
    pub(crate) ids: Mutex<rng::Rng>,
    pub(crate) http: reqwest::Client,
    /// The next this many `GET /subscriptions` answer an empty list (a listing that lags behind a
    /// create, as in a race between two creators).
    pub(crate) stale_listings: std::sync::atomic::AtomicU32,
    /// `DELETE /subscriptions/{id}` answers `503` while set.
    pub(crate) failing_deletes: std::sync::atomic::AtomicBool,
    /// The directory behind `users/delta`, seeded from the tenant's users.
    pub(crate) directory: Mutex<directory::Directory>,
}

impl SimState {
    pub(crate) fn tenant(&self) -> std::sync::RwLockReadGuard<'_, Tenant> {
        // The tenant is replaced whole or appended to: a panic elsewhere cannot leave it half-written.
        self.tenant.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new_id(&self) -> String {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).guid()
    }
}

/// A running simulator. Dropping it stops the server and the delivery loop.
pub struct RunningSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningSim {
    /// `http(s)://127.0.0.1:PORT`: Graph is at `{base}/v1.0`, the authority host is `{base}`.
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// The App Service managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.state.base_url)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.state.ledger
    }

    pub fn clock(&self) -> &SimClock {
        &self.state.clock
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// A snapshot of the tenant.
    pub fn tenant(&self) -> Tenant {
        self.state.tenant().clone()
    }

    /// Issues a new version of record `id` at tenant time `at`, with `extra_sessions` more sessions.
    /// Returns the new version number, or `None` for an unknown record.
    pub fn reissue(
        &self,
        id: &str,
        at: time::OffsetDateTime,
        extra_sessions: usize,
    ) -> Option<u64> {
        let mut tenant = self.state.tenant.write().unwrap_or_else(|p| p.into_inner());
        let record = tenant.records.get_mut(id)?;
        let last = record.versions.last()?.clone();
        let mut sessions = (*last.sessions).clone();
        for i in 0..extra_sessions {
            let mut s = last.sessions[i % last.sessions.len()].clone();
            s["id"] = serde_json::json!(self.state.new_id());
            sessions.push(s);
        }
        let version = last.version + 1;
        let mut base = last.base.clone();
        base["version"] = serde_json::json!(version);
        base["lastModifiedDateTime"] = serde_json::json!(tenant::graph_time(at));
        record.versions.push(tenant::RecordVersion {
            version,
            issued_at: at,
            base,
            sessions: Arc::new(sessions),
            participants: last.participants,
        });
        Some(version)
    }

    /// Adds (or replaces) a call record, for tests that serve a given payload, such as a documentation
    /// example, exactly.
    pub fn insert_record(&self, record: tenant::CallRecord) {
        let mut tenant = self.state.tenant.write().unwrap_or_else(|p| p.into_inner());
        let key = (record.start, record.id.clone());
        if let Some(old) = tenant.records.insert(record.id.clone(), record) {
            tenant.by_start.remove(&(old.start, old.id));
        }
        tenant.by_start.insert(key);
    }

    /// Adds a report row (`direct_routing` picks the report), for tests that place rows at given
    /// times: on a window's edge, or published hours after the call.
    pub fn insert_report_row(&self, direct_routing: bool, row: tenant::ReportRow) {
        let mut tenant = self.state.tenant.write().unwrap_or_else(|p| p.into_inner());
        let rows = if direct_routing {
            &mut tenant.direct_routing
        } else {
            &mut tenant.pstn
        };
        let at = rows.partition_point(|r| r.start <= row.start);
        rows.insert(at, row);
    }

    /// Sets a property of user `id` in the directory (`department`, or `employeeOrgData.costCenter`
    /// and the like; `Value::Null` clears it): the next delta sync returns the user. `false` for
    /// an unknown user.
    pub fn set_user_property(&self, id: &str, property: &str, value: serde_json::Value) -> bool {
        self.directory().set(id, property, value)
    }

    /// Removes user `id` from the directory: the next delta sync returns it as `@removed`.
    pub fn remove_user(&self, id: &str) -> bool {
        self.directory().remove(id)
    }

    /// Makes every delta and skip token handed out so far invalid, as Graph's expiry after 7 days
    /// does: their next use is answered `400 syncStateNotFound`.
    pub fn expire_delta_tokens(&self) {
        self.directory().generation += 1;
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, directory::Directory> {
        // Changed whole under the lock: a panic elsewhere cannot leave it torn.
        self.state
            .directory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The live subscriptions, as Graph would list them to the app.
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        subscriptions::views(&self.state)
    }

    /// Graph deletes subscription `id` on its own (as it does after a long outage of the endpoint,
    /// or when the app's consent is revoked and restored). With `notify`, the `subscriptionRemoved`
    /// lifecycle event goes to its lifecycle URL, as Graph documents; without, the app finds out
    /// at its next renewal. `false` for an unknown id.
    pub async fn remove_subscription(&self, id: &str, notify: bool) -> bool {
        subscriptions::remove_on_graphs_side(&self.state, id, notify).await
    }

    /// The next `n` subscription listings come back empty, as a listing that has not caught up with
    /// a subscription just created elsewhere: a create then meets Graph's `409`.
    pub fn stale_subscription_listings(&self, n: u32) {
        self.state
            .stale_listings
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// While `failing`, every subscription deletion is answered `503` (and retried in vain).
    pub fn fail_subscription_deletes(&self, failing: bool) {
        self.state
            .failing_deletes
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Posts lifecycle event `event` (`missed`, `reauthorizationRequired`, `subscriptionRemoved`,
    /// or anything else) for subscription `id` to its lifecycle URL; the webhook's status, `None`
    /// for an unknown subscription or an unreachable webhook.
    pub async fn send_lifecycle(&self, id: &str, event: &str) -> Option<u16> {
        subscriptions::send_lifecycle(&self.state, id, event).await
    }

    /// A valid bearer token, as if the client-credentials flow had run (for tests that are not about
    /// authentication).
    pub fn token(&self) -> String {
        auth::mint(&self.state, &self.state.config.client_id, true)
    }
}

/// Starts a simulator on `127.0.0.1:{config.port}`.
///
/// # Errors
/// When the port cannot be bound, or the TLS files cannot be read.
pub async fn start(config: SimConfig) -> std::io::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    let addr = listener.local_addr()?;
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let seed = config.tenant.seed;
    let http = reqwest::Client::builder()
        .timeout(config.delivery.timeout)
        .build()
        .map_err(std::io::Error::other)?;
    let tenant = Tenant::generate(&config.tenant);
    let directory = Mutex::new(directory::Directory::new(
        &tenant.users,
        config.users_delta_page,
    ));
    let state = Arc::new(SimState {
        base_url: format!("{scheme}://{addr}"),
        tenant: RwLock::new(tenant),
        directory,
        clock: config.clock.clone(),
        ledger: Ledger::default(),
        dice: faults::FaultDice::new(config.faults.clone(), seed),
        throttle: throttle::Throttle::new(config.limits),
        tokens: Mutex::default(),
        subscriptions: Mutex::default(),
        notified: Mutex::default(),
        ids: Mutex::new(rng::Rng::derive(seed, "ids")),
        http,
        stale_listings: std::sync::atomic::AtomicU32::new(0),
        failing_deletes: std::sync::atomic::AtomicBool::new(false),
        config,
    });
    let router = Router::new()
        .merge(auth::routes())
        .merge(graph::routes())
        .merge(subscriptions::routes())
        .merge(directory::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_in_ledger,
        ))
        // Not Graph: outside the ledger.
        .merge(status::routes())
        .with_state(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let delivery = tokio::spawn(subscriptions::deliver_forever(state.clone()));
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        match acceptor {
            None => {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await;
            }
            Some(acceptor) => tls::serve(listener, acceptor, router, stopped).await,
        }
        delivery.abort();
    });
    Ok(RunningSim {
        addr,
        state,
        _stop: stop,
    })
}

/// What a handler tells the ledger middleware about its response.
#[derive(Debug, Clone)]
pub(crate) struct LedgerTag {
    pub(crate) endpoint: Endpoint,
    pub(crate) record_id: Option<String>,
    /// The connection is cut mid-response (recorded as status 0).
    pub(crate) reset: bool,
}

async fn record_in_ledger(
    axum::extract::State(state): axum::extract::State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(tag) = response.extensions().get::<LedgerTag>() {
        let status = if tag.reset {
            0
        } else {
            response.status().as_u16()
        };
        state.ledger.request(
            tag.endpoint,
            tag.record_id.as_deref(),
            status,
            state.clock.now(),
        );
    }
    response
}
