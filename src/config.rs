//! Every setting the app reads, parsed once at start-up ([`Config::from_env`]).
//!
//! Handlers never read environment variables. A missing or malformed setting fails start-up with a
//! [`ConfigError`] that names the setting and never its value, because several of them are secrets
//! (`NOTIFICATION_CLIENT_STATE`, an `AccountKey` inside `AzureWebJobsStorage`).
//!
//! Setting names are looked up case-insensitively, as the Functions host does for app settings.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use url::Url;

use crate::domain::fetch::FetchPolicy;
use crate::domain::reports::ReportSettings;
use crate::domain::schedule::Schedule;

/// Azurite's well-known development account (documented, not a secret).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Graph limits `clientState` to 128 characters.
const MAX_CLIENT_STATE_LEN: usize = 128;

/// Default name of the queue between the `Notifications` webhook and `FetchCallRecord`.
pub const CALLRECORD_QUEUE: &str = "callrecord-ids";

/// Why start-up refused the configuration. The message names the setting, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("setting {0} is required but not set")]
    Missing(&'static str),
    #[error("setting {setting} is malformed: {reason}")]
    Malformed { setting: String, reason: String },
}

impl ConfigError {
    fn malformed(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// How the handler is run: behind the Functions host, or on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Started by the Functions host, which forwards HTTP requests and sends invocations.
    CustomHandler,
    /// No host in front: the same routes, plus (in later versions) its own timers and queue consumer.
    Standalone,
}

/// The whole configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: RunMode,
    /// Where the HTTP server listens (`FUNCTIONS_CUSTOMHANDLER_PORT` or, standalone, `PORT`).
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub notifications: NotificationConfig,
    pub graph: GraphConfig,
    /// Where call records are stored (`FetchCallRecord`).
    pub tables: TableNames,
    /// `CALLRECORD_WRITE_LEASE_SECONDS` (default 300): how long a writer of a call record holds it
    /// against other writers before a crashed writer's work may be taken over. Longer than the worst
    /// case of one storage write (3 tries of 30 s), so that a writer rarely has to renew it.
    pub write_lease: Duration,
    /// `STORAGE_REQUEST_TIMEOUT_SECONDS` (default 30, 1–300): the longest one storage request may
    /// take. With the storage retries it bounds the longest write, which the write lease must
    /// outlive (checked at start-up).
    pub storage_request_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for outgoing HTTPS on top of the platform's, from
    /// `EXTRA_CA_CERTS_FILE`: networks with TLS inspection, and the tests' throw-away CA.
    pub extra_ca_file: Option<PathBuf>,
    /// When a failed fetch is tried again and when it is given up.
    pub fetch: FetchConfig,
    /// The report pulls.
    pub reports: ReportsConfig,
    /// The Graph subscription and the reconciliation sweep.
    pub subscription: SubscriptionConfig,
    /// How long stored rows are kept (`Purge`).
    pub retention: RetentionConfig,
    /// Department and cost centre from Entra ID (`SyncDirectory`), off by default.
    pub directory: DirectoryConfig,
    /// `READ_API_KEYS` (standalone mode): comma-separated keys that the routes the host would guard
    /// with function keys accept (`x-functions-key` header or `code` parameter), compared in
    /// constant time. Empty: those routes refuse every request.
    pub read_api_keys: Vec<SecretString>,
    /// The read API's feeds and their consumers.
    pub read_api: ReadApiConfig,
    /// `ACCELERATED_CLOCK` (standalone mode only; the reliability test): read the time from this
    /// clock, shared with the Graph simulator, instead of the system's.
    pub accelerated_clock: Option<crate::clock::AcceleratedClock>,
}

/// The read API (`/api/v1`).
#[derive(Debug, Clone)]
pub struct ReadApiConfig {
    /// `FEED_SETTLE_SECONDS` (300, 30–3600): how far behind the present the feeds read, so that
    /// every row stored before that time has landed whichever instance stored it (`store::feed`).
    /// A feed shows a row this long after it was stored. Half of it must exceed the instances'
    /// clock differences plus the slowest append: hence the floor of 30 s.
    pub settle: Duration,
    /// `READ_API_REQUIRED_ROLE`: when set, the read API also requires this Entra app role in the
    /// `X-MS-CLIENT-PRINCIPAL` header that App Service Authentication forwards.
    pub required_role: Option<String>,
    /// `CONSUMER_STALE_DAYS` (3, 1–30): a feed that a consumer read before but not for this long
    /// makes the health check degraded.
    pub consumer_stale: Duration,
}

/// The call-record fetch's retry schedule and how the queue carries it.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Delays and horizons. `FETCH_NOT_FOUND_HORIZON_HOURS` (default 8, 1–72) bounds how long a
    /// record Graph answers `404` for is awaited; `FETCH_FAILURE_HORIZON_HOURS` (default 72, 1–720)
    /// how long a failing or busy fetch is retried. The rest are Graph's facts (30-day retention)
    /// and back-off steps.
    pub policy: FetchPolicy,
    /// The longest visibility delay a queue message is given: 7 days, Azure Storage queues' limit.
    /// A message due later comes back early and is put back (tests use 0, so that they never wait
    /// for a hidden message).
    pub max_queue_delay: Duration,
}

/// The PSTN and Direct Routing report pulls (`PullReports`).
#[derive(Debug, Clone)]
pub struct ReportsConfig {
    /// `REPORTS_SCHEDULE` (default `0 */15 * * * *`): when `PullReports` runs, six-field NCRONTAB.
    /// `handlers/PullReports/function.json` names it (`%REPORTS_SCHEDULE%`), so the host and the
    /// standalone scheduler read the same value; checked at start-up.
    pub schedule: String,
    /// `REPORTS_BACKFILL_DAYS` (30, 1–365), `REPORTS_LOOKBACK_HOURS` (3, 0–72),
    /// `REPORTS_DEEP_LOOKBACK_HOURS` (96, 1–2160), `REPORTS_DEEP_EVERY_HOURS` (24, 1–168).
    pub settings: ReportSettings,
    /// How long one pull may run before it stops at a window's end (the rest waits for the next
    /// run): well inside the host's function timeout.
    pub run_budget: Duration,
    /// `REPORTS_LEASE_SECONDS` (300, 10–3600): how long a pull holds a report against other pulls
    /// (renewed while it runs). After a crash the report waits this long before the next pull.
    pub lease: Duration,
}

/// The Graph subscription (`MaintainSubscription`, `Lifecycle`) and the reconciliation sweep
/// (`Reconcile`).
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// `NOTIFICATION_DELIVERY`: how Graph delivers notifications, `webhook` (the default) or
    /// `eventGrid` (an Event Grid partner topic that writes them into the call-record queue).
    pub delivery: NotificationDelivery,
    /// `NOTIFICATION_URL`: the public HTTPS URL of `/api/notifications` that Graph posts to. Not
    /// required at start-up (the other functions work without it); `MaintainSubscription` fails,
    /// naming it, while it is missing.
    pub notification_url: Option<Url>,
    /// `LIFECYCLE_NOTIFICATION_URL`: the same for `/api/lifecycle`.
    pub lifecycle_url: Option<Url>,
    /// `SUBSCRIPTION_SCHEDULE` (default every 2 hours): when `MaintainSubscription` runs.
    pub schedule: String,
    /// `RECONCILE_SCHEDULE` (default every 5 minutes): when `Reconcile` runs. A run with nothing
    /// owed reads two `AppState` queries and lists nothing.
    pub reconcile_schedule: String,
    /// `RECONCILE_PASS_HOURS` (`3,26`; one to three whole hours from 1 to 720, increasing): how
    /// long after the end of an hour of call starts each of its listings is due. The last one is
    /// also the look-back of a lost subscription's gap. The reasoning: DESIGN §6.5.
    pub reconcile_passes: Vec<Duration>,
    /// `RECONCILE_BUDGET_SECONDS` (240, 30–540): how long one `Reconcile` run may go on before it
    /// leaves the rest of its windows to the next; below the host's 10-minute function timeout, as
    /// a run still records its report after the budget. Its lease is twice this, so a run that
    /// crashed holds up the next ones that long.
    pub reconcile_budget: Duration,
}

