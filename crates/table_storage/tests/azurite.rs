//! The table client against the real Azurite: point reads and writes with their concurrency rules,
//! every property type, queries across pages, entity-group transactions, the limits checked before
//! sending, and each way of authenticating (our signed SAS and a given SAS over HTTP, bearer tokens
//! over HTTPS).

// Helpers in test crates panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use azurite_harness::{STORAGE_AUDIENCE, TestCredential, azurite, azurite_tls, unique_table_name};
use base64::Engine as _;
use table_storage::filter;
use table_storage::{
    BatchFailure, BatchOp, ETag, EdmValue, Entity, Query, StorageAuth, StorageRetry, StoreError,
    TableStore, WriteMode, error_chain,
};
use time::macros::datetime;
use url::Url;

/// The transport the client is handed: rustls with the platform's roots plus `extra_ca` (the test
/// CA of HTTPS Azurite), and bounded times, so that a hang fails the test instead of stalling it.
fn http_client(extra_ca: Option<&Path>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).expect("the test CA is readable");
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
    }
    builder.build()
}

/// Our own account SAS signed from Azurite's key (how the app authenticates with a connection string).
fn key_auth() -> StorageAuth {
    StorageAuth::SharedKey {
        account: azurite_harness::ACCOUNT.to_owned(),
        key: base64::engine::general_purpose::STANDARD
            .decode(azurite_harness::ACCOUNT_KEY)
            .unwrap()
            .into(),
    }
}

fn store_at(endpoint: &Url, name: &str, auth: &StorageAuth) -> TableStore {
    TableStore::new(
        endpoint,
        name,
        auth,
        http_client(None).unwrap(),
        StorageRetry::default(),
    )
    .unwrap()
}

/// A new, existing table of this binary's Azurite.
async fn new_table(prefix: &str) -> TableStore {
    let store = store_at(
        &azurite().table_endpoint,
        &unique_table_name(prefix),
        &key_auth(),
    );
    store.ensure_exists().await.unwrap();
    store
}

