//! `FetchCallRecord`, driven by the host emulator's queue trigger against Azurite and the Graph
//! simulator: every record stored completely and once, at its highest version, whatever Graph does.

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use support::fetch::{
    FetchApp, array_len, fixture_json, int64, record_row, record_version, served, sim_record,
    spawn_fetch_app, stored,
};
use support::graph::{SimCredential, sim_config, sim_start, start_sim};
use table_storage::{EdmValue, Entity};
use teams_cdr_sim::RetryAfter;
use teams_cdr_sim::tenant::CallRecord;

#[tokio::test]
async fn every_documented_call_record_is_stored_exactly_as_graph_served_it() {
    let sim = start_sim(sim_config(0)).await;
    let sessions_fixture = fixture_json("callrecord-get-expand-sessions-segments.json");
    let participants_fixture = fixture_json("callrecord-get-expand-participants_v2.json");
    let sessions_page = fixture_json("callrecord-sessions-list.json");
    let participants_page = fixture_json("callrecord-participants_v2-list.json");
    let list = fixture_json("callrecords-list-all.json");
    let mut records = vec![
        // Sessions with segments and the current endpoint shape; participants with the doc's
        // repeated id.
        sim_record(
            "e523d2ed-2966-4b6b-925b-754a88034cc5",
            sessions_fixture.clone(),
            sessions_fixture["sessions"].as_array().unwrap().clone(),
            participants_fixture["participants_v2"]
                .as_array()
                .unwrap()
                .clone(),
        ),
        // The legacy shape: `organizer`/`participants` identity sets, no `organizer_v2`.
        sim_record(
            "0a1b2c3d-0000-4000-8000-000000000001",
            fixture_json("callrecord-get-basic-legacy-organizer-participants.json"),
            Vec::new(),
            Vec::new(),
        ),
        // The sessions and participants collection pages (legacy `identity` endpoints, the full
        // communications identity set with its null members).
        sim_record(
            "614e3ff0-4728-4394-8c03-52fb3b967fde",
            fixture_json("callrecord-get-basic.json"),
            sessions_page["value"].as_array().unwrap().clone(),
            participants_page["value"].as_array().unwrap().clone(),
        ),
    ];
    // The list example: `type: unknown`, a phone organizer.
    for (n, item) in list["value"].as_array().unwrap().iter().enumerate() {
        records.push(sim_record(
            &format!("0a1b2c3d-0000-4000-8000-00000000010{n}"),
            item.clone(),
            Vec::new(),
            Vec::new(),
        ));
    }
    for record in &records {
        sim.insert_record(record.clone());
    }
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    app.enqueue_ids(&ids).await;

    let run = app.drain().await;

    assert_eq!(run.failures, 0, "{run:?}");
    for record in &records {
        assert_eq!(
            stored(&app, &record.id).await,
            served(record),
            "{}",
            record.id
        );
        let row = record_row(&app, &record.id).await;
        assert_eq!(
            int64(&row, "Version"),
            i64::try_from(record.versions[0].version).unwrap()
        );
        assert_eq!(
            row.properties.get("SessionCount"),
            Some(&EdmValue::Int32(
                i32::try_from(
                    record.versions[0]
                        .sessions
                        .iter()
                        .map(|s| s["id"].as_str().unwrap().to_owned())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                )
                .unwrap()
            )),
            "{}",
            record.id
        );
    }
    // How each call ended, where its documented fields say it: the peer-to-peer records with a
    // session that did not fail were answered; without sessions, or a list item of `type: unknown`,
    // nothing says (INTEGRATION, "The outcome of a call record").
    for (id, outcome) in [
        ("e523d2ed-2966-4b6b-925b-754a88034cc5", "answered"),
        ("614e3ff0-4728-4394-8c03-52fb3b967fde", "answered"),
        ("0a1b2c3d-0000-4000-8000-000000000001", "unknown"),
        ("0a1b2c3d-0000-4000-8000-000000000100", "unknown"),
    ] {
        let row = record_row(&app, id).await;
        assert_eq!(
            row.properties.get("Outcome"),
            Some(&EdmValue::String(outcome.into())),
            "{id}"
        );
    }
    // The documented session: caller and callee columns without JSON parsing.
    let sessions = app
        .store
        .session_rows("e523d2ed-2966-4b6b-925b-754a88034cc5")
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        s.properties.get("CallerUserPrincipalName"),
        Some(&EdmValue::String("abbie.wilkins@contoso.com".into()))
    );
    assert_eq!(
        s.properties.get("CalleeDisplayName"),
        Some(&EdmValue::String("Owen Franklin".into()))
    );
    assert_eq!(
        s.properties.get("CallerPlatform"),
        Some(&EdmValue::String("android".into()))
    );
    // The phone organizer of the list example.
    let phone = record_row(&app, "0a1b2c3d-0000-4000-8000-000000000101").await;
    assert_eq!(
        phone.properties.get("OrganizerIdentityType"),
        Some(&EdmValue::String("phone".into()))
    );
}

