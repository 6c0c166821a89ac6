//! Every bad input the app has a rule for, with the answer each must get: sent all at once by
//! `tests/it/bad_input.rs` during a busy run and by the reliability day while its faults play out.

use reqwest::Method;
use serde_json::json;

use super::{CLIENT_STATE, TENANT_ID, callrecord_notification};

/// The key the guarded routes accept (`READ_API_KEYS`).
pub const KEY: &str = "bad-input-key";

/// One bad request and the status it must get.
pub struct Case {
    pub what: &'static str,
    pub method: Method,
    pub path: String,
    pub key: Option<&'static str>,
    pub body: String,
    pub status: u16,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    key: Option<&'static str>,
    body: impl Into<String>,
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        key,
        body: body.into(),
        status,
    }
}

/// Every bad request, with its status.
pub fn cases() -> Vec<Case> {
    let id = "2f1a1100-b174-40a0-aba7-0b405e01ed92";
    let notification = |state: &str, tenant: &str| callrecord_notification(id, state, tenant);
    let hostile_resource = notification(CLIENT_STATE, TENANT_ID).replace(
        &format!("communications/callRecords/{id}"),
        "communications/callRecords/..%2F..%2Fsubscriptions",
    );
    let hostile_id = notification(CLIENT_STATE, TENANT_ID).replace(id, "a\\u0000b/../c");
    let generic = super::fixture("graph/change-notification-generic-message.json")
        .replace("secretClientValue", CLIENT_STATE)
        .replace("84bd8158-6d4d-4958-8b9f-9d6445542f95", TENANT_ID);
    let oversized = format!(
        "{{\"value\":[],\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 1)
    );
    let lifecycle_foreign = super::fixture("graph/lifecycle-reauthorizationrequired.json")
        .replace("{secret client state}", CLIENT_STATE);
    let post = Method::POST;
    let get = Method::GET;
    let many_ids: Vec<String> = (0..1001)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    vec![
        // The webhooks (anonymous): bad bodies are refused; bad items are accepted and dropped,
        // so that Graph does not retry them.
        case(
            "malformed notification",
            post.clone(),
            "/api/notifications",
            None,
            "{",
            400,
        ),
        case(
            "oversized notification",
            post.clone(),
            "/api/notifications",
            None,
            oversized,
            413,
        ),
        case(
            "not a collection",
            post.clone(),
            "/api/notifications",
            None,
            "[1,2]",
            400,
        ),
        case(
            "wrong client state",
            post.clone(),
            "/api/notifications",
            None,
            notification("an-old-client-state", TENANT_ID),
            202,
        ),
        case(
            "foreign tenant",
            post.clone(),
            "/api/notifications",
            None,
            notification(CLIENT_STATE, "00000000-0000-0000-0000-000000000001"),
            202,
        ),
        case(
            "hostile resource",
            post.clone(),
            "/api/notifications",
            None,
            hostile_resource,
            202,
        ),
        case(
            "hostile id",
            post.clone(),
            "/api/notifications",
            None,
            hostile_id,
            202,
        ),
        case(
            "not a call record",
            post.clone(),
            "/api/notifications",
            None,
            generic,
            202,
        ),
        case(
            "malformed lifecycle event",
            post.clone(),
            "/api/lifecycle",
            None,
            "{",
            400,
        ),
        case(
            "lifecycle event of a foreign subscription",
            post.clone(),
            "/api/lifecycle",
            None,
            lifecycle_foreign,
            202,
        ),
        // Keys.
        case(
            "read API without a key",
            get.clone(),
            "/api/v1/callrecords",
            None,
            "",
            401,
        ),
        case(
            "read API, wrong key",
            get.clone(),
            "/api/v1/callrecords",
            Some("wrong"),
            "",
            401,
        ),
        case(
            "health details without a key",
            get.clone(),
            "/api/health/details",
            None,
            "",
            401,
        ),
        case(
            "backfill without a key",
            post.clone(),
            "/api/ops/backfill?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            None,
            "",
            401,
        ),
        case(
            "reprocess, wrong key",
            post.clone(),
            "/api/ops/reprocess",
            Some("wrong"),
            json!([id]).to_string(),
            401,
        ),
        case(
            "timer run, wrong key",
            post.clone(),
            "/admin/functions/Purge",
            Some("wrong"),
            "",
            401,
        ),
        case(
            "timer run, unknown function",
            post.clone(),
            "/admin/functions/Nothing",
            Some(KEY),
            "",
            404,
        ),
        // Read API parameters.
        case(
            "limit 0",
            get.clone(),
            "/api/v1/pstncalls?limit=0",
            Some(KEY),
            "",
            400,
        ),
        case(
            "unknown format",
            get.clone(),
            "/api/v1/pstncalls?format=xml",
            Some(KEY),
            "",
            400,
        ),
        case(
            "from after to",
            get.clone(),
            "/api/v1/pstncalls?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "forged cursor",
            get.clone(),
            "/api/v1/callrecords?cursor=e30.AAAAAAAAAAAAAAAAAAAAAA",
            Some(KEY),
            "",
            400,
        ),
        case(
            "not an id",
            get,
            "/api/v1/callrecords/..%2F..%2Fx",
            Some(KEY),
            "",
            400,
        ),
        case(
            "other method",
            post.clone(),
            "/api/v1/callrecords",
            Some(KEY),
            "{}",
            405,
        ),
        // Admin ranges and ids.
        case(
            "backfill to before from",
            post.clone(),
            "/api/ops/backfill?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "backfill of the future",
            post.clone(),
            "/api/ops/backfill?from=2099-01-01T00:00:00Z&to=2099-01-02T00:00:00Z",
            Some(KEY),
            "",
            400,
        ),
        case(
            "backfill without a range",
            post.clone(),
            "/api/ops/backfill",
            Some(KEY),
            "",
            400,
        ),
        case(
            "reprocess of no ids",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            "[]",
            400,
        ),
        case(
            "reprocess of a non-id",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            "[\"../x\"]",
            400,
        ),
        case(
            "reprocess of 1,001 ids",
            post.clone(),
            "/api/ops/reprocess",
            Some(KEY),
            json!(many_ids).to_string(),
            400,
        ),
        case(
            "reprocess, malformed",
            post,
            "/api/ops/reprocess",
            Some(KEY),
            "{",
            400,
        ),
    ]
}