/// A store whose requests could only fail to connect: an error other than `InvalidInput` from it
/// would mean a request was attempted.
fn unreachable_store() -> TableStore {
    let port = azurite_harness::free_port();
    let endpoint = Url::parse(&format!("http://127.0.0.1:{port}/devstoreaccount1")).unwrap();
    TableStore::new(
        &endpoint,
        "Unreachable",
        &key_auth(),
        http_client(None).unwrap(),
        StorageRetry {
            max_retries: 0,
            initial_delay: std::time::Duration::from_millis(1),
            max_elapsed: std::time::Duration::from_millis(100),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn ensure_exists_succeeds_when_the_table_already_exists() {
    let store = store_at(
        &azurite().table_endpoint,
        &unique_table_name("twice"),
        &key_auth(),
    );

    store.ensure_exists().await.unwrap();
    store.ensure_exists().await.unwrap();

    assert!(store.query_all(&Query::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn insert_fails_with_conflict_when_the_entity_exists() {
    let store = new_table("conflict").await;
    let entity = Entity::new("p", "r").with("N", 1);
    store.insert(&entity).await.unwrap();

    let second = store.insert(&entity.clone().with("N", 2)).await;

    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    let stored = store.get("p", "r").await.unwrap().unwrap();
    assert_eq!(stored.get_i32("N"), Some(1));
}

#[tokio::test]
async fn get_returns_none_when_the_entity_is_missing() {
    let store = new_table("missing").await;

    assert_eq!(store.get("p", "nothing").await.unwrap(), None);
}

#[tokio::test]
async fn get_fails_with_not_found_when_the_table_is_missing() {
    let store = store_at(
        &azurite().table_endpoint,
        &unique_table_name("never"),
        &key_auth(),
    );

    let result = store.get("p", "r").await;

    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
}

#[tokio::test]
async fn insert_returns_the_etag_that_get_reports() {
    let store = new_table("etag").await;

    let etag = store.insert(&Entity::new("p", "r")).await.unwrap();

    let stored = store.get("p", "r").await.unwrap().unwrap();
    assert_eq!(stored.etag, Some(etag));
    assert!(stored.timestamp.is_some());
}

#[tokio::test]
async fn upsert_replace_drops_missing_properties_and_merge_keeps_them() {
    let store = new_table("upsert").await;
    let original = Entity::new("p", "r").with("A", "a").with("B", "b");
    store.upsert(&original, WriteMode::Replace).await.unwrap();

    store
        .upsert(&Entity::new("p", "r").with("C", "c"), WriteMode::Merge)
        .await
        .unwrap();
    let merged = store.get("p", "r").await.unwrap().unwrap();
    store
        .upsert(&Entity::new("p", "r").with("D", "d"), WriteMode::Replace)
        .await
        .unwrap();
    let replaced = store.get("p", "r").await.unwrap().unwrap();

    let names = |e: &Entity| e.properties.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&merged), ["A", "B", "C"]);
    assert_eq!(names(&replaced), ["D"]);
}

#[tokio::test]
async fn update_fails_with_precondition_failed_when_the_etag_is_stale() {
    let store = new_table("stale").await;
    let first = store
        .insert(&Entity::new("p", "r").with("N", 1))
        .await
        .unwrap();
    let second = store
        .update(
            &Entity::new("p", "r").with("N", 2),
            WriteMode::Merge,
            &first,
        )
        .await
        .unwrap();

    let stale = store
        .update(
            &Entity::new("p", "r").with("N", 3),
            WriteMode::Replace,
            &first,
        )
        .await;

    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed)),
        "{stale:?}"
    );
    assert_ne!(first, second);
    let stored = store.get("p", "r").await.unwrap().unwrap();
    assert_eq!(stored.get_i32("N"), Some(2));
    assert_eq!(stored.etag, Some(second));
}

#[tokio::test]
async fn update_fails_with_not_found_when_the_entity_is_missing() {
    let store = new_table("updmissing").await;

    let result = store
        .update(&Entity::new("p", "r"), WriteMode::Merge, &ETag::any())
        .await;

    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
}

#[tokio::test]
async fn delete_is_idempotent_and_honours_the_etag() {
    let store = new_table("delete").await;
    let first = store.insert(&Entity::new("p", "r")).await.unwrap();
    let current = store
        .upsert(&Entity::new("p", "r").with("N", 1), WriteMode::Merge)
        .await
        .unwrap();

    let stale = store.delete("p", "r", Some(&first)).await;
    let deleted = store.delete("p", "r", Some(&current)).await.unwrap();
    let again = store.delete("p", "r", None).await.unwrap();

    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed)),
        "{stale:?}"
    );
    assert!(deleted);
    assert!(!again);
    assert_eq!(store.get("p", "r").await.unwrap(), None);
}

#[tokio::test]
async fn every_property_type_round_trips_exactly() {
    let store = new_table("types").await;
    let binary: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let entity = Entity::new("p", "r")
        .with("Text", "ünïcødé 'quoted' 100% \"x\" \\ 😀\n")
        .with("Empty", "")
        .with("Int32Min", i32::MIN)
        .with("Int32Max", i32::MAX)
        .with("Int64Max", i64::MAX)
        .with("Int64Min", i64::MIN)
        .with("Int64Small", 5_i64)
        .with("DoubleFraction", 0.1)
        .with("DoubleWhole", 1.0)
        .with("DoubleNegativeWhole", -42.0)
        .with("DoubleHuge", 1.5e300)
        .with("True", true)
        .with("False", false)
        .with("When", datetime!(2024-02-29 23:59:59.1234567 UTC))
        .with("Epoch", datetime!(1601-01-01 00:00 UTC))
        .with(
            "Id",
            EdmValue::Guid("c9da6455-213d-42c9-9a79-3e9149a57833".into()),
        )
        .with("Bytes", binary)
        .with("NoBytes", Vec::<u8>::new());

    store.insert(&entity).await.unwrap();
    let stored = store.get("p", "r").await.unwrap().unwrap();
    let queried = store
        .query_all(&Query::new().filter(filter::eq("RowKey", "r")))
        .await
        .unwrap();

    for read in [&stored, &queried[0]] {
        for (name, value) in &entity.properties {
            assert_eq!(read.get(name), Some(value), "property {name}");
        }
        assert_eq!(read.properties.len(), entity.properties.len());
    }
}