#[tokio::test]
async fn meeting_with_2000_sessions_and_1000_participants_is_stored_completely_and_byte_for_byte() {
    let mut config = sim_config(0);
    config.tenant.big_meetings = vec![(2000, 1000)];
    let sim = start_sim(config).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    app.enqueue_ids(std::slice::from_ref(&id)).await;

    let run = app.drain().await;

    assert_eq!(run.failures, 0, "{run:?}");
    let document = app.store.document(&id).await.unwrap().unwrap();
    let parsed: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(array_len(&parsed, "sessions"), 2000);
    assert_eq!(array_len(&parsed, "participants_v2"), 1000);
    assert_eq!(parsed, served(&app.sim.tenant().records[&id]));
    // Graph requests: the minimum (1 + 33 extra session pages + 8 participant pages), and no 429
    // although that is more than Graph's 40 per record per 20 s.
    assert_eq!(app.sim.ledger().count_for_record(&id), 1 + 33 + 8);
    assert_eq!(app.sim.ledger().count_status(429), 0);
    // Byte for byte: every session and participant is the exact text Graph sent in its page.
    let served_pages = raw_pages(&app, &id).await;
    let stored_elements = |key: &str| -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            sessions: Vec<&'a RawValue>,
            #[serde(borrow, rename = "participants_v2")]
            participants: Vec<&'a RawValue>,
        }
        let doc: Doc<'_> = serde_json::from_slice(&document).unwrap();
        let items = if key == "sessions" {
            doc.sessions
        } else {
            doc.participants
        };
        items.iter().map(|r| r.get().to_owned()).collect()
    };
    assert_eq!(stored_elements("sessions"), served_pages.0);
    assert_eq!(stored_elements("participants_v2"), served_pages.1);
    assert_eq!(app.store.session_rows(&id).await.unwrap().len(), 2000);
    let row = record_row(&app, &id).await;
    assert_eq!(
        row.properties.get("ParticipantCount"),
        Some(&EdmValue::Int32(1000))
    );
}

/// The raw text of every session and participant as the simulator serves them, page by page.
async fn raw_pages(app: &FetchApp, id: &str) -> (Vec<String>, Vec<String>) {
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default)]
        value: Vec<Box<RawValue>>,
        #[serde(default)]
        sessions: Vec<Box<RawValue>>,
        #[serde(rename = "@odata.nextLink")]
        next: Option<String>,
        #[serde(rename = "sessions@odata.nextLink")]
        sessions_next: Option<String>,
    }
    let client = reqwest::Client::new();
    let token = app.sim.token();
    let get = |url: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            loop {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    // The app's fetch used this record's 40 requests per 20 s: wait as told.
                    let wait: f64 = response.headers()["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    tokio::time::sleep(Duration::from_secs_f64(wait + 0.1)).await;
                    continue;
                }
                assert!(response.status().is_success(), "{}", response.status());
                return response.json::<Page>().await.unwrap();
            }
        }
    };
    let base = app.sim.base_url();
    let mut sessions = Vec::new();
    let first = get(format!(
        "{base}/v1.0/communications/callRecords/{id}?$expand=sessions($expand=segments)"
    ))
    .await;
    sessions.extend(first.sessions.iter().map(|r| r.get().to_owned()));
    let mut next = first.sessions_next;
    while let Some(url) = next {
        let page = get(url).await;
        sessions.extend(page.value.iter().map(|r| r.get().to_owned()));
        next = page.next;
    }
    let mut participants = Vec::new();
    let mut next = Some(format!(
        "{base}/v1.0/communications/callRecords/{id}/participants_v2"
    ));
    while let Some(url) = next {
        let page = get(url).await;
        participants.extend(page.value.iter().map(|r| r.get().to_owned()));
        next = page.next;
    }
    (sessions, participants)
}

