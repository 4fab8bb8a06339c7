//! A fake Telegram Bot API on loopback, speaking the real JSON: `getMe`,
//! `getUpdates` (long polling, confirmation by offset), `sendMessage`
//! (HTML parse mode checked as Telegram does: unknown tags or a bare `<`
//! or `&` are "can't parse entities", more than 4,096 visible characters
//! is "message is too long"), `editMessageText`, `sendChatAction`,
//! `answerCallbackQuery`, `getFile` and file downloads. Scriptable: a
//! queued fault per method (a status with `retry_after`, a slow answer), a
//! revoked token (401 on everything).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "123456789:AAFakeTokenForHearthTests_0123456789";
pub const BOT_ID: i64 = 123456789;
pub const BOT_NAME: &str = "hearth_test_bot";

#[derive(Debug, Clone)]
pub enum Fault {
    /// An error answer: `error_code`, description, `retry_after` (429).
    Status {
        code: u16,
        description: String,
        retry_after: Option<u64>,
    },
    /// Answer after this many ms.
    Slow(u64),
    /// Start a 200 answer and cut the connection in the middle of its
    /// body (nothing of the request is done).
    Drop,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
    /// The answer's status.
    pub status: u16,
}

/// A message the bot sent, as the user sees it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: i64,
    pub chat_id: i64,
    pub thread: Option<i64>,
    /// The visible text (markup parsed away).
    pub text: String,
    pub html: bool,
    /// How often it was edited (draft streaming).
    pub edits: u32,
}

#[derive(Default)]
struct Inner {
    updates: Vec<Value>,
    next_update: i64,
    confirmed: i64,
    sent: Vec<Sent>,
    calls: Vec<Call>,
    faults: Vec<(String, Fault)>,
    revoked: bool,
    files: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    news: Arc<tokio::sync::Notify>,
}

pub struct FakeTelegram {
    pub url: String,
    shared: Shared,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn err(code: u16, description: &str, retry_after: Option<u64>) -> Response {
    let mut v = json!({"ok": false, "error_code": code, "description": description});
    if let Some(r) = retry_after {
        v["parameters"] = json!({"retry_after": r});
    }
    (StatusCode::from_u16(code).unwrap(), Json(v)).into_response()
}

/// Telegram's HTML parse mode: the visible text, or why it cannot parse.
pub fn parse_html(s: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "tg-spoiler",
        "blockquote",
    ];
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('&') {
            let end = rest
                .find(';')
                .ok_or("can't parse entities: unclosed entity")?;
            out.push_str(match &rest[..=end] {
                "&lt;" => "<",
                "&gt;" => ">",
                "&amp;" => "&",
                "&quot;" => "\"",
                e => return Err(format!("can't parse entities: unsupported entity {e}")),
            });
            rest = &rest[end + 1..];
            continue;
        }
        let end = rest
            .find('>')
            .ok_or("can't parse entities: unclosed start tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name) {
                return Err(format!("can't parse entities: unmatched end tag {name}"));
            }
        } else {
            let name = tag.split(' ').next().unwrap_or("");
            if !TAGS.contains(&name) {
                return Err(format!(
                    "can't parse entities: unsupported start tag \"{name}\""
                ));
            }
            if name == "a" && !tag.starts_with("a href=\"") {
                return Err("can't parse entities: bad a tag".into());
            }
            open.push(name.to_string());
        }
    }
    out.push_str(rest);
    if !open.is_empty() {
        return Err("can't parse entities: unclosed tags".into());
    }
    Ok(out)
}

async fn file(State(sh): State<Shared>, Path((token, path)): Path<(String, String)>) -> Response {
    let token = token.strip_prefix("bot").unwrap_or("");
    let inner = sh.inner.lock().unwrap();
    if token != TOKEN || inner.revoked {
        return err(401, "Unauthorized", None);
    }
    match inner.files.iter().find(|(p, _)| *p == path) {
        Some((_, b)) => b.clone().into_response(),
        None => err(404, "Not Found", None),
    }
}

async fn method(
    State(sh): State<Shared>,
    Path((token, method)): Path<(String, String)>,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(json!({}));
    let fault = {
        let mut inner = sh.inner.lock().unwrap();
        let f = inner
            .faults
            .iter()
            .position(|(m, _)| *m == method)
            .map(|i| inner.faults.remove(i).1);
        let status = match (
            &f,
            token.strip_prefix("bot") == Some(TOKEN) && !inner.revoked,
        ) {
            (_, false) => 401,
            (Some(Fault::Status { code, .. }), _) => *code,
            _ => 200,
        };
        inner.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
            at: Instant::now(),
            status,
        });
        f
    };
    if token.strip_prefix("bot") != Some(TOKEN) || sh.inner.lock().unwrap().revoked {
        return err(401, "Unauthorized", None);
    }
    match fault {
        Some(Fault::Status {
            code,
            description,
            retry_after,
        }) => return err(code, &description, retry_after),
        Some(Fault::Slow(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Drop) => {
            let parts: Vec<Result<&'static str, std::io::Error>> = vec![
                Ok("{\"ok\":tr"),
                Err(std::io::Error::other("connection dropped")),
            ];
            return Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(futures_util::stream::iter(
                    parts,
                )))
                .unwrap();
        }
        None => {}
    }
    match method.as_str() {
        "getMe" => {
            ok(json!({"id": BOT_ID, "is_bot": true, "first_name": "Hearth", "username": BOT_NAME}))
        }
        "getUpdates" => get_updates(&sh, &body).await,
        "sendMessage" => send_message(&sh, &body),
        "editMessageText" => edit_message(&sh, &body),
        "sendChatAction" | "answerCallbackQuery" => ok(json!(true)),
        "getFile" => {
            let id = body["file_id"].as_str().unwrap_or("");
            ok(
                json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_size": 4, "file_path": format!("photos/{id}.jpg")}),
            )
        }
        _ => err(404, "Not Found: method not found", None),
    }
}