/// How Graph delivers change notifications for call records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationDelivery {
    /// HTTPS posts to the `Notifications` and `Lifecycle` webhooks.
    Webhook,
    /// Through an Azure Event Grid partner topic into the call-record queue: no inbound endpoint.
    EventGrid(EventGridTopic),
}

impl NotificationDelivery {
    /// The setting's value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::EventGrid(_) => "eventGrid",
        }
    }
}

/// The Event Grid partner topic Graph publishes to: `EVENT_GRID_SUBSCRIPTION_ID`,
/// `EVENT_GRID_RESOURCE_GROUP`, `EVENT_GRID_PARTNER_TOPIC`, `EVENT_GRID_LOCATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventGridTopic {
    pub subscription_id: String,
    pub resource_group: String,
    pub partner_topic: String,
    pub location: String,
}

impl EventGridTopic {
    /// The `notificationUrl` (and `lifecycleNotificationUrl`) Graph takes for this topic.
    pub fn url(&self) -> String {
        format!(
            "EventGrid:?azuresubscriptionid={}&resourcegroup={}&partnertopic={}&location={}",
            self.subscription_id, self.resource_group, self.partner_topic, self.location
        )
    }
}

impl SubscriptionConfig {
    /// The last of [`SubscriptionConfig::reconcile_passes`]: the calls started this long before an
    /// event (a lost subscription, Graph's `missed`) are listed again after it.
    pub fn reconcile_lookback(&self) -> Duration {
        self.reconcile_passes.last().copied().unwrap_or_default()
    }
}

/// How long data rows are kept, and when `Purge` deletes the older ones.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// `RETENTION_DAYS` (90, 31–3650): rows of calls that started longer ago are deleted. At least
    /// 31, so that nothing Graph still keeps (30 days) can be deleted and fetched again.
    pub days: u32,
    /// `PURGE_SCHEDULE` (default daily at 03:15 UTC).
    pub schedule: String,
    /// How long one run may go on; the next run goes on where it stopped.
    pub budget: Duration,
}

/// The directory sync (`SyncDirectory`) and the `Department` and `CostCenter` columns it feeds.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `DIRECTORY_SYNC` (`true`/`false`, default `false`): keep the `Users` table in step with
    /// Entra ID and write department and cost centre on call rows. Needs the Graph application
    /// permission `User.Read.All`, which the deployment grants only when this is on.
    pub enabled: bool,
    /// `DIRECTORY_SYNC_SCHEDULE` (default hourly at minute 7): when `SyncDirectory` runs. Graph's
    /// delta links for users last 7 days; a sync that fails for longer starts a full sync again.
    pub schedule: String,
    /// How long one run may go on before it leaves the rest of the pages to the next run.
    pub budget: Duration,
}

/// Names of the tables the app writes (Bicep creates them; the app creates missing ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub call_records: String,
    pub sessions: String,
    pub bodies: String,
    pub app_state: String,
    pub pstn_calls: String,
    pub direct_routing_calls: String,
    /// The read API's ingestion log (`store::feed`).
    pub feed: String,
    /// The directory sync's users and their departments over time (`store::users`).
    pub users: String,
}

impl Default for TableNames {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

impl TableNames {
    /// The documented names, each preceded by `prefix` (tests give every test its own tables).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            call_records: format!("{prefix}CallRecords"),
            sessions: format!("{prefix}CallRecordSessions"),
            bodies: format!("{prefix}CallRecordBodies"),
            app_state: format!("{prefix}AppState"),
            pstn_calls: format!("{prefix}PstnCalls"),
            direct_routing_calls: format!("{prefix}DirectRoutingCalls"),
            feed: format!("{prefix}Feed"),
            users: format!("{prefix}Users"),
        }
    }
}

/// What the webhook checks on every notification item.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    /// The customer's tenant (`GRAPH_TENANT_ID`), lower-case.
    pub tenant_id: String,
    /// `NOTIFICATION_CLIENT_STATE`: the secret Graph echoes in every notification.
    pub client_state: SecretString,
    /// Queue the accepted call-record ids go to.
    pub queue: String,
    /// How long the webhook waits for the queue before answering `503` (2.5 s: Graph gives 3 s).
    pub enqueue_budget: Duration,
}

/// How the app reaches Microsoft Graph: where, as whom, and how patiently.
///
/// Defaults are Graph's public cloud and the in-process retry budget below; the national clouds
/// (and the simulator) set `GRAPH_BASE_URL` and `GRAPH_AUTHORITY_HOST`.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub auth: GraphAuth,
    /// The customer's tenant (`GRAPH_TENANT_ID`, lower-case): the tenant the credential signs in to.
    pub tenant_id: String,
    /// `GRAPH_BASE_URL`, ending in `/` (default `https://graph.microsoft.com/`). The client appends
    /// `v1.0/`; tokens are requested for [`GraphConfig::scope`].
    pub base_url: Url,
    /// `GRAPH_AUTHORITY_HOST` (default `https://login.microsoftonline.com/`), for `client-secret`.
    pub authority_host: Url,
    /// `GRAPH_MAX_RETRIES` (default 4): retries after the first try of one request.
    pub max_retries: u32,
    /// `GRAPH_MAX_RETRY_ELAPSED_SECONDS` (default 60): no retry starts after this long.
    pub max_retry_elapsed: Duration,
    /// `GRAPH_REQUEST_TIMEOUT_SECONDS` (default 30): one try, from connecting to the last body byte.
    pub request_timeout: Duration,
    /// `GRAPH_MAX_INLINE_RETRY_AFTER_SECONDS` (default 30): a `Retry-After` up to this long is slept
    /// in-process; a longer one is handed back to the caller (re-enqueue with that delay).
    pub max_inline_retry_after: Duration,
    /// `GRAPH_CALL_RECORD_REQUESTS_PER_20_SECONDS` (1,500, 1–1,500): this process's share of
    /// Graph's call-record limit per app and tenant (1,500 requests / 20 s), which every instance
    /// shares. The deployment divides the limit by the most instances the plan may start.
    pub call_record_requests_per_20s: u32,
}

/// How the app authenticates to Graph (`GRAPH_AUTH`).
#[derive(Debug, Clone)]
pub enum GraphAuth {
    /// `managed-identity` (default): the Function App's identity; user-assigned when `AZURE_CLIENT_ID`
    /// names one, else system-assigned.
    ManagedIdentity { client_id: Option<String> },
    /// `client-secret` (local development): an app registration's `GRAPH_CLIENT_ID` and
    /// `GRAPH_CLIENT_SECRET`.
    ClientSecret {
        client_id: String,
        secret: SecretString,
    },
}

impl GraphAuth {
    /// A short description for the start-up log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagedIdentity { client_id: Some(_) } => "user-assigned managed identity",
            Self::ManagedIdentity { client_id: None } => "system-assigned managed identity",
            Self::ClientSecret { .. } => "client secret",
        }
    }
}