#[tokio::test]
async fn newer_version_replaces_the_stored_one_and_an_older_one_never_does() {
    let sim = start_sim(sim_config(2)).await;
    let ids: Vec<String> = sim.tenant().records.keys().cloned().collect();
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let clock = app.sim.clock().clone();

    // v1 then v2: the later fetch stores v2, with its extra sessions.
    app.enqueue_ids(&ids[..1]).await;
    app.drain().await;
    assert_eq!(int64(&record_row(&app, &ids[0]).await, "Version"), 1);
    let v2_at = clock.now() + time::Duration::minutes(10);
    assert_eq!(app.sim.reissue(&ids[0], v2_at, 3), Some(2));
    clock.advance(time::Duration::minutes(11));
    app.enqueue_ids(&ids[..1]).await;
    app.drain().await;
    let row = record_row(&app, &ids[0]).await;
    assert_eq!(int64(&row, "Version"), 2);
    assert_eq!(
        stored(&app, &ids[0]).await,
        served(&app.sim.tenant().records[&ids[0]])
    );
    let sessions = app.sim.tenant().records[&ids[0]].versions[1].sessions.len();
    assert_eq!(
        app.store.session_rows(&ids[0]).await.unwrap().len(),
        sessions
    );

    // v2 stored, then a fetch that still sees v1 (Graph's replicas lag, or a notification for v1
    // processed late): v2 stays.
    let v2_at = clock.now() + time::Duration::minutes(10);
    assert_eq!(app.sim.reissue(&ids[1], v2_at, 2), Some(2));
    clock.advance(time::Duration::minutes(11));
    app.enqueue_ids(&ids[1..]).await;
    app.drain().await;
    let before = record_row(&app, &ids[1]).await;
    assert_eq!(int64(&before, "Version"), 2);
    clock.advance(-time::Duration::minutes(2));
    app.enqueue_ids(&ids[1..]).await;
    app.drain().await;
    let after = record_row(&app, &ids[1]).await;
    assert_eq!(int64(&after, "Version"), 2);
    assert_eq!(after.etag, before.etag, "the v2 row was not rewritten");
    assert_eq!(
        stored(&app, &ids[1]).await,
        served(&app.sim.tenant().records[&ids[1]])
    );
}

#[tokio::test]
async fn same_notification_delivered_three_times_gives_one_row_and_one_write_of_the_body() {
    let sim = start_sim(sim_config(1)).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let app = spawn_fetch_app(sim, |_, _| {}).await;

    app.enqueue_ids(std::slice::from_ref(&id)).await;
    app.drain().await;
    let body_rows = app.rows(&app.tables.bodies).await;
    let row = record_row(&app, &id).await;
    // Twice more, delivered together: concurrent duplicates.
    app.enqueue_ids(&[id.clone(), id.clone()]).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    assert_eq!(app.rows(&app.tables.records).await.len(), 1);
    assert_eq!(record_row(&app, &id).await.etag, row.etag, "row rewritten");
    assert_eq!(
        app.rows(&app.tables.bodies).await,
        body_rows,
        "body or state rewritten"
    );
    // The duplicates cost one Graph request each: the first page says the version is stored.
    let sessions_pages = 1;
    assert_eq!(
        app.sim.ledger().count_for_record(&id),
        (sessions_pages + 1) + 2,
        "{:?}",
        app.sim.ledger().requests()
    );
}

