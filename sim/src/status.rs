//! `GET /sim/status`: what the simulated tenant has made so far, for the local run's progress line
//! (calls made vs. stored). Not part of Graph; not in the ledger.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::SimState;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/sim/status", get(status))
}

async fn status(State(state): State<Arc<SimState>>) -> axum::Json<Value> {
    let now = state.clock.now();
    let tenant = state.tenant();
    let available = tenant
        .records
        .values()
        .filter(|r| r.visible_at(now).is_some())
        .count();
    let published =
        |rows: &[crate::tenant::ReportRow]| rows.iter().filter(|r| r.visible_at <= now).count();
    axum::Json(json!({
        "now": crate::tenant::graph_time(now),
        "callRecords": {"total": tenant.records.len(), "available": available},
        "pstnCalls": {"total": tenant.pstn.len(), "published": published(&tenant.pstn)},
        "directRoutingCalls": {
            "total": tenant.direct_routing.len(),
            "published": published(&tenant.direct_routing),
        },
    }))
}