#[tokio::test]
async fn non_finite_doubles_round_trip() {
    let store = new_table("nonfinite").await;
    let entity = Entity::new("p", "r")
        .with("Inf", f64::INFINITY)
        .with("NegInf", f64::NEG_INFINITY)
        .with("NaN", f64::NAN);

    store.insert(&entity).await.unwrap();
    let stored = store.get("p", "r").await.unwrap().unwrap();

    assert_eq!(stored.get_f64("Inf"), Some(f64::INFINITY));
    assert_eq!(stored.get_f64("NegInf"), Some(f64::NEG_INFINITY));
    assert!(stored.get_f64("NaN").unwrap().is_nan());
}

#[tokio::test]
async fn keys_with_quotes_spaces_percent_and_unicode_work_in_every_operation() {
    let store = new_table("keys").await;
    let keys = [
        ("O'Brien", "it's 100% done"),
        ("a b", "c+d&e=f"),
        ("ünïcødé 😀", "''"),
        ("", ""),
        ("%27", "%2F;:@,$!*()"),
    ];
    for (pk, rk) in keys {
        let entity = Entity::new(pk, rk).with("PK", pk).with("RK", rk);
        let etag = store.insert(&entity).await.unwrap();
        let read = store.get(pk, rk).await.unwrap();
        let read = read.unwrap_or_else(|| panic!("{pk:?}/{rk:?} not found"));
        assert_eq!(
            (read.partition_key.as_str(), read.row_key.as_str()),
            (pk, rk)
        );

        let queried = store
            .query_all(&Query::new().filter(filter::and(
                filter::eq("PartitionKey", pk),
                filter::eq("RowKey", rk),
            )))
            .await
            .unwrap();
        assert_eq!(queried.len(), 1, "{pk:?}/{rk:?}");

        let etag = store
            .update(&entity.clone().with("N", 1), WriteMode::Merge, &etag)
            .await
            .unwrap();
        assert!(
            store.delete(pk, rk, Some(&etag)).await.unwrap(),
            "{pk:?}/{rk:?}"
        );
    }
}

#[tokio::test]
async fn query_applies_filter_select_and_top() {
    let store = new_table("query").await;
    let ops = (0..20)
        .map(|i| {
            BatchOp::Insert(
                Entity::new("p", format!("r{i:02}"))
                    .with("N", i)
                    .with("Even", i % 2 == 0)
                    .with("Other", "x"),
            )
        })
        .collect();
    store.batch("p", ops).await.unwrap();

    let even = Query::new()
        .filter(filter::and(
            filter::eq("Even", true),
            filter::cmp("N", filter::Op::Ge, 10),
        ))
        .select(["N"]);
    let page = store.query(&even.clone().top(3)).await.unwrap();
    let all = store.query_all(&even.top(3)).await.unwrap();

    assert_eq!(page.entities.len(), 3);
    assert!(page.continuation.is_some());
    let ns: Vec<i32> = all.iter().map(|e| e.get_i32("N").unwrap()).collect();
    assert_eq!(ns, [10, 12, 14, 16, 18]);
    for e in &all {
        assert_eq!(e.partition_key, "p", "keys are always selected");
        assert!(e.row_key.starts_with('r'));
        assert_eq!(e.get("Other"), None, "not selected");
        assert_eq!(e.get("Even"), None, "not selected");
    }
    let prefixed = store
        .query_all(&Query::new().filter(filter::starts_with("RowKey", "r1")))
        .await
        .unwrap();
    assert_eq!(prefixed.len(), 10);
}

