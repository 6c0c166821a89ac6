//! The HTTP application: router, shared state and the two run modes.
//!
//! [`App::build`] wires clients from the [`Config`] and binds the listener, so tests get the real
//! app on port 0 and [`App::run_until_stopped`] serves it. In custom-handler mode the Functions host
//! proxies HTTP functions to `/api/{route}`; in standalone mode the same routes face the network.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use azure_core::credentials::TokenCredential;
use table_storage::{StorageRetry, TableStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, RunMode};
use crate::domain::schedule::Schedule;
use crate::functions::{self, Function, HttpFunction, InvocationFunction, Trigger};
use crate::graph::{GraphClient, GraphOptions};
use crate::host;
use crate::host::scheduler::{self, Timer};
use crate::host::standalone::{self, ConsumerOptions};
use crate::http::http_client;
use crate::services::{ReadApi, Services};
use crate::store::StorageAuth;
use crate::store::auth::storage_auth;
use crate::store::callrecords::CallRecordStore;
use crate::store::feed::{Dataset, FeedStore};
use crate::store::health::HealthStore;
use crate::store::lifecycle::LifecycleStore;
use crate::store::purge::Purger;
use crate::store::queue::QueueStore;
use crate::store::reports::ReportStore;
use crate::store::users::UserStore;

/// Knobs tests and benchmarks turn; production uses [`AppOptions::default`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Use this storage authentication instead of the one the configuration describes (tests inject a
    /// token credential this way).
    pub storage_auth: Option<StorageAuth>,
    /// In-process storage retries. The default only covers blips: the webhook must answer Graph
    /// within 3 s, and longer outages are covered by Graph's redelivery and the queue's.
    pub storage_retry: StorageRetry,
    /// Use this Graph credential instead of the one the configuration describes (tests inject one
    /// for the simulator this way).
    pub graph_credential: Option<Arc<dyn TokenCredential>>,
    /// Where the app reads the time (tests: the Graph simulator's clock).
    pub clock: Arc<dyn Clock>,
    /// Use these client-side Graph limits instead of Graph's documented ones (tests and benchmarks
    /// whose simulator allows more, so that a month of reports does not take minutes of waiting).
    pub graph_limits: Option<crate::graph::RateLimits>,
    /// How long the anonymous health route reuses a verdict (10 s; tests that watch the verdict
    /// change use 0).
    pub health_verdict_ttl: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            storage_auth: None,
            storage_retry: StorageRetry::default(),
            graph_credential: None,
            clock: Arc::new(SystemClock),
            graph_limits: None,
            health_verdict_ttl: Duration::from_secs(10),
        }
    }
}

/// A built application with its listener bound, ready to serve.
pub struct App {
    listener: TcpListener,
    router: Router,
    mode: RunMode,
    /// What standalone mode runs besides the routes, where the host would.
    standalone: Option<Standalone>,
}

/// Standalone mode's stand-ins for the host's triggers.
struct Standalone {
    /// The call-record queue and its poison queue.
    queue: QueueStore,
    poison: QueueStore,
    timers: Vec<Timer>,
    clock: Arc<dyn Clock>,
}

/// The timer functions of the registry with their schedules, from their built-in `function.json`,
/// `%SETTING%` resolved as the host resolves it.
fn timers(config: &Config) -> anyhow::Result<Vec<Timer>> {
    let mut timers = Vec::new();
    for function in functions::FUNCTIONS {
        let Trigger::Timer {
            binding: function_binding,
            function_json,
            ..
        } = function.trigger
        else {
            continue;
        };
        let name = function.name;
        let described: serde_json::Value =
            serde_json::from_str(function_json).with_context(|| format!("{name}/function.json"))?;
        let binding = &described["bindings"][0];
        let written = binding["schedule"].as_str().unwrap_or_default();
        let schedule = match written.strip_prefix('%').and_then(|s| s.strip_suffix('%')) {
            Some(setting) => config
                .schedule_setting(setting)
                .with_context(|| format!("{name}: no value for %{setting}%"))?,
            None => written,
        };
        timers.push(Timer {
            function: name,
            binding: function_binding,
            schedule: Schedule::parse(schedule).with_context(|| format!("{name} schedule"))?,
            run_on_startup: binding["runOnStartup"].as_bool().unwrap_or(false),
        });
    }
    Ok(timers)
}

