//! Entity-group transactions: the `$batch` request (`multipart/mixed` holding one changeset of
//! HTTP requests) and its response, per
//! <https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions>.
//!
//! The changeset is atomic: on failure the service answers with the one failed operation, whose
//! error message starts with its 0-based index (`"1:The specified entity already exists."`).

use serde_json::Value;

use super::entity::ETag;
use super::{BatchOp, Urls, WriteMode, error_code};
use crate::error::{BatchFailure, SdkFailure, StoreError, is_transient_status};

/// At most this many bytes in one transaction's request body.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

const CRLF: &str = "\r\n";

/// A built `$batch` request.
pub(super) struct BatchRequest {
    pub(super) content_type: String,
    pub(super) body: Vec<u8>,
}

/// Builds the request for `ops` (already validated) on partition `pk`, with boundaries that occur
/// nowhere in the operations' text.
pub(super) fn build(urls: &Urls, pk: &str, ops: &[BatchOp]) -> BatchRequest {
    let changeset = changeset_text(urls, pk, ops, "{boundary}");
    loop {
        let id = random_id();
        if !changeset.contains(&id) {
            return build_with_id(urls, pk, ops, &id);
        }
    }
}

/// [`build`] with boundaries `batch_{id}` and `changeset_{id}`.
pub(super) fn build_with_id(urls: &Urls, pk: &str, ops: &[BatchOp], id: &str) -> BatchRequest {
    let batch = format!("batch_{id}");
    let changeset = format!("changeset_{id}");
    let mut body = String::new();
    body.push_str(&format!("--{batch}{CRLF}"));
    body.push_str(&format!(
        "Content-Type: multipart/mixed; boundary={changeset}{CRLF}{CRLF}"
    ));
    body.push_str(&changeset_text(urls, pk, ops, &changeset));
    body.push_str(&format!("--{batch}--{CRLF}"));
    BatchRequest {
        content_type: format!("multipart/mixed; boundary={batch}"),
        body: body.into_bytes(),
    }
}

fn changeset_text(urls: &Urls, pk: &str, ops: &[BatchOp], boundary: &str) -> String {
    let mut text = String::new();
    for op in ops {
        text.push_str(&format!("--{boundary}{CRLF}"));
        text.push_str(&format!(
            "Content-Type: application/http{CRLF}Content-Transfer-Encoding: binary{CRLF}{CRLF}"
        ));
        let (method, url, entity, if_match) = match op {
            BatchOp::Insert(e) => ("POST", urls.table(), Some(e), None),
            BatchOp::Upsert(e, mode) => (
                mode_method(*mode),
                urls.entity(&e.partition_key, &e.row_key),
                Some(e),
                None,
            ),
            BatchOp::Update(e, mode, etag) => (
                mode_method(*mode),
                urls.entity(&e.partition_key, &e.row_key),
                Some(e),
                Some(etag.as_str()),
            ),
            BatchOp::Delete { rk, if_match } => (
                "DELETE",
                urls.entity(pk, rk),
                None,
                Some(if_match.as_ref().map_or("*", ETag::as_str)),
            ),
        };
        text.push_str(&format!("{method} {url} HTTP/1.1{CRLF}"));
        if entity.is_some() {
            text.push_str(&format!("Content-Type: application/json{CRLF}"));
        }
        text.push_str(&format!(
            "Accept: application/json;odata=minimalmetadata{CRLF}"
        ));
        if matches!(op, BatchOp::Insert(_)) {
            text.push_str(&format!("Prefer: return-no-content{CRLF}"));
        }
        if let Some(etag) = if_match {
            text.push_str(&format!("If-Match: {etag}{CRLF}"));
        }
        text.push_str(&format!("DataServiceVersion: 3.0{CRLF}{CRLF}"));
        if let Some(entity) = entity {
            // Compact JSON is one line: no CR or LF can end up in it unescaped.
            text.push_str(&Value::Object(entity.to_json()).to_string());
        }
        text.push_str(CRLF);
    }
    text.push_str(&format!("--{boundary}--{CRLF}"));
    text
}

