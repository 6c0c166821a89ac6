//! `graph-sim`: a simulated Teams tenant on a local port, for local runs and benchmarks.
//!
//! ```text
//! graph-sim [--port 0] [--seed 1] [--users 20] [--calls 20] [--big-meetings 1] [--pstn 20] [--direct-routing 20]
//!           [--throttle-rate 0] [--unavailable-rate 0] [--drop-rate 0] [--duplicate-rate 0]
//!           [--clock-factor 1] [--available-after-minutes 5] [--tls-cert chain.pem --tls-key key.pem]
//! ```
//! It prints `GRAPH_BASE_URL=…`, `GRAPH_AUTHORITY_HOST=…`, `IDENTITY_ENDPOINT=…`, `AZURE_CLIENT_ID=…` and the credentials
//! to use, then serves until Ctrl-C.

use std::collections::HashMap;

use teams_cdr_sim::{SimClock, SimConfig};
use time::{Duration, OffsetDateTime};

fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: graph-sim [--port N] [--seed N] [--users N] [--calls N] [--big-meetings N] [--pstn N] [--direct-routing N] [--throttle-rate P] [--unavailable-rate P] [--drop-rate P] [--duplicate-rate P] [--clock-factor F] [--available-after-minutes M]"
        );
        return Ok(());
    }
    let mut flags = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{flag}`"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_owned(), value.clone());
    }
    let num = |name: &str, default: f64| -> Result<f64, String> {
        flags.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name} must be a number"))
        })
    };
    let mut config = SimConfig {
        port: num("port", 0.0)? as u16,
        ..SimConfig::default()
    };
    config.tenant.seed = num("seed", 1.0)? as u64;
    config.tenant.users = num("users", 20.0)? as usize;
    config.tenant.call_records = num("calls", 20.0)? as usize;
    config.tenant.pstn_rows = num("pstn", 20.0)? as usize;
    config.tenant.direct_routing_rows = num("direct-routing", 20.0)? as usize;
    // Meetings of 2,000 sessions and 1,000 participants: the size that exercises every page limit.
    config.tenant.big_meetings = vec![(2000, 1000); num("big-meetings", 1.0)? as usize];
    let after = Duration::minutes(num("available-after-minutes", 5.0)? as i64);
    config.tenant.availability_delay = (after, after);
    // Calls from the last hours, becoming available from now on.
    let now = OffsetDateTime::now_utc();
    config.tenant.start = now - Duration::hours(2);
    config.tenant.span = Duration::hours(2);
    config.faults.throttle_rate = num("throttle-rate", 0.0)?;
    config.faults.unavailable_rate = num("unavailable-rate", 0.0)?;
    config.faults.drop_rate = num("drop-rate", 0.0)?;
    config.faults.duplicate_rate = num("duplicate-rate", 0.0)?;
    config.tls = match (flags.get("tls-cert"), flags.get("tls-key")) {
        (Some(cert), Some(key)) => Some(teams_cdr_sim::TlsFiles {
            cert_chain: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let factor = num("clock-factor", 1.0)?;
    config.clock = if (factor - 1.0).abs() < f64::EPSILON {
        SimClock::real()
    } else {
        SimClock::accelerated(now, factor)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let sim = teams_cdr_sim::start(config)
            .await
            .map_err(|e| format!("cannot start: {e}"))?;
        let c = sim.config();
        println!("GRAPH_BASE_URL={}", sim.base_url());
        println!("GRAPH_AUTHORITY_HOST={}", sim.base_url());
        println!("GRAPH_TENANT_ID={}", c.tenant.tenant_id);
        println!("GRAPH_CLIENT_ID={}", c.client_id);
        println!("GRAPH_CLIENT_SECRET={}", c.client_secret);
        println!("IDENTITY_ENDPOINT={}", sim.identity_endpoint());
        println!("IDENTITY_HEADER={}", c.identity_header);
        if let Some(client_id) = c.managed_identity_client_ids.first() {
            println!("AZURE_CLIENT_ID={client_id}");
        }
        println!("call records: {}", sim.tenant().records.len());
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        Ok(())
    })
}
