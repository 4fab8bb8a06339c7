//! Google Gemini API: `models/{model}:streamGenerateContent?alt=sse` with
//! function calling, over ureq + rustls (ring).

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::openai::{error_parts, finish_calls, is_json, map_transport, read_json, PartialCall};
use super::{
    args_object, open_with_user, push_merged, sse, ChatRequest, ChatResponse, Provider,
    ProviderError, Usage,
};
use crate::config::{ProviderConfig, Secret};
use crate::store::Role;

pub struct Gemini {
    base_url: String,
    max_tokens: u32,
    agent: ureq::Agent,
}

impl Gemini {
    pub fn new(cfg: &ProviderConfig) -> Gemini {
        Gemini {
            base_url: cfg.base_url.clone(),
            max_tokens: cfg.max_tokens,
            agent: super::http_agent(cfg),
        }
    }
}

/// Gemini takes an OpenAPI subset of JSON Schema: drop the keywords it
/// rejects.
fn schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "additionalProperties" | "$schema" | "$id" | "default"
                    )
                })
                .map(|(k, v)| (k.clone(), schema(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema).collect()),
        other => other.clone(),
    }
}

fn push_part(contents: &mut Vec<Value>, role: &str, part: Value) {
    push_merged(contents, role, "parts", part);
}

/// The request body in Gemini's wire format.
pub fn request_body(max_tokens: u32, req: &ChatRequest<'_>) -> Value {
    let mut system = req.system.to_string();
    let mut contents: Vec<Value> = Vec::new();
    // functionResponse needs the function's name; tool results carry the id.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for e in req.transcript {
        match e.role {
            Role::System => {
                system.push_str("\n\n");
                system.push_str(&e.text);
            }
            Role::User => {
                if !e.text.is_empty() {
                    push_part(&mut contents, "user", json!({"text": e.text}));
                }
            }
            Role::Assistant => {
                if !e.text.is_empty() {
                    push_part(&mut contents, "model", json!({"text": e.text}));
                }
                for c in &e.tool_calls {
                    names.insert(&c.id, &c.name);
                    push_part(
                        &mut contents,
                        "model",
                        json!({"functionCall": {"name": c.name, "args": args_object(&c.arguments)}}),
                    );
                }
            }
            Role::Tool => {
                let id = e.tool_call_id.as_deref().unwrap_or("");
                let name = names.get(id).copied().unwrap_or("tool");
                push_part(
                    &mut contents,
                    "user",
                    json!({"functionResponse": {"name": name, "response": {"content": e.text}}}),
                );
            }
        }
    }
    open_with_user(
        &mut contents,
        "parts",
        json!({"text": "(conversation continues)"}),
    );
    let mut body =
        json!({"contents": contents, "generationConfig": {"maxOutputTokens": max_tokens}});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": [{"text": system}]});
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": schema(&t.parameters)}))
            .collect();
        body["tools"] = json!([{"functionDeclarations": decls}]);
    }
    body
}

/// Maps an HTTP error by status, `error.status` and `error.details[].reason`
/// (machine-readable fields), never the message text.
fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v["error"]["status"].as_str().unwrap_or("");
    let details = v["error"]["details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reason = |r: &str| details.iter().any(|d| d["reason"] == r);
    // RetryInfo.retryDelay is a protobuf Duration as JSON: "30s".
    let retry_delay = details
        .iter()
        .filter_map(|d| d["retryDelay"].as_str())
        .filter_map(|s| s.strip_suffix('s')?.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_millis((s.min(86_400.0) * 1000.0) as u64))
        .next();
    match (status, code) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ProviderError::RateLimited {
            retry_after: retry_after.or(retry_delay),
        },
        _ if reason("API_KEY_INVALID") => ProviderError::Auth,
        (401 | 403, _) | (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => ProviderError::Auth,
        (402, _) | (_, "FAILED_PRECONDITION") => ProviderError::Billing,
        (413, _) => ProviderError::ContextOverflow,
        (408 | 504, _) | (_, "DEADLINE_EXCEEDED") => ProviderError::Timeout,
        (500..=599, _) | (_, "INTERNAL" | "UNAVAILABLE") => ProviderError::Server { status },
        _ => ProviderError::BadRequest(if code.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status} ({code})")
        }),
    }
}

impl Provider for Gemini {
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        key: Option<&Secret>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError> {
        let body = serde_json::to_vec(&request_body(self.max_tokens, req)).expect("json");
        let mut r = self
            .agent
            .post(format!(
                "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                self.base_url
            ))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        // The key goes in a header, never the URL (URLs end up in errors).
        if let Some(k) = key {
            r = r.header("x-goog-api-key", k.expose());
        }
        let resp = r.send(&body[..]).map_err(map_transport)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let (retry_after, text) = error_parts(resp);
            return Err(classify(status, retry_after, &text));
        }
        if is_json(&resp) {
            // Without alt=sse the API answers with a JSON array of the same
            // responses; accept that (and a single object) too.
            let items = match read_json(resp)? {
                Value::Array(a) => a,
                one => vec![one],
            };
            let mut acc = Acc::default();
            for item in &items {
                acc.absorb(item, on_delta)?;
            }
            return acc.finish();
        }
        parse_sse(
            BufReader::new(resp.into_body().into_reader()),
            on_delta,
            cancel,
        )
    }
}

/// A reply being assembled from GenerateContentResponse objects.
#[derive(Default)]
struct Acc {
    out: ChatResponse,
    calls: Vec<PartialCall>,
}