/// `MERGE` is the documented verb inside a changeset (outside it we send `PATCH`, which the service
/// treats the same, because HTTP clients know it).
fn mode_method(mode: WriteMode) -> &'static str {
    match mode {
        WriteMode::Replace => "PUT",
        WriteMode::Merge => "MERGE",
    }
}

/// 32 random hex digits (128 bits: boundaries must not collide with each other or the content;
/// secrecy does not matter).
fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Reads the response to a `$batch` of `ops`: the ETag of each operation (`None` for deletes), or
/// the error of the one that failed.
///
/// # Errors
/// [`StoreError::BatchFailed`] for an operation the service refused (4xx); the usual
/// [`StoreError`] for a refused credential or a transient failure inside the batch;
/// [`StoreError::Fatal`] for a response that cannot be read.
pub(super) fn parse_response(
    content_type: &str,
    body: &str,
    ops: &[BatchOp],
) -> Result<Vec<Option<ETag>>, StoreError> {
    let unreadable = |why: &str| StoreError::fatal(format!("unreadable $batch response: {why}"));
    let boundary = boundary_of(content_type).ok_or_else(|| unreadable("no boundary"))?;
    let batch_parts = split_multipart(body, &boundary).map_err(|e| unreadable(&e))?;
    let mut responses = Vec::new();
    for part in batch_parts {
        let (headers, content) = split_head(part);
        let part_type = header(&headers, "content-type").unwrap_or_default();
        if let Some(changeset) = boundary_of(part_type) {
            for op_part in split_multipart(content, &changeset).map_err(|e| unreadable(&e))? {
                responses.push(parse_http(split_head(op_part).1).map_err(|e| unreadable(&e))?);
            }
        } else {
            // A batch-level error comes as a single application/http part.
            responses.push(parse_http(content).map_err(|e| unreadable(&e))?);
        }
    }
    if let Some(failed) = responses.iter().find(|r| r.status >= 300) {
        return Err(failure(failed, ops.len()));
    }
    if responses.len() != ops.len() {
        return Err(unreadable(&format!(
            "{} responses for {} operations",
            responses.len(),
            ops.len()
        )));
    }
    Ok(responses
        .iter()
        .zip(ops)
        .map(|(response, op)| match op {
            BatchOp::Delete { .. } => None,
            _ => header(&response.headers, "etag").map(ETag::new),
        })
        .collect())
}

/// One response inside the changeset.
struct OpResponse<'a> {
    status: u16,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

fn failure(response: &OpResponse<'_>, op_count: usize) -> StoreError {
    let json: Option<Value> = serde_json::from_str(response.body.trim()).ok();
    let code = error_code(header(&response.headers, "x-ms-error-code"), json.as_ref());
    let detail = SdkFailure::text(format!(
        "HTTP {} ({}) in a $batch response",
        response.status,
        code.as_deref().unwrap_or("no error code")
    ));
    let status = response.status;
    if matches!(status, 401 | 403) || is_transient_status(status) || status >= 500 {
        return StoreError::from_status(status, detail);
    }
    let message = json
        .as_ref()
        .and_then(|j| j.pointer("/odata.error/message/value"))
        .and_then(Value::as_str);
    let index = message
        .and_then(|m| m.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok())
        .or_else(|| {
            header(&response.headers, "content-id")
                .and_then(|id| id.trim().parse::<usize>().ok())
                .and_then(|id| id.checked_sub(1))
        })
        .or((op_count == 1).then_some(0))
        .filter(|i| *i < op_count);
    let Some(index) = index else {
        // The whole request was refused (malformed, too large): no operation to name.
        return StoreError::from_status(status, detail);
    };
    let kind = match status {
        409 => BatchFailure::Conflict,
        412 => BatchFailure::PreconditionFailed,
        404 => BatchFailure::NotFound,
        other => BatchFailure::Rejected(other),
    };
    StoreError::BatchFailed {
        index,
        kind,
        detail,
    }
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The parts between `--boundary` lines, up to `--boundary--`. The line break before a delimiter
/// belongs to the delimiter (RFC 2046).
fn split_multipart<'a>(text: &'a str, boundary: &str) -> Result<Vec<&'a str>, String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        let closing = trimmed.strip_prefix(&delimiter) == Some("--");
        if trimmed == delimiter || closing {
            if let Some(s) = start {
                let part = &text[s..offset];
                let part = part
                    .strip_suffix("\r\n")
                    .or_else(|| part.strip_suffix('\n'))
                    .unwrap_or(part);
                parts.push(part);
            }
            if closing {
                return Ok(parts);
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    Err(format!("no closing delimiter for boundary {boundary}"))
}

/// Splits a part (or an HTTP message) into its header lines and what follows the blank line.
fn split_head(text: &str) -> (Vec<(&str, &str)>, &str) {
    let mut headers = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return (headers, &text[offset..]);
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim(), value.trim()));
        }
    }
    (headers, "")
}