async fn get_updates(sh: &Shared, body: &Value) -> Response {
    let offset = body["offset"].as_i64().unwrap_or(0);
    let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(50));
    loop {
        let notified = sh.news.notified();
        {
            let mut inner = sh.inner.lock().unwrap();
            // every update below the offset is confirmed: forgotten
            inner.confirmed = inner.confirmed.max(offset);
            let confirmed = inner.confirmed;
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap() >= confirmed);
            let list: Vec<Value> = inner.updates.iter().take(limit).cloned().collect();
            if !list.is_empty() || tokio::time::Instant::now() >= deadline {
                return ok(Value::Array(list));
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

fn send_message(sh: &Shared, body: &Value) -> Response {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return err(400, "Bad Request: chat not found", None);
    };
    let raw = body["text"].as_str().unwrap_or("");
    let html = body["parse_mode"] == "HTML";
    let text = if html {
        match parse_html(raw) {
            Ok(t) => t,
            Err(e) => return err(400, &format!("Bad Request: {e}"), None),
        }
    } else {
        raw.to_string()
    };
    if text.trim().is_empty() {
        return err(400, "Bad Request: message text is empty", None);
    }
    if text.chars().count() > 4096 {
        return err(400, "Bad Request: message is too long", None);
    }
    let mut inner = sh.inner.lock().unwrap();
    let message_id = inner.sent.len() as i64 + 1;
    inner.sent.push(Sent {
        message_id,
        chat_id,
        thread: body["message_thread_id"].as_i64(),
        text: text.clone(),
        html,
        edits: 0,
    });
    ok(json!({"message_id": message_id, "chat": {"id": chat_id}, "date": 0, "text": text}))
}

fn edit_message(sh: &Shared, body: &Value) -> Response {
    let (chat, id) = (body["chat_id"].as_i64(), body["message_id"].as_i64());
    let raw = body["text"].as_str().unwrap_or("");
    let text = if body["parse_mode"] == "HTML" {
        match parse_html(raw) {
            Ok(t) => t,
            Err(e) => return err(400, &format!("Bad Request: {e}"), None),
        }
    } else {
        raw.to_string()
    };
    if text.chars().count() > 4096 {
        return err(400, "Bad Request: message is too long", None);
    }
    let mut inner = sh.inner.lock().unwrap();
    let Some(m) = inner
        .sent
        .iter_mut()
        .find(|m| Some(m.chat_id) == chat && Some(m.message_id) == id)
    else {
        return err(400, "Bad Request: message to edit not found", None);
    };
    if m.text == text {
        return err(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message", None);
    }
    m.text = text.clone();
    m.edits += 1;
    ok(json!({"message_id": id, "chat": {"id": chat}, "date": 0, "text": text}))
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let shared = Shared::default();
        shared.inner.lock().unwrap().next_update = 1000;
        let app = Router::new()
            .route("/{token}/{method}", post(method))
            .route("/file/{token}/{*path}", get(file))
            .with_state(shared.clone());
        let (addr, stop) = super::serve(app).await;
        FakeTelegram {
            url: format!("http://{addr}"),
            shared,
            stop,
        }
    }

    /// The `[channels.telegram]` section for this fake.
    pub fn section(&self, extra: &str) -> String {
        format!("[channels.telegram]\nbot_token = \"{TOKEN}\"\napi_base = \"{}\"\npoll_timeout_secs = 2\n{extra}\n", self.url)
    }

    /// Queues an update (its `update_id` is set); returns the id.
    pub fn push(&self, mut update: Value) -> i64 {
        let id = {
            let mut inner = self.shared.inner.lock().unwrap();
            let id = inner.next_update;
            inner.next_update += 1;
            update["update_id"] = json!(id);
            inner.updates.push(update);
            id
        };
        self.shared.news.notify_waiters();
        id
    }

    /// Serves an update again with the id it had (Telegram repeating one
    /// it thinks was not received).
    pub fn push_again(&self, id: i64, mut update: Value) {
        update["update_id"] = json!(id);
        self.shared.inner.lock().unwrap().updates.push(update);
        self.shared.news.notify_waiters();
    }

    /// A text message from user `from` in chat `chat` (private when equal).
    pub fn message(&self, chat: i64, from: i64, text: &str) -> i64 {
        let kind = if chat == from {
            "private"
        } else {
            "supergroup"
        };
        self.push(json!({"message": {"message_id": 1, "date": 0, "chat": {"id": chat, "type": kind},
                                     "from": {"id": from, "is_bot": false, "first_name": format!("User{from}")},
                                     "text": text}}))
    }

    pub fn fail(&self, method: &str, f: Fault) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .faults
            .push((method.into(), f));
    }

    pub fn faults_left(&self) -> usize {
        self.shared.inner.lock().unwrap().faults.len()
    }

    pub fn revoke(&self) {
        self.shared.inner.lock().unwrap().revoked = true;
    }

    pub fn add_file(&self, path: &str, bytes: &[u8]) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .files
            .push((path.into(), bytes.to_vec()));
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.shared.inner.lock().unwrap().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat)
            .map(|s| s.text)
            .collect()
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Updates not confirmed yet.
    pub fn unconfirmed(&self) -> usize {
        self.shared.inner.lock().unwrap().updates.len()
    }

    /// Waits until a message to `chat` satisfies `f`; returns it.
    pub async fn wait_sent(&self, chat: i64, wait: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(t) = self.sent_to(chat).into_iter().find(|t| f(t)) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message to {chat}; sent: {:?}",
                self.sent()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
