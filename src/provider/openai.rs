//! OpenAI-compatible chat completions (OpenAI, Ollama, llama.cpp server,
//! vLLM, ...) with SSE streaming and streamed tool calls, over ureq + rustls
//! (ring).

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{json, Value};

use super::sse;
use super::{ChatRequest, ChatResponse, Provider, ProviderError, Usage};
use crate::config::{ProviderConfig, Secret};
use crate::store::{Role, ToolCall};

pub struct OpenAi {
    base_url: String,
    agent: ureq::Agent,
}

impl OpenAi {
    pub fn new(cfg: &ProviderConfig) -> OpenAi {
        OpenAi {
            base_url: cfg.base_url.clone(),
            agent: super::http_agent(cfg),
        }
    }
}

/// The request body in OpenAI's wire format.
pub fn request_body(model: &str, req: &ChatRequest<'_>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for e in req.transcript {
        let m = match e.role {
            Role::User => json!({"role": "user", "content": e.text}),
            Role::System => json!({"role": "system", "content": e.text}),
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": e.tool_call_id.clone().unwrap_or_default(),
                "content": e.text,
            }),
            Role::Assistant => {
                let mut m = json!({"role": "assistant", "content": e.text});
                if !e.tool_calls.is_empty() {
                    m["tool_calls"] = e
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}})
                        })
                        .collect();
                }
                m
            }
        };
        messages.push(m);
    }
    let mut body = json!({"model": model, "messages": messages, "stream": true,
                          "stream_options": {"include_usage": true}});
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
    }
    body
}

impl Provider for OpenAi {
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        key: Option<&Secret>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError> {
        let body = serde_json::to_vec(&request_body(model, req)).expect("json");
        let mut r = self
            .agent
            .post(format!("{}/chat/completions", self.base_url))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {}", k.expose()));
        }
        let resp = r.send(&body[..]).map_err(map_transport)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let (retry_after, text) = error_parts(resp);
            return Err(classify(status, retry_after, &text));
        }
        if is_json(&resp) {
            // A server that ignores `stream: true`.
            return parse_full(&read_json(resp)?, on_delta);
        }
        parse_sse(
            BufReader::new(resp.into_body().into_reader()),
            on_delta,
            cancel,
        )
    }
}

pub(crate) fn map_transport(e: ureq::Error) -> ProviderError {
    match e {
        ureq::Error::Timeout(_) => ProviderError::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ProviderError::Timeout,
        other => ProviderError::Network(other.to_string()),
    }
}

/// `retry-after` (seconds) and up to 64 KiB of the body of an error response.
pub(crate) fn error_parts(resp: ureq::http::Response<ureq::Body>) -> (Option<Duration>, String) {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_millis((s.min(86_400.0) * 1000.0) as u64));
    let mut text = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(64 * 1024)
        .read_to_string(&mut text);
    (retry_after, text)
}

/// Whether a response is plain JSON rather than an event stream.
pub(crate) fn is_json(resp: &ureq::http::Response<ureq::Body>) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"))
}

/// Reads a whole JSON body (a server that ignored `stream`), up to 16 MiB.
pub(crate) fn read_json(resp: ureq::http::Response<ureq::Body>) -> Result<Value, ProviderError> {
    let mut text = String::new();
    resp.into_body()
        .into_reader()
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| ProviderError::Network(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| ProviderError::MalformedResponse(e.to_string()))
}

/// Maps an HTTP error status to a typed error. The body is only used for the
/// machine-readable `error.code`, never searched as free text.
fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    match status {
        429 if code == "insufficient_quota" => ProviderError::Billing,
        429 => ProviderError::RateLimited { retry_after },
        401 | 403 => ProviderError::Auth,
        402 => ProviderError::Billing,
        408 | 504 => ProviderError::Timeout,
        400 | 413 if code == "context_length_exceeded" => ProviderError::ContextOverflow,
        500..=599 => ProviderError::Server { status },
        _ => ProviderError::BadRequest(format!(
            "HTTP {status}{}",
            if code.is_empty() {
                String::new()
            } else {
                format!(" ({code})")
            }
        )),
    }
}

