//! One file per Azure Function: decode the request, call the domain, encode the answer.
//! No storage or Graph details live here. [`FUNCTIONS`] is the one registry of them: the router, the
//! standalone admin API and scheduler, and the test against `handlers/*/function.json` all derive
//! from it, so adding a timer function means its module, its `function.json` and one line here.

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
pub(crate) mod sync_directory;
mod webhook;

pub(crate) use webhook::MAX_BODY_BYTES;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::routing::{MethodFilter, MethodRouter, on, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use tracing::Instrument as _;

use crate::error::InvocationError;
use crate::host::invocation::{InvocationResponse, TimerInvocation};
use crate::services::Services;

/// One Azure Function: its name (the folder under `handlers/`), how it is triggered, and what
/// serves it.
pub(crate) struct Function {
    pub(crate) name: &'static str,
    pub(crate) trigger: Trigger,
}

/// How the host starts a function, and the handler for it.
pub(crate) enum Trigger {
    /// `httpTrigger`: the host proxies the request as it came (`enableProxyingHttpRequest`) to
    /// `/api/{route}`.
    Http {
        route: &'static str,
        methods: &'static [Method],
        serve: Serve,
    },
    /// `queueTrigger`: the host posts an invocation payload to `/{name}`, the message under
    /// `Data.{binding}`.
    Queue {
        binding: &'static str,
        handler: fn() -> MethodRouter<Services>,
    },
    /// `timerTrigger`: the host posts an invocation payload to `/{name}`, the `TimerInfo` under
    /// `Data.{binding}`. `function_json` is the built-in copy of its `function.json` (the
    /// standalone scheduler reads the very schedule the host reads); `run` is one run, also what the
    /// standalone admin API starts.
    Timer {
        binding: &'static str,
        function_json: &'static str,
        run: TimerRun,
    },
}

/// One run of a timer function, on its own.
pub(crate) type TimerRun = fn(Services) -> BoxFuture<'static, Result<(), InvocationError>>;

/// What serves an HTTP function.
pub(crate) enum Serve {
    /// One route, `/api/{route}`, for the methods the registry names (handed in, so that they are
    /// written once).
    Route(fn(MethodFilter) -> MethodRouter<Services>),
    /// A router of its own under `/api/{route}` (a catch-all route, such as the read API's).
    Router(fn() -> Router<Services>),
}

/// Every function the handler serves.
pub(crate) const FUNCTIONS: &[Function] = &[
    Function::http("Notifications", "notifications", &[Method::POST], |m| {
        on(m, notifications::handle)
    }),
    Function::http("Lifecycle", "lifecycle", &[Method::POST], |m| {
        on(m, lifecycle::handle)
    }),
    Function::http("Health", "health", &[Method::GET], |m| {
        on(m, health::summary)
    }),
    Function::http("HealthDetails", "health/details", &[Method::GET], |m| {
        on(m, health::details)
    }),
    Function::http("Backfill", "ops/backfill", &[Method::POST], |m| {
        on(m, ops::backfill)
    }),
    Function::http("Reprocess", "ops/reprocess", &[Method::POST], |m| {
        on(m, ops::reprocess)
    }),
    Function {
        name: "ReadApi",
        trigger: Trigger::Http {
            route: "v1/{*path}",
            methods: &[Method::GET],
            serve: Serve::Router(crate::api::routes),
        },
    },
    Function {
        name: "FetchCallRecord",
        trigger: Trigger::Queue {
            binding: fetch_call_record::BINDING,
            handler: || post(fetch_call_record::handle),
        },
    },
    Function::timer(
        "PullReports",
        pull_reports::BINDING,
        include_str!("../../handlers/PullReports/function.json"),
        |s| Box::pin(async move { pull_reports::run(&s).await }),
    ),
    Function::timer(
        "MaintainSubscription",
        maintain_subscription::BINDING,
        include_str!("../../handlers/MaintainSubscription/function.json"),
        |s| Box::pin(async move { maintain_subscription::run(&s).await.map(drop) }),
    ),
    Function::timer(
        "Reconcile",
        reconcile::BINDING,
        include_str!("../../handlers/Reconcile/function.json"),
        |s| Box::pin(async move { reconcile::run(&s).await.map(drop) }),
    ),
    Function::timer(
        "Purge",
        purge::BINDING,
        include_str!("../../handlers/Purge/function.json"),
        |s| Box::pin(async move { purge::run(&s).await.map(drop) }),
    ),
    Function::timer(
        "SyncDirectory",
        sync_directory::BINDING,
        include_str!("../../handlers/SyncDirectory/function.json"),
        |s| Box::pin(async move { sync_directory::run(&s).await.map(drop) }),
    ),
];

impl Function {
    const fn http(
        name: &'static str,
        route: &'static str,
        methods: &'static [Method],
        handler: fn(MethodFilter) -> MethodRouter<Services>,
    ) -> Self {
        Self {
            name,
            trigger: Trigger::Http {
                route,
                methods,
                serve: Serve::Route(handler),
            },
        }
    }

    const fn timer(
        name: &'static str,
        binding: &'static str,
        function_json: &'static str,
        run: TimerRun,
    ) -> Self {
        Self {
            name,
            trigger: Trigger::Timer {
                binding,
                function_json,
                run,
            },
        }
    }

    /// The timer function of that name (compared as the host compares function names, ignoring
    /// case).
    pub(crate) fn timer_named(name: &str) -> Option<(&'static Self, TimerRun)> {
        FUNCTIONS.iter().find_map(|f| match f.trigger {
            Trigger::Timer { run, .. } if f.name.eq_ignore_ascii_case(name) => Some((f, run)),
            _ => None,
        })
    }

    /// The one queue function (`FetchCallRecord`, on the call-record queue) and its binding: what
    /// the standalone consumer delivers to.
    pub(crate) fn queue() -> (&'static str, &'static str) {
        let mut queues = FUNCTIONS.iter().filter_map(|f| match f.trigger {
            Trigger::Queue { binding, .. } => Some((f.name, binding)),
            _ => None,
        });
        // The registry is a constant with exactly one queue function (a unit test).
        queues.next().expect("the registry has a queue function")
    }
}

/// Every function's routes: HTTP functions at `/api/{route}`, queue and timer functions at
/// `/{name}` (the host's invocation requests).
pub(crate) fn routes() -> Router<Services> {
    FUNCTIONS
        .iter()
        .fold(Router::new(), |router, function| match function.trigger {
            Trigger::Http {
                route,
                methods,
                serve: Serve::Route(handler),
            } => router.route(&format!("/api/{route}"), handler(method_filter(methods))),
            Trigger::Http {
                serve: Serve::Router(routes),
                ..
            } => router.merge(routes()),
            Trigger::Queue { handler, .. } => {
                router.route(&format!("/{}", function.name), handler())
            }
            Trigger::Timer { binding, run, .. } => {
                let name = function.name;
                router.route(
                    &format!("/{name}"),
                    post(
                        move |State(services): State<Services>, headers: HeaderMap, body: Bytes| {
                            timer_run(name, binding, headers, body, run(services))
                        },
                    ),
                )
            }
        })
}

/// The methods an HTTP function answers, as axum filters them.
fn method_filter(methods: &[Method]) -> MethodFilter {
    methods
        .iter()
        .filter_map(|m| MethodFilter::try_from(m.clone()).ok())
        .reduce(MethodFilter::or)
        // Never empty: every HTTP function names at least one method (a unit test).
        .unwrap_or(MethodFilter::GET)
}

/// An HTTP-triggered function as the host exposes it: `/api/{route}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpFunction {
    /// The folder name under `handlers/` (the function name in Azure).
    pub name: &'static str,
    /// The `route` of its `httpTrigger` binding.
    pub route: &'static str,
    pub methods: &'static [Method],
}

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

