//! The contract with the Functions host: `host.json`, `handlers/*/function.json` and the router must
//! agree, the binary must fail fast on bad settings, and the host emulator must speak like the host.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::host::{QueueDelivery, queue_invocation};
use support::{CLIENT_STATE, fixture, spawn_app};
use teams_cdr_functions::App;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The functions described under `handlers/`: `(name, route, methods)` of the HTTP ones and
/// `(name, trigger binding)` of the others.
struct Described {
    http: BTreeSet<(String, String, Vec<String>)>,
    invoked: std::collections::BTreeMap<String, Value>,
}

fn functions_in_handlers_dir() -> Described {
    let mut described = Described {
        http: BTreeSet::new(),
        invoked: std::collections::BTreeMap::new(),
    };
    for entry in std::fs::read_dir(manifest_dir().join("handlers")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let config = read_json(&dir.join("function.json"));
        let bindings = config["bindings"].as_array().expect("bindings array");
        let trigger = bindings
            .iter()
            .find(|b| {
                b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger"))
            })
            .unwrap_or_else(|| panic!("{name}: no trigger binding"));
        if trigger["type"] != "httpTrigger" {
            // Invoked functions answer with the response payload; output bindings are not used.
            assert_eq!(bindings.len(), 1, "{name}: only the trigger binding");
            described.invoked.insert(name, trigger.clone());
            continue;
        }
        // (Which ones are anonymous: `http_functions_keep_off_the_hosts_routes_…`.)
        // Proxying only applies to functions whose only bindings are HTTP in and HTTP out.
        assert_eq!(
            bindings.len(),
            2,
            "{name}: an HTTP function with extra bindings is not proxied"
        );
        let mut methods: Vec<String> = trigger["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .map(|m| m.as_str().unwrap().to_ascii_uppercase())
            .collect();
        methods.sort();
        let route = trigger["route"].as_str().unwrap_or(&name).to_owned();
        described.http.insert((name, route, methods));
    }
    described
}

#[tokio::test]
async fn queue_functions_under_handlers_match_the_invocation_routes() {
    let described = functions_in_handlers_dir().invoked;
    let names: BTreeSet<&str> = described.keys().map(String::as_str).collect();
    let served: BTreeSet<&str> = App::invocation_functions().iter().map(|f| f.name).collect();
    assert_eq!(served, names, "router and handlers/ disagree");
    for (name, trigger) in &described {
        let function = App::invocation_functions()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap();
        assert_eq!(trigger["type"], function.trigger, "{name}: trigger type");
        assert_eq!(trigger["name"], function.binding, "{name}: binding name");
        if function.trigger == "timerTrigger" {
            // `%NAME%` is an app setting the host resolves: without it the host cannot index the
            // function. The deployment and the local example must both set it.
            let schedule = trigger["schedule"].as_str().unwrap();
            let setting = schedule.trim_matches('%');
            assert!(
                schedule.starts_with('%') && schedule.ends_with('%'),
                "{name}: {schedule}"
            );
            let bicep =
                std::fs::read_to_string(manifest_dir().join("infra/modules/functionapp.bicep"))
                    .unwrap();
            assert!(
                bicep.contains(&format!("    {setting}: '")),
                "{name}: Bicep does not set {setting}"
            );
            let example = read_json(&manifest_dir().join("local.settings.example.json"));
            assert!(
                example["Values"][setting].is_string(),
                "{name}: example lacks {setting}"
            );
        }
        if function.trigger == "queueTrigger" {
            assert_eq!(
                trigger["queueName"],
                teams_cdr_functions::config::CALLRECORD_QUEUE
            );
            // Identity-based connections are configured under this prefix (README, Bicep).
            assert_eq!(trigger["connection"], "AzureWebJobsStorage");
        }
    }

    // The host posts invocations to `/{FunctionName}`: each route exists, and a payload without the
    // binding's data (a renamed binding) fails the invocation, so that the host retries and then
    // poisons the message instead of deleting it unread.
    let app = spawn_app().await;
    for name in &names {
        let response = app
            .host
            .invoke(name, &serde_json::json!({"Data": {}, "Metadata": {}}))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{name}"
        );
    }
}

