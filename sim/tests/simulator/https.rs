//! The simulator as Entra ID for the real `azure_identity` credential, which only talks to an HTTPS
//! authority host: served with a certificate from a throw-away test CA.

use std::sync::Arc;

use azure_core::cloud::CustomConfiguration;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::Transport;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azurite_harness::TestCa;
use teams_cdr_sim::{Endpoint, SimClock, SimConfig, TenantSpec, TlsFiles};

fn trusting(ca: &TestCa) -> reqwest::Client {
    let pem = std::fs::read(&ca.ca_pem).unwrap();
    reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap()
}

fn credential(
    sim: &teams_cdr_sim::RunningSim,
    http: &reqwest::Client,
    secret: &str,
) -> Arc<ClientSecretCredential> {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = sim.base_url().to_owned();
    let mut options = ClientSecretCredentialOptions::default();
    options.client_options.cloud = Some(Arc::new(cloud.into()));
    options.client_options.transport = Some(Transport::new(Arc::new(http.clone())));
    let c = sim.config();
    ClientSecretCredential::new(
        &c.tenant.tenant_id,
        c.client_id.clone(),
        Secret::new(secret.to_owned()),
        Some(options),
    )
    .unwrap()
}

#[tokio::test]
async fn azure_identity_client_secret_credential_gets_a_graph_token_from_the_https_simulator() {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc();
    let sim = teams_cdr_sim::start(SimConfig {
        tls: Some(TlsFiles {
            cert_chain: ca.cert_pem.clone(),
            key: ca.key_pem.clone(),
        }),
        clock: SimClock::manual(now + time::Duration::days(1)),
        tenant: TenantSpec {
            call_records: 1,
            start: now - time::Duration::hours(1),
            ..TenantSpec::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert!(sim.base_url().starts_with("https://"), "{}", sim.base_url());
    let http = trusting(&ca);
    let scopes = ["https://graph.microsoft.com/.default"];

    let token = credential(&sim, &http, &sim.config().client_secret)
        .get_token(&scopes, None)
        .await
        .unwrap();
    let refused = credential(&sim, &http, "not-the-secret")
        .get_token(&scopes, None)
        .await;
    let id = sim.tenant().records.into_keys().next().unwrap();
    let graph = http
        .get(format!(
            "{}/v1.0/communications/callRecords/{id}",
            sim.base_url()
        ))
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(graph, reqwest::StatusCode::OK);
    assert!(refused.is_err(), "a wrong secret must not get a token");
    assert_eq!(sim.ledger().count(Endpoint::Token), 2);
}