impl Acc {
    fn absorb(&mut self, v: &Value, on_delta: &mut dyn FnMut(&str)) -> Result<(), ProviderError> {
        if v.get("error").is_some() {
            let status = v["error"]["code"].as_u64().unwrap_or(500) as u16;
            return Err(classify(status, None, &v.to_string()));
        }
        if let Some(u) = v.get("usageMetadata") {
            self.out.usage = Some(Usage {
                input_tokens: u["promptTokenCount"].as_u64().unwrap_or(0),
                output_tokens: u["candidatesTokenCount"].as_u64().unwrap_or(0),
            });
        }
        let Some(cand) = v["candidates"].get(0) else {
            return Ok(());
        };
        for part in cand["content"]["parts"].as_array().into_iter().flatten() {
            if part["thought"] == true {
                continue;
            }
            if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                self.out.text.push_str(t);
                on_delta(t);
            }
            if let Some(fc) = part.get("functionCall") {
                if self.calls.len() >= 64 {
                    return Err(ProviderError::MalformedResponse(
                        "too many function calls".into(),
                    ));
                }
                let n = self.calls.len();
                self.calls.push(PartialCall {
                    id: fc["id"]
                        .as_str()
                        .map_or_else(|| format!("call_{n}"), str::to_string),
                    name: fc["name"].as_str().unwrap_or("").to_string(),
                    arguments: if fc["args"].is_object() {
                        fc["args"].to_string()
                    } else {
                        "{}".into()
                    },
                });
            }
        }
        if let Some(f) = cand["finishReason"].as_str() {
            self.out.finish_reason = Some(f.to_string());
        }
        Ok(())
    }

    /// A reply without a `finishReason` was cut off: never a reply.
    fn finish(mut self) -> Result<ChatResponse, ProviderError> {
        if self.out.finish_reason.is_none() {
            return Err(ProviderError::MalformedResponse(
                "stream ended before the reply was complete".into(),
            ));
        }
        self.out.tool_calls = finish_calls(self.calls)?;
        Ok(self.out)
    }
}

/// Parses a streamGenerateContent SSE stream: each event is a whole
/// GenerateContentResponse. A stream that ends without a `finishReason` is
/// an error: partial text is never a reply.
pub fn parse_sse<R: std::io::BufRead>(
    r: R,
    on_delta: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
) -> Result<ChatResponse, ProviderError> {
    let mut acc = Acc::default();
    let mut events = sse::Reader::new(r);
    while let Some(ev) = events.next_event(cancel)? {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| ProviderError::MalformedResponse(format!("bad SSE JSON: {e}")))?;
        acc.absorb(&v, on_delta)?;
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ToolSpec;
    use crate::store::{Entry, ToolCall};

    fn sse(s: &str) -> Result<ChatResponse, ProviderError> {
        crate::provider::sse::parse_checked(s, |r, d, c| parse_sse(r, d, c))
    }

    #[test]
    fn streamed_text_function_call_and_usage() {
        let s = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Let me \"}],\"role\":\"model\"},\"index\":0}]}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"look\"},{\"functionCall\":{\"name\":\"read\",\"args\":{\"path\":\"a.txt\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":12,\"candidatesTokenCount\":7,\"totalTokenCount\":19}}\r\n\r\n";
        let r = sse(s).unwrap();
        assert_eq!(r.text, "Let me look");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "read");
        assert_eq!(r.tool_calls[0].arguments, "{\"path\":\"a.txt\"}");
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 7
            })
        );
    }

    #[test]
    fn truncated_and_garbage_streams_are_errors() {
        let cut = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"half\"}]}}]}\n\n";
        assert!(matches!(sse(cut), Err(ProviderError::MalformedResponse(_))));
        assert!(matches!(
            sse("data: [oops\n\n"),
            Err(ProviderError::MalformedResponse(_))
        ));
    }

    #[test]
    fn errors_by_status_and_reason() {
        let invalid_key = r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(classify(400, None, invalid_key), ProviderError::Auth);
        let quota = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
        assert_eq!(
            classify(429, None, quota),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(17))
            }
        );
        assert_eq!(
            classify(503, None, r#"{"error":{"status":"UNAVAILABLE"}}"#),
            ProviderError::Server { status: 503 }
        );
        assert_eq!(
            classify(400, None, r#"{"error":{"status":"INVALID_ARGUMENT"}}"#),
            ProviderError::BadRequest("HTTP 400 (INVALID_ARGUMENT)".into())
        );
        assert_eq!(
            classify(400, None, r#"{"error":{"status":"FAILED_PRECONDITION"}}"#),
            ProviderError::Billing
        );
    }

    #[test]
    fn transcript_and_tools_map_to_contents() {
        let mut a = Entry::new(Role::Assistant, "", None);
        a.tool_calls = vec![ToolCall {
            id: "call_0".into(),
            name: "read".into(),
            arguments: "{\"path\":\"a\"}".into(),
        }];
        let mut t = Entry::new(Role::Tool, "contents", None);
        t.tool_call_id = Some("call_0".into());
        let transcript = vec![Entry::new(Role::User, "hi", None), a, t];
        let tools = vec![ToolSpec {
            name: "read".into(),
            description: "read a file".into(),
            parameters: json!({"type": "object", "additionalProperties": false,
                               "properties": {"path": {"type": "string"}}}),
        }];
        let req = ChatRequest {
            system: "be brief",
            transcript: &transcript,
            tools: &tools,
        };
        let b = request_body(500, &req);
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "be brief");
        let c = b["contents"].as_array().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1]["role"], "model");
        assert_eq!(c[1]["parts"][0]["functionCall"]["args"]["path"], "a");
        assert_eq!(c[2]["parts"][0]["functionResponse"]["name"], "read");
        let decl = &b["tools"][0]["functionDeclarations"][0];
        assert!(decl["parameters"].get("additionalProperties").is_none());
        assert_eq!(decl["parameters"]["properties"]["path"]["type"], "string");
    }
}
