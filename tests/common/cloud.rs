//! A fake Anthropic and Gemini API on loopback, speaking both real wire
//! formats: `POST /v1/messages` (Messages API SSE with streamed tool use) and
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
//! (GenerateContentResponse events with function calls).
//!
//! Replies follow the last user turn: a tool result → `tool said: <result>`;
//! `[tool:read:PATH]` → a `read {path}` call; anything else → `echo: <text>`.
//! Faults queued with [`FakeCloud::fail`] are served first, each once, to
//! requests with the given API key (or any key): an HTTP status with a body
//! and `retry-after`, a hang, a stream cut mid-reply, or broken JSON.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Fault {
    Status {
        code: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Wait this long before answering (longer than the provider timeout).
    Hang(u64),
    /// Stream some text, then end without finishing.
    Cut,
    /// Stream some text, then a line that is not JSON.
    Garbage,
    /// Answer with one plain JSON body instead of a stream (text replies).
    NonStreaming,
}

#[derive(Debug, Clone)]
pub struct CloudReq {
    /// `anthropic` or `gemini`.
    pub api: &'static str,
    pub key: String,
    /// The model from the URL (gemini) or body (anthropic).
    pub model: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// Queued faults, each for one API key or (None) any.
type Faults = Arc<Mutex<Vec<(Option<String>, Fault)>>>;

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<CloudReq>>>,
    faults: Faults,
}

pub struct FakeCloud {
    pub url: String,
    shared: Shared,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeCloud {
    pub async fn start() -> FakeCloud {
        let shared = Shared::default();
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1beta/models/{call}", post(gemini))
            .with_state(shared.clone());
        let (addr, stop) = super::serve(app).await;
        FakeCloud {
            url: format!("http://{addr}"),
            shared,
            stop,
        }
    }

    /// Queues a fault for the next request with `key` (None: any key).
    pub fn fail(&self, key: Option<&str>, f: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .push((key.map(str::to_string), f));
    }

    pub fn requests(&self) -> Vec<CloudReq> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The API keys of all requests so far, in order.
    pub fn keys(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.key).collect()
    }

    pub fn faults_left(&self) -> usize {
        self.shared.faults.lock().unwrap().len()
    }
}

/// What the last user turn asks for.
enum Ask {
    ToolResult(String),
    Text(String),
}

impl Shared {
    fn record(&self, r: CloudReq) -> Option<Fault> {
        let key = r.key.clone();
        self.log.lock().unwrap().push(r);
        let mut f = self.faults.lock().unwrap();
        let i = f
            .iter()
            .position(|(k, _)| k.as_deref().is_none_or(|k| k == key))?;
        Some(f.remove(i).1)
    }
}

fn headers_of(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

fn marker(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("[{name}:"))? + name.len() + 2;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

fn sse_response(body: String) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

fn json_response(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// The plain reply text for a non-streamed answer.
fn plain_reply(ask: &Ask) -> String {
    match ask {
        Ask::ToolResult(r) => format!("tool said: {r}"),
        Ask::Text(t) => format!("echo: {t}"),
    }
}

/// Serves a status fault or sleeps through a hang; `None` means stream.
async fn serve_fault(f: &Option<Fault>) -> Option<Response> {
    match f {
        Some(Fault::Status {
            code,
            body,
            retry_after,
        }) => {
            let mut b = Response::builder()
                .status(*code)
                .header("content-type", "application/json");
            if let Some(s) = retry_after {
                b = b.header("retry-after", s.to_string());
            }
            Some(b.body(Body::from(body.clone())).unwrap())
        }
        Some(Fault::Hang(ms)) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            None
        }
        _ => None,
    }
}

// ------------------------------------------------------------- Anthropic

fn a_event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

async fn anthropic(State(s): State<Shared>, h: HeaderMap, body: String) -> Response {
    let req: Value = serde_json::from_str(&body).expect("request is JSON");
    let fault = s.record(CloudReq {
        api: "anthropic",
        key: h
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .into(),
        model: req["model"].as_str().unwrap_or("").into(),
        headers: headers_of(&h),
        body: req.clone(),
    });
    if let Some(r) = serve_fault(&fault).await {
        return r;
    }
    let last = req["messages"].as_array().and_then(|m| m.last()).cloned();
    let blocks = last
        .as_ref()
        .and_then(|m| m["content"].as_array().cloned())
        .unwrap_or_default();
    let ask = match blocks.iter().find(|b| b["type"] == "tool_result") {
        Some(b) => Ask::ToolResult(super::unmark(b["content"].as_str().unwrap_or(""))),
        None => Ask::Text(
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    if let Some(Fault::NonStreaming) = fault {
        return json_response(
            json!({"id": "msg_2", "type": "message", "role": "assistant",
            "model": req["model"], "content": [{"type": "text", "text": plain_reply(&ask)}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 11, "output_tokens": 9}}),
        );
    }
    let mut out = a_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
               "content": [], "model": req["model"], "stop_reason": null,
               "usage": {"input_tokens": 11, "output_tokens": 1}}}),
    );
    let text_block = |out: &mut String, i: u32, parts: &[&str]| {
        out.push_str(&a_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
        ));
        for p in parts {
            out.push_str(&a_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        out.push_str(&a_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    };
    match &fault {
        Some(Fault::Cut) => {
            out.push_str(&a_event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            out.push_str(&a_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "half a rep"}}),
            ));
            return sse_response(out);
        }
        Some(Fault::Garbage) => {
            out.push_str("event: content_block_start\ndata: {\"type\": oops\n\n");
            return sse_response(out);
        }
        _ => {}
    }
    let stop = match ask {
        Ask::ToolResult(r) => {
            text_block(&mut out, 0, &["tool said: ", &r]);
            "end_turn"
        }
        Ask::Text(t) => match marker(&t, "tool:read") {
            Some(path) => {
                text_block(&mut out, 0, &["Reading it."]);
                let args = json!({"path": path}).to_string();
                let (a, b) = args.split_at(args.len() / 2);
                out.push_str(&a_event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 1,
                           "content_block": {"type": "tool_use", "id": "toolu_01", "name": "read", "input": {}}}),
                ));
                for p in [a, b] {
                    out.push_str(&a_event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": p}}),
                    ));
                }
                out.push_str(&a_event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 1}),
                ));
                "tool_use"
            }
            None => {
                let e = format!("echo: {t}");
                let (a, b) = e.split_at(e.find(' ').unwrap_or(0));
                text_block(&mut out, 0, &[a, b]);
                "end_turn"
            }
        },
    };
    out.push_str(&a_event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": 9}}),
    ));
    out.push_str(&a_event("message_stop", json!({"type": "message_stop"})));
    sse_response(out)
}