#[tokio::test]
async fn router_serves_exactly_the_functions_under_handlers() {
    let described = functions_in_handlers_dir().http;
    let served: BTreeSet<(String, String, Vec<String>)> = App::http_functions()
        .iter()
        .map(|f| {
            let mut methods: Vec<String> = f.methods.iter().map(ToString::to_string).collect();
            methods.sort();
            (f.name.to_owned(), f.route.to_owned(), methods)
        })
        .collect();
    assert_eq!(served, described, "router and handlers/ disagree");

    // And the live router answers each of them, and refuses other methods.
    // The webhooks answer Graph's validation probe; the other functions answer by their own rules
    // (a refusal of the missing parameters, the health verdict), but the route and method exist.
    let webhook = |name: &str| matches!(name, "Notifications" | "Lifecycle");
    let app = spawn_app().await;
    for (name, route, methods) in &described {
        // A catch-all route (`ReadApi`'s `v1/{*path}`) is probed at one of its real paths.
        let route = &route.replace("{*path}", "callrecords");
        for method in methods {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = app
                .host
                .forward(
                    method,
                    &format!("/api/{route}?validationToken=probe"),
                    None,
                    "",
                )
                .await;
            // The admin's functions and the read API refuse the probe's unknown parameter or empty
            // body; the health
            // routes give a verdict (failing here: no subscription).
            let expected = match name.as_str() {
                "Notifications" | "Lifecycle" => StatusCode::OK,
                "Backfill" | "Reprocess" | "ReadApi" => StatusCode::BAD_REQUEST,
                "Health" | "HealthDetails" => StatusCode::SERVICE_UNAVAILABLE,
                other => panic!("{other}: say what this function answers to the probe"),
            };
            assert_eq!(response.status(), expected, "{name}");
        }
        let other = if methods.iter().any(|m| m == "GET") {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let response = app
            .host
            .forward(other.clone(), &format!("/api/{route}"), None, "")
            .await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{name} {other}"
        );
    }
    let unknown = app
        .host
        .forward(reqwest::Method::POST, "/api/nothing-here", None, "")
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Each route runs its own function: only Notifications enqueues a call-record notification.
    let notification = support::callrecord_notification(
        "7b1f0c7e-1d2a-4e5f-9a8b-0c1d2e3f4a5b",
        CLIENT_STATE,
        support::TENANT_ID,
    );
    for (name, route, methods) in &described {
        if !methods.iter().any(|m| m == "POST") {
            continue;
        }
        let response = app
            .host
            .forward(
                reqwest::Method::POST,
                &format!("/api/{route}"),
                Some("application/json"),
                notification.clone(),
            )
            .await;
        let status = if webhook(name) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(response.status(), status, "{name}");
        let expected = usize::from(name == "Notifications");
        assert_eq!(app.drain_queue().await.len(), expected, "{name} enqueued");
    }
}

#[test]
fn http_functions_keep_off_the_hosts_routes_and_only_webhooks_and_health_are_anonymous() {
    for entry in std::fs::read_dir(manifest_dir().join("handlers")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let described = read_json(&dir.join("function.json"));
        let trigger = &described["bindings"][0];
        if trigger["type"] != "httpTrigger" {
            continue;
        }
        // The host refuses to load a function whose route starts with `admin` ("The specified
        // route conflicts with one or more built in routes"), whatever the route prefix.
        let route = trigger["route"]
            .as_str()
            .unwrap_or(&name)
            .to_ascii_lowercase();
        let first = route.split('/').next().unwrap_or_default();
        assert!(
            !first.starts_with("admin") && first != "runtime",
            "{name}: route {route} is the host's"
        );
        // Graph cannot send a key: the webhooks are anonymous (they check the client state), and
        // so is the health summary (a status word, for probes); everything else needs a key.
        let expected = if matches!(name.as_str(), "Notifications" | "Lifecycle" | "Health") {
            "anonymous"
        } else {
            "function"
        };
        assert_eq!(trigger["authLevel"], expected, "{name}");
    }
}