#[tokio::test]
async fn record_not_yet_available_is_stored_once_it_appears_with_few_requests_and_no_poison() {
    let mut config = sim_config(0);
    config.tenant.call_records = 1;
    config.tenant.start = sim_start() - time::Duration::minutes(20);
    config.tenant.span = time::Duration::minutes(1);
    config.tenant.availability_delay = (time::Duration::minutes(90), time::Duration::minutes(90));
    let sim = start_sim(config).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let available_at = sim.tenant().records[&id].versions[0].issued_at;
    assert!(available_at - sim_start() >= time::Duration::minutes(60));
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    app.enqueue_ids(std::slice::from_ref(&id)).await;

    // The queue's delays are capped at 0 here: the message comes straight back until it is due, and
    // each round moves tenant time on by a minute (180 rounds = 3 hours at most).
    let clock = app.sim.clock().clone();
    let run = app.drain_advancing(time::Duration::minutes(1)).await;

    assert_eq!(run.poisoned, 0);
    assert_eq!(run.failures, 0);
    assert_eq!(
        stored(&app, &id).await,
        served(&app.sim.tenant().records[&id])
    );
    let requests = app.sim.ledger().count_for_record(&id);
    let not_found = app
        .sim
        .ledger()
        .requests()
        .iter()
        .filter(|r| r.status == 404)
        .count();
    assert!(
        (2..=8).contains(&not_found),
        "{not_found} fetches answered 404"
    );
    assert_eq!(
        requests,
        not_found + 2,
        "then the record and its participants"
    );
    assert!(
        clock.now() - available_at <= time::Duration::minutes(35),
        "stored late"
    );
}

#[tokio::test]
async fn throttling_storm_stores_every_record_and_every_retry_after_is_respected() {
    let mut config = sim_config(12);
    config.faults.throttle_rate = 0.4;
    config.faults.retry_after = RetryAfter::Fractional(0.3);
    config.faults.unavailable_rate = 0.1;
    let sim = start_sim(config).await;
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let ids = app.tenant_ids();
    app.enqueue_ids(&ids).await;

    // A fetch that still fails after the client's retries is put back for later (tenant time).
    let run = app.drain_advancing(time::Duration::minutes(1)).await;

    assert_eq!(run.failures, 0, "{run:?}");
    assert!(app.sim.ledger().count_status(429) > 5, "the storm happened");
    assert_eq!(app.sim.ledger().retry_after_violations(), 0);
    for id in &ids {
        assert_eq!(
            stored(&app, id).await,
            served(&app.sim.tenant().records[id]),
            "{id}"
        );
    }
    assert_eq!(app.rows(&app.tables.records).await.len(), ids.len());
}

#[tokio::test]
async fn throttled_beyond_the_inline_wait_is_put_back_with_retry_after_and_stored_later() {
    let mut config = sim_config(3);
    config.faults.throttle_rate = 0.5;
    config.faults.retry_after = RetryAfter::Fractional(0.4);
    let sim = start_sim(config).await;
    let app = spawn_fetch_app(sim, |config, _| {
        // Nothing is waited for in-process: every 429 goes back to the queue.
        config.graph.max_inline_retry_after = Duration::ZERO;
    })
    .await;
    let ids = app.tenant_ids();
    app.enqueue_ids(&ids).await;

    // A put-back job is due Retry-After later on the app's clock (the simulator's, manual here):
    // each round moves it on by a second.
    let run = app.drain_advancing(time::Duration::seconds(1)).await;

    assert_eq!(run.failures, 0, "{run:?}");
    assert!(app.sim.ledger().count_status(429) > 0);
    assert_eq!(app.sim.ledger().retry_after_violations(), 0);
    assert!(
        run.invocations > ids.len(),
        "throttled fetches were put back"
    );
    for id in &ids {
        assert_eq!(
            stored(&app, id).await,
            served(&app.sim.tenant().records[id]),
            "{id}"
        );
    }
}