impl GraphConfig {
    /// The token scope: `{GRAPH_BASE_URL}/.default` (`https://graph.microsoft.com/.default`).
    pub fn scope(&self) -> String {
        format!("{}/.default", self.base_url.as_str().trim_end_matches('/'))
    }
}

/// Where Azure Storage is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Queue service endpoint, e.g. `https://acct.queue.core.windows.net/` (account path included for Azurite).
    pub queue_endpoint: Url,
    /// Table service endpoint, same form.
    pub table_endpoint: Url,
    pub credential: StorageCredential,
}

/// The storage credential as configured (the running credential is built from it in `store`).
#[derive(Clone)]
pub enum StorageCredential {
    /// `AccountName` + `AccountKey` from a connection string: the app signs its own SAS.
    SharedKey {
        account: String,
        key: SecretSlice<u8>,
    },
    /// A `SharedAccessSignature` from a connection string, appended to every request.
    Sas(SecretString),
    /// Identity-based connection: a bearer token from the App Service managed-identity endpoint.
    ManagedIdentity { client_id: Option<String> },
}

impl std::fmt::Debug for StorageCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .finish_non_exhaustive(),
            Self::Sas(_) => f.write_str("Sas(..)"),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl StorageCredential {
    /// A short description for the start-up log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SharedKey { .. } => "shared key (signed SAS)",
            Self::Sas(_) => "SAS from connection string",
            Self::ManagedIdentity { client_id: Some(_) } => "user-assigned managed identity",
            Self::ManagedIdentity { client_id: None } => "system-assigned managed identity",
        }
    }
}

/// Settings looked up by name, case-insensitively.
struct Settings(HashMap<String, String>);