impl App {
    /// Builds the app from its configuration and binds the listening socket.
    ///
    /// # Errors
    /// When the CA bundle, the credential or the socket cannot be set up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, AppOptions::default()).await
    }

    /// [`App::build`] with explicit options.
    ///
    /// # Errors
    /// When the CA bundle, the credential or the socket cannot be set up.
    pub async fn build_with(config: Config, mut options: AppOptions) -> anyhow::Result<Self> {
        if let Some(clock) = config.accelerated_clock {
            options.clock = Arc::new(clock);
        }
        // The longest one storage write can take: every try runs into the request timeout, with
        // the pipeline's waits in between. A writer's lease must outlive it, or a write that
        // stalled could land after another writer took the record over (and bring back an old
        // row): such a setting is refused here rather than trusted.
        let fence = config.storage_request_timeout * (options.storage_retry.max_retries + 1)
            + options.storage_retry.max_elapsed;
        if config.write_lease <= fence {
            anyhow::bail!(
                "CALLRECORD_WRITE_LEASE_SECONDS is {} s, but one storage write can take up to {} s \
                 (STORAGE_REQUEST_TIMEOUT_SECONDS {} s × {} tries + {} s of waits): set the lease \
                 above {} s or shorten the storage timeout",
                config.write_lease.as_secs(),
                fence.as_secs_f64().ceil(),
                config.storage_request_timeout.as_secs(),
                options.storage_retry.max_retries + 1,
                options.storage_retry.max_elapsed.as_secs_f64(),
                fence.as_secs_f64().ceil(),
            );
        }
        let http = http_client(config.extra_ca_file.as_deref()).context("setting up HTTPS")?;
        let storage_http = crate::http::http_client_with_timeout(
            config.extra_ca_file.as_deref(),
            config.storage_request_timeout,
        )
        .context("setting up HTTPS")?;
        let auth = match options.storage_auth {
            Some(auth) => auth,
            None => storage_auth(&config.storage.credential, &http)
                .context("setting up the storage credential")?,
        };
        let queue = QueueStore::new(
            &config.storage.queue_endpoint,
            &config.notifications.queue,
            &auth,
            storage_http.clone(),
            options.storage_retry,
        )
        .context("creating the queue client")?;
        let table = |name: &str| {
            TableStore::new(
                &config.storage.table_endpoint,
                name,
                &auth,
                storage_http.clone(),
                options.storage_retry,
            )
            .with_context(|| format!("creating the client of table {name}"))
        };
        let feed = FeedStore::new(
            table(&config.tables.feed)?,
            table(&config.tables.app_state)?,
            [
                (Dataset::CallRecords, table(&config.tables.call_records)?),
                (Dataset::PstnCalls, table(&config.tables.pstn_calls)?),
                (
                    Dataset::DirectRoutingCalls,
                    table(&config.tables.direct_routing_calls)?,
                ),
            ],
            table(&config.tables.sessions)?,
            Arc::clone(&options.clock),
            options.clock.clock_span(config.read_api.settle),
        );
        let records = CallRecordStore::new(
            table(&config.tables.call_records)?,
            table(&config.tables.sessions)?,
            table(&config.tables.bodies)?,
            table(&config.tables.app_state)?,
            // The store compares both with the clock's timestamps.
            options.clock.clock_span(config.write_lease),
            options.clock.clock_span(fence),
        )
        .with_feed(feed.clone());
        let reports = ReportStore::new(
            table(&config.tables.pstn_calls)?,
            table(&config.tables.direct_routing_calls)?,
            table(&config.tables.app_state)?,
            feed.clone(),
        );
        let lifecycle = LifecycleStore::new(table(&config.tables.app_state)?);
        let users = UserStore::new(
            table(&config.tables.users)?,
            table(&config.tables.app_state)?,
            config.directory.enabled,
        );
        let poison = QueueStore::new(
            &config.storage.queue_endpoint,
            &format!("{}-poison", config.notifications.queue),
            &auth,
            storage_http.clone(),
            options.storage_retry,
        )
        .context("creating the poison queue client")?;
        let mut graph_options = GraphOptions::from_config(&config.graph);
        if let Some(limits) = options.graph_limits {
            graph_options.limits = limits;
        }
        let graph = GraphClient::with_options(
            &config.graph,
            http.clone(),
            options.graph_credential,
            graph_options,
        )
        .context("setting up the Graph client")?;
        let timers = timers(&config)?;
        tracing::info!(
            mode = ?config.mode,
            queue_endpoint = %config.storage.queue_endpoint,
            table_endpoint = %config.storage.table_endpoint,
            storage_auth = config.storage.credential.kind(),
            queue = %config.notifications.queue,
            graph = %config.graph.base_url,
            graph_auth = config.graph.auth.kind(),
            "configured"
        );
        let auth = Auth::new(config.mode, config.read_api_keys.clone());
        let state = Services {
            auth: auth.clone(),
            notifications: Arc::new(config.notifications),
            queue,
            graph,
            records: records.clone(),
            clock: Arc::clone(&options.clock),
            fetch_policy: Arc::new(config.fetch.policy),
            max_queue_delay: config.fetch.max_queue_delay,
            reports,
            reports_config: Arc::new(config.reports.clone()),
            rejections: Arc::default(),
            lifecycle,
            subscription: Arc::new(config.subscription.clone()),
            poison: poison.clone(),
            health: HealthStore::new(table(&config.tables.app_state)?),
            marks: Arc::default(),
            verdict: Arc::default(),
            verdict_ttl: options.health_verdict_ttl,
            purger: Purger {
                records: table(&config.tables.call_records)?,
                sessions: table(&config.tables.sessions)?,
                bodies: table(&config.tables.bodies)?,
                reports: [
                    table(&config.tables.pstn_calls)?,
                    table(&config.tables.direct_routing_calls)?,
                ],
            },
            retention: Arc::new(config.retention.clone()),
            read: ReadApi {
                auth,
                feed,
                records,
                config: Arc::new(config.read_api.clone()),
                clock: options.clock,
            },
            users,
            directory: Arc::new(config.directory.clone()),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let standalone = match config.mode {
            RunMode::CustomHandler => None,
            RunMode::Standalone => Some(Standalone {
                queue: state.queue.clone(),
                poison,
                timers,
                clock: Arc::clone(&state.clock),
            }),
        };
        Ok(Self {
            listener,
            router: router(state, config.mode),
            mode: config.mode,
            standalone,
        })
    }

    /// The address the app listens on (the real port when the configuration asked for port 0).
    ///
    /// # Errors
    /// When the socket has no local address (it always has one once bound).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The HTTP functions this build serves (what `handlers/*/function.json` must describe).
    pub fn http_functions() -> Vec<HttpFunction> {
        functions::http_functions()
    }

    /// The functions the host invokes at `POST /{name}` (what `handlers/*/function.json` must
    /// describe with their trigger bindings).
    pub fn invocation_functions() -> Vec<InvocationFunction> {
        functions::invocation_functions()
    }

    /// Serves until SIGTERM or Ctrl-C, finishing requests in flight.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, finishing requests in flight.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, mode = ?self.mode, "listening");
        let (stop, stopped) = watch::channel(false);
        let stopped_signal = stopped.clone();
        // Without a host, the app consumes its queue and runs its timers itself, through its own
        // invocation routes.
        let handler = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port());
        let consumer = self.standalone.map(|s| {
            let queue = tokio::spawn(standalone::run(
                s.queue,
                s.poison,
                handler,
                standalone_consumer(),
                stopped.clone(),
            ));
            let timers = tokio::spawn(scheduler::run(s.timers, handler, s.clock, stopped));
            futures::future::join(queue, timers)
        });
        let mut signalled = stopped_signal.clone();
        let serve = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "stopping: no new work is taken"
                );
                let _ = stop.send(true);
            })
            .into_future();
        // In-flight requests get a few seconds; then the process goes. What they did not finish
        // is safe: their queue messages reappear after their visibility timeout, a timer's next
        // run redoes its work, and a webhook's unanswered post is delivered again by Graph.
        let served = tokio::select! {
            served = serve => served,
            () = async {
                let _ = signalled.wait_for(|stopped| *stopped).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("requests still in flight after the grace period are abandoned");
                Ok(())
            }
        };
        if let Some(consumer) = consumer
            && tokio::time::timeout(SHUTDOWN_GRACE, consumer)
                .await
                .is_err()
        {
            tracing::warn!("the standalone consumer did not stop within the grace period");
        }
        served
    }
}

