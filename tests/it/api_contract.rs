//! The read API against its own OpenAPI document: the document validates as OpenAPI 3.1, and a
//! property-based run of schemathesis (installed, pinned, by `scripts/ensure-api-check.sh`, which
//! the test command runs) against a standalone instance with stored call records and report rows
//! finds no response that breaks the document: undocumented statuses, bodies that do not match
//! their schema, server errors, other methods not refused.

use std::path::Path;
use std::time::Duration;

use support::fetch::spawn_fetch_app;
use support::graph::{sim_config, sim_start};
use support::reports::{insert, pstn_row, reports_app};
use teams_cdr_functions::config::RunMode;

const KEY: &str = "contract-key";

#[tokio::test]
async fn the_read_api_keeps_to_its_openapi_document_under_schemathesis() {
    let schemathesis = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-api/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is not installed: run `bash scripts/ensure-api-check.sh` (the test command \
         `bash scripts/test.sh` does)"
    );

    // Data: call records fetched and report rows pulled by one instance, settled.
    let writer = reports_app(sim_config(6)).await;
    writer.sim.clock().advance(time::Duration::hours(1));
    writer.enqueue_ids(&writer.tenant_ids()).await;
    writer.drain().await;
    let start = sim_start() - time::Duration::hours(2);
    for n in 0..8 {
        let id = format!("5e3b0d5a-0000-4000-8000-{n:012}");
        insert(
            &writer.sim,
            false,
            start,
            start,
            &pstn_row(&id, start, "0.0190"),
        );
    }
    assert_eq!(writer.pull_reports().await, 200);
    writer.sim.clock().advance(time::Duration::seconds(301));

    // The instance under test: standalone (it checks keys itself) on the same tables.
    let names = writer.names.clone();
    let sim = writer.sim.clone();
    let reader = spawn_fetch_app(sim, move |config, _| {
        config.mode = RunMode::Standalone;
        config.read_api_keys = vec![KEY.to_owned().into()];
        config.tables = names;
    })
    .await;
    let base = reader.host.base().to_owned();

    let document: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/openapi.json"))
        .header("x-functions-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    // The by-id routes are also tried with a stored record, so that they get past `404`.
    let stored = writer.tenant_ids()[0].clone();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[[operations]]\ninclude-path-regex = \"/callrecords/\"\n\
             parameters = {{ \"path.id\" = \"{stored}\" }}\n"
        ),
    )
    .unwrap();
    let run = tokio::process::Command::new(&schemathesis)
        .args([
            "--config-file",
            config.path().to_str().unwrap(),
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
            "--header",
            &format!("x-functions-key: {KEY}"),
            "--checks",
            "all",
            // What a schema cannot say: `from` before `to`, both or neither, and a cursor this API
            // signed. Requests that break those are valid by the schema and rightly refused with
            // `400` (tests/it/read_api.rs covers each); every other check runs.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "40",
            "--seed",
            "20261129",
            "--request-timeout",
            "20",
        ])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    eprintln!("{text}");
}