impl Settings {
    fn new<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        Self(
            vars.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    /// The value of a setting; empty values count as unset (App Service keeps deleted settings as "").
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(&name.to_ascii_lowercase())
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or malformed setting.
    pub fn from_env(mode: RunMode) -> Result<Self, ConfigError> {
        Self::from_vars(mode, std::env::vars())
    }

    /// Reads the configuration from the given name/value pairs (the environment, or a test's map).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or malformed setting.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        mode: RunMode,
        vars: I,
    ) -> Result<Self, ConfigError> {
        let settings = Settings::new(vars);
        let listen = listen_address(mode, &settings)?;
        let storage = storage_config(&settings)?;
        let notifications = notification_config(&settings)?;
        let graph = graph_config(&settings, &notifications.tenant_id)?;
        let extra_ca_file = settings.get("EXTRA_CA_CERTS_FILE").map(PathBuf::from);
        if let Some(path) = &extra_ca_file
            && !path.is_file()
        {
            return Err(ConfigError::malformed(
                "EXTRA_CA_CERTS_FILE",
                "does not name a readable file",
            ));
        }
        let write_lease = seconds(&settings, "CALLRECORD_WRITE_LEASE_SECONDS", 300, 2..=3600)?;
        let accelerated_clock = match settings.get("ACCELERATED_CLOCK") {
            None => None,
            // Under the host, timers and queue delays follow the host's real clock: a fast clock
            // of our own would disagree with them.
            Some(_) if mode == RunMode::CustomHandler => {
                return Err(ConfigError::malformed(
                    "ACCELERATED_CLOCK",
                    "is for standalone mode only (the reliability test)",
                ));
            }
            Some(value) => Some(
                crate::clock::AcceleratedClock::parse(value)
                    .map_err(|reason| ConfigError::malformed("ACCELERATED_CLOCK", reason))?,
            ),
        };
        let storage_request_timeout =
            seconds(&settings, "STORAGE_REQUEST_TIMEOUT_SECONDS", 30, 1..=300)?;
        let fetch = fetch_config(&settings)?;
        let reports = reports_config(&settings)?;
        let subscription = subscription_config(&settings)?;
        let retention = RetentionConfig {
            days: number(&settings, "RETENTION_DAYS", 90, 31..=3650)?,
            schedule: schedule(&settings, "PURGE_SCHEDULE", DEFAULT_PURGE_SCHEDULE)?,
            budget: Duration::from_secs(300),
        };
        let directory = DirectoryConfig {
            enabled: flag(&settings, "DIRECTORY_SYNC", false)?,
            schedule: schedule(
                &settings,
                "DIRECTORY_SYNC_SCHEDULE",
                DEFAULT_DIRECTORY_SYNC_SCHEDULE,
            )?,
            budget: Duration::from_secs(240),
        };
        let read_api_keys = settings
            .get("READ_API_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_owned()))
            .collect();
        let read_api = ReadApiConfig {
            settle: seconds(&settings, "FEED_SETTLE_SECONDS", 300, 30..=3600)?,
            required_role: settings
                .get("READ_API_REQUIRED_ROLE")
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            consumer_stale: Duration::from_secs(
                86_400 * u64::from(number(&settings, "CONSUMER_STALE_DAYS", 3, 1..=30)?),
            ),
        };
        Ok(Self {
            mode,
            listen,
            storage,
            notifications,
            graph,
            tables: TableNames::default(),
            write_lease,
            storage_request_timeout,
            extra_ca_file,
            fetch,
            reports,
            subscription,
            retention,
            directory,
            read_api_keys,
            read_api,
            accelerated_clock,
        })
    }
}

fn listen_address(mode: RunMode, settings: &Settings) -> Result<SocketAddr, ConfigError> {
    // Behind the host only the host talks to us, over loopback; standalone serves the network.
    let (name, ip, default) = match mode {
        RunMode::CustomHandler => (
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            None,
        ),
        RunMode::Standalone => ("PORT", IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(7071)),
    };
    let port = match (settings.get(name), default) {
        (Some(raw), _) => raw
            .parse::<u16>()
            .map_err(|_| ConfigError::malformed(name, "not a port number"))?,
        (None, Some(port)) => port,
        (None, None) => return Err(ConfigError::Missing("FUNCTIONS_CUSTOMHANDLER_PORT")),
    };
    Ok(SocketAddr::new(ip, port))
}

fn notification_config(settings: &Settings) -> Result<NotificationConfig, ConfigError> {
    let tenant_id = settings.require("GRAPH_TENANT_ID")?;
    if !is_guid(tenant_id) {
        return Err(ConfigError::malformed(
            "GRAPH_TENANT_ID",
            "expected a GUID (the directory/tenant id)",
        ));
    }
    let client_state = settings.require("NOTIFICATION_CLIENT_STATE")?;
    if client_state.chars().count() > MAX_CLIENT_STATE_LEN {
        return Err(ConfigError::malformed(
            "NOTIFICATION_CLIENT_STATE",
            "longer than the 128 characters Graph accepts",
        ));
    }
    Ok(NotificationConfig {
        tenant_id: tenant_id.to_ascii_lowercase(),
        client_state: SecretString::from(client_state.to_owned()),
        queue: CALLRECORD_QUEUE.to_owned(),
        enqueue_budget: Duration::from_millis(2500),
    })
}

fn graph_config(settings: &Settings, tenant_id: &str) -> Result<GraphConfig, ConfigError> {
    const AUTH: &str = "GRAPH_AUTH";
    const CLIENT_ID: &str = "GRAPH_CLIENT_ID";
    const SECRET: &str = "GRAPH_CLIENT_SECRET";
    const MI_CLIENT_ID: &str = "AZURE_CLIENT_ID";
    const BASE_URL: &str = "GRAPH_BASE_URL";
    const AUTHORITY: &str = "GRAPH_AUTHORITY_HOST";

    let auth = match settings.get(AUTH) {
        None => managed_identity(settings, MI_CLIENT_ID)?,
        Some(v) if v.eq_ignore_ascii_case("managed-identity") => {
            managed_identity(settings, MI_CLIENT_ID)?
        }
        Some(v) if v.eq_ignore_ascii_case("client-secret") => {
            let client_id = settings.require(CLIENT_ID)?;
            if !is_guid(client_id) {
                return Err(ConfigError::malformed(
                    CLIENT_ID,
                    "expected the application (client) id, a GUID",
                ));
            }
            GraphAuth::ClientSecret {
                client_id: client_id.to_ascii_lowercase(),
                secret: SecretString::from(settings.require(SECRET)?.to_owned()),
            }
        }
        Some(_) => {
            return Err(ConfigError::malformed(
                AUTH,
                "expected `managed-identity` or `client-secret`",
            ));
        }
    };
    let base_url = graph_url(
        BASE_URL,
        settings
            .get(BASE_URL)
            .unwrap_or("https://graph.microsoft.com"),
    )?;
    let authority_host = graph_url(
        AUTHORITY,
        settings
            .get(AUTHORITY)
            .unwrap_or("https://login.microsoftonline.com"),
    )?;
    // azure_identity refuses a non-HTTPS authority host; say so at start-up, naming the setting.
    if matches!(auth, GraphAuth::ClientSecret { .. }) && authority_host.scheme() != "https" {
        return Err(ConfigError::malformed(
            AUTHORITY,
            "the client-secret credential needs an https:// authority host",
        ));
    }
    Ok(GraphConfig {
        auth,
        tenant_id: tenant_id.to_owned(),
        base_url,
        authority_host,
        max_retries: number(settings, "GRAPH_MAX_RETRIES", 4, 0..=20)?,
        max_retry_elapsed: seconds(settings, "GRAPH_MAX_RETRY_ELAPSED_SECONDS", 60, 0..=3600)?,
        request_timeout: seconds(settings, "GRAPH_REQUEST_TIMEOUT_SECONDS", 30, 1..=600)?,
        max_inline_retry_after: seconds(
            settings,
            "GRAPH_MAX_INLINE_RETRY_AFTER_SECONDS",
            30,
            0..=600,
        )?,
        call_record_requests_per_20s: number(
            settings,
            "GRAPH_CALL_RECORD_REQUESTS_PER_20_SECONDS",
            1500,
            1..=1500,
        )?,
    })
}

/// An absolute `http(s)://` base URL without query or fragment, ending in `/`.
fn graph_url(setting: &'static str, raw: &str) -> Result<Url, ConfigError> {
    if raw.contains(['?', '#']) {
        return Err(ConfigError::malformed(
            setting,
            "a base URL has no query string or fragment",
        ));
    }
    endpoint(setting, raw)
}

fn managed_identity(settings: &Settings, setting: &'static str) -> Result<GraphAuth, ConfigError> {
    let client_id = settings.get(setting).map(str::to_ascii_lowercase);
    if let Some(id) = &client_id
        && !is_guid(id)
    {
        return Err(ConfigError::malformed(
            setting,
            "expected the client id (GUID) of the user-assigned identity",
        ));
    }
    Ok(GraphAuth::ManagedIdentity { client_id })
}

/// `RECONCILE_PASS_HOURS`: one to three increasing whole hours, each from 1 to 720.
fn reconcile_passes(settings: &Settings) -> Result<Vec<Duration>, ConfigError> {
    const NAME: &str = "RECONCILE_PASS_HOURS";
    let raw = settings.get(NAME).unwrap_or("3,26");
    let hours: Option<Vec<u64>> = raw
        .split(',')
        .map(|h| {
            h.trim()
                .parse::<u64>()
                .ok()
                .filter(|h| (1..=720).contains(h))
        })
        .collect();
    match hours {
        Some(hours) if (1..=3).contains(&hours.len()) && hours.windows(2).all(|w| w[0] < w[1]) => {
            Ok(hours
                .into_iter()
                .map(|h| Duration::from_secs(h * 3600))
                .collect())
        }
        _ => Err(ConfigError::malformed(
            NAME,
            "expected one to three increasing whole hours from 1 to 720, such as 3,26",
        )),
    }
}

/// A whole number setting within `range`, or `default` when unset.
fn number(
    settings: &Settings,
    name: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let Some(raw) = settings.get(name) else {
        return Ok(default);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ConfigError::malformed(
                name,
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A `true`/`false` setting (either case); absent is `default`.
fn flag(settings: &Settings, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match settings.get(name).map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ConfigError::malformed(name, "expected true or false")),
    }
}

fn seconds(
    settings: &Settings,
    name: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Duration, ConfigError> {
    number(settings, name, default, range).map(|s| Duration::from_secs(u64::from(s)))
}

fn reports_config(settings: &Settings) -> Result<ReportsConfig, ConfigError> {
    let hours = |name, default, range| {
        number(settings, name, default, range).map(|h| Duration::from_secs(u64::from(h) * 3600))
    };
    Ok(ReportsConfig {
        schedule: schedule(settings, "REPORTS_SCHEDULE", DEFAULT_REPORTS_SCHEDULE)?,
        settings: ReportSettings {
            backfill: hours("REPORTS_BACKFILL_DAYS", 30, 1..=365)?.saturating_mul(24),
            lookback: hours("REPORTS_LOOKBACK_HOURS", 3, 0..=72)?,
            deep_lookback: hours("REPORTS_DEEP_LOOKBACK_HOURS", 96, 1..=2160)?,
            deep_every: hours("REPORTS_DEEP_EVERY_HOURS", 24, 1..=168)?,
        },
        run_budget: Duration::from_secs(240),
        lease: seconds(settings, "REPORTS_LEASE_SECONDS", 300, 10..=3600)?,
    })
}

/// Every quarter of an hour, on the quarter.
pub const DEFAULT_REPORTS_SCHEDULE: &str = "0 */15 * * * *";

impl Config {
    /// The value of an app setting a timer's `schedule` names as `%NAME%`, as the host resolves it.
    pub fn schedule_setting(&self, name: &str) -> Option<&str> {
        match name {
            "REPORTS_SCHEDULE" => Some(&self.reports.schedule),
            "SUBSCRIPTION_SCHEDULE" => Some(&self.subscription.schedule),
            "RECONCILE_SCHEDULE" => Some(&self.subscription.reconcile_schedule),
            "PURGE_SCHEDULE" => Some(&self.retention.schedule),
            "DIRECTORY_SYNC_SCHEDULE" => Some(&self.directory.schedule),
            _ => None,
        }
    }
}

/// Every two hours, on the hour: a subscription lives 70.5 hours, so a renewal can fail for days
/// before it lapses.
pub const DEFAULT_SUBSCRIPTION_SCHEDULE: &str = "0 0 */2 * * *";
/// Daily at 03:15 UTC, away from the other timers' minutes.
pub const DEFAULT_PURGE_SCHEDULE: &str = "0 15 3 * * *";
/// Hourly at minute 7, away from the other timers' minutes.
pub const DEFAULT_DIRECTORY_SYNC_SCHEDULE: &str = "0 7 * * * *";
/// Every five minutes, two minutes off the report pulls on the quarter hours.
pub const DEFAULT_RECONCILE_SCHEDULE: &str = "0 2-59/5 * * * *";

fn schedule(settings: &Settings, name: &'static str, default: &str) -> Result<String, ConfigError> {
    let schedule = settings.get(name).unwrap_or(default).trim().to_owned();
    match Schedule::parse(&schedule) {
        Ok(_) => Ok(schedule),
        Err(e) => Err(ConfigError::malformed(name, e.to_string())),
    }
}

/// A webhook URL Graph can post to: HTTPS, or HTTP on a loopback address (the local run and the
/// tests, whose simulator allows it; Graph itself refuses it).
fn webhook_url(settings: &Settings, name: &'static str) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = settings.get(name) else {
        return Ok(None);
    };
    let url = Url::parse(raw).map_err(|_| ConfigError::malformed(name, "not an absolute URL"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(ConfigError::malformed(
            name,
            "Graph posts only to https URLs (http is accepted for loopback addresses only)",
        ));
    }
    Ok(Some(url))
}

fn notification_delivery(settings: &Settings) -> Result<NotificationDelivery, ConfigError> {
    match settings.get("NOTIFICATION_DELIVERY").map(str::trim) {
        None | Some("") => Ok(NotificationDelivery::Webhook),
        Some(v) if v.eq_ignore_ascii_case("webhook") => Ok(NotificationDelivery::Webhook),
        Some(v) if v.eq_ignore_ascii_case("eventGrid") => {
            // Values that go into the `EventGrid:` URL's query: Azure's own name rules, so that
            // nothing can add a parameter or end the URL.
            let name = |setting: &'static str, max: usize, extra: &[char]| {
                let value = settings.require(setting)?.trim();
                let fits = !value.is_empty()
                    && value.len() <= max
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
                if fits {
                    Ok(value.to_owned())
                } else {
                    Err(ConfigError::malformed(
                        setting,
                        format!(
                            "expected 1 to {max} letters, digits or {}",
                            extra.iter().collect::<String>()
                        ),
                    ))
                }
            };
            let subscription_id = settings.require("EVENT_GRID_SUBSCRIPTION_ID")?.trim();
            if !is_guid(subscription_id) {
                return Err(ConfigError::malformed(
                    "EVENT_GRID_SUBSCRIPTION_ID",
                    "expected an Azure subscription id (a GUID)",
                ));
            }
            Ok(NotificationDelivery::EventGrid(EventGridTopic {
                subscription_id: subscription_id.to_ascii_lowercase(),
                resource_group: name("EVENT_GRID_RESOURCE_GROUP", 90, &['-', '_', '.', '(', ')'])?,
                partner_topic: name("EVENT_GRID_PARTNER_TOPIC", 50, &['-'])?,
                location: name("EVENT_GRID_LOCATION", 50, &[])?.to_ascii_lowercase(),
            }))
        }
        Some(_) => Err(ConfigError::malformed(
            "NOTIFICATION_DELIVERY",
            "expected webhook or eventGrid",
        )),
    }
}

fn subscription_config(settings: &Settings) -> Result<SubscriptionConfig, ConfigError> {
    let passes = reconcile_passes(settings)?;
    Ok(SubscriptionConfig {
        delivery: notification_delivery(settings)?,
        notification_url: webhook_url(settings, "NOTIFICATION_URL")?,
        lifecycle_url: webhook_url(settings, "LIFECYCLE_NOTIFICATION_URL")?,
        schedule: schedule(
            settings,
            "SUBSCRIPTION_SCHEDULE",
            DEFAULT_SUBSCRIPTION_SCHEDULE,
        )?,
        reconcile_schedule: schedule(settings, "RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE)?,
        reconcile_passes: passes,
        reconcile_budget: seconds(settings, "RECONCILE_BUDGET_SECONDS", 240, 30..=540)?,
    })
}

fn fetch_config(settings: &Settings) -> Result<FetchConfig, ConfigError> {
    let hours = |name, default, range| {
        number(settings, name, default, range).map(|h| Duration::from_secs(u64::from(h) * 3600))
    };
    Ok(FetchConfig {
        policy: FetchPolicy {
            not_found_horizon: hours("FETCH_NOT_FOUND_HORIZON_HOURS", 8, 1..=72)?,
            failure_horizon: hours("FETCH_FAILURE_HORIZON_HOURS", 72, 1..=720)?,
            ..FetchPolicy::default()
        },
        max_queue_delay: Duration::from_secs(7 * 24 * 3600),
    })
}

/// True for the `8-4-4-4-12` hex form of a GUID.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

const STORAGE: &str = "AzureWebJobsStorage";

fn storage_config(settings: &Settings) -> Result<StorageConfig, ConfigError> {
    // As in the Functions host, a plain connection string wins over identity-based settings.
    if let Some(conn) = settings.get(STORAGE) {
        return parse_connection_string(conn);
    }
    identity_storage_config(settings)
}

fn identity_storage_config(settings: &Settings) -> Result<StorageConfig, ConfigError> {
    const ACCOUNT: &str = "AzureWebJobsStorage__accountName";
    const QUEUE_URI: &str = "AzureWebJobsStorage__queueServiceUri";
    const TABLE_URI: &str = "AzureWebJobsStorage__tableServiceUri";
    const CREDENTIAL: &str = "AzureWebJobsStorage__credential";
    const CLIENT_ID: &str = "AzureWebJobsStorage__clientId";

    let account = settings.get(ACCOUNT);
    if let Some(name) = account
        && !is_account_name(name)
    {
        return Err(ConfigError::malformed(
            ACCOUNT,
            "a storage account name is 3 to 24 lower-case letters and digits",
        ));
    }
    let service_uri = |setting: &'static str, service: &str| -> Result<Url, ConfigError> {
        match (settings.get(setting), account) {
            (Some(raw), _) => https_endpoint(setting, raw),
            (None, Some(name)) => https_endpoint(
                setting,
                &format!("https://{name}.{service}.core.windows.net"),
            ),
            (None, None) => Err(ConfigError::Missing(if settings.get(QUEUE_URI).is_some() {
                setting
            } else {
                STORAGE
            })),
        }
    };
    let queue_endpoint = service_uri(QUEUE_URI, "queue")?;
    let table_endpoint = service_uri(TABLE_URI, "table")?;

    match settings.get(CREDENTIAL) {
        None => {}
        Some(c) if c.eq_ignore_ascii_case("managedidentity") => {}
        Some(_) => {
            return Err(ConfigError::malformed(
                CREDENTIAL,
                "only `managedidentity` is supported",
            ));
        }
    }
    let client_id = settings.get(CLIENT_ID).map(str::to_owned);
    if let Some(id) = &client_id
        && !is_guid(id)
    {
        return Err(ConfigError::malformed(
            CLIENT_ID,
            "expected the client id (GUID) of the user-assigned identity",
        ));
    }
    Ok(StorageConfig {
        queue_endpoint,
        table_endpoint,
        credential: StorageCredential::ManagedIdentity { client_id },
    })
}

fn https_endpoint(setting: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = endpoint(setting, raw)?;
    // Bearer tokens are only ever sent over HTTPS (the storage SDK refuses otherwise, and rightly).
    if url.scheme() != "https" {
        return Err(ConfigError::malformed(
            setting,
            "identity-based connections need an https:// endpoint",
        ));
    }
    Ok(url)
}

/// Parses a service endpoint and makes sure it ends in `/`, so paths can be appended.
fn endpoint(setting: &str, raw: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(raw).map_err(|_| ConfigError::malformed(setting, "not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::malformed(
            setting,
            "expected an http:// or https:// URL",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::malformed(
            setting,
            "an endpoint has no query string (put a SAS in SharedAccessSignature)",
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses an Azure Storage connection string (the forms the portal, Azurite and the Functions tools use).
fn parse_connection_string(conn: &str) -> Result<StorageConfig, ConfigError> {
    let mut parts: HashMap<String, &str> = HashMap::new();
    for part in conn.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Values (account keys, SAS) contain '=', so split at the first one only.
        let Some((key, value)) = part.split_once('=') else {
            return Err(ConfigError::malformed(
                STORAGE,
                "expected `Key=Value` pairs separated by `;`",
            ));
        };
        parts.insert(key.trim().to_ascii_lowercase(), value.trim());
    }
    let get = |key: &str| parts.get(&key.to_ascii_lowercase()).copied();

    if get("UseDevelopmentStorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let proxy = get("DevelopmentStorageProxyUri").unwrap_or("http://127.0.0.1");
        let base = Url::parse(proxy)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("{}://{h}", u.scheme())))
            .ok_or_else(|| {
                ConfigError::malformed(STORAGE, "DevelopmentStorageProxyUri is not a URL")
            })?;
        return Ok(StorageConfig {
            queue_endpoint: endpoint(STORAGE, &format!("{base}:10001/{DEV_ACCOUNT}"))?,
            table_endpoint: endpoint(STORAGE, &format!("{base}:10002/{DEV_ACCOUNT}"))?,
            credential: shared_key(DEV_ACCOUNT, DEV_ACCOUNT_KEY)?,
        });
    }

    let account = get("AccountName");
    let protocol = get("DefaultEndpointsProtocol").unwrap_or("https");
    if !matches!(protocol, "http" | "https") {
        return Err(ConfigError::malformed(
            STORAGE,
            "DefaultEndpointsProtocol must be http or https",
        ));
    }
    let suffix = get("EndpointSuffix").unwrap_or("core.windows.net");
    let service = |explicit: &str, service: &str| -> Result<Url, ConfigError> {
        match (get(explicit), account) {
            (Some(raw), _) => endpoint(STORAGE, raw),
            (None, Some(name)) => {
                endpoint(STORAGE, &format!("{protocol}://{name}.{service}.{suffix}"))
            }
            (None, None) => Err(ConfigError::malformed(
                STORAGE,
                format!("needs AccountName or {explicit}"),
            )),
        }
    };
    let queue_endpoint = service("QueueEndpoint", "queue")?;
    let table_endpoint = service("TableEndpoint", "table")?;

    let credential = match (get("SharedAccessSignature"), get("AccountKey"), account) {
        (Some(sas), _, _) => {
            StorageCredential::Sas(SecretString::from(sas.trim_start_matches('?').to_owned()))
        }
        (None, Some(key), Some(name)) => shared_key(name, key)?,
        (None, Some(_), None) => {
            return Err(ConfigError::malformed(
                STORAGE,
                "AccountKey needs AccountName",
            ));
        }
        (None, None, _) => {
            return Err(ConfigError::malformed(
                STORAGE,
                "needs AccountKey or SharedAccessSignature (or use identity-based AzureWebJobsStorage__* settings)",
            ));
        }
    };
    Ok(StorageConfig {
        queue_endpoint,
        table_endpoint,
        credential,
    })
}

fn shared_key(account: &str, key: &str) -> Result<StorageCredential, ConfigError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| ConfigError::malformed(STORAGE, "AccountKey is not base64"))?;
    Ok(StorageCredential::SharedKey {
        account: account.to_owned(),
        key: SecretSlice::from(key),
    })
}

impl NotificationConfig {
    /// The configured client state, for the constant-time comparison in `domain`.
    pub(crate) fn client_state_bytes(&self) -> &[u8] {
        self.client_state.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn event_grid_delivery_needs_its_topic_and_refuses_what_would_change_the_url() {
        let topic = [
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ("NOTIFICATION_DELIVERY", "eventGrid"),
            (
                "EVENT_GRID_SUBSCRIPTION_ID",
                "8D2B7A3E-0000-4000-8000-000000000001",
            ),
            ("EVENT_GRID_RESOURCE_GROUP", "rg-teams-cdr"),
            ("EVENT_GRID_PARTNER_TOPIC", "teams-cdr-callrecords"),
            ("EVENT_GRID_LOCATION", "WestEurope"),
        ];
        let config = Config::from_vars(RunMode::CustomHandler, base(&topic)).unwrap();
        let NotificationDelivery::EventGrid(t) = &config.subscription.delivery else {
            panic!("not eventGrid");
        };
        assert_eq!(
            t.url(),
            "EventGrid:?azuresubscriptionid=8d2b7a3e-0000-4000-8000-000000000001&resourcegroup=rg-teams-cdr&partnertopic=teams-cdr-callrecords&location=westeurope"
        );
        let default = Config::from_vars(RunMode::CustomHandler, base(&topic[..1])).unwrap();
        assert_eq!(default.subscription.delivery, NotificationDelivery::Webhook);
        let refused = |setting: &str, value: &str| {
            let mut pairs = topic.to_vec();
            pairs.retain(|(k, _)| *k != setting);
            pairs.push((setting, value));
            match Config::from_vars(RunMode::CustomHandler, base(&pairs)) {
                Err(ConfigError::Malformed { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}={value}: {other:?}"),
            }
        };
        refused("EVENT_GRID_PARTNER_TOPIC", "topic&location=eastus");
        refused("EVENT_GRID_RESOURCE_GROUP", "rg teams");
        refused("EVENT_GRID_SUBSCRIPTION_ID", "not-a-guid");
        refused("NOTIFICATION_DELIVERY", "eventHubs");
        let mut missing = topic.to_vec();
        missing.retain(|(k, _)| *k != "EVENT_GRID_LOCATION");
        assert_eq!(
            Config::from_vars(RunMode::CustomHandler, base(&missing)).unwrap_err(),
            ConfigError::Missing("EVENT_GRID_LOCATION")
        );
    }

    fn base(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vars(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "7777"),
            ("GRAPH_TENANT_ID", TENANT),
            ("NOTIFICATION_CLIENT_STATE", "s3cr3t-state"),
        ]);
        v.extend(vars(extra));
        v
    }

