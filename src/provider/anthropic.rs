//! Anthropic Messages API (`POST /v1/messages`) with SSE streaming and
//! streamed tool use, over ureq + rustls (ring).

use std::io::BufReader;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{json, Value};

use super::openai::{error_parts, finish_calls, is_json, map_transport, read_json, PartialCall};
use super::{
    args_object, open_with_user, push_merged, sse, ChatRequest, ChatResponse, Provider,
    ProviderError, Usage,
};
use crate::config::{ProviderConfig, Secret};
use crate::store::Role;

/// The API version Hearth speaks (sent as `anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    base_url: String,
    max_tokens: u32,
    agent: ureq::Agent,
}

impl Anthropic {
    pub fn new(cfg: &ProviderConfig) -> Anthropic {
        Anthropic {
            base_url: cfg.base_url.clone(),
            max_tokens: cfg.max_tokens,
            agent: super::http_agent(cfg),
        }
    }
}

/// Messages must alternate user/assistant: blocks of consecutive entries
/// with the same role (tool results are user turns) go into one message.
fn push_block(messages: &mut Vec<Value>, role: &str, block: Value) {
    push_merged(messages, role, "content", block);
}

/// The request body in Anthropic's wire format.
pub fn request_body(model: &str, max_tokens: u32, req: &ChatRequest<'_>) -> Value {
    let mut system = req.system.to_string();
    let mut messages: Vec<Value> = Vec::new();
    for e in req.transcript {
        match e.role {
            Role::System => {
                system.push_str("\n\n");
                system.push_str(&e.text);
            }
            Role::User => {
                if !e.text.is_empty() {
                    push_block(
                        &mut messages,
                        "user",
                        json!({"type": "text", "text": e.text}),
                    );
                }
            }
            Role::Tool => push_block(
                &mut messages,
                "user",
                json!({"type": "tool_result",
                       "tool_use_id": e.tool_call_id.clone().unwrap_or_default(),
                       "content": e.text}),
            ),
            Role::Assistant => {
                if !e.text.is_empty() {
                    push_block(
                        &mut messages,
                        "assistant",
                        json!({"type": "text", "text": e.text}),
                    );
                }
                for c in &e.tool_calls {
                    push_block(
                        &mut messages,
                        "assistant",
                        json!({"type": "tool_use", "id": c.id, "name": c.name,
                               "input": args_object(&c.arguments)}),
                    );
                }
            }
        }
    }
    open_with_user(
        &mut messages,
        "content",
        json!({"type": "text", "text": "(conversation continues)"}),
    );
    let mut body =
        json!({"model": model, "max_tokens": max_tokens, "messages": messages, "stream": true});
    if !system.is_empty() {
        body["system"] = json!(system);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    body
}

/// Maps an HTTP error to a typed error by status and the body's
/// machine-readable `error.type`, never its message text.
fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let kind = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["type"].as_str().map(str::to_string))
        .unwrap_or_default();
    match (status, kind.as_str()) {
        (429, _) | (_, "rate_limit_error") => ProviderError::RateLimited { retry_after },
        (401 | 403, _) | (_, "authentication_error" | "permission_error") => ProviderError::Auth,
        (402, _) | (_, "billing_error") => ProviderError::Billing,
        (413, _) | (_, "request_too_large") => ProviderError::ContextOverflow,
        (408 | 504, _) | (_, "timeout_error") => ProviderError::Timeout,
        (500..=599, _) | (_, "api_error" | "overloaded_error") => ProviderError::Server { status },
        _ => ProviderError::BadRequest(if kind.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status} ({kind})")
        }),
    }
}

/// An `error` event inside a stream.
fn stream_error(v: &Value) -> ProviderError {
    match v["error"]["type"].as_str().unwrap_or("") {
        "overloaded_error" => ProviderError::Server { status: 529 },
        "api_error" => ProviderError::Server { status: 500 },
        "rate_limit_error" => ProviderError::RateLimited { retry_after: None },
        other => ProviderError::MalformedResponse(format!("error in stream: {other}")),
    }
}

