//! One file per Azure Function: decode the request, call the domain, encode the answer.
//! No storage or Graph details live here; [`HTTP_FUNCTIONS`] is the list the router mounts and the
//! test compares with `handlers/*/function.json`.

pub(crate) mod admin;
pub(crate) mod fetch_call_record;
pub(crate) mod health;
pub(crate) mod lifecycle;
pub(crate) mod maintain_subscription;
pub(crate) mod notifications;
pub(crate) mod ops;
pub(crate) mod pull_reports;
pub(crate) mod purge;
pub(crate) mod reconcile;
mod webhook;

pub(crate) use webhook::MAX_BODY_BYTES;

use axum::Json;
use axum::http::{HeaderMap, Method};
use tracing::Instrument as _;

use crate::error::InvocationError;
use crate::host::invocation::{InvocationResponse, TimerInvocation};

/// An HTTP-triggered function as the host exposes it: `/api/{route}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpFunction {
    /// The folder name under `handlers/` (the function name in Azure).
    pub name: &'static str,
    /// The `route` of its `httpTrigger` binding.
    pub route: &'static str,
    pub methods: &'static [Method],
}

/// Every HTTP function the handler serves.
pub(crate) const HTTP_FUNCTIONS: &[HttpFunction] = &[
    HttpFunction {
        name: "Notifications",
        route: "notifications",
        methods: &[Method::POST],
    },
    HttpFunction {
        name: "Lifecycle",
        route: "lifecycle",
        methods: &[Method::POST],
    },
    HttpFunction {
        name: "Health",
        route: "health",
        methods: &[Method::GET],
    },
    HttpFunction {
        name: "HealthDetails",
        route: "health/details",
        methods: &[Method::GET],
    },
    HttpFunction {
        name: "Backfill",
        route: "ops/backfill",
        methods: &[Method::POST],
    },
    HttpFunction {
        name: "Reprocess",
        route: "ops/reprocess",
        methods: &[Method::POST],
    },
    HttpFunction {
        name: "ReadApi",
        route: "v1/{*path}",
        methods: &[Method::GET],
    },
];

/// A function the host invokes with an invocation payload (`POST /{name}`): queue and timer triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationFunction {
    /// The folder name under `handlers/` (the function name in Azure).
    pub name: &'static str,
    /// The trigger binding's `type`.
    pub trigger: &'static str,
    /// The trigger binding's `name`: the key of its value in the payload's `Data`.
    pub binding: &'static str,
}

/// Every invoked function the handler serves.
pub(crate) const INVOCATION_FUNCTIONS: &[InvocationFunction] = &[
    InvocationFunction {
        name: "FetchCallRecord",
        trigger: "queueTrigger",
        binding: fetch_call_record::BINDING,
    },
    InvocationFunction {
        name: "PullReports",
        trigger: "timerTrigger",
        binding: pull_reports::BINDING,
    },
    InvocationFunction {
        name: "MaintainSubscription",
        trigger: "timerTrigger",
        binding: maintain_subscription::BINDING,
    },
    InvocationFunction {
        name: "Reconcile",
        trigger: "timerTrigger",
        binding: reconcile::BINDING,
    },
    InvocationFunction {
        name: "Purge",
        trigger: "timerTrigger",
        binding: purge::BINDING,
    },
];

/// The `function.json` of every timer function, built in, so that the standalone scheduler reads
/// the very schedules the host reads (a test checks them against `handlers/`).
pub(crate) const TIMER_FUNCTION_JSON: &[(&str, &str)] = &[
    (
        "PullReports",
        include_str!("../../handlers/PullReports/function.json"),
    ),
    (
        "MaintainSubscription",
        include_str!("../../handlers/MaintainSubscription/function.json"),
    ),
    (
        "Reconcile",
        include_str!("../../handlers/Reconcile/function.json"),
    ),
    ("Purge", include_str!("../../handlers/Purge/function.json")),
];

/// What every timer function does with the host's invocation: read the `TimerInfo` under its
/// `binding`, run `work` in a span with the host's invocation id, and answer done (or fail the
/// invocation with `work`'s error).
///
/// # Errors
/// An unreadable payload, or `work`'s error.
pub(crate) async fn timer_run<T>(
    function: &'static str,
    binding: &str,
    headers: &HeaderMap,
    body: &[u8],
    work: impl std::future::Future<Output = Result<T, InvocationError>>,
) -> Result<Json<InvocationResponse>, InvocationError> {
    let timer = TimerInvocation::decode(body, binding)?;
    let span = tracing::info_span!(
        "timer",
        function,
        invocation_id = %crate::host::invocation_id(headers),
        past_due = timer.is_past_due,
    );
    work.instrument(span).await?;
    Ok(Json(InvocationResponse::done()))
}
