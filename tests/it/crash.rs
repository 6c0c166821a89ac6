//! The shipped binary killed in the middle of its work, restarted, and the work delivered again by
//! the host: a batch of fetches (the tables end exactly as after a clean run) and a report pull
//! (every row once, the checkpoint consistent). Its own test binary, so that it has an Azurite of
//! its own and the binary's default queue and table names are free.
//!
//! The binary gets its Graph token through `azure_identity`'s `ManagedIdentityCredential` from the
//! simulator's managed-identity endpoint, as it would on Azure.

use std::collections::BTreeMap;
use std::time::Duration;

use support::HandlerProcess;
use support::fetch::{Tables, azurite_queue, azurite_table, spawn_fetch_app};
use support::graph::{binary_env, sim_config, start_sim};
use support::host::{HostEmulator, QueueRun, QueueTrigger};
use table_storage::{EdmValue, Entity, Query, TableStore};
use teams_cdr_sim::SimClock;

/// Every row of `table`, keyed, without what differs between two correct runs: the service's
/// `Timestamp`/ETag and the time a row was written.
async fn snapshot(table: &TableStore) -> BTreeMap<(String, String), BTreeMap<String, EdmValue>> {
    table
        .query_all(&Query::new())
        .await
        .unwrap()
        .into_iter()
        .map(|e: Entity| {
            let mut properties = e.properties.clone();
            properties.remove("StoredAt");
            // Each write keys its body parts with a random token of its own: compare without it.
            for name in ["Body", "BodyPrefix"] {
                if let Some(EdmValue::String(prefix)) = properties.get_mut(name) {
                    *prefix = without_writer(prefix);
                }
            }
            ((e.partition_key, without_writer(&e.row_key)), properties)
        })
        .collect()
}

/// `body-{version}-{writer}-…` with the writer's token replaced by `*`.
fn without_writer(key: &str) -> String {
    let mut parts: Vec<&str> = key.split('-').collect();
    if parts.len() >= 3 && parts[0] == "body" && parts[2].len() == 32 {
        parts[2] = "*";
    }
    parts.join("-")
}

#[tokio::test]
async fn a_stopped_handler_leaves_within_its_grace_period_whatever_is_in_flight() {
    // Storage that accepts connections and never answers: a report pull is stuck on its first
    // storage request when the stop comes. (Its own black hole, not the shared Azurite: the other
    // tests of this binary use the default table names.)
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = black_hole.accept().await {
            held.push(connection);
        }
    });
    let sim = start_sim(sim_config(0)).await;
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};\
         QueueEndpoint=http://127.0.0.1:{port}/{account};TableEndpoint=http://127.0.0.1:{port}/{account}",
        account = support::azurite::ACCOUNT,
        key = support::azurite::ACCOUNT_KEY,
    );
    let mut env = binary_env(&sim, &[("RUST_LOG", "info")]);
    env.retain(|(k, _)| *k != "AzureWebJobsStorage");
    env.push(("AzureWebJobsStorage", storage));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let handler = HandlerProcess::start(&env).await;
    let host = HostEmulator::new(handler.host.base());
    let in_flight = tokio::spawn(async move {
        let _ = host
            .invoke("PullReports", &support::host::timer_invocation(false))
            .await;
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !in_flight.is_finished(),
        "the pull must still be waiting for storage"
    );

    let (took, printed) = handler.terminate(Duration::from_secs(30)).await;
    let took = took.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{printed}"));
    // The grace period is 10 s: not cut short, not waited out for the storage timeouts.
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(printed.contains("no new work is taken"), "{printed}");
    assert!(printed.contains("abandoned"), "{printed}");
    in_flight.abort();
}