#[tokio::test]
async fn unreadable_queue_messages_are_dropped_once_and_recorded() {
    let sim = start_sim(sim_config(0)).await;
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let bad = [
        // A JSON string, not a job object.
        json!("not a job at all"),
        json!({"changeType": "created"}),
        json!({"id": "a/../../b", "changeType": "created", "tenantId": "t", "subscriptionId": "s", "receivedAt": "2026-11-20T09:00:00Z"}),
    ];
    for message in &bad {
        app.queue.send_json(message, 0).await.unwrap();
    }

    let run = app.drain().await;

    assert_eq!(run.invocations, 3, "each delivered once: {run:?}");
    assert_eq!(run.failures, 0);
    assert_eq!(run.poisoned, 0);
    let dropped: Vec<Entity> = app.app_state_rows("DroppedMessage").await;
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert_eq!(app.sim.ledger().requests().len(), 0, "Graph was not called");
    assert!(app.rows(&app.tables.records).await.is_empty());
}

#[tokio::test]
async fn record_older_than_graph_keeps_is_given_up_at_once_and_recorded() {
    let sim = start_sim(sim_config(0)).await;
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    let mut job = app.job("7c4e1d2a-0000-4000-8000-00000000dead");
    job.received_at = sim_start() - time::Duration::days(31);
    app.enqueue(&job).await;

    let run = app.drain().await;

    assert_eq!(run.invocations, 1);
    assert_eq!(app.sim.ledger().count_for_record(&job.id), 1);
    let failures: Vec<Entity> = app.app_state_rows("FetchFailure").await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].row_key, job.id);
    assert_eq!(
        failures[0].properties.get("Reason"),
        Some(&EdmValue::String("expired".into()))
    );
}

#[tokio::test]
async fn record_refused_by_graph_stays_on_the_queue_for_later() {
    let sim = start_sim(sim_config(1)).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let app = spawn_fetch_app(sim, |_, options| {
        options.graph_credential = Some(SimCredential::refused());
    })
    .await;
    app.enqueue_ids(std::slice::from_ref(&id)).await;

    // One delivery: refused, put back for later with the attempt counted.
    let mut run = Default::default();
    app.trigger().deliver_once(1, &mut run).await;

    assert_eq!(run.failures, 0);
    let waiting = app.queue.receive(32, 1).await.unwrap();
    assert_eq!(waiting.len(), 1);
    let job: teams_cdr_functions::CallRecordJob =
        serde_json::from_str(&support::host::decode_text(&waiting[0].text)).unwrap();
    assert_eq!((job.id.as_str(), job.attempt), (id.as_str(), 1));
    assert!(job.not_before.unwrap() > app.sim.clock().now());
    assert_eq!(app.sim.ledger().count_status(401), 1);
    assert!(app.rows(&app.tables.records).await.is_empty());
    // The health check sees the refusal at once.
    let status: Vec<Entity> = app.app_state_rows("GraphStatus").await;
    assert_eq!(status.len(), 1);
    assert_eq!(
        status[0].properties.get("Status"),
        Some(&EdmValue::Int32(401))
    );
}

#[tokio::test]
async fn storage_failure_fails_the_invocation_so_the_host_retries_and_finally_poisons() {
    let sim = start_sim(sim_config(1)).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let app = spawn_fetch_app(sim, |config, _| {
        // Tables on a port where nothing listens: every table request fails.
        let dead = format!("http://127.0.0.1:{}/devstoreaccount1", support::free_port());
        config.storage.table_endpoint = dead.parse().unwrap();
    })
    .await;
    app.enqueue_ids(std::slice::from_ref(&id)).await;

    let run = app.trigger().drain(Duration::from_secs(120), || {}).await;

    assert_eq!(run.poisoned, 1, "{run:?}");
    assert_eq!(run.failures, 5);
    let poisoned = app.poison.receive(32, 1).await.unwrap();
    let job: teams_cdr_functions::CallRecordJob =
        serde_json::from_str(&support::host::decode_text(&poisoned[0].text)).unwrap();
    assert_eq!(job.id, id, "the record is in the poison queue, not lost");
}

