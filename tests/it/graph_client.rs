//! The Graph client against the Graph simulator over HTTPS (the real `azure_identity` credentials
//! only talk to an HTTPS authority host), trusting the tests' throw-away CA through
//! `EXTRA_CA_CERTS_FILE`, with the configuration read from settings as in production.
//!
//! Delays are milliseconds except where the simulator's real-time limits are the subject: the
//! rate-limiter test takes about 21 s (the second 20-second window of one record).
//!
//! The managed-identity credential reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process
//! environment, which a test cannot set (`set_var` is unsafe); its test runs this test binary again
//! as a child with that environment, selecting itself, and plays the child's part when it finds
//! `GRAPH_TEST_CHILD` set.

use std::time::{Duration, Instant};

use teams_cdr_functions::config::{Config, RunMode};
use teams_cdr_functions::{
    GraphClient, GraphError, GraphOptions, RateKey, RateLimits, RetryPolicy, http_client,
};
use teams_cdr_sim::{
    Endpoint, Faults, RetryAfter, RunningSim, SimClock, SimConfig, TenantSpec, TlsFiles,
};

use support::tls::TestCa;

/// Set in the child process of the managed-identity test.
const CHILD_VAR: &str = "GRAPH_TEST_CHILD";

struct Sim {
    sim: RunningSim,
    ca: TestCa,
}

async fn https_sim(faults: Faults, tenant: TenantSpec) -> Sim {
    https_sim_with(SimConfig {
        faults,
        tenant,
        ..SimConfig::default()
    })
    .await
}

/// The simulator of `config`, serving HTTPS, with its tenant's records all available.
async fn https_sim_with(config: SimConfig) -> Sim {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc();
    let sim = teams_cdr_sim::start(SimConfig {
        tls: Some(TlsFiles {
            cert_chain: ca.cert_pem.clone(),
            key: ca.key_pem.clone(),
        }),
        // A day later every generated record is available.
        clock: SimClock::manual(now + time::Duration::days(1)),
        tenant: TenantSpec {
            start: now - time::Duration::hours(1),
            ..config.tenant
        },
        ..config
    })
    .await
    .unwrap();
    Sim { sim, ca }
}

fn records(n: usize) -> TenantSpec {
    TenantSpec {
        call_records: n,
        ..TenantSpec::default()
    }
}

