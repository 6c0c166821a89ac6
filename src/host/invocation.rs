//! Invocation payloads of non-HTTP triggers (`POST /{FunctionName}`), decoded once, here.
//!
//! The documented shape (`Data.<binding>` the message text, `Metadata.DequeueCount` a number) is not
//! what the real host sends: `ScriptInvocationContextExtensions` passes every binding-data value that
//! is not a date through `JsonConvert.SerializeObject`, so strings arrive JSON-encoded a second time
//! (`"Id": "\"4434…\""`) and numbers as strings (`"DequeueCount": "5"`). Both are accepted
//! (`tests/fixtures/functions/`). The answer is the documented response payload; any non-2xx answer
//! fails the invocation, and the host retries the message and finally moves it to the poison queue.

use serde::Serialize;
use serde_json::Value;

/// A queue-trigger invocation as the function needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueInvocation {
    /// The message text, after the host's base64 decoding.
    pub(crate) message: String,
    /// How often the host has delivered this message, this delivery included (1 on the first).
    pub(crate) dequeue_count: u32,
    /// The queue's message id, for logs.
    pub(crate) message_id: Option<String>,
}

/// Why an invocation payload could not be read. The host sent something this handler does not
/// understand: retrying it cannot help.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    #[error("the invocation payload is not JSON")]
    NotJson,
    #[error("the invocation payload has no `Data.{0}`")]
    MissingData(String),
}

impl QueueInvocation {
    /// Decodes the payload the host posts for a queue trigger whose binding is named `binding`.
    ///
    /// # Errors
    /// When the payload is not JSON or carries no value for the binding.
    pub(crate) fn decode(body: &[u8], binding: &str) -> Result<Self, PayloadError> {
        let payload = parse(body)?;
        let data = binding_data(&payload, binding)?;
        let metadata = payload.get("Metadata");
        let field = |name: &str| metadata.and_then(|m| m.get(name));
        Ok(Self {
            message: message_text(data),
            dequeue_count: field("DequeueCount").and_then(as_u32).unwrap_or(1).max(1),
            message_id: field("Id").and_then(as_text),
        })
    }
}

/// A timer-trigger invocation: `Data.<binding>` is the host's `TimerInfo`
/// (`{"Schedule":…,"ScheduleStatus":…|null,"IsPastDue":bool}`), as an object or, like the queue's
/// values, encoded once more as a JSON string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimerInvocation {
    /// The host started this run later than scheduled (it was down, or the previous run overran).
    pub(crate) is_past_due: bool,
}

impl TimerInvocation {
    /// Decodes the payload the host posts for a timer trigger whose binding is named `binding`.
    ///
    /// # Errors
    /// When the payload is not JSON or carries no value for the binding.
    pub(crate) fn decode(body: &[u8], binding: &str) -> Result<Self, PayloadError> {
        let payload = parse(body)?;
        let info = match binding_data(&payload, binding)? {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let past_due = info.get("IsPastDue").or_else(|| info.get("isPastDue"));
        Ok(Self {
            is_past_due: match past_due {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                _ => false,
            },
        })
    }
}

fn parse(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(|_| PayloadError::NotJson)
}

/// `Data.<binding>`: the trigger's value.
fn binding_data<'a>(payload: &'a Value, binding: &str) -> Result<&'a Value, PayloadError> {
    payload
        .get("Data")
        .and_then(|d| d.get(binding))
        .ok_or_else(|| PayloadError::MissingData(binding.to_owned()))
}

/// The message text from `Data.<binding>`: a string that may itself be a JSON string literal (the
/// real host's second encoding), or a JSON value the host already parsed.
fn message_text(data: &Value) -> String {
    match data {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => inner,
            _ => s.clone(),
        },
        other => other.to_string(),
    }
}

fn as_text(value: &Value) -> Option<String> {
    let Value::String(s) = value else {
        return None;
    };
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => Some(inner),
        _ => Some(s.clone()),
    }
}