/// How long in-flight requests may go on after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The Functions host's queue-trigger settings (`host.json`). While a message runs, the host keeps it
/// hidden for as long as the function runs; this consumer hides it a minute at a time, so that the
/// messages of a process that died come back within a minute.
fn standalone_consumer() -> ConsumerOptions {
    ConsumerOptions {
        function: Function::queue().0,
        binding: Function::queue().1,
        batch_size: 16,
        new_batch_threshold: 8,
        running_visibility: Duration::from_secs(60),
        retry_visibility: Duration::from_secs(30),
        max_dequeue_count: 5,
        max_poll_interval: Duration::from_secs(10),
    }
}

fn router(state: Services, mode: RunMode) -> Router {
    // Every function of the registry (`functions::FUNCTIONS`); a test checks it against
    // `handlers/`, by listing and by calling each route.
    let mut router = functions::routes();
    if mode == RunMode::Standalone {
        // The host's admin API, where there is no host.
        router = router.route(
            "/admin/functions/{name}",
            post(functions::admin::run_function),
        );
    }
    router
        // The host probes the handler until it answers anything; answer at once, without IO.
        .route("/", get(|| async { "ok" }))
        .fallback(crate::api::not_found)
        .layer(DefaultBodyLimit::max(functions::MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// One span per request, with the host's invocation id. The query string is left out on purpose:
/// it can hold a function key (`code=`) or a validation token.
async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        invocation_id = %host::invocation_id(request.headers()),
        method = %request.method(),
        path = %request.uri().path(),
    );
    async move {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