fn header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// An embedded HTTP response: `HTTP/1.1 204 No Content`, headers, blank line, body.
fn parse_http(text: &str) -> Result<OpResponse<'_>, String> {
    let text = text.trim_start_matches(['\r', '\n']);
    let (status_line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let status = status_line
        .trim()
        .strip_prefix("HTTP/")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "an operation response has no HTTP status line".to_owned())?;
    let (headers, body) = split_head(rest);
    Ok(OpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::entity::Entity;

    fn urls() -> Urls {
        Urls::new("https://myaccount.table.core.windows.net/", "Blogs")
    }

    fn blog(rk: &str) -> Entity {
        Entity::new("Channel_19", rk)
            .with("Text", ".NET...")
            .with("Rating", 3)
    }

    #[test]
    fn batch_body_has_one_changeset_with_an_http_request_per_operation() {
        let ops = vec![
            BatchOp::Insert(blog("1")),
            BatchOp::Upsert(blog("2"), WriteMode::Replace),
            BatchOp::Update(blog("3"), WriteMode::Merge, ETag::new("W/\"datetime'x'\"")),
            BatchOp::Delete {
                rk: "O'Brien 100%".into(),
                if_match: None,
            },
        ];
        let request = build_with_id(&urls(), "Channel_19", &ops, "ID");
        assert_eq!(request.content_type, "multipart/mixed; boundary=batch_ID");
        let body = String::from_utf8(request.body).unwrap();
        let expected = [
            "--batch_ID",
            "Content-Type: multipart/mixed; boundary=changeset_ID",
            "",
            "--changeset_ID",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            "POST https://myaccount.table.core.windows.net/Blogs HTTP/1.1",
            "Content-Type: application/json",
            "Accept: application/json;odata=minimalmetadata",
            "Prefer: return-no-content",
            "DataServiceVersion: 3.0",
            "",
            r#"{"PartitionKey":"Channel_19","Rating":3,"RowKey":"1","Text":".NET..."}"#,
            "--changeset_ID",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            "PUT https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',RowKey='2') HTTP/1.1",
            "Content-Type: application/json",
            "Accept: application/json;odata=minimalmetadata",
            "DataServiceVersion: 3.0",
            "",
            r#"{"PartitionKey":"Channel_19","Rating":3,"RowKey":"2","Text":".NET..."}"#,
            "--changeset_ID",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            "MERGE https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',RowKey='3') HTTP/1.1",
            "Content-Type: application/json",
            "Accept: application/json;odata=minimalmetadata",
            "If-Match: W/\"datetime'x'\"",
            "DataServiceVersion: 3.0",
            "",
            r#"{"PartitionKey":"Channel_19","Rating":3,"RowKey":"3","Text":".NET..."}"#,
            "--changeset_ID",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            "DELETE https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',RowKey='O%27%27Brien%20100%25') HTTP/1.1",
            "Accept: application/json;odata=minimalmetadata",
            "If-Match: *",
            "DataServiceVersion: 3.0",
            "",
            "",
            "--changeset_ID--",
            "--batch_ID--",
            "",
        ]
        .join("\r\n");
        assert_eq!(body, expected);
    }

    #[test]
    fn boundaries_are_random_and_absent_from_the_content() {
        let ops = vec![BatchOp::Insert(blog("1").with("Tricky", "--changeset_"))];
        let a = build(&urls(), "Channel_19", &ops);
        let b = build(&urls(), "Channel_19", &ops);
        assert_ne!(a.content_type, b.content_type);
        let id = a.content_type.rsplit('_').next().unwrap();
        assert_eq!(id.len(), 32);
        let body = String::from_utf8(a.body).unwrap();
        // The content type line, the one operation's delimiter and the closing delimiter.
        assert_eq!(body.matches(&format!("changeset_{id}")).count(), 3);
    }

    // The success example of "Performing entity group transactions", lines as documented.
    const SUCCESS: &str = "--batchresponse_7ab1c2a1-0fa5-4b9d-a7f4-9d1d7d7c57d8\r
Content-Type: multipart/mixed; boundary=changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
Content-Type: application/http\r
Content-Transfer-Encoding: binary\r
\r
HTTP/1.1 204 No Content\r
X-Content-Type-Options: nosniff\r
Cache-Control: no-cache\r
Preference-Applied: return-no-content\r
DataServiceVersion: 3.0;\r
Location: https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',RowKey='2')\r
DataServiceId: https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',RowKey='2')\r
ETag: W/\"datetime'2013-09-30T22%3A36%3A47.8493537Z'\"\r
\r
\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
Content-Type: application/http\r
Content-Transfer-Encoding: binary\r
\r
HTTP/1.1 204 No Content\r
X-Content-Type-Options: nosniff\r
Cache-Control: no-cache\r
DataServiceVersion: 1.0;\r
ETag: W/\"datetime'2013-09-30T22%3A36%3A47.8503545Z'\"\r
\r
\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
Content-Type: application/http\r
Content-Transfer-Encoding: binary\r
\r
HTTP/1.1 204 No Content\r
X-Content-Type-Options: nosniff\r
Cache-Control: no-cache\r
DataServiceVersion: 1.0;\r
\r
\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f--\r
--batchresponse_7ab1c2a1-0fa5-4b9d-a7f4-9d1d7d7c57d8--\r
";

    // The error example of the same page: the second operation (index 1) conflicts.
    const FAILURE: &str = "--batchresponse_7ab1c2a1-0fa5-4b9d-a7f4-9d1d7d7c57d8\r
Content-Type: multipart/mixed; boundary=changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f\r
Content-Type: application/http\r
Content-Transfer-Encoding: binary\r
\r
HTTP/1.1 409 Conflict\r
X-Content-Type-Options: nosniff\r
Cache-Control: no-cache\r
DataServiceVersion: 3.0;\r
Content-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r
\r
{\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\"value\":\"1:The specified entity already exists.\\nRequestId:2a2ea6f4-0002-0058-7dcd-e2f6e3000000\\nTime:2013-09-30T22:36:47.9263538Z\"}}}\r
--changesetresponse_f2ab2a30-9a1d-4f4c-8a6d-4e9b6d0d5f4f--\r
--batchresponse_7ab1c2a1-0fa5-4b9d-a7f4-9d1d7d7c57d8--\r
";

    const CONTENT_TYPE: &str =
        "multipart/mixed; boundary=batchresponse_7ab1c2a1-0fa5-4b9d-a7f4-9d1d7d7c57d8";

    fn three_ops() -> Vec<BatchOp> {
        vec![
            BatchOp::Insert(blog("2")),
            BatchOp::Upsert(blog("3"), WriteMode::Merge),
            BatchOp::Delete {
                rk: "4".into(),
                if_match: None,
            },
        ]
    }

    #[test]
    fn success_response_gives_each_operations_etag_and_none_for_deletes() {
        let etags = parse_response(CONTENT_TYPE, SUCCESS, &three_ops()).unwrap();
        assert_eq!(
            etags,
            vec![
                Some(ETag::new(
                    "W/\"datetime'2013-09-30T22%3A36%3A47.8493537Z'\""
                )),
                Some(ETag::new(
                    "W/\"datetime'2013-09-30T22%3A36%3A47.8503545Z'\""
                )),
                None,
            ]
        );
        // The same with bare LF line ends.
        let lf = SUCCESS.replace("\r\n", "\n");
        assert_eq!(
            parse_response(CONTENT_TYPE, &lf, &three_ops())
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn failure_response_names_the_failed_operation_and_why() {
        let err = parse_response(CONTENT_TYPE, FAILURE, &three_ops()).unwrap_err();
        let StoreError::BatchFailed {
            index,
            kind,
            detail,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((*index, *kind), (1, BatchFailure::Conflict));
        assert!(
            detail.to_string().contains("EntityAlreadyExists"),
            "{detail}"
        );
        assert!(err.to_string().contains("operation 1"), "{err}");
    }

    #[test]
    fn failure_kinds_follow_the_operations_status() {
        for (status, kind) in [
            ("412 Precondition Failed", BatchFailure::PreconditionFailed),
            ("404 Not Found", BatchFailure::NotFound),
            ("400 Bad Request", BatchFailure::Rejected(400)),
        ] {
            let body = FAILURE
                .replace("409 Conflict", status)
                .replace("1:The", "2:The");
            let err = parse_response(CONTENT_TYPE, &body, &three_ops()).unwrap_err();
            assert!(
                matches!(err, StoreError::BatchFailed { index: 2, kind: k, .. } if k == kind),
                "{status}: {err:?}"
            );
        }
    }

    #[test]
    fn failure_index_falls_back_to_content_id() {
        // Azurite's form: Content-ID is the 1-based position.
        let body = FAILURE.replace("1:The", "The").replace(
            "HTTP/1.1 409 Conflict\r\n",
            "HTTP/1.1 409 Conflict\r\nContent-ID: 3\r\n",
        );
        let err = parse_response(CONTENT_TYPE, &body, &three_ops()).unwrap_err();
        assert!(
            matches!(err, StoreError::BatchFailed { index: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn transient_and_auth_failures_inside_a_batch_are_not_batch_failures() {
        let busy = FAILURE.replace("409 Conflict", "503 Server Busy");
        assert!(matches!(
            parse_response(CONTENT_TYPE, &busy, &three_ops()),
            Err(StoreError::Transient(_))
        ));
        let refused = FAILURE.replace("409 Conflict", "403 Forbidden");
        assert!(matches!(
            parse_response(CONTENT_TYPE, &refused, &three_ops()),
            Err(StoreError::Unauthorized { status: 403, .. })
        ));
    }

    #[test]
    fn a_failure_without_an_index_is_a_plain_error() {
        let body = FAILURE
            .replace("1:The", "The")
            .replace("409 Conflict", "400 Bad Request");
        assert!(matches!(
            parse_response(CONTENT_TYPE, &body, &three_ops()),
            Err(StoreError::Fatal(_))
        ));
    }

    #[test]
    fn unreadable_responses_are_fatal() {
        assert!(matches!(
            parse_response("application/json", SUCCESS, &three_ops()),
            Err(StoreError::Fatal(_))
        ));
        let truncated = &SUCCESS[..SUCCESS.len() / 2];
        assert!(matches!(
            parse_response(CONTENT_TYPE, truncated, &three_ops()),
            Err(StoreError::Fatal(_))
        ));
        // Three responses for four operations.
        let ops = [
            three_ops(),
            vec![BatchOp::Insert(Entity::new("Channel_19", "9"))],
        ]
        .concat();
        assert!(matches!(
            parse_response(CONTENT_TYPE, SUCCESS, &ops),
            Err(StoreError::Fatal(_))
        ));
    }
}
