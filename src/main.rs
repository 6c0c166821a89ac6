//! Entry point: telemetry, configuration, [`App::build`], serve. Nothing else lives here.
//!
//! `teams-cdr-functions` runs as the Functions custom handler (listening on
//! `FUNCTIONS_CUSTOMHANDLER_PORT`); `teams-cdr-functions standalone` runs without a host (on `PORT`).

use anyhow::{Context as _, bail};
use teams_cdr_functions::App;
use teams_cdr_functions::config::{Config, RunMode};
use teams_cdr_functions::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let mode = match std::env::args().nth(1).as_deref() {
        None => RunMode::CustomHandler,
        Some("standalone") => RunMode::Standalone,
        Some(other) => bail!("unknown argument `{other}`; usage: teams-cdr-functions [standalone]"),
    };
    let config = Config::from_env(mode).context("invalid configuration")?;
    let app = App::build(config).await?;
    app.run_until_stopped().await.context("serving HTTP")
}