fn as_u32(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim_matches('"').parse().ok(),
        _ => None,
    }
}

/// The response payload for a trigger without output bindings: the invocation succeeded.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InvocationResponse {
    outputs: serde_json::Map<String, Value>,
    logs: Vec<String>,
    return_value: Option<Value>,
}

impl InvocationResponse {
    pub(crate) fn done() -> Self {
        Self {
            outputs: serde_json::Map::new(),
            logs: Vec::new(),
            return_value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/functions/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn real_host_capture_decodes_to_the_message_text_and_numeric_dequeue_count() {
        let invocation =
            QueueInvocation::decode(&fixture("queue-trigger.request.real-capture.json"), "msg")
                .unwrap();
        assert!(
            invocation
                .message
                .starts_with(r#"{"scraperId":"viennaHousingScraper002","#),
            "{}",
            invocation.message
        );
        let parsed: Value = serde_json::from_str(&invocation.message).unwrap();
        assert_eq!(parsed["listings"][0]["roomCount"], 3);
        assert_eq!(invocation.dequeue_count, 5);
        assert_eq!(
            invocation.message_id.as_deref(),
            Some("4434c659-815f-434e-a851-f1df7b701f27")
        );
    }

    #[test]
    fn documented_example_decodes_to_the_message_text() {
        let invocation = QueueInvocation::decode(
            &fixture("queue-trigger.request.docs-example.json"),
            "myQueueItem",
        )
        .unwrap();
        assert_eq!(invocation.message, r#"{ message: "Message sent" }"#);
        assert_eq!(invocation.dequeue_count, 1);
        assert_eq!(
            invocation.message_id.as_deref(),
            Some("800ae4b3-bdd2-4c08-badd-f08e5a34b865")
        );
    }

    #[test]
    fn a_message_the_host_already_parsed_is_taken_as_json() {
        let body = br#"{"Data":{"job":{"id":"a"}},"Metadata":{"DequeueCount":2}}"#;
        let invocation = QueueInvocation::decode(body, "job").unwrap();
        assert_eq!(invocation.message, r#"{"id":"a"}"#);
        assert_eq!(invocation.dequeue_count, 2);
        assert_eq!(invocation.message_id, None);
    }

    #[test]
    fn payload_without_the_binding_or_not_json_is_an_error() {
        assert!(matches!(
            QueueInvocation::decode(b"not json", "job"),
            Err(PayloadError::NotJson)
        ));
        assert!(matches!(
            QueueInvocation::decode(br#"{"Data":{"other":"x"}}"#, "job"),
            Err(PayloadError::MissingData(b)) if b == "job"
        ));
    }

    #[test]
    fn response_is_the_documented_empty_payload() {
        assert_eq!(
            serde_json::to_value(InvocationResponse::done()).unwrap(),
            serde_json::json!({"Outputs":{},"Logs":[],"ReturnValue":null})
        );
    }

    #[test]
    fn real_host_timer_capture_decodes_and_past_due_is_read_in_every_shape() {
        let invocation = TimerInvocation::decode(
            &fixture("timer-trigger.request.real-capture.host-4.24.4.4.json"),
            "timer",
        )
        .unwrap();
        assert!(!invocation.is_past_due);
        let info = String::from_utf8(fixture("timer-object.docs-example.json")).unwrap();
        let past_due = info.replace("\"IsPastDue\":false", "\"IsPastDue\":true");
        assert_ne!(info, past_due);
        for data in [
            serde_json::from_str::<Value>(&past_due).unwrap(),
            Value::String(past_due.clone()),
        ] {
            let body = serde_json::json!({"Data": {"timer": data}, "Metadata": {}}).to_string();
            assert!(
                TimerInvocation::decode(body.as_bytes(), "timer")
                    .unwrap()
                    .is_past_due
            );
        }
        assert!(matches!(
            TimerInvocation::decode(b"{}", "timer"),
            Err(PayloadError::MissingData(_))
        ));
    }
}