/// Sends `case` to the app at `base`: its status and body.
pub async fn send(base: &str, case: &Case) -> (u16, String) {
    // A handler that is killed and restarted (the reliability day) cuts or refuses connections for
    // a moment: try again then.
    for _ in 0..100 {
        let mut request = reqwest::Client::new()
            .request(case.method.clone(), format!("{base}{}", case.path))
            .header("content-type", "application/json")
            .body(case.body.clone());
        if let Some(key) = case.key {
            request = request.header("x-functions-key", key);
        }
        match request.send().await {
            Ok(response) => {
                return (
                    response.status().as_u16(),
                    response.text().await.unwrap_or_default(),
                );
            }
            // Refused, or cut by the kill: none of these requests changes anything, so again.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    panic!("{}: the app never answered", case.what)
}

/// Checks one answer: the case's status, no secret in the body, and a JSON error code for errors.
pub fn check(case: &Case, status: u16, body: &str) {
    assert_eq!(status, case.status, "{}: {body}", case.what);
    for secret in [
        CLIENT_STATE,
        KEY,
        "AccountKey",
        "devstoreaccount1",
        "127.0.0.1",
    ] {
        assert!(!body.contains(secret), "{}: {body}", case.what);
    }
    if status >= 400 {
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(error["error"]["code"].is_string(), "{}: {body}", case.what);
    }
}