    #[test]
    fn local_settings_example_is_a_valid_standalone_configuration_naming_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/local.settings.example.json");
        let example: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let values: Vec<(String, String)> = example["Values"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let config = Config::from_vars(RunMode::Standalone, values.clone()).unwrap();
        assert_eq!(config.graph.auth.kind(), "client secret");
        assert_eq!(config.write_lease, Duration::from_secs(300));
        // Every setting the code reads is in the example (checked against this file's own text).
        let source = include_str!("config.rs");
        for name in values.iter().map(|(k, _)| k.as_str()) {
            // The host reads the first, `tracing`'s filter the second.
            if !matches!(name, "FUNCTIONS_WORKER_RUNTIME" | "RUST_LOG") {
                assert!(
                    source.contains(&format!("\"{name}\"")),
                    "{name} is not read"
                );
            }
        }
        for name in [
            "GRAPH_AUTH",
            "GRAPH_CLIENT_ID",
            "GRAPH_CLIENT_SECRET",
            "AZURE_CLIENT_ID",
            "GRAPH_BASE_URL",
            "GRAPH_AUTHORITY_HOST",
            "CALLRECORD_WRITE_LEASE_SECONDS",
            "STORAGE_REQUEST_TIMEOUT_SECONDS",
            "FETCH_NOT_FOUND_HORIZON_HOURS",
            "FETCH_FAILURE_HORIZON_HOURS",
            "REPORTS_SCHEDULE",
            "REPORTS_LEASE_SECONDS",
            "READ_API_KEYS",
            "EXTRA_CA_CERTS_FILE",
        ] {
            assert!(
                values.iter().any(|(k, _)| k == name),
                "{name} missing from the example"
            );
        }
    }