#[tokio::test]
async fn standalone_mode_consumes_its_queue_without_a_host_and_stores_the_record() {
    let sim = start_sim(sim_config(2)).await;
    let app = spawn_fetch_app(sim, |config, _| {
        config.mode = teams_cdr_functions::config::RunMode::Standalone;
    })
    .await;
    let ids = app.tenant_ids();

    app.enqueue_ids(&ids).await;

    // No host here: the app's own consumer picks the messages up. Poll for the outcome.
    let started = std::time::Instant::now();
    for id in &ids {
        while app.store.document(id).await.unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{id} not stored"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            stored(&app, id).await,
            served(&app.sim.tenant().records[id])
        );
    }
    let started = std::time::Instant::now();
    while app.queue.approximate_count().await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "messages left on the queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn newer_version_with_fewer_sessions_and_another_start_day_leaves_no_stale_rows() {
    let sim = start_sim(sim_config(0)).await;
    let fixture = fixture_json("callrecord-get-expand-sessions-segments.json");
    let session = |id: Option<&str>| {
        let mut s = fixture["sessions"][0].clone();
        match id {
            Some(id) => s["id"] = json!(id),
            None => {
                s.as_object_mut().unwrap().remove("id");
            }
        }
        s
    };
    let id = "5d1e8a4c-0000-4000-8000-0000000000aa";
    let version = |v: u64, start: &str, sessions: Vec<Value>, issued: time::OffsetDateTime| {
        let mut version = record_version(id, v, fixture.clone(), sessions, Vec::new(), issued);
        version.base["startDateTime"] = json!(start);
        version
    };
    sim.insert_record(CallRecord {
        id: id.to_owned(),
        start: sim_start() - time::Duration::hours(9),
        end: sim_start() - time::Duration::hours(8),
        versions: vec![
            // v1: three sessions, one of them without an id, starting late on the 19th.
            version(
                1,
                "2026-11-19T23:59:30Z",
                vec![session(Some("s-1")), session(Some("s-2")), session(None)],
                sim_start() - time::Duration::minutes(30),
            ),
            // v2: late data moves the start to the 20th and leaves two sessions.
            version(
                2,
                "2026-11-20T00:00:10Z",
                vec![session(Some("s-1")), session(Some("s-3"))],
                sim_start() + time::Duration::minutes(10),
            ),
        ],
    });
    let app = spawn_fetch_app(sim, |_, _| {}).await;

    app.enqueue_ids(&[id.to_owned()]).await;
    app.drain().await;
    let v1_sessions = app.store.session_rows(id).await.unwrap();
    assert_eq!(v1_sessions.len(), 3, "v1 stored with its id-less session");
    app.sim.clock().advance(time::Duration::minutes(11));
    app.enqueue_ids(&[id.to_owned()]).await;
    let run = app.drain().await;

    assert_eq!(run.failures, 0);
    let rows = app.rows(&app.tables.records).await;
    assert_eq!(rows.len(), 1, "one CallRecords row: {rows:?}");
    assert_eq!(rows[0].partition_key, "2026-11-20");
    assert_eq!(int64(&rows[0], "Version"), 2);
    let sessions = app.store.session_rows(id).await.unwrap();
    let keys: Vec<&str> = sessions.iter().map(|e| e.row_key.as_str()).collect();
    assert_eq!(keys, ["s-1", "s-3"]);
    assert!(sessions.iter().all(|e| int64(e, "Version") == 2));
    let bodies: Vec<String> = app
        .rows(&app.tables.bodies)
        .await
        .into_iter()
        .map(|e| e.row_key)
        .collect();
    // Parts are keyed `body-{version}-{writer}-{n}`: one part, of version 2, and the state row.
    assert_eq!(bodies.len(), 2, "only v2's document is kept: {bodies:?}");
    assert!(
        bodies[0].starts_with(&format!("body-{:020}-", 2)) && bodies[0].ends_with("-00000"),
        "only v2's document is kept: {bodies:?}"
    );
    assert_eq!(bodies[1], "state");
    assert_eq!(
        stored(&app, id).await,
        served(&app.sim.tenant().records[id])
    );
}