#[tokio::test]
async fn handler_killed_mid_batch_then_restarted_ends_as_a_clean_run() {
    // A tenant on real time (the binary reads the system clock), with Graph 80 ms away, and one
    // meeting big enough to need many writes.
    let mut config = sim_config(15);
    config.clock = SimClock::real();
    config.tenant.start = time::OffsetDateTime::now_utc() - time::Duration::hours(8);
    config.tenant.big_meetings = vec![(400, 150)];
    config.faults.slow_rate = 1.0;
    config.faults.slow_by = Duration::from_millis(80);
    let sim = start_sim(config).await;
    let identity_header = sim.config().identity_header.clone();
    // The binary, as the host starts it.
    let env = binary_env(
        &sim,
        &[
            // A short lease needs a short storage timeout: start-up checks that the lease outlives
            // the longest write (2 s × 3 tries + 2 s of waits).
            ("CALLRECORD_WRITE_LEASE_SECONDS", "9"),
            ("STORAGE_REQUEST_TIMEOUT_SECONDS", "2"),
            // Debug level, so that the secrecy check below sees everything the binary would log.
            ("RUST_LOG", "debug"),
        ],
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The reference: a clean run of the same tenant, in-process, into tables of its own.
    let reference = spawn_fetch_app(sim, |config, options| {
        options.clock = std::sync::Arc::new(teams_cdr_functions::clock::SystemClock);
        config.fetch.max_queue_delay = Duration::from_secs(7 * 24 * 3600);
    })
    .await;
    let ids = reference.tenant_ids();
    reference.enqueue_ids(&ids).await;
    let clean = reference.drain().await;
    assert_eq!(clean.failures, 0);

    let jobs = azurite_queue(teams_cdr_functions::config::CALLRECORD_QUEUE).await;
    let poison = azurite_queue(&format!(
        "{}-poison",
        teams_cdr_functions::config::CALLRECORD_QUEUE
    ))
    .await;
    for id in &ids {
        jobs.send_json(&reference.job(id), 0).await.unwrap();
    }

    // First life: the whole batch is delivered at once, and the process is killed while it works.
    let first = HandlerProcess::start(&env).await;
    let host = HostEmulator::new(first.host.base());
    let trigger = |host| QueueTrigger {
        host,
        function: "FetchCallRecord",
        binding: "job",
        queue: &jobs,
        poison: &poison,
        max_dequeue_count: 5,
        visibility_secs: 2,
    };
    let mut run = QueueRun::default();
    let first_trigger = trigger(&host);
    let names = teams_cdr_functions::config::TableNames::default();
    let records = azurite_table(&names.call_records);
    let bodies = azurite_table(&names.bodies);
    let writes_in_progress = || async {
        bodies
            .query_all(&Query::new())
            .await
            .map(|rows| {
                rows.iter()
                    .filter(|e| e.row_key == "state" && e.properties.contains_key("WritingVersion"))
                    .count()
            })
            .unwrap_or(0)
    };
    let (_, first_printed) = tokio::join!(first_trigger.deliver_once(32, &mut run), async {
        // Killed the moment a record is half-written: its state row holds a writer's lease.
        let started = std::time::Instant::now();
        while writes_in_progress().await == 0 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        first.stop().await
    });
    assert!(
        run.failures > 0,
        "the kill interrupted invocations: {run:?}\n{first_printed}"
    );
    let stored_at_kill = records
        .query_all(&Query::new())
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let writing_at_kill = writes_in_progress().await;
    eprintln!(
        "at the kill: {stored_at_kill} of {} records stored, {writing_at_kill} writes in progress, {run:?}",
        ids.len()
    );

    // Second life: the host redelivers what was not completed (a crashed writer's lease makes its
    // record wait 3 s). Killed again once some records are complete and others half-written, which
    // catches writers after their sessions or summary row and before their commit.
    let second = HandlerProcess::start(&env).await;
    let host = HostEmulator::new(second.host.base());
    let second_trigger = trigger(&host);
    let second_kill = async {
        let started = std::time::Instant::now();
        loop {
            let stored = records
                .query_all(&Query::new())
                .await
                .map_or(0, |r| r.len());
            if (stored > stored_at_kill && writes_in_progress().await > 0)
                || started.elapsed() > Duration::from_secs(30)
            {
                break (stored, writes_in_progress().await);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (stored_at_second_kill, writing_at_second_kill) = tokio::select! {
        at_kill = second_kill => at_kill,
        _ = second_trigger.drain(Duration::from_secs(60), || {}) => (ids.len(), 0),
    };
    let second_printed = second.stop().await;
    eprintln!(
        "at the second kill: {stored_at_second_kill} stored, {writing_at_second_kill} writes in progress"
    );

    // Third life: everything left is redelivered and completed.
    let third = HandlerProcess::start(&env).await;
    let host = HostEmulator::new(third.host.base());
    let rest = trigger(&host).drain(Duration::from_secs(120), || {}).await;
    let printed = third.stop().await;
    // No Graph token (the simulator's are `sim.<guid>.<guid>`) and no identity header secret in
    // anything the binary printed in its three lives.
    assert!(
        format!("{second_printed}{printed}").contains("call record stored"),
        "the logs say what was stored"
    );
    for (life, output) in [(1, &first_printed), (2, &second_printed), (3, &printed)] {
        assert!(
            !output.contains(identity_header.as_str()),
            "life {life} printed the identity header"
        );
        let leaked = output.match_indices("sim.").any(|(i, _)| {
            output[i + 4..]
                .chars()
                .take(9)
                .filter(|c| c.is_ascii_hexdigit() || *c == '-')
                .count()
                == 9
        });
        assert!(!leaked, "life {life} printed a Graph token");
    }

    assert_eq!(rest.poisoned, 0, "{rest:?}\n{printed}");
    assert!(
        writing_at_kill > 0,
        "the kill came in the middle of a write"
    );
    assert!(
        stored_at_kill < ids.len(),
        "the kill came after everything was stored ({stored_at_kill})"
    );
    for (name, ours, theirs) in [
        (
            "CallRecords",
            &names.call_records,
            &reference.tables.records,
        ),
        (
            "CallRecordSessions",
            &names.sessions,
            &reference.tables.sessions,
        ),
        ("CallRecordBodies", &names.bodies, &reference.tables.bodies),
    ] {
        let ours = snapshot(&azurite_table(ours)).await;
        let theirs = snapshot(theirs).await;
        assert_eq!(ours.len(), theirs.len(), "{name}: row count");
        assert!(ours == theirs, "{name} differs from the clean run");
    }
    let crashed = Tables::of(&names).store();
    for id in &ids {
        assert_eq!(
            crashed.document(id).await.unwrap(),
            reference.store.document(id).await.unwrap(),
            "{id}"
        );
    }
}

/// The ids of a simulator report, lower-cased as stored.
fn report_ids(rows: &[teams_cdr_sim::tenant::ReportRow]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.json.get()).unwrap();
            v["id"].as_str().unwrap().to_ascii_lowercase()
        })
        .collect();
    ids.sort();
    ids
}

async fn stored_ids(table: &TableStore) -> Vec<String> {
    let mut ids: Vec<String> = table
        .query_all(&Query::new().select(["RowKey"]))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.row_key)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn report_pull_killed_midway_through_a_window_resumes_and_loses_and_doubles_nothing() {
    // Three days of reports on real time, each page 40 ms away, so that the kill lands mid-window.
    let mut config = sim_config(0);
    config.clock = SimClock::real();
    let now = time::OffsetDateTime::now_utc();
    config.tenant.start = now - time::Duration::days(3);
    config.tenant.span = time::Duration::days(2);
    config.tenant.pstn_rows = 20_000;
    config.tenant.direct_routing_rows = 5_000;
    config.tenant.report_delay = time::Duration::minutes(1);
    config.faults.slow_rate = 1.0;
    config.faults.slow_by = Duration::from_millis(40);
    let sim = start_sim(config).await;
    let env = binary_env(
        &sim,
        &[
            ("REPORTS_BACKFILL_DAYS", "4"),
            ("REPORTS_LEASE_SECONDS", "10"),
        ],
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let names = teams_cdr_functions::config::TableNames::default();
    let pstn = azurite_table(&names.pstn_calls);
    let direct_routing = azurite_table(&names.direct_routing_calls);
    let app_state = azurite_table(&names.app_state);
    let timer = support::host::timer_invocation(false);

    // First life: killed once it has read a few PSTN pages of a window.
    let first = HandlerProcess::start(&env).await;
    // Posted directly: the host emulator insists on an answer, and this run never gives one.
    let url = format!("{}/PullReports", first.host.base());
    let invocation = reqwest::Client::new().post(url).json(&timer).send();
    let (_, printed) = tokio::join!(invocation, async {
        let started = std::time::Instant::now();
        while sim.ledger().count(teams_cdr_sim::Endpoint::PstnCalls) < 6
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        first.stop().await
    });
    let at_kill = stored_ids(&pstn).await.len();
    let expected_pstn = report_ids(&sim.tenant().pstn);
    eprintln!(
        "at the kill: {at_kill} of {} PSTN rows stored",
        expected_pstn.len()
    );
    assert!(
        at_kill > 0 && at_kill < expected_pstn.len(),
        "the kill came mid-pull ({at_kill} stored)\n{printed}"
    );
    let held = app_state
        .get("ReportCheckpoint", "pstn")
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(held.properties.get("LeaseOwner"), Some(EdmValue::String(o)) if !o.is_empty()),
        "the dead pull's lease is on the checkpoint: {held:?}"
    );

    // Second life: the next run waits out the dead pull's lease, then resumes from the checkpoint.
    let second = HandlerProcess::start(&env).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Posted directly, with the host's own function timeout (10 minutes) rather than the host
    // emulator's 30 s: 25,000 rows at 40 ms a page take longer than that on a busy machine.
    let status = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .post(format!("{}/PullReports", second.host.base()))
        .header(
            "X-Azure-Functions-InvocationId",
            support::host::new_invocation_id(),
        )
        .json(&timer)
        .send()
        .await
        .expect("the second life answers")
        .status();
    assert!(status.is_success(), "{status}");
    let printed = second.stop().await;

    assert_eq!(
        stored_ids(&pstn).await,
        expected_pstn,
        "PSTN rows\n{printed}"
    );
    assert_eq!(
        stored_ids(&direct_routing).await,
        report_ids(&sim.tenant().direct_routing)
    );
    let checkpoint = app_state
        .get("ReportCheckpoint", "pstn")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint.properties.get("LeaseOwner"),
        Some(&EdmValue::String(String::new())),
        "released"
    );
    let Some(EdmValue::DateTime(through)) = checkpoint.properties.get("Through") else {
        panic!("{checkpoint:?}")
    };
    assert!(
        *through > now,
        "the checkpoint reached the second run's end: {through}"
    );
}