// ---------------------------------------------------------------- Gemini

fn g_chunk(parts: Value, finish: Option<&str>) -> String {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut v = json!({"candidates": [], "modelVersion": "fake-gemini"});
    if let Some(f) = finish {
        cand["finishReason"] = json!(f);
        v["usageMetadata"] =
            json!({"promptTokenCount": 11, "candidatesTokenCount": 9, "totalTokenCount": 20});
    }
    v["candidates"] = json!([cand]);
    format!("data: {v}\r\n\r\n")
}

async fn gemini(
    State(s): State<Shared>,
    Path(call): Path<String>,
    h: HeaderMap,
    body: String,
) -> Response {
    let req: Value = serde_json::from_str(&body).expect("request is JSON");
    let model = call
        .strip_suffix(":streamGenerateContent")
        .unwrap_or(&call)
        .to_string();
    let fault = s.record(CloudReq {
        api: "gemini",
        key: h
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .into(),
        model,
        headers: headers_of(&h),
        body: req.clone(),
    });
    if let Some(r) = serve_fault(&fault).await {
        return r;
    }
    let parts = req["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array().cloned())
        .unwrap_or_default();
    let ask = match parts.iter().find_map(|p| p.get("functionResponse")) {
        Some(fr) => Ask::ToolResult(super::unmark(
            fr["response"]["content"].as_str().unwrap_or(""),
        )),
        None => Ask::Text(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    if let Some(Fault::NonStreaming) = fault {
        return json_response(
            json!([{"candidates": [{"content": {"parts": [{"text": plain_reply(&ask)}],
            "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 9}}]),
        );
    }
    match &fault {
        Some(Fault::Cut) => return sse_response(g_chunk(json!([{"text": "half a rep"}]), None)),
        Some(Fault::Garbage) => {
            return sse_response(format!(
                "{}data: {{\"candidates\": [oops\r\n\r\n",
                g_chunk(json!([{"text": "half"}]), None)
            ))
        }
        _ => {}
    }
    let out = match ask {
        Ask::ToolResult(r) => {
            g_chunk(json!([{"text": "tool said: "}]), None)
                + &g_chunk(json!([{"text": r}]), Some("STOP"))
        }
        Ask::Text(t) => match marker(&t, "tool:read") {
            Some(path) => g_chunk(
                json!([{"text": "Reading it."}, {"functionCall": {"name": "read", "args": {"path": path}}}]),
                Some("STOP"),
            ),
            None => {
                let e = format!("echo: {t}");
                let (a, b) = e.split_at(e.find(' ').unwrap_or(0));
                g_chunk(json!([{"text": a}]), None) + &g_chunk(json!([{"text": b}]), Some("STOP"))
            }
        },
    };
    sse_response(out)
}