#[tokio::test]
async fn writer_that_loses_its_lease_stops_and_the_record_ends_at_its_newest_version() {
    // A record with many sessions (several transactions to write) in two versions.
    let sim = start_sim(sim_config(0)).await;
    let fixture = fixture_json("callrecord-get-expand-sessions-segments.json");
    let id = "6a2f9b1e-0000-4000-8000-0000000000bb";
    let sessions = |n: usize, tag: &str| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let mut s = fixture["sessions"][0].clone();
                s["id"] = json!(format!("{tag}-{i:04}"));
                s
            })
            .collect()
    };
    let version = |v: u64, sessions: Vec<Value>, issued: time::OffsetDateTime| {
        record_version(id, v, fixture.clone(), sessions, Vec::new(), issued)
    };
    sim.insert_record(CallRecord {
        id: id.to_owned(),
        start: sim_start() - time::Duration::hours(2),
        end: sim_start() - time::Duration::hours(1),
        versions: vec![
            version(
                1,
                sessions(600, "v1"),
                sim_start() - time::Duration::minutes(30),
            ),
            version(
                2,
                sessions(300, "v2"),
                sim_start() + time::Duration::minutes(10),
            ),
        ],
    });
    // Writer A holds leases of 2 s and reaches storage through a proxy the test can make hang.
    let proxy = support::proxy::ToggleProxy::start(
        support::azurite()
            .table_endpoint
            .socket_addrs(|| None)
            .unwrap()[0],
    )
    .await;
    // (A's lease is lost to the tenant clock jumping past it, below: the default lease is long
    // enough for the fence, which start-up checks.)
    let a = spawn_fetch_app(sim, |config, _| {
        config.storage.table_endpoint = format!("http://{}/devstoreaccount1", proxy.addr)
            .parse()
            .unwrap();
    })
    .await;
    let names = a.names.clone();
    let b = spawn_fetch_app(a.sim.clone(), move |config, _| config.tables = names).await;

    // A starts writing v1; the moment it has claimed the record, its storage hangs.
    let job = serde_json::to_string(&a.job(id)).unwrap();
    let a_host = support::host::HostEmulator::new(a.host.base());
    let a_invocation = tokio::spawn(async move {
        let payload = support::host::queue_invocation(&support::host::QueueDelivery {
            function: "FetchCallRecord",
            binding: "job",
            text: &job,
            id: "m-1",
            pop_receipt: "p",
            dequeue_count: 1,
            insertion_time: "2026-11-20T09:00:00+00:00",
            expiration_time: "2026-11-27T09:00:00+00:00",
            next_visible_time: "2026-11-20T09:10:00+00:00",
            utc_now: "2026-11-20T09:00:00Z",
            rand_guid: "00000000-0000-4000-8000-000000000000",
        });
        a_host.invoke("FetchCallRecord", &payload).await.status()
    });
    let claimed = std::time::Instant::now();
    loop {
        // (The table itself appears with A's first write.)
        let state = a.tables.bodies.get(id, "state").await.ok().flatten();
        if state.is_some_and(|s| s.properties.contains_key("WritingVersion")) {
            break;
        }
        assert!(
            claimed.elapsed() < Duration::from_secs(20),
            "A never claimed the record"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.set(support::proxy::Mode::BlackHole);

    // Meanwhile v2 appears and A's lease runs out: B takes over and stores v2.
    a.sim.clock().advance(time::Duration::minutes(11));
    b.enqueue_ids(&[id.to_owned()]).await;
    let b_run = b.drain().await;
    assert_eq!(b_run.failures, 0);
    assert_eq!(int64(&record_row(&b, id).await, "Version"), 2);

    // A's storage comes back: A finds its lease gone, stops, and queues a repair.
    proxy.set(support::proxy::Mode::Up);
    assert!(a_invocation.await.unwrap().is_success());
    let repairs = a.queue.receive(32, 1).await.unwrap();
    assert_eq!(repairs.len(), 1, "A queued a repair");
    let repair: teams_cdr_functions::CallRecordJob =
        serde_json::from_str(&support::host::decode_text(&repairs[0].text)).unwrap();
    assert!(repair.repair);
    // (Received above only to look at it: it comes back after its 1 s of visibility.)
    let run = a.drain_advancing(time::Duration::seconds(5)).await;
    assert_eq!(run.failures, 0);

    // Whatever A wrote before it stopped, the record is v2 throughout.
    assert_eq!(int64(&record_row(&a, id).await, "Version"), 2);
    let rows = a.store.session_rows(id).await.unwrap();
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|e| int64(e, "Version") == 2));
    assert_eq!(stored(&a, id).await, served(&a.sim.tenant().records[id]));
}