impl Provider for Anthropic {
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        key: Option<&Secret>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError> {
        let body = serde_json::to_vec(&request_body(model, self.max_tokens, req)).expect("json");
        let mut r = self
            .agent
            .post(format!("{}/v1/messages", self.base_url))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .header("anthropic-version", API_VERSION);
        if let Some(k) = key {
            r = r.header("x-api-key", k.expose());
        }
        let resp = r.send(&body[..]).map_err(map_transport)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let (retry_after, text) = error_parts(resp);
            return Err(classify(status, retry_after, &text));
        }
        if is_json(&resp) {
            return parse_full(&read_json(resp)?, on_delta);
        }
        parse_sse(
            BufReader::new(resp.into_body().into_reader()),
            on_delta,
            cancel,
        )
    }
}

/// One content block being streamed.
enum Block {
    Text,
    Tool(PartialCall),
    Other,
}

/// Parses a Messages SSE stream. A stream without `message_stop` is an
/// error: partial text is never a reply.
pub fn parse_sse<R: std::io::BufRead>(
    r: R,
    on_delta: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
) -> Result<ChatResponse, ProviderError> {
    let mut out = ChatResponse::default();
    let mut usage = Usage::default();
    let mut blocks: Vec<Block> = Vec::new();
    let mut done = false;
    let mut events = sse::Reader::new(r);
    while let Some(ev) = events.next_event(cancel)? {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| ProviderError::MalformedResponse(format!("bad SSE JSON: {e}")))?;
        let kind = v["type"].as_str().unwrap_or(ev.event.as_str()).to_string();
        let index = || -> Result<usize, ProviderError> {
            v["index"]
                .as_u64()
                .map(|i| i as usize)
                .filter(|i| *i < 256)
                .ok_or_else(|| {
                    ProviderError::MalformedResponse("content block without index".into())
                })
        };
        match kind.as_str() {
            "message_start" => {
                usage.input_tokens = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let i = index()?;
                while blocks.len() <= i {
                    blocks.push(Block::Other);
                }
                let b = &v["content_block"];
                blocks[i] = match b["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.text.push_str(t);
                            on_delta(t);
                        }
                        Block::Text
                    }
                    Some("tool_use") => Block::Tool(PartialCall {
                        id: b["id"].as_str().unwrap_or("").to_string(),
                        name: b["name"].as_str().unwrap_or("").to_string(),
                        arguments: String::new(),
                    }),
                    _ => Block::Other,
                };
            }
            "content_block_delta" => {
                let i = index()?;
                let d = &v["delta"];
                match (blocks.get_mut(i), d["type"].as_str()) {
                    (Some(Block::Text), Some("text_delta")) => {
                        if let Some(t) = d["text"].as_str().filter(|t| !t.is_empty()) {
                            out.text.push_str(t);
                            on_delta(t);
                        }
                    }
                    (Some(Block::Tool(c)), Some("input_json_delta")) => {
                        c.arguments
                            .push_str(d["partial_json"].as_str().unwrap_or(""));
                    }
                    (None, _) => {
                        return Err(ProviderError::MalformedResponse(
                            "delta for a block that was never started".into(),
                        ))
                    }
                    _ => {} // thinking, signatures, citations: not used
                }
            }
            "message_delta" => {
                if let Some(s) = v["delta"]["stop_reason"].as_str() {
                    out.finish_reason = Some(s.to_string());
                }
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    usage.output_tokens = n;
                }
            }
            "message_stop" => {
                done = true;
                break;
            }
            "error" => return Err(stream_error(&v)),
            _ => {} // ping, content_block_stop
        }
    }
    if !done {
        return Err(ProviderError::MalformedResponse(
            "stream ended before the reply was complete".into(),
        ));
    }
    let calls = blocks
        .into_iter()
        .filter_map(|b| match b {
            Block::Tool(c) => Some(c),
            _ => None,
        })
        .collect();
    out.tool_calls = finish_calls(calls)?;
    out.usage = Some(usage);
    Ok(out)
}