#[tokio::test]
async fn query_all_returns_each_of_1205_entities_once_across_pages() {
    let store = new_table("paging").await;
    let rows: Vec<(String, String)> = (0..1205)
        .map(|i| (format!("p{:02}", i / 100), format!("r{i:04}")))
        .collect();
    for chunk in rows.chunks(100) {
        let pk = &chunk[0].0;
        let ops = chunk
            .iter()
            .map(|(pk, rk)| BatchOp::Insert(Entity::new(pk, rk)))
            .collect();
        store.batch(pk, ops).await.unwrap();
    }

    let first = store.query(&Query::new()).await.unwrap();
    let all = store.query_all(&Query::new()).await.unwrap();

    assert_eq!(first.entities.len(), 1000, "Azurite's page size");
    assert!(first.continuation.is_some());
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|e| (e.partition_key.clone(), e.row_key.clone()))
        .collect();
    assert_eq!(keys.len(), 1205);
    let unique: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), 1205, "an entity was returned twice");
    assert_eq!(unique, rows.into_iter().collect());
}

#[tokio::test]
async fn batch_of_100_upserts_is_written_with_an_etag_each() {
    let store = new_table("batch").await;
    let ops = (0..100)
        .map(|i| {
            BatchOp::Upsert(
                Entity::new("p", format!("r{i:03}")).with("N", i),
                WriteMode::Merge,
            )
        })
        .collect();

    let etags = store.batch("p", ops).await.unwrap();

    assert_eq!(etags.len(), 100);
    assert!(etags.iter().all(Option::is_some));
    let stored = store.query_all(&Query::new()).await.unwrap();
    assert_eq!(stored.len(), 100);
    let r42 = store.get("p", "r042").await.unwrap().unwrap();
    assert_eq!(r42.etag, etags[42]);
}

#[tokio::test]
async fn batch_mixes_inserts_updates_and_deletes() {
    let store = new_table("mixed").await;
    let etag = store
        .insert(&Entity::new("p", "update").with("N", 1))
        .await
        .unwrap();
    store.insert(&Entity::new("p", "delete")).await.unwrap();
    store
        .insert(&Entity::new("p", "replace").with("Old", 1))
        .await
        .unwrap();

    let etags = store
        .batch(
            "p",
            vec![
                BatchOp::Insert(Entity::new("p", "new")),
                BatchOp::Update(
                    Entity::new("p", "update").with("N", 2),
                    WriteMode::Merge,
                    etag,
                ),
                BatchOp::Delete {
                    rk: "delete".into(),
                    if_match: None,
                },
                BatchOp::Upsert(
                    Entity::new("p", "replace").with("New", 1),
                    WriteMode::Replace,
                ),
            ],
        )
        .await
        .unwrap();

    assert!(etags[0].is_some() && etags[1].is_some() && etags[3].is_some());
    assert_eq!(etags[2], None);
    assert!(store.get("p", "new").await.unwrap().is_some());
    assert_eq!(
        store
            .get("p", "update")
            .await
            .unwrap()
            .unwrap()
            .get_i32("N"),
        Some(2)
    );
    assert_eq!(store.get("p", "delete").await.unwrap(), None);
    let replaced = store.get("p", "replace").await.unwrap().unwrap();
    assert_eq!(replaced.properties.keys().collect::<Vec<_>>(), ["New"]);
}

#[tokio::test]
async fn batch_whose_third_operation_conflicts_writes_nothing_and_names_index_2() {
    let store = new_table("atomic").await;
    store
        .insert(&Entity::new("p", "c").with("N", 0))
        .await
        .unwrap();
    let ops = ["a", "b", "c", "d"]
        .iter()
        .map(|rk| BatchOp::Insert(Entity::new("p", *rk).with("N", 1)))
        .collect();

    let result = store.batch("p", ops).await;

    assert!(
        matches!(
            result,
            Err(StoreError::BatchFailed {
                index: 2,
                kind: BatchFailure::Conflict,
                ..
            })
        ),
        "{result:?}"
    );
    for rk in ["a", "b", "d"] {
        assert_eq!(store.get("p", rk).await.unwrap(), None, "{rk} was written");
    }
    assert_eq!(
        store.get("p", "c").await.unwrap().unwrap().get_i32("N"),
        Some(0)
    );
}