#[tokio::test]
async fn record_given_up_and_stored_later_has_its_failure_row_removed() {
    let mut config = sim_config(0);
    config.tenant.call_records = 1;
    config.tenant.start = sim_start() - time::Duration::minutes(20);
    config.tenant.span = time::Duration::minutes(1);
    config.tenant.availability_delay = (time::Duration::minutes(60), time::Duration::minutes(60));
    let sim = start_sim(config).await;
    let id = sim.tenant().records.keys().next().unwrap().clone();
    let app = spawn_fetch_app(sim, |_, _| {}).await;
    // A notification so old that its `404` is final: given up at once.
    let mut old = app.job(&id);
    old.received_at = sim_start() - time::Duration::days(31);
    app.enqueue(&old).await;
    app.drain().await;
    assert_eq!(app.app_state_rows("FetchFailure").await.len(), 1);

    // The record appears and a new notification (or the sweep) brings it in.
    app.sim.clock().advance(time::Duration::minutes(90));
    app.enqueue_ids(std::slice::from_ref(&id)).await;
    app.drain().await;

    assert_eq!(
        stored(&app, &id).await,
        served(&app.sim.tenant().records[&id])
    );
    assert!(app.app_state_rows("FetchFailure").await.is_empty());
}

#[tokio::test]
async fn a_received_message_can_be_kept_hidden_then_let_go_and_a_stale_receipt_is_refused() {
    // What the standalone consumer does with a running message (renews its hiding) and a failed
    // one (hides it for `visibilityTimeout` only).
    let queue = support::fetch::azurite_queue(&support::unique_name("visibility")).await;
    queue.send_json(&json!({"n": 1}), 0).await.unwrap();
    let mut message = queue.receive(1, 2).await.unwrap().remove(0);
    let first_receipt = message.pop_receipt.clone();
    queue.set_visibility(&mut message, 30).await.unwrap();
    assert_ne!(message.pop_receipt, first_receipt, "a new receipt");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        queue.receive(1, 30).await.unwrap().is_empty(),
        "renewed: still hidden after its first 2 s"
    );
    // The old receipt no longer works; the new one does.
    let mut stale = message.clone();
    stale.pop_receipt = first_receipt;
    let refused = queue.set_visibility(&mut stale, 0).await;
    assert!(refused.is_err(), "{refused:?}");
    queue.set_visibility(&mut message, 0).await.unwrap();
    let again = queue.receive(1, 30).await.unwrap();
    assert_eq!(again.len(), 1, "let go: visible at once");
    assert_eq!(again[0].dequeue_count, 2);
    queue.delete(&again[0]).await.unwrap();
}
