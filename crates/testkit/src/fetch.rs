//! `spawn_fetch_app()`: the real app on port 0 with its own queue and tables, reading Graph from a
//! simulator, driven by the host emulator's queue trigger.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use table_storage::EdmValue;
use table_storage::{Entity, Query, TableStore};
use teams_cdr_functions::config::{Config, RunMode, TableNames};
use teams_cdr_functions::{
    App, AppOptions, CallRecordJob, CallRecordStore, QueueStore, StorageRetry,
};
use teams_cdr_sim::RunningSim;
use teams_cdr_sim::tenant::{CallRecord, RecordVersion};

use super::graph::sim_start;

use super::graph::{SimCredential, SimTime};
use super::host::{HostEmulator, QueueRun, QueueTrigger};
use super::{CLIENT_STATE, TENANT_ID, azurite, shared_key, unique_name, unique_table_name};

/// The tables of one test.
pub struct Tables {
    pub records: TableStore,
    pub sessions: TableStore,
    pub bodies: TableStore,
    pub app_state: TableStore,
    pub pstn: TableStore,
    pub direct_routing: TableStore,
    pub users: TableStore,
}

impl Tables {
    /// The tables named `names`, read with the Azurite account key.
    pub fn of(names: &TableNames) -> Self {
        Self {
            records: azurite_table(&names.call_records),
            sessions: azurite_table(&names.sessions),
            bodies: azurite_table(&names.bodies),
            app_state: azurite_table(&names.app_state),
            pstn: azurite_table(&names.pstn_calls),
            direct_routing: azurite_table(&names.direct_routing_calls),
            users: azurite_table(&names.users),
        }
    }

    /// The app's own view of them, to read stored documents as the read API will.
    pub fn store(&self) -> CallRecordStore {
        CallRecordStore::new(
            self.records.clone(),
            self.sessions.clone(),
            self.bodies.clone(),
            self.app_state.clone(),
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }
}

/// A queue of this binary's Azurite, created if missing, read with the account key.
pub async fn azurite_queue(name: &str) -> QueueStore {
    let queue = QueueStore::new(
        &azurite().queue_endpoint,
        name,
        &shared_key(),
        teams_cdr_functions::http_client(None).unwrap(),
        StorageRetry::default(),
    )
    .unwrap();
    queue.ensure_exists().await.unwrap();
    queue
}

/// A table of this binary's Azurite, read with the account key.
pub fn azurite_table(name: &str) -> TableStore {
    TableStore::new(
        &azurite().table_endpoint,
        name,
        &shared_key(),
        teams_cdr_functions::http_client(None).unwrap(),
        StorageRetry::default(),
    )
    .unwrap()
}

pub struct FetchApp {
    pub host: HostEmulator,
    pub sim: Arc<RunningSim>,
    /// The app's table names (a second app on the same tables takes them).
    pub names: TableNames,
    pub queue: QueueStore,
    pub poison: QueueStore,
    pub tables: Tables,
    pub store: CallRecordStore,
}

/// Spawns the app against `sim`, after `tweak` has adjusted its configuration and options (the
/// defaults: the simulator's tokens and clock, queue delays capped at 0 so that tests never wait for
/// a hidden message; a message due later is put back until the test moves the clock).
pub async fn spawn_fetch_app(
    sim: impl Into<Arc<RunningSim>>,
    tweak: impl FnOnce(&mut Config, &mut AppOptions),
) -> FetchApp {
    let sim = sim.into();
    teams_cdr_functions::telemetry::init_for_tests();
    let azurite = azurite();
    let vars = vec![
        ("FUNCTIONS_CUSTOMHANDLER_PORT".to_owned(), "0".to_owned()),
        ("GRAPH_TENANT_ID".to_owned(), TENANT_ID.to_owned()),
        (
            "NOTIFICATION_CLIENT_STATE".to_owned(),
            CLIENT_STATE.to_owned(),
        ),
        (
            "AzureWebJobsStorage".to_owned(),
            azurite.connection_string(),
        ),
        ("GRAPH_BASE_URL".to_owned(), sim.base_url().to_owned()),
    ];
    let mut config = Config::from_vars(RunMode::CustomHandler, vars).expect("test configuration");
    let queue_name = unique_name("fetch");
    config.notifications.queue = queue_name.clone();
    let prefix = unique_table_name("t");
    config.tables = teams_cdr_functions::config::TableNames::with_prefix(&prefix);
    let mut options = AppOptions {
        graph_credential: Some(SimCredential::new(&sim)),
        clock: Arc::new(SimTime(sim.clock().clone())),
        ..AppOptions::default()
    };
    config.fetch.max_queue_delay = Duration::ZERO;
    tweak(&mut config, &mut options);
    let names = config.tables.clone();

    let app = App::build_with(config, options).await.expect("app builds");
    let addr = app.local_addr().unwrap();
    tokio::spawn(app.run_until(std::future::pending()));
    let host = HostEmulator::new(format!("http://{addr}"));
    host.wait_ready(Duration::from_secs(10)).await;

    let queue_store = azurite_queue(&queue_name).await;
    let poison = azurite_queue(&format!("{queue_name}-poison")).await;
    let tables = Tables::of(&names);
    let store = tables.store();
    FetchApp {
        host,
        sim,
        names,
        queue: queue_store,
        poison,
        tables,
        store,
    }
}

impl FetchApp {
    /// A job as the webhook would enqueue it now (tenant time).
    pub fn job(&self, id: &str) -> CallRecordJob {
        CallRecordJob {
            id: id.to_owned(),
            change_type: "created".to_owned(),
            tenant_id: TENANT_ID.to_owned(),
            subscription_id: "sub".to_owned(),
            received_at: self.sim.clock().now(),
            attempt: 0,
            not_before: None,
            repair: false,
        }
    }