#[tokio::test]
async fn batch_with_a_stale_etag_fails_with_precondition_failed_at_its_index() {
    let store = new_table("batchstale").await;
    let stale = store.insert(&Entity::new("p", "x")).await.unwrap();
    store
        .upsert(&Entity::new("p", "x").with("N", 1), WriteMode::Merge)
        .await
        .unwrap();

    let result = store
        .batch(
            "p",
            vec![
                BatchOp::Insert(Entity::new("p", "y")),
                BatchOp::Update(Entity::new("p", "x"), WriteMode::Replace, stale),
            ],
        )
        .await;

    assert!(
        matches!(
            result,
            Err(StoreError::BatchFailed {
                index: 1,
                kind: BatchFailure::PreconditionFailed,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(store.get("p", "y").await.unwrap(), None);
}

#[tokio::test]
async fn invalid_batches_are_rejected_without_a_request() {
    let store = unreachable_store();
    let inserts = |n: usize, pk: &str| -> Vec<BatchOp> {
        (0..n)
            .map(|i| BatchOp::Insert(Entity::new(pk, format!("r{i}"))))
            .collect()
    };
    let mut mixed = inserts(2, "p");
    mixed.push(BatchOp::Insert(Entity::new("q", "x")));
    let mut duplicate = inserts(2, "p");
    duplicate.push(BatchOp::Delete {
        rk: "r0".into(),
        if_match: None,
    });
    // 100 entities of ~60 KiB of base64 each: valid one by one, over 4 MiB together.
    let large: Vec<BatchOp> = (0..100)
        .map(|i| BatchOp::Insert(Entity::new("p", format!("r{i}")).with("B", vec![7_u8; 45_000])))
        .collect();

    for (case, ops) in [
        ("101 operations", inserts(101, "p")),
        ("mixed partitions", mixed),
        ("one row key twice", duplicate),
        ("body over 4 MiB", large),
    ] {
        let result = store.batch("p", ops).await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "{case}: {result:?}"
        );
    }
}

#[tokio::test]
async fn invalid_entities_and_keys_are_rejected_without_a_request() {
    let store = unreachable_store();
    let mut too_many = Entity::new("p", "r");
    for i in 0..253 {
        too_many.set(format!("P{i}"), i);
    }
    let mut too_big = Entity::new("p", "r");
    for i in 0..17 {
        too_big.set(format!("B{i}"), vec![0_u8; 64 * 1024]);
    }
    let cases = [
        (
            "string over 32K UTF-16",
            Entity::new("p", "r").with("S", "x".repeat(32 * 1024 + 1)),
        ),
        (
            "binary over 64 KiB",
            Entity::new("p", "r").with("B", vec![0_u8; 64 * 1024 + 1]),
        ),
        ("253 properties", too_many),
        ("over 1 MiB", too_big),
        ("slash in key", Entity::new("a/b", "r")),
        ("key over 1 KiB", Entity::new("p", "k".repeat(513))),
        ("bad property name", Entity::new("p", "r").with("a-b", 1)),
    ];

    for (case, entity) in cases {
        let insert = store.insert(&entity).await;
        let upsert = store.upsert(&entity, WriteMode::Merge).await;
        for result in [insert, upsert] {
            assert!(
                matches!(&result, Err(StoreError::InvalidInput(_))),
                "{case}: {result:?}"
            );
        }
    }
    for (pk, rk) in [
        ("p", "a#b"),
        ("a?b", "r"),
        ("p", "tab\there"),
        ("p", "\u{85}"),
    ] {
        let get = store.get(pk, rk).await;
        assert!(
            matches!(get, Err(StoreError::InvalidInput(_))),
            "{pk:?}/{rk:?}: {get:?}"
        );
        let delete = store.delete(pk, rk, None).await;
        assert!(
            matches!(delete, Err(StoreError::InvalidInput(_))),
            "{pk:?}/{rk:?}"
        );
    }
}

#[tokio::test]
async fn errors_never_quote_the_sas_signature() {
    let store = unreachable_store();

    let err = store.get("p", "r").await.unwrap_err();

    assert!(matches!(err, StoreError::Transient(_)), "{err:?}");
    let text = format!("{err:?} {}", error_chain(&err));
    assert!(!text.contains("sig="), "{text}");
}

#[tokio::test]
async fn a_given_sas_over_http_reads_and_writes_entities() {
    // The SAS from Azurite's SAS connection string: read, add, update, process (no create).
    let connection = azurite().sas_connection_string();
    let sas = connection
        .split(';')
        .find_map(|part| part.strip_prefix("SharedAccessSignature="))
        .unwrap();
    let existing = new_table("givensas").await;
    let store = store_at(
        &azurite().table_endpoint,
        existing.name(),
        &StorageAuth::Sas(sas.to_owned().into()),
    );

    let etag = store
        .insert(&Entity::new("p", "r").with("N", 1))
        .await
        .unwrap();
    let merged = store
        .update(&Entity::new("p", "r").with("M", 2), WriteMode::Merge, &etag)
        .await
        .unwrap();
    let read = store.get("p", "r").await.unwrap().unwrap();
    let create = store_at(
        &azurite().table_endpoint,
        &unique_table_name("nocreate"),
        &StorageAuth::Sas(sas.to_owned().into()),
    )
    .ensure_exists()
    .await;

    assert_eq!(read.etag, Some(merged));
    assert_eq!((read.get_i32("N"), read.get_i32("M")), (Some(1), Some(2)));
    assert!(
        matches!(create, Err(StoreError::Unauthorized { status: 403, .. })),
        "a SAS without create permission: {create:?}"
    );
}

#[tokio::test]
async fn bearer_token_over_https_creates_writes_reads_queries_and_batches() {
    let tls = azurite_tls();
    let credential = TestCredential::new(STORAGE_AUDIENCE);
    let store = TableStore::new(
        &tls.azurite.table_endpoint,
        &unique_table_name("token"),
        &StorageAuth::Token(credential.clone()),
        http_client(Some(&tls.ca.ca_pem)).unwrap(),
        StorageRetry::default(),
    )
    .unwrap();

    store.ensure_exists().await.unwrap();
    store
        .insert(&Entity::new("p", "one").with("N", 1_i64))
        .await
        .unwrap();
    let etags = store
        .batch(
            "p",
            vec![
                BatchOp::Insert(Entity::new("p", "two")),
                BatchOp::Upsert(Entity::new("p", "three"), WriteMode::Replace),
            ],
        )
        .await
        .unwrap();
    let one = store.get("p", "one").await.unwrap().unwrap();
    let all = store.query_all(&Query::new()).await.unwrap();

    assert_eq!(etags.len(), 2);
    assert_eq!(one.get_i64("N"), Some(1));
    assert_eq!(all.len(), 3);
    let scopes = credential.calls.lock().unwrap().clone();
    assert!(
        !scopes.is_empty(),
        "the credential was never asked for a token"
    );
    assert!(
        scopes
            .iter()
            .all(|s| s == &vec!["https://storage.azure.com/.default".to_owned()]),
        "{scopes:?}"
    );
}

#[tokio::test]
async fn bearer_token_for_another_audience_is_unauthorized() {
    let tls = azurite_tls();
    let store = TableStore::new(
        &tls.azurite.table_endpoint,
        &unique_table_name("wrongaud"),
        &StorageAuth::Token(TestCredential::new("https://vault.azure.net")),
        http_client(Some(&tls.ca.ca_pem)).unwrap(),
        StorageRetry::default(),
    )
    .unwrap();

    let result = store.ensure_exists().await;

    assert!(
        matches!(result, Err(StoreError::Unauthorized { .. })),
        "{result:?}"
    );
    let text = format!("{:?}", result.unwrap_err());
    assert!(!text.contains("eyJ"), "the error quotes the token: {text}");
}

#[tokio::test]
async fn bearer_tokens_are_never_sent_over_plain_http() {
    let result = TableStore::new(
        &azurite().table_endpoint,
        "NeverCreated",
        &StorageAuth::Token(TestCredential::new(STORAGE_AUDIENCE)),
        http_client(None).unwrap(),
        StorageRetry::default(),
    );

    assert!(matches!(result, Err(StoreError::Fatal(_))), "{result:?}");
}