/// The HTTP functions of the registry, as the host exposes them.
pub(crate) fn http_functions() -> Vec<HttpFunction> {
    FUNCTIONS
        .iter()
        .filter_map(|f| match f.trigger {
            Trigger::Http { route, methods, .. } => Some(HttpFunction {
                name: f.name,
                route,
                methods,
            }),
            Trigger::Queue { .. } | Trigger::Timer { .. } => None,
        })
        .collect()
}

/// The queue and timer functions of the registry, as the host invokes them.
pub(crate) fn invocation_functions() -> Vec<InvocationFunction> {
    FUNCTIONS
        .iter()
        .filter_map(|f| match f.trigger {
            Trigger::Http { .. } => None,
            Trigger::Queue { binding, .. } => Some(InvocationFunction {
                name: f.name,
                trigger: "queueTrigger",
                binding,
            }),
            Trigger::Timer { binding, .. } => Some(InvocationFunction {
                name: f.name,
                trigger: "timerTrigger",
                binding,
            }),
        })
        .collect()
}

/// What every timer function does with the host's invocation: read the `TimerInfo` under its
/// `binding`, run `work` in a span with the host's invocation id, and answer done (or fail the
/// invocation with `work`'s error).
///
/// # Errors
/// An unreadable payload, or `work`'s error.
async fn timer_run(
    function: &'static str,
    binding: &str,
    headers: HeaderMap,
    body: Bytes,
    work: BoxFuture<'static, Result<(), InvocationError>>,
) -> Result<Json<InvocationResponse>, InvocationError> {
    let timer = TimerInvocation::decode(&body, binding)?;
    let span = tracing::info_span!(
        "timer",
        function,
        invocation_id = %crate::host::invocation_id(&headers),
        past_due = timer.is_past_due,
    );
    work.instrument(span).await?;
    Ok(Json(InvocationResponse::done()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_timer_function_builds_in_its_own_function_json() {
        for function in FUNCTIONS {
            if let Trigger::Timer { function_json, .. } = function.trigger {
                let path = format!(
                    "{}/handlers/{}/function.json",
                    env!("CARGO_MANIFEST_DIR"),
                    function.name
                );
                let on_disk = std::fs::read_to_string(&path).unwrap();
                assert_eq!(function_json, on_disk, "{}: built-in copy", function.name);
            }
        }
    }

    #[test]
    fn function_names_are_unique_ignoring_case() {
        let mut names: Vec<String> = FUNCTIONS
            .iter()
            .map(|f| f.name.to_ascii_lowercase())
            .collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "two functions share a name");
    }

    #[test]
    fn timers_are_found_by_name_ignoring_case_and_others_are_not() {
        assert_eq!(
            Function::timer_named("pullreports").map(|(f, _)| f.name),
            Some("PullReports")
        );
        assert!(Function::timer_named("FetchCallRecord").is_none());
        assert!(Function::timer_named("Health").is_none());
        assert_eq!(Function::queue(), ("FetchCallRecord", "job"));
    }

    #[test]
    fn the_registry_has_one_queue_function_and_every_http_function_names_its_methods() {
        let queues = FUNCTIONS
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::Queue { .. }))
            .count();
        assert_eq!(queues, 1);
        for function in FUNCTIONS {
            if let Trigger::Http { methods, .. } = function.trigger {
                assert!(!methods.is_empty(), "{}", function.name);
                for method in methods {
                    assert!(
                        MethodFilter::try_from(method.clone()).is_ok(),
                        "{}: {method}",
                        function.name
                    );
                }
            }
        }
    }
}