    fn load(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(RunMode::CustomHandler, base(extra))
    }

    #[test]
    fn an_accelerated_clock_is_for_standalone_mode_only() {
        let storage = ("AzureWebJobsStorage", "UseDevelopmentStorage=true");
        let clock = (
            "ACCELERATED_CLOCK",
            "2026-11-20T00:00:00Z,2026-11-29T06:30:00Z,600",
        );
        assert_eq!(
            load(&[storage, clock]).unwrap_err().to_string(),
            ConfigError::malformed(
                "ACCELERATED_CLOCK",
                "is for standalone mode only (the reliability test)"
            )
            .to_string()
        );
        let standalone = Config::from_vars(RunMode::Standalone, base(&[storage, clock])).unwrap();
        assert_eq!(
            standalone.accelerated_clock.map(|c| c.factor()),
            Some(600.0)
        );
        let bad = ("ACCELERATED_CLOCK", "2026-11-20T00:00:00Z,now,600");
        assert!(Config::from_vars(RunMode::Standalone, base(&[storage, bad])).is_err());
        assert!(load(&[storage]).unwrap().accelerated_clock.is_none());
    }

    #[test]
    fn development_storage_points_at_azurite_default_ports() {
        let config = load(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        assert_eq!(
            config.storage.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1/"
        );
        assert_eq!(
            config.storage.table_endpoint.as_str(),
            "http://127.0.0.1:10002/devstoreaccount1/"
        );
        assert!(matches!(
            config.storage.credential,
            StorageCredential::SharedKey { ref account, .. } if account == "devstoreaccount1"
        ));
    }

    #[test]
    fn full_connection_string_with_explicit_endpoints_is_used_as_given() {
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};\
             QueueEndpoint=http://127.0.0.1:45001/devstoreaccount1;TableEndpoint=http://127.0.0.1:45002/devstoreaccount1;"
        );
        let config = load(&[("AzureWebJobsStorage", &conn)]).unwrap();
        assert_eq!(
            config.storage.queue_endpoint.as_str(),
            "http://127.0.0.1:45001/devstoreaccount1/"
        );
        assert_eq!(
            config.storage.table_endpoint.as_str(),
            "http://127.0.0.1:45002/devstoreaccount1/"
        );
    }