/// A non-streamed Messages response.
fn parse_full(v: &Value, on_delta: &mut dyn FnMut(&str)) -> Result<ChatResponse, ProviderError> {
    let Some(content) = v["content"].as_array() else {
        return Err(ProviderError::MalformedResponse(
            "no content in the response".into(),
        ));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in content {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(PartialCall {
                id: b["id"].as_str().unwrap_or("").to_string(),
                name: b["name"].as_str().unwrap_or("").to_string(),
                arguments: b["input"].to_string(),
            }),
            _ => {}
        }
    }
    if !text.is_empty() {
        on_delta(&text);
    }
    Ok(ChatResponse {
        text,
        tool_calls: finish_calls(calls)?,
        finish_reason: v["stop_reason"].as_str().map(str::to_string),
        usage: Some(Usage {
            input_tokens: v["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: v["usage"]["output_tokens"].as_u64().unwrap_or(0),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ToolSpec;
    use crate::store::{Entry, ToolCall};

    fn sse(s: &str) -> Result<ChatResponse, ProviderError> {
        crate::provider::sse::parse_checked(s, |r, d, c| parse_sse(r, d, c))
    }

    const TOOL_STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\":\"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"read\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"th\\\":\\\"a.txt\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

    #[test]
    fn streamed_text_tool_use_and_usage() {
        let r = sse(TOOL_STREAM).unwrap();
        assert_eq!(r.text, "Let me look");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].id, "toolu_1");
        assert_eq!(r.tool_calls[0].arguments, "{\"path\":\"a.txt\"}");
        assert_eq!(r.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 25,
                output_tokens: 42
            })
        );
    }

    #[test]
    fn truncated_overloaded_and_garbage_streams_are_typed() {
        let cut = &TOOL_STREAM[..TOOL_STREAM.find("event: message_delta").unwrap()];
        assert!(matches!(sse(cut), Err(ProviderError::MalformedResponse(_))));
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(sse(overloaded), Err(ProviderError::Server { status: 529 }));
        assert!(matches!(
            sse("data: {nope\n\n"),
            Err(ProviderError::MalformedResponse(_))
        ));
    }

    #[test]
    fn errors_by_status_and_type() {
        let body =
            |t: &str| format!(r#"{{"type":"error","error":{{"type":"{t}","message":"x"}}}}"#);
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), &body("rate_limit_error")),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify(401, None, &body("authentication_error")),
            ProviderError::Auth
        );
        assert_eq!(
            classify(402, None, &body("billing_error")),
            ProviderError::Billing
        );
        assert_eq!(
            classify(529, None, &body("overloaded_error")),
            ProviderError::Server { status: 529 }
        );
        assert_eq!(
            classify(413, None, &body("request_too_large")),
            ProviderError::ContextOverflow
        );
        assert_eq!(
            classify(400, None, &body("invalid_request_error")),
            ProviderError::BadRequest("HTTP 400 (invalid_request_error)".into())
        );
    }

    #[test]
    fn transcript_maps_to_alternating_blocks() {
        let mut a = Entry::new(Role::Assistant, "checking", None);
        a.tool_calls = vec![ToolCall {
            id: "toolu_1".into(),
            name: "read".into(),
            arguments: "{\"path\":\"a\"}".into(),
        }];
        let mut t = Entry::new(Role::Tool, "contents", None);
        t.tool_call_id = Some("toolu_1".into());
        let transcript = vec![Entry::new(Role::User, "hi", None), a, t];
        let tools = vec![ToolSpec {
            name: "read".into(),
            description: "read a file".into(),
            parameters: json!({"type": "object"}),
        }];
        let req = ChatRequest {
            system: "be brief",
            transcript: &transcript,
            tools: &tools,
        };
        let b = request_body("claude-x", 1000, &req);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], 1000);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1]["content"][1]["type"], "tool_use");
        assert_eq!(m[1]["content"][1]["input"]["path"], "a");
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["type"], "tool_result");
        assert_eq!(b["tools"][0]["input_schema"]["type"], "object");
    }
}