impl Sim {
    /// Production settings pointing at the simulator, with a client secret.
    fn settings(&self, secret: &str) -> Vec<(String, String)> {
        let c = self.sim.config();
        [
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ("NOTIFICATION_CLIENT_STATE", "state"),
            ("GRAPH_TENANT_ID", &c.tenant.tenant_id),
            ("GRAPH_AUTH", "client-secret"),
            ("GRAPH_CLIENT_ID", &c.client_id),
            ("GRAPH_CLIENT_SECRET", secret),
            ("GRAPH_BASE_URL", self.sim.base_url()),
            ("GRAPH_AUTHORITY_HOST", self.sim.base_url()),
            ("EXTRA_CA_CERTS_FILE", &self.ca.ca_pem.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn client_with(&self, secret: &str, options: impl FnOnce(&mut GraphOptions)) -> GraphClient {
        let config = Config::from_vars(RunMode::CustomHandler, self.settings(secret)).unwrap();
        let http = http_client(config.extra_ca_file.as_deref()).unwrap();
        let mut opts = fast(&config);
        options(&mut opts);
        GraphClient::with_options(&config.graph, http, None, opts).unwrap()
    }

    fn client(&self) -> GraphClient {
        self.client_with(&self.sim.config().client_secret, |_| {})
    }

    /// A client that retries a fault-heavy simulator long enough (8 retries).
    fn patient_client(&self) -> GraphClient {
        self.client_with(&self.sim.config().client_secret, |o| {
            o.retry.max_retries = 8;
        })
    }

    /// GETs every call record once; each must succeed with that record.
    async fn get_every_record(&self, client: &GraphClient) {
        for id in self.record_ids() {
            let response = client.get(&record_path(&id), key(&id)).await;
            let response = response.unwrap_or_else(|e| panic!("{id}: {e:?}"));
            let record: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(record["id"], id.as_str());
        }
    }

    fn record_ids(&self) -> Vec<String> {
        self.sim.tenant().records.into_keys().collect()
    }

    /// What the simulator serves for `path`, fetched directly with a minted token.
    async fn served(&self, path: &str) -> bytes::Bytes {
        let pem = std::fs::read(&self.ca.ca_pem).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        http.get(format!("{}/v1.0/{path}", self.sim.base_url()))
            .bearer_auth(self.sim.token())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }
}

/// Production options with millisecond delays.
fn fast(config: &Config) -> GraphOptions {
    GraphOptions {
        retry: RetryPolicy {
            max_retries: 4,
            max_elapsed: Duration::from_secs(20),
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            jitter: Duration::from_millis(5),
            max_inline_retry_after: Duration::from_secs(5),
        },
        ..GraphOptions::from_config(&config.graph)
    }
}

fn record_path(id: &str) -> String {
    format!("communications/callRecords/{id}")
}

fn key(id: &str) -> RateKey {
    RateKey::CallRecord(id.to_owned())
}

#[tokio::test]
async fn client_secret_credential_from_settings_gets_a_token_and_the_call_record_as_served() {
    let sim = https_sim(Faults::default(), records(2)).await;
    let client = sim.client();
    let ids = sim.record_ids();

    let mut bodies = Vec::new();
    for id in &ids {
        let path = format!("{}?$expand=sessions($expand=segments)", record_path(id));
        let response = client.get(&path, key(id)).await.unwrap();
        assert_eq!(response.status, 200);
        bodies.push((response.body, sim.served(&path).await));
    }

    for (got, served) in bodies {
        assert_eq!(got, served, "body differs from what the simulator serves");
    }
    // One token for both requests: the credential caches it.
    assert_eq!(sim.sim.ledger().count(Endpoint::Token), 1);
    // Two by the client, two by the direct fetch for comparison.
    assert_eq!(sim.sim.ledger().count(Endpoint::CallRecord), 4);
}

#[tokio::test]
async fn wrong_client_secret_is_a_credential_error_that_does_not_show_the_secret() {
    let sim = https_sim(Faults::default(), records(1)).await;
    let secret = "Wr0ng-Secret-Value-9f3c";
    let client = sim.client_with(secret, |_| {});
    let id = &sim.record_ids()[0];

    let err = client.get(&record_path(id), key(id)).await.unwrap_err();

    assert!(matches!(err, GraphError::Credential(_)), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(text.contains("AADSTS7000215"), "reason missing: {text}");
    }
    // Not retried (a bad secret stays bad), and Graph never saw a request.
    assert_eq!(sim.sim.ledger().count(Endpoint::Token), 1);
    assert_eq!(sim.sim.ledger().count(Endpoint::CallRecord), 0);
}

async fn throttled_requests_succeed_without_coming_back_early(retry_after: RetryAfter) {
    let faults = Faults {
        throttle_rate: 0.4,
        retry_after,
        ..Faults::default()
    };
    let sim = https_sim(faults, records(6)).await;
    let client = sim.patient_client();

    sim.get_every_record(&client).await;

    let ledger = sim.sim.ledger();
    assert!(
        ledger.count_status(429) > 0,
        "the seed threw no 429: test is vacuous"
    );
    assert_eq!(ledger.retry_after_violations(), 0);
}

#[tokio::test]
async fn throttled_requests_are_retried_after_an_integer_retry_after() {
    throttled_requests_succeed_without_coming_back_early(RetryAfter::Seconds(1)).await;
}

#[tokio::test]
async fn throttled_requests_are_retried_after_a_fractional_retry_after() {
    throttled_requests_succeed_without_coming_back_early(RetryAfter::Fractional(0.328)).await;
}

#[tokio::test]
async fn retry_after_above_the_inline_cap_is_returned_at_once_and_blocks_the_record() {
    let faults = Faults {
        throttle_rate: 1.0,
        retry_after: RetryAfter::Seconds(120),
        ..Faults::default()
    };
    let sim = https_sim(faults, records(1)).await;
    let client = sim.client();
    let id = &sim.record_ids()[0];

    let started = Instant::now();
    let first = client.get(&record_path(id), key(id)).await;
    let second = client.get(&record_path(id), key(id)).await;

    let GraphError::Throttled { retry_after } = first.unwrap_err() else {
        panic!("expected Throttled");
    };
    assert_eq!(retry_after, Duration::from_secs(120));
    // The second request is not sent: the record is blocked for about two minutes.
    let Err(GraphError::Throttled { retry_after }) = second else {
        panic!("expected Throttled: {second:?}");
    };
    assert!(retry_after > Duration::from_secs(110), "{retry_after:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(sim.sim.ledger().count(Endpoint::CallRecord), 1);
}

#[tokio::test]
async fn unavailable_responses_are_retried_until_graph_answers() {
    let faults = Faults {
        unavailable_rate: 0.5,
        ..Faults::default()
    };
    let sim = https_sim(faults, records(6)).await;
    let client = sim.patient_client();

    sim.get_every_record(&client).await;

    let ledger = sim.sim.ledger();
    assert!(ledger.count_status(503) + ledger.count_status(504) > 0);
}

#[tokio::test]
async fn unavailable_graph_is_transient_once_retries_run_out() {
    let faults = Faults {
        unavailable_rate: 1.0,
        ..Faults::default()
    };
    let sim = https_sim(faults, records(1)).await;
    let client = sim.client_with(&sim.sim.config().client_secret, |o| {
        o.retry.max_retries = 2;
    });
    let id = &sim.record_ids()[0];

    let err = client.get(&record_path(id), key(id)).await.unwrap_err();

    assert!(matches!(err, GraphError::Transient(_)), "{err:?}");
    assert_eq!(sim.sim.ledger().count(Endpoint::CallRecord), 3);
}

#[tokio::test]
async fn connections_cut_mid_response_are_retried() {
    let faults = Faults {
        reset_rate: 0.5,
        ..Faults::default()
    };
    let sim = https_sim(faults, records(6)).await;
    let client = sim.patient_client();

    sim.get_every_record(&client).await;

    assert!(
        sim.sim.ledger().count_status(0) > 0,
        "no reset was injected"
    );
}

#[tokio::test]
async fn next_links_are_followed_verbatim_on_graph_and_refused_elsewhere() {
    let tenant = TenantSpec {
        call_records: 0,
        big_meetings: vec![(100, 10)],
        ..TenantSpec::default()
    };
    let sim = https_sim(Faults::default(), tenant).await;
    let client = sim.client();
    let id = &sim.record_ids()[0];
    let first = client
        .get(
            &format!("{}?$expand=sessions($expand=segments)", record_path(id)),
            key(id),
        )
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    let next = body["sessions@odata.nextLink"].as_str().unwrap().to_owned();
    let sent_before = sim.sim.ledger().requests().len();

    let elsewhere = [
        next.replace("https://127.0.0.1", "https://localhost"),
        next.replace("https://", "http://"),
        "https://graph.microsoft.com/v1.0/communications/callRecords".to_owned(),
        "not a url".to_owned(),
    ];
    for link in &elsewhere {
        let refused = client.get_url(link, key(id)).await;
        assert!(
            matches!(refused, Err(GraphError::Fatal(_))),
            "{link}: {refused:?}"
        );
    }
    assert_eq!(sim.sim.ledger().requests().len(), sent_before);
    let page = client.get_url(&next, key(id)).await.unwrap();
    let page: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    assert!(page["value"].as_array().is_some_and(|v| !v.is_empty()));
}

#[tokio::test]
async fn limiter_keeps_45_requests_for_one_record_under_graphs_limit() {
    let sim = https_sim(Faults::default(), records(1)).await;
    let client = sim.client_with(&sim.sim.config().client_secret, |o| {
        o.limits = RateLimits::default();
    });
    let id = &sim.record_ids()[0];

    let started = Instant::now();
    for i in 0..45 {
        let response = client.get(&record_path(id), key(id)).await;
        assert!(response.is_ok(), "request {i}: {response:?}");
    }

    assert_eq!(sim.sim.ledger().count_status(429), 0);
    assert_eq!(sim.sim.ledger().count(Endpoint::CallRecord), 45);
    // Requests 41 to 45 had to wait for the first window to pass.
    assert!(started.elapsed() >= Duration::from_secs(20));
}

#[tokio::test]
async fn a_request_for_a_throttled_record_waits_for_another_requests_retry_after() {
    // The simulated Graph allows 2 requests / 2 s per record; the client does not know that.
    let sim = https_sim_with(SimConfig {
        limits: teams_cdr_sim::Limits {
            per_record: teams_cdr_sim::Limit {
                requests: 2,
                window: Duration::from_secs(2),
            },
            ..teams_cdr_sim::Limits::default()
        },
        tenant: records(1),
        ..SimConfig::default()
    })
    .await;
    let client = sim.client();
    let id = sim.record_ids()[0].clone();
    for _ in 0..2 {
        client.get(&record_path(&id), key(&id)).await.unwrap();
    }

    // The third request is throttled and sleeps its Retry-After; meanwhile a second caller asks.
    let first = tokio::spawn({
        let (client, id) = (client.clone(), id.clone());
        async move { client.get(&record_path(&id), key(&id)).await }
    });
    while sim.sim.ledger().count_status(429) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = client.get(&record_path(&id), key(&id)).await;

    assert!(second.is_ok(), "{second:?}");
    assert!(first.await.unwrap().is_ok());
    let ledger = sim.sim.ledger();
    assert_eq!(ledger.count_status(429), 1);
    assert_eq!(ledger.retry_after_violations(), 0);
    assert_eq!(ledger.count(Endpoint::CallRecord), 5);
}

/// `azure_identity` reads `IDENTITY_ENDPOINT` from the process environment, which a test may not
/// change in a process running other tests: so this test starts itself again, as a child process
/// with production's settings as its whole environment, and that child (`CHILD_VAR` set) fetches a
/// record with the credential the settings describe.
#[tokio::test]
async fn managed_identity_credential_from_settings_gets_a_token_from_the_identity_endpoint() {
    if let Ok(id) = std::env::var(CHILD_VAR) {
        return fetch_with_the_configured_credential(&id).await;
    }
    // This test's name as the harness knows it: its module path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!(
        "{module}{}managed_identity_credential_from_settings_gets_a_token_from_the_identity_endpoint",
        if module.is_empty() { "" } else { "::" }
    );
    let sim = https_sim(Faults::default(), records(1)).await;
    let c = sim.sim.config();
    let id = sim.record_ids()[0].clone();
    let mut settings: Vec<(String, String)> = sim
        .settings("unused")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GRAPH_AUTH") && !k.starts_with("GRAPH_CLIENT"))
        .collect();
    settings.extend(
        [
            ("GRAPH_AUTH", "managed-identity"),
            ("AZURE_CLIENT_ID", &c.managed_identity_client_ids[0]),
            ("IDENTITY_ENDPOINT", &sim.sim.identity_endpoint()),
            ("IDENTITY_HEADER", &c.identity_header),
            (CHILD_VAR, &id),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );

    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env_clear()
        .envs(settings)
        .output()
        .await
        .unwrap();

    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{printed}");
    assert!(
        printed.contains("test result: ok. 1 passed;"),
        "child ran no test:\n{printed}"
    );
    let ledger = sim.sim.ledger();
    assert_eq!(ledger.count(Endpoint::ManagedIdentityToken), 1);
    assert_eq!(ledger.count(Endpoint::Token), 0);
    assert_eq!(ledger.count_status(200), 2);
}

/// The child's half: production configuration from the environment.
async fn fetch_with_the_configured_credential(id: &str) {
    let config = Config::from_env(RunMode::CustomHandler).unwrap();
    let http = http_client(config.extra_ca_file.as_deref()).unwrap();
    let client = GraphClient::new(&config.graph, http, None).unwrap();

    let response = client.get(&record_path(id), key(id)).await.unwrap();

    assert_eq!(response.status, 200);
}
