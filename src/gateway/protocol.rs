//! Frames of the gateway protocol: `req`, `res`, `event`, and the error shape.

use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize)]
pub struct ErrorShape {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    pub fn new(code: &str, message: impl Into<String>) -> ErrorShape {
        ErrorShape {
            code: code.into(),
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> ErrorShape {
        ErrorShape::new("INVALID_REQUEST", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ErrorShape {
        ErrorShape {
            retryable: Some(true),
            ..ErrorShape::new("UNAVAILABLE", message)
        }
    }
}

pub enum Frame {
    Res {
        id: String,
        ok: bool,
        body: Value,
    },
    Event {
        event: String,
        payload: Value,
        seq: Option<u64>,
    },
}

impl Frame {
    pub fn ok(id: &str, payload: Value) -> Frame {
        Frame::Res {
            id: id.into(),
            ok: true,
            body: payload,
        }
    }
    pub fn err(id: &str, e: ErrorShape) -> Frame {
        Frame::Res {
            id: id.into(),
            ok: false,
            body: serde_json::to_value(e).expect("error shape"),
        }
    }
    pub fn event(name: &str, payload: Value, seq: Option<u64>) -> Frame {
        Frame::Event {
            event: name.into(),
            payload,
            seq,
        }
    }
    pub fn to_text(&self) -> String {
        let v = match self {
            Frame::Res { id, ok: true, body } => {
                json!({"type": "res", "id": id, "ok": true, "payload": body})
            }
            Frame::Res {
                id,
                ok: false,
                body,
            } => json!({"type": "res", "id": id, "ok": false, "error": body}),
            Frame::Event {
                event,
                payload,
                seq: Some(s),
            } => {
                json!({"type": "event", "event": event, "payload": payload, "seq": s})
            }
            Frame::Event {
                event,
                payload,
                seq: None,
            } => {
                json!({"type": "event", "event": event, "payload": payload})
            }
        };
        v.to_string()
    }
}

/// Best-effort request id of a frame we could not fully parse.
pub fn peek_id(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or_else(|| "?".into())
}

/// Parses a `req` frame into (id, method, params), or the error to send.
pub fn parse_request(text: &str) -> Result<(String, String, Value), (String, ErrorShape)> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            "?".to_string(),
            ErrorShape::invalid(format!("frame is not valid JSON: {e}")),
        )
    })?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_string);
    let Some(id) = id else {
        return Err((
            "?".into(),
            ErrorShape::invalid("request frame needs a non-empty string \"id\""),
        ));
    };
    if v.get("type").and_then(Value::as_str) != Some("req") {
        return Err((id, ErrorShape::invalid("frame \"type\" must be \"req\"")));
    }
    let Some(method) = v
        .get("method")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return Err((id, ErrorShape::invalid("request frame needs a \"method\"")));
    };
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    let params = match params {
        Value::Null => json!({}),
        p @ Value::Object(_) => p,
        _ => return Err((id, ErrorShape::invalid("\"params\" must be an object"))),
    };
    Ok((id, method.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let (id, m, p) = parse_request(r#"{"type":"req","id":"1","method":"health"}"#).unwrap();
        assert_eq!((id.as_str(), m.as_str(), p), ("1", "health", json!({})));
        assert_eq!(parse_request("nope").unwrap_err().1.code, "INVALID_REQUEST");
        assert_eq!(
            parse_request(r#"{"type":"req","id":"2"}"#).unwrap_err().0,
            "2"
        );
        assert!(parse_request(r#"{"type":"req","id":"3","method":"x","params":[1]}"#).is_err());
        let t = Frame::err("9", ErrorShape::unavailable("busy")).to_text();
        assert!(t.contains("\"retryable\":true") && t.contains("\"ok\":false"));
    }
}
