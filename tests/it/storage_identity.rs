//! Identity-based storage: bearer tokens over HTTPS against Azurite (`--oauth basic`, certificate from a
//! throw-away test CA). Once in-process with an injected credential, once through the real binary with
//! the App Service managed-identity protocol, as it runs in Azure.

use reqwest::StatusCode;
use support::identity::{FakeManagedIdentity, STORAGE_AUDIENCE, TestCredential};
use support::{
    CLIENT_STATE, HandlerProcess, Setup, TENANT_ID, azurite_tls, callrecord_notification,
    spawn_app_with,
};
use teams_cdr_functions::{QueueStore, StorageAuth, StorageRetry, StoreError};

const CALL_ID: &str = "6d2a4e8c-0f3b-4b4e-9a55-5d3f1c2b7a10";
const USER_ASSIGNED_CLIENT_ID: &str = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170";

#[tokio::test]
async fn notification_is_enqueued_with_a_bearer_token_over_https() {
    let credential = TestCredential::new(STORAGE_AUDIENCE);
    let app = spawn_app_with(Setup::azurite_tls(StorageAuth::Token(credential.clone()))).await;

    let response = app
        .post_notification(callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID))
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let ids = app.enqueued_ids().await;
    assert_eq!(ids, vec![CALL_ID.to_owned()]);
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
async fn token_storage_refuses_gets_503_and_nothing_is_enqueued() {
    // A token for another audience: Azurite, like Azure Storage, answers 401.
    let credential = TestCredential::new("https://vault.azure.net");
    let app = spawn_app_with(Setup::azurite_tls(StorageAuth::Token(credential))).await;

    let response = app
        .post_notification(callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID))
        .await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("eyJ"),
        "the 503 body carries a token: {body}"
    );
    assert_eq!(app.drain_queue().await, vec![]);
}

#[tokio::test]
async fn bearer_tokens_are_never_sent_over_plain_http() {
    let plain = support::azurite();
    let result = QueueStore::new(
        &plain.queue_endpoint,
        "never-created",
        &StorageAuth::Token(TestCredential::new(STORAGE_AUDIENCE)),
        teams_cdr_functions::http_client(None).unwrap(),
        StorageRetry::default(),
    );
    assert!(matches!(result, Err(StoreError::Fatal(_))), "{result:?}");
}

#[tokio::test]
async fn handler_binary_uses_the_user_assigned_managed_identity_for_identity_based_storage() {
    let tls = azurite_tls();
    let identity = FakeManagedIdentity::start().await;
    let queue = &tls.azurite.queue_endpoint;
    let handler = HandlerProcess::start(&[
        ("GRAPH_TENANT_ID", TENANT_ID),
        ("NOTIFICATION_CLIENT_STATE", CLIENT_STATE),
        ("AzureWebJobsStorage__queueServiceUri", queue.as_str()),
        (
            "AzureWebJobsStorage__tableServiceUri",
            tls.azurite.table_endpoint.as_str(),
        ),
        ("AzureWebJobsStorage__credential", "managedidentity"),
        ("AzureWebJobsStorage__clientId", USER_ASSIGNED_CLIENT_ID),
        ("IDENTITY_ENDPOINT", &identity.endpoint),
        ("IDENTITY_HEADER", &identity.header_secret),
        ("EXTRA_CA_CERTS_FILE", tls.ca.ca_pem.to_str().unwrap()),
        ("RUST_LOG", "trace"),
    ])
    .await;

    let response = handler
        .host
        .forward(
            reqwest::Method::POST,
            "/api/notifications",
            Some("application/json"),
            callrecord_notification(CALL_ID, CLIENT_STATE, TENANT_ID),
        )
        .await;
    let status = response.status();
    let logs = handler.stop().await;

    assert_eq!(status, StatusCode::ACCEPTED, "handler logs:\n{logs}");
    // The binary wrote to the default queue, `callrecord-ids`; this binary's Azurite is its own.
    let reader = QueueStore::new(
        queue,
        "callrecord-ids",
        &StorageAuth::Token(TestCredential::new(STORAGE_AUDIENCE)),
        teams_cdr_functions::http_client(Some(&tls.ca.ca_pem)).unwrap(),
        StorageRetry::default(),
    )
    .unwrap();
    let messages = reader.receive(32, 300).await.unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");

    let requests = identity.requests.lock().unwrap().clone();
    assert!(
        !requests.is_empty(),
        "the managed-identity endpoint was never called"
    );
    for request in &requests {
        assert!(
            request.identity_header_ok,
            "X-IDENTITY-HEADER missing or wrong"
        );
        assert_eq!(request.resource.as_deref(), Some(STORAGE_AUDIENCE));
        assert_eq!(request.client_id.as_deref(), Some(USER_ASSIGNED_CLIENT_ID));
        assert_eq!(request.api_version.as_deref(), Some("2019-08-01"));
    }
    for secret in [CLIENT_STATE, identity.header_secret.as_str(), "eyJ"] {
        assert!(
            !logs.contains(secret),
            "a log line contains `{secret}`:\n{logs}"
        );
    }
}