#[test]
fn the_deployments_alerts_watch_what_the_app_emits() {
    let read = |path: &str| std::fs::read_to_string(manifest_dir().join(path)).unwrap();
    let alerts = read("infra/modules/alerts.bicep");
    // The log alert counts the fetch's log line: renaming it would silence the alert.
    assert!(alerts.contains(r#"| where message has "call record stored""#));
    assert!(read("src/functions/fetch_call_record.rs").contains(r#""call record stored""#));
    // The availability test calls the anonymous health route, which answers 503 when failing.
    assert!(
        read("infra/main.bicep")
            .contains("healthUrl: 'https://${app.outputs.hostName}/api/health'")
    );
    let health = read("handlers/Health/function.json");
    assert!(
        health.contains(r#""route": "health""#) && health.contains(r#""authLevel": "anonymous""#)
    );
    assert!(alerts.contains("ExpectedHttpStatusCode: 200"));
}

#[test]
fn the_deployment_grants_user_read_all_only_with_the_directory_sync() {
    let read = |path: &str| std::fs::read_to_string(manifest_dir().join(path)).unwrap();
    let main = read("infra/main.bicep");
    assert!(main.contains("param directorySync bool = false"));
    // Every grant of the permission is a module deployed only when the sync is on.
    let grants: Vec<&str> = main
        .split("\nmodule ")
        .filter(|module| module.contains("'User.Read.All'"))
        .collect();
    assert_eq!(grants.len(), 1, "one grant of User.Read.All");
    assert!(
        grants[0]
            .lines()
            .next()
            .is_some_and(|head| head.contains("if (grantGraphPermission && directorySync)")),
        "{}",
        grants[0]
    );
    // The default grant stays CallRecords.Read.All alone.
    assert!(
        read("infra/modules/graph-permission.bicep")
            .contains("param appRole string = 'CallRecords.Read.All'")
    );
    assert!(
        read("infra/modules/functionapp.bicep")
            .contains("DIRECTORY_SYNC: directorySync ? 'true' : 'false'")
    );
}

#[test]
fn host_json_configures_the_custom_handler_as_deployed() {
    let host = read_json(&manifest_dir().join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        env!("CARGO_PKG_NAME"),
        "the package's executable is the crate's binary"
    );
    assert_eq!(host["customHandler"]["enableProxyingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api");
    let queues = &host["extensions"]["queues"];
    assert_eq!(queues["maxDequeueCount"], 5);
    // The trigger hands the text over as stored: the handler reads our base64 jobs and Event
    // Grid's events in either encoding (`domain::event`), which a decoding host could not.
    assert_eq!(queues["messageEncoding"], "none");
    assert!(queues["visibilityTimeout"].is_string());
}

#[tokio::test]
async fn handler_binary_refuses_to_start_naming_the_missing_setting_without_printing_secrets() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_teams-cdr-functions"))
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("NOTIFICATION_CLIENT_STATE", CLIENT_STATE)
        .env(
            "AzureWebJobsStorage",
            format!(
                "AccountName=devstoreaccount1;AccountKey={}",
                support::azurite::ACCOUNT_KEY
            ),
        )
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("the binary exits by itself")
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success());
    assert!(printed.contains("GRAPH_TENANT_ID"), "{printed}");
    assert!(!printed.contains(CLIENT_STATE), "{printed}");
    assert!(
        !printed.contains(support::azurite::ACCOUNT_KEY),
        "{printed}"
    );
}

#[test]
fn host_emulator_builds_queue_invocations_exactly_like_the_real_host() {
    let captured: Value = serde_json::from_str(&fixture(
        "functions/queue-trigger.request.real-capture.json",
    ))
    .unwrap();
    // The message text the host decoded from the queue, recovered from the capture's double encoding.
    let text: String = serde_json::from_str(captured["Data"]["msg"].as_str().unwrap()).unwrap();
    let meta = &captured["Metadata"];
    let unquote = |v: &Value| serde_json::from_str::<String>(v.as_str().unwrap()).unwrap();

    let built = queue_invocation(&QueueDelivery {
        function: "scraperResultTrigger",
        binding: "msg",
        text: &text,
        id: &unquote(&meta["Id"]),
        pop_receipt: &unquote(&meta["PopReceipt"]),
        dequeue_count: meta["DequeueCount"].as_str().unwrap().parse().unwrap(),
        insertion_time: meta["InsertionTime"].as_str().unwrap(),
        expiration_time: meta["ExpirationTime"].as_str().unwrap(),
        next_visible_time: meta["NextVisibleTime"].as_str().unwrap(),
        utc_now: meta["sys"]["UtcNow"].as_str().unwrap(),
        rand_guid: meta["sys"]["RandGuid"].as_str().unwrap(),
    });

    // The host formats promoted dates its own way ("04/06/2024 15:30:00"); everything else must match.
    let mut expected = captured.clone();
    expected["Metadata"]["timestamp"] = built["Metadata"]["timestamp"].clone();
    assert_eq!(built["Data"], expected["Data"]);
    assert_eq!(built["Metadata"], expected["Metadata"]);
}