/// The `usage` object of a chunk or response, if it has one.
fn usage(v: &Value) -> Option<Usage> {
    v.get("usage").filter(|u| u.is_object()).map(|u| Usage {
        input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

#[derive(Default)]
pub(crate) struct PartialCall {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// Parses an SSE chat-completions stream. A stream that ends without
/// `[DONE]` or a finish reason is an error: partial text is never a reply.
pub fn parse_sse<R: BufRead>(
    r: R,
    on_delta: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
) -> Result<ChatResponse, ProviderError> {
    let mut out = ChatResponse::default();
    let mut calls: Vec<PartialCall> = Vec::new();
    let mut done = false;
    let mut events = sse::Reader::new(r);
    while let Some(ev) = events.next_event(cancel)? {
        let data = ev.data.trim();
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::MalformedResponse(format!("bad SSE JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(ProviderError::MalformedResponse(format!(
                "error in stream: {}",
                err["type"].as_str().unwrap_or("unknown")
            )));
        }
        if let Some(u) = usage(&v) {
            out.usage = Some(u);
        }
        let Some(choice) = v["choices"].get(0) else {
            continue; // usage-only chunk
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            if !t.is_empty() {
                out.text.push_str(t);
                on_delta(t);
            }
        }
        if let Some(tcs) = delta["tool_calls"].as_array() {
            for tc in tcs {
                let idx = tc["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
                if idx > 64 {
                    return Err(ProviderError::MalformedResponse(
                        "tool call index out of range".into(),
                    ));
                }
                while calls.len() <= idx {
                    calls.push(PartialCall::default());
                }
                let c = &mut calls[idx];
                if let Some(id) = tc["id"].as_str() {
                    c.id = id.to_string();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    c.name.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    c.arguments.push_str(a);
                }
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(f.to_string());
        }
    }
    if !done && out.finish_reason.is_none() {
        return Err(ProviderError::MalformedResponse(
            "stream ended before the reply was complete".into(),
        ));
    }
    out.tool_calls = finish_calls(calls)?;
    Ok(out)
}

pub(crate) fn finish_calls(calls: Vec<PartialCall>) -> Result<Vec<ToolCall>, ProviderError> {
    calls
        .into_iter()
        .enumerate()
        .filter(|(_, c)| !c.name.is_empty() || !c.arguments.is_empty())
        .map(|(i, c)| {
            if c.name.is_empty() {
                return Err(ProviderError::MalformedResponse(
                    "tool call without a name".into(),
                ));
            }
            Ok(ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: c.name,
                arguments: if c.arguments.trim().is_empty() {
                    "{}".into()
                } else {
                    c.arguments
                },
            })
        })
        .collect()
}

fn parse_full(v: &Value, on_delta: &mut dyn FnMut(&str)) -> Result<ChatResponse, ProviderError> {
    let msg = &v["choices"][0]["message"];
    if msg.is_null() {
        return Err(ProviderError::MalformedResponse(
            "no choices[0].message".into(),
        ));
    }
    let text = msg["content"].as_str().unwrap_or("").to_string();
    if !text.is_empty() {
        on_delta(&text);
    }
    let mut calls = Vec::new();
    for tc in msg["tool_calls"].as_array().into_iter().flatten() {
        calls.push(PartialCall {
            id: tc["id"].as_str().unwrap_or("").to_string(),
            name: tc["function"]["name"].as_str().unwrap_or("").to_string(),
            arguments: tc["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(ChatResponse {
        text,
        tool_calls: finish_calls(calls)?,
        finish_reason: v["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_string),
        usage: usage(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(s: &str) -> Result<ChatResponse, ProviderError> {
        crate::provider::sse::parse_checked(s, |r, d, c| parse_sse(r, d, c))
    }

    #[test]
    fn text_and_tool_calls() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"read\",\"arguments\":\"{\\\"pa\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"th\\\":\\\"a\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: [DONE]\n\n";
        let r = sse(s).unwrap();
        assert_eq!(r.text, "Hello");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "read");
        assert_eq!(r.tool_calls[0].arguments, "{\"path\":\"a\"}");
    }

    #[test]
    fn truncated_and_malformed_streams_are_errors() {
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        assert!(matches!(sse(cut), Err(ProviderError::MalformedResponse(_))));
        let bad = "data: {not json\n\n";
        assert!(matches!(sse(bad), Err(ProviderError::MalformedResponse(_))));
    }

    #[test]
    fn status_classification() {
        assert_eq!(
            classify(429, Some(Duration::from_secs(2)), ""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(classify(401, None, ""), ProviderError::Auth);
        assert_eq!(classify(402, None, ""), ProviderError::Billing);
        assert_eq!(
            classify(503, None, ""),
            ProviderError::Server { status: 503 }
        );
        assert_eq!(
            classify(400, None, r#"{"error":{"code":"context_length_exceeded"}}"#),
            ProviderError::ContextOverflow
        );
    }
}
