//! The Graph simulator for the app's tests: a tenant on a manual clock, a credential that hands out
//! the simulator's tokens, and the adapters that let the app read the simulator's clock.

use std::sync::Arc;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use teams_cdr_sim::{RunningSim, SimClock, SimConfig, TenantSpec};
use time::OffsetDateTime;

/// Tenant time at which simulated tests start.
pub fn sim_start() -> OffsetDateTime {
    time::macros::datetime!(2026-11-20 09:00 UTC)
}

/// A simulator on port 0 with a manual clock at [`sim_start`] and a tenant of `calls` records, all
/// available from the start (no faults, Graph's real limits).
pub fn sim_config(calls: usize) -> SimConfig {
    let start = sim_start();
    SimConfig {
        port: 0,
        clock: SimClock::manual(start),
        tenant: TenantSpec {
            call_records: calls,
            start: start - time::Duration::hours(6),
            span: time::Duration::hours(3),
            availability_delay: (time::Duration::minutes(5), time::Duration::minutes(30)),
            updated_share: 0.0,
            pstn_rows: 0,
            direct_routing_rows: 0,
            ..TenantSpec::default()
        },
        ..SimConfig::default()
    }
}

pub async fn start_sim(config: SimConfig) -> RunningSim {
    teams_cdr_sim::start(config)
        .await
        .expect("simulator starts")
}

/// Hands out the simulator's own tokens (tests that are not about authentication).
#[derive(Debug)]
pub struct SimCredential {
    token: String,
}

impl SimCredential {
    pub fn new(sim: &RunningSim) -> Arc<Self> {
        Arc::new(Self { token: sim.token() })
    }

    /// A credential whose token Graph refuses (signed by nobody).
    pub fn refused() -> Arc<Self> {
        Arc::new(Self {
            token: "eyJhbGciOiJub25lIn0.e30.".to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for SimCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new(self.token.clone()),
            OffsetDateTime::now_utc() + time::Duration::minutes(50),
        ))
    }
}

/// The app's clock reading the simulator's, so that both agree on "now".
#[derive(Debug)]
pub struct SimTime(pub SimClock);

impl teams_cdr_functions::clock::Clock for SimTime {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

/// The settings the shipped binary needs, as the host would pass them, to read Graph from `sim`
/// through `azure_identity`'s `ManagedIdentityCredential` (the simulator's managed-identity endpoint,
/// with the client id it assigns) and storage from this test binary's Azurite, then `extra`.
pub fn binary_env(sim: &RunningSim, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("GRAPH_TENANT_ID", super::TENANT_ID.to_owned()),
        ("NOTIFICATION_CLIENT_STATE", super::CLIENT_STATE.to_owned()),
        ("AzureWebJobsStorage", super::azurite().connection_string()),
        ("GRAPH_BASE_URL", sim.base_url().to_owned()),
        ("GRAPH_AUTH", "managed-identity".to_owned()),
        (
            "AZURE_CLIENT_ID",
            sim.config().managed_identity_client_ids[0].clone(),
        ),
        ("IDENTITY_ENDPOINT", sim.identity_endpoint()),
        ("IDENTITY_HEADER", sim.config().identity_header.clone()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}