    #[test]
    fn account_connection_string_derives_public_cloud_endpoints() {
        let conn = format!(
            "DefaultEndpointsProtocol=https;AccountName=contosocdr;AccountKey={DEV_ACCOUNT_KEY};EndpointSuffix=core.usgovcloudapi.net"
        );
        let config = load(&[("AzureWebJobsStorage", &conn)]).unwrap();
        assert_eq!(
            config.storage.queue_endpoint.as_str(),
            "https://contosocdr.queue.core.usgovcloudapi.net/"
        );
    }

    #[test]
    fn identity_based_account_name_uses_managed_identity_over_https() {
        let config = load(&[
            ("AzureWebJobsStorage__accountName", "contosocdr"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            (
                "AzureWebJobsStorage__clientId",
                "00000000-1111-2222-3333-444444444444",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.storage.queue_endpoint.as_str(),
            "https://contosocdr.queue.core.windows.net/"
        );
        assert_eq!(
            config.storage.table_endpoint.as_str(),
            "https://contosocdr.table.core.windows.net/"
        );
        assert!(matches!(
            config.storage.credential,
            StorageCredential::ManagedIdentity { client_id: Some(ref id) } if id == "00000000-1111-2222-3333-444444444444"
        ));
    }

    #[test]
    fn identity_based_service_uris_are_accepted_without_an_account_name() {
        let config = load(&[
            (
                "azurewebjobsstorage__queueServiceUri",
                "https://127.0.0.1:9999/devstoreaccount1",
            ),
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://127.0.0.1:9998/devstoreaccount1",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.storage.queue_endpoint.as_str(),
            "https://127.0.0.1:9999/devstoreaccount1/"
        );
        assert!(matches!(
            config.storage.credential,
            StorageCredential::ManagedIdentity { client_id: None }
        ));
    }

    #[test]
    fn start_up_fails_naming_the_setting_and_never_its_value() {
        // Every case carries this value somewhere it must not be echoed from.
        let secret = "c2VjcmV0LWtleS1kby1ub3QtcHJpbnQ=";
        let key_only = format!("AccountKey={secret}");
        let not_pairs = format!("{secret};{secret}");
        let http_uri = format!("http://127.0.0.1:1/{secret}");
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "no storage at all",
                vec![("UNRELATED", secret)],
                "AzureWebJobsStorage",
            ),
            (
                "key without account",
                vec![("AzureWebJobsStorage", &key_only)],
                "AzureWebJobsStorage",
            ),
            (
                "not key=value",
                vec![("AzureWebJobsStorage", &not_pairs)],
                "AzureWebJobsStorage",
            ),
            (
                "http identity endpoint",
                vec![("AzureWebJobsStorage__queueServiceUri", &http_uri)],
                "AzureWebJobsStorage__queueServiceUri",
            ),
            (
                "unsupported credential",
                vec![
                    ("AzureWebJobsStorage__accountName", "contosocdr"),
                    ("AzureWebJobsStorage__credential", secret),
                ],
                "AzureWebJobsStorage__credential",
            ),
            (
                "bad account name",
                vec![("AzureWebJobsStorage__accountName", secret)],
                "AzureWebJobsStorage__accountName",
            ),
        ];
        for (case, extra, setting) in cases {
            let err = load(&extra).expect_err(case);
            let text = err.to_string();
            assert!(
                text.contains(setting),
                "{case}: `{text}` should name {setting}"
            );
            assert!(!text.contains("c2VjcmV0"), "{case}: `{text}` leaks a value");
        }
    }

    #[test]
    fn missing_or_malformed_notification_settings_are_named() {
        let mut no_tenant = base(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]);
        no_tenant.retain(|(k, _)| k != "GRAPH_TENANT_ID");
        let err = Config::from_vars(RunMode::CustomHandler, no_tenant).unwrap_err();
        assert_eq!(err, ConfigError::Missing("GRAPH_TENANT_ID"));

        let long_state = "x".repeat(129);
        let err = load(&[
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ("NOTIFICATION_CLIENT_STATE", &long_state),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("NOTIFICATION_CLIENT_STATE"));
        assert!(!err.to_string().contains("xxxx"));
    }

    #[test]
    fn the_reconcile_pass_schedule_is_one_to_three_increasing_hours() {
        let passes = |raw: &str| {
            load(&[DEV, ("RECONCILE_PASS_HOURS", raw)]).map(|c| {
                c.subscription
                    .reconcile_passes
                    .iter()
                    .map(|d| d.as_secs() / 3600)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(passes("3,26").unwrap(), [3, 26]);
        assert_eq!(passes(" 3, 8 ,26").unwrap(), [3, 8, 26]);
        assert_eq!(passes("26").unwrap(), [26]);
        let unset = load(&[DEV]).unwrap();
        assert_eq!(unset.subscription.reconcile_lookback().as_secs(), 26 * 3600);
        for bad in ["3,3", "26,3", "0,26", "3,8,26,48", "3,721", "3;26", "3.5"] {
            let err = passes(bad).unwrap_err();
            assert!(
                err.to_string().contains("RECONCILE_PASS_HOURS"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn custom_handler_mode_requires_the_port_the_host_assigns() {
        let v = vars(&[
            ("GRAPH_TENANT_ID", TENANT),
            ("NOTIFICATION_CLIENT_STATE", "s"),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
        ]);
        let err = Config::from_vars(RunMode::CustomHandler, v.clone()).unwrap_err();
        assert_eq!(err, ConfigError::Missing("FUNCTIONS_CUSTOMHANDLER_PORT"));
        let standalone = Config::from_vars(RunMode::Standalone, v).unwrap();
        assert_eq!(standalone.listen.port(), 7071);
    }

    #[test]
    fn debug_output_of_the_credential_hides_keys() {
        let config = load(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("Eby8vdM02"), "{printed}");
        assert!(!printed.contains("s3cr3t-state"), "{printed}");
    }

    const DEV: (&str, &str) = ("AzureWebJobsStorage", "UseDevelopmentStorage=true");

    #[test]
    fn graph_defaults_to_the_public_cloud_and_the_system_assigned_identity() {
        let graph = load(&[DEV]).unwrap().graph;
        assert!(matches!(
            graph.auth,
            GraphAuth::ManagedIdentity { client_id: None }
        ));
        assert_eq!(graph.tenant_id, TENANT);
        assert_eq!(graph.base_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(
            graph.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(graph.scope(), "https://graph.microsoft.com/.default");
        assert_eq!(graph.max_retries, 4);
        assert_eq!(graph.max_retry_elapsed, Duration::from_secs(60));
        assert_eq!(graph.request_timeout, Duration::from_secs(30));
        assert_eq!(graph.max_inline_retry_after, Duration::from_secs(30));
    }

    #[test]
    fn graph_client_secret_settings_are_read_case_insensitively() {
        let graph = load(&[
            DEV,
            ("graph_auth", "Client-Secret"),
            ("GRAPH_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("Graph_Client_Secret", "app-secret-value"),
            ("GRAPH_BASE_URL", "https://graph.microsoft.us/"),
            ("GRAPH_AUTHORITY_HOST", "https://login.microsoftonline.us"),
            ("GRAPH_MAX_RETRIES", "0"),
            ("GRAPH_MAX_INLINE_RETRY_AFTER_SECONDS", "5"),
        ])
        .unwrap()
        .graph;
        let GraphAuth::ClientSecret { client_id, secret } = &graph.auth else {
            panic!("expected client-secret auth: {:?}", graph.auth);
        };
        assert_eq!(client_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(secret.expose_secret(), "app-secret-value");
        assert_eq!(graph.scope(), "https://graph.microsoft.us/.default");
        assert_eq!(graph.max_retries, 0);
        assert_eq!(graph.max_inline_retry_after, Duration::from_secs(5));
        assert!(!format!("{graph:?}").contains("app-secret-value"));
    }

    #[test]
    fn user_assigned_identity_comes_from_azure_client_id() {
        let graph = load(&[
            DEV,
            ("GRAPH_AUTH", "managed-identity"),
            ("AZURE_CLIENT_ID", "5E4D3C2B-1A09-4F8E-B7D6-C5B4A3928170"),
        ])
        .unwrap()
        .graph;
        assert!(matches!(
            graph.auth,
            GraphAuth::ManagedIdentity { client_id: Some(ref id) } if id == "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170"
        ));
    }

    #[test]
    fn malformed_graph_settings_are_named_without_their_values() {
        let secret = "c2VjcmV0LWtleS1kby1ub3QtcHJpbnQ=";
        let client_id = ("GRAPH_CLIENT_ID", "11111111-2222-3333-4444-555555555555");
        let with_secret = ("GRAPH_CLIENT_SECRET", secret);
        let client_secret = ("GRAPH_AUTH", "client-secret");
        let bad_url = format!("ftp://{secret}/");
        let query_url = format!("https://graph.microsoft.com/?k={secret}");
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("unknown auth", vec![("GRAPH_AUTH", secret)], "GRAPH_AUTH"),
            (
                "secret missing",
                vec![client_secret, client_id],
                "GRAPH_CLIENT_SECRET",
            ),
            (
                "client id missing",
                vec![client_secret, with_secret],
                "GRAPH_CLIENT_ID",
            ),
            (
                "client id not a GUID",
                vec![client_secret, with_secret, ("GRAPH_CLIENT_ID", secret)],
                "GRAPH_CLIENT_ID",
            ),
            (
                "identity not a GUID",
                vec![("AZURE_CLIENT_ID", secret)],
                "AZURE_CLIENT_ID",
            ),
            (
                "base URL not http(s)",
                vec![("GRAPH_BASE_URL", &bad_url)],
                "GRAPH_BASE_URL",
            ),
            (
                "base URL with a query",
                vec![("GRAPH_BASE_URL", &query_url)],
                "GRAPH_BASE_URL",
            ),
            (
                "http authority for a client secret",
                vec![
                    client_secret,
                    client_id,
                    with_secret,
                    ("GRAPH_AUTHORITY_HOST", "http://127.0.0.1:1"),
                ],
                "GRAPH_AUTHORITY_HOST",
            ),
            (
                "retries not a number",
                vec![("GRAPH_MAX_RETRIES", secret)],
                "GRAPH_MAX_RETRIES",
            ),
            (
                "timeout zero",
                vec![("GRAPH_REQUEST_TIMEOUT_SECONDS", "0")],
                "GRAPH_REQUEST_TIMEOUT_SECONDS",
            ),
        ];
        for (case, mut extra, setting) in cases {
            extra.push(DEV);
            let err = load(&extra).expect_err(case);
            let text = err.to_string();
            assert!(
                text.contains(setting),
                "{case}: `{text}` should name {setting}"
            );
            assert!(!text.contains("c2VjcmV0"), "{case}: `{text}` leaks a value");
        }
    }

    /// The names a piece of text writes in backticks or quotes, that look like settings:
    /// `SCREAMING_SNAKE` ones and the host's `AzureWebJobsStorage…` family.
    fn setting_names(text: &str, quote: char) -> std::collections::BTreeSet<String> {
        text.split(quote)
            .skip(1)
            .step_by(2)
            .filter(|name| {
                name.starts_with("AzureWebJobsStorage")
                    || (name.len() > 2
                        && name.starts_with(|c: char| c.is_ascii_uppercase())
                        && name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_settings_table_documents_exactly_the_settings_the_app_reads() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        let read = setting_names(code, '"');
        let table = include_str!("../docs/SETTINGS.md");
        let documented: std::collections::BTreeSet<String> = table
            .lines()
            .filter(|line| line.starts_with('|'))
            .filter_map(|line| line.split('|').nth(1))
            .flat_map(|cell| setting_names(cell, '`'))
            .collect();
        // Read by the platform's libraries rather than by `Config`: azure_identity and telemetry.
        let platform: std::collections::BTreeSet<String> =
            ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "RUST_LOG"]
                .map(str::to_owned)
                .into();
        let undocumented: Vec<&String> = read.difference(&documented).collect();
        let unknown: Vec<&String> = documented
            .difference(&read)
            .filter(|name| !platform.contains(*name))
            .collect();
        assert!(
            undocumented.is_empty(),
            "read but not in docs/SETTINGS.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in docs/SETTINGS.md but not read: {unknown:?}"
        );
        assert!(
            read.contains("GRAPH_TENANT_ID") && read.len() > 30,
            "{read:?}"
        );
    }
}