    pub async fn enqueue(&self, job: &CallRecordJob) {
        self.queue.send_json(job, 0).await.unwrap();
    }

    pub async fn enqueue_ids(&self, ids: &[String]) {
        for id in ids {
            self.enqueue(&self.job(id)).await;
        }
    }

    /// One `PullReports` run, as the host's timer trigger invokes it; the status it answered.
    pub async fn pull_reports(&self) -> u16 {
        self.host
            .invoke("PullReports", &super::host::timer_invocation(false))
            .await
            .status()
            .as_u16()
    }

    /// One `SyncDirectory` run, as the host's timer trigger invokes it; the status it answered.
    pub async fn sync_directory(&self) -> u16 {
        self.host
            .invoke("SyncDirectory", &super::host::timer_invocation(false))
            .await
            .status()
            .as_u16()
    }

    /// The host's queue trigger for `FetchCallRecord` on this app's queue.
    pub fn trigger(&self) -> QueueTrigger<'_> {
        QueueTrigger {
            host: &self.host,
            function: "FetchCallRecord",
            binding: "job",
            queue: &self.queue,
            poison: &self.poison,
            max_dequeue_count: 5,
            visibility_secs: 1,
        }
    }

    /// Runs the queue trigger until the queue is empty.
    pub async fn drain(&self) -> QueueRun {
        self.trigger().drain(Duration::from_secs(120), || {}).await
    }

    /// Runs the queue trigger until the queue is empty, moving tenant time (the app's clock here) on
    /// by `step` before each round, so that jobs put back for later become due.
    pub async fn drain_advancing(&self, step: time::Duration) -> QueueRun {
        let clock = self.sim.clock().clone();
        self.trigger()
            .drain(Duration::from_secs(120), || clock.advance(step))
            .await
    }

    /// The `AppState` rows of one partition (`FetchFailure`, `DroppedMessage`, `GraphStatus`).
    pub async fn app_state_rows(&self, partition: &str) -> Vec<Entity> {
        self.rows(&self.tables.app_state)
            .await
            .into_iter()
            .filter(|e| e.partition_key == partition)
            .collect()
    }

    /// Every row of a table (tests only: a full scan).
    pub async fn rows(&self, table: &TableStore) -> Vec<Entity> {
        table.query_all(&Query::new()).await.unwrap_or_default()
    }

    /// The record ids the simulated tenant has.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.sim.tenant().records.keys().cloned().collect()
    }
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&super::fixture(&format!("graph/{name}"))).unwrap()
}

/// Version `version` of record `id`, serving `base` (a documented payload; its own sessions and
/// paging removed) with `sessions` and `participants`, visible from `issued`.
pub fn record_version(
    id: &str,
    version: u64,
    mut base: Value,
    sessions: Vec<Value>,
    participants: Vec<Value>,
    issued: time::OffsetDateTime,
) -> RecordVersion {
    let object = base.as_object_mut().unwrap();
    object.remove("sessions");
    object.remove("sessions@odata.nextLink");
    object.insert("id".into(), json!(id));
    object.insert("version".into(), json!(version));
    RecordVersion {
        version,
        issued_at: issued,
        base,
        sessions: Arc::new(sessions),
        participants: Arc::new(participants),
    }
}

/// A simulator record of one version, serving `base` as [`record_version`] does (keeping its
/// `version`, 1 if it has none).
pub fn sim_record(
    id: &str,
    base: Value,
    sessions: Vec<Value>,
    participants: Vec<Value>,
) -> CallRecord {
    let version = base.get("version").and_then(Value::as_u64).unwrap_or(1);
    CallRecord {
        id: id.to_owned(),
        start: sim_start() - time::Duration::hours(2),
        end: sim_start() - time::Duration::hours(1),
        versions: vec![record_version(
            id,
            version,
            base,
            sessions,
            participants,
            sim_start() - time::Duration::minutes(30),
        )],
    }
}

/// What the stored document must equal: the record's properties, every session and every participant.
pub fn served(record: &CallRecord) -> Value {
    let version = record.versions.last().unwrap();
    let mut expected = version.base.clone();
    let object = expected.as_object_mut().unwrap();
    object.insert("sessions".into(), Value::Array((*version.sessions).clone()));
    object.insert(
        "participants_v2".into(),
        Value::Array((*version.participants).clone()),
    );
    expected
}

pub async fn stored(app: &FetchApp, id: &str) -> Value {
    let document = app
        .store
        .document(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} not stored"));
    serde_json::from_slice(&document).unwrap()
}

pub fn array_len(document: &Value, key: &str) -> usize {
    document[key].as_array().map_or(0, Vec::len)
}

pub async fn record_row(app: &FetchApp, id: &str) -> Entity {
    let rows: Vec<Entity> = app
        .rows(&app.tables.records)
        .await
        .into_iter()
        .filter(|e| e.row_key == id)
        .collect();
    assert_eq!(rows.len(), 1, "{id}: one CallRecords row, got {rows:?}");
    rows.into_iter().next().unwrap()
}

pub fn int64(entity: &Entity, name: &str) -> i64 {
    match entity.properties.get(name) {
        Some(EdmValue::Int64(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}
