//! Model providers behind one small blocking trait.
//!
//! A provider maps our transcript and tool schemas to its wire format, streams
//! text deltas through a callback and returns the complete reply. Calls block
//! (ureq), so the agent loop runs them on the blocking pool. Errors are typed
//! ([`ProviderError`]): every retry, rotate and fallback decision in
//! [`run_chain`] uses the variant, never the message text. Which credential
//! is healthy lives in [`credentials::CredentialBook`].

pub mod anthropic;
mod chain;
pub mod credentials;
pub mod gemini;
pub mod local;
pub mod openai;
mod sse;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

pub use chain::{run_chain, ChainReply};
use credentials::{CredentialBook, SystemClock};

use crate::config::{Config, Credential, ProviderConfig, ProviderKind, Secret};
use crate::store::{Entry, ToolCall};

pub use crate::tool::ToolSpec;

pub struct ChatRequest<'a> {
    pub system: &'a str,
    pub transcript: &'a [Entry],
    pub tools: &'a [ToolSpec],
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider rejected the credentials")]
    Auth,
    #[error("the provider account has a billing problem")]
    Billing,
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider had a server error (HTTP {status})")]
    Server { status: u16 },
    #[error("the provider rejected the request: {0}")]
    BadRequest(String),
    #[error("the conversation is too long for the model's context window")]
    ContextOverflow,
    #[error("the provider sent a malformed response: {0}")]
    MalformedResponse(String),
    #[error("cannot reach the provider: {0}")]
    Network(String),
    /// A local model that cannot run (missing or corrupt files, over its
    /// memory budget): nothing to retry, the chain moves on.
    #[error("the local model is not available: {0}")]
    Unavailable(String),
    #[error("cancelled")]
    Cancelled,
}

impl ProviderError {
    /// Worth trying the same model again after a short wait.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Timeout
                | ProviderError::Server { .. }
                | ProviderError::MalformedResponse(_)
                | ProviderError::Network(_)
        )
    }
}

impl ProviderError {
    /// The same error with every credential's key replaced by `***`, in case
    /// a provider echoed one back into a message we keep.
    pub fn redacted(self, creds: &[Credential]) -> ProviderError {
        let clean = |mut m: String| {
            for c in creds {
                let k = c.key.expose();
                if k.len() >= 4 && m.contains(k) {
                    m = m.replace(k, "***");
                }
            }
            m
        };
        match self {
            ProviderError::BadRequest(m) => ProviderError::BadRequest(clean(m)),
            ProviderError::MalformedResponse(m) => ProviderError::MalformedResponse(clean(m)),
            ProviderError::Network(m) => ProviderError::Network(clean(m)),
            other => other,
        }
    }
}

/// Appends `item` to the `key` list of the last message when that message
/// has `role`, else starts a message: for wire formats whose roles must
/// alternate (consecutive tool results are one user turn).
pub(crate) fn push_merged(list: &mut Vec<Value>, role: &str, key: &str, item: Value) {
    if let Some(last) = list.last_mut() {
        if last["role"] == role {
            last[key].as_array_mut().expect("item list").push(item);
            return;
        }
    }
    list.push(json!({"role": role, key: [item]}));
}

/// Makes the conversation open with a user turn (`item` under `key`), as
/// Anthropic and Gemini require.
pub(crate) fn open_with_user(list: &mut Vec<Value>, key: &str, item: Value) {
    if list.first().is_some_and(|m| m["role"] != "user") {
        list.insert(0, json!({"role": "user", key: [item]}));
    }
}

/// A tool call's arguments as a JSON object (`{}` when the model produced
/// none or something that is not an object).
pub(crate) fn args_object(arguments: &str) -> Value {
    serde_json::from_str(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

pub trait Provider: Send + Sync {
    /// Streams one completion with credential `key` (None for keyless
    /// servers). `on_delta` gets text as it arrives; `cancel` is checked
    /// between chunks.
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        key: Option<&Secret>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError>;
}

pub(crate) struct ProviderEntry {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) kind: &'static str,
    pub(crate) base_url: String,
    pub(crate) credentials: Vec<Credential>,
    /// Configured window for all of this provider's models, in tokens.
    pub(crate) context_window: Option<usize>,
}

/// Window assumed for a model this table does not know (set
/// `context_window` on its provider to tell Hearth).
pub const DEFAULT_WINDOW: usize = 32_000;

/// Context windows of well-known model families, in tokens, matched by
/// model-id prefix (the longest match wins). Servers that host other models
/// (Ollama, llama.cpp) set `context_window` in the provider config.
const KNOWN_WINDOWS: &[(&str, usize)] = &[
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4", 8_192),
    ("gpt-5", 400_000),
    ("gpt-3.5-turbo", 16_385),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude", 200_000),
    ("gemini-1.5", 1_048_576),
    ("gemini-2", 1_048_576),
    ("gemini", 1_048_576),
    ("llama-3", 128_000),
    ("llama3", 128_000),
    ("mistral-large", 128_000),
    ("deepseek", 128_000),
    ("qwen", 32_768),
];

/// The window of a model id from [`KNOWN_WINDOWS`], or [`DEFAULT_WINDOW`].
pub fn known_window(model: &str) -> usize {
    let m = model.to_ascii_lowercase();
    // "models/gemini-2.0-flash", "anthropic/claude-3" behind a router
    let m = m.rsplit('/').next().unwrap_or(&m);
    KNOWN_WINDOWS
        .iter()
        .filter(|(p, _)| m.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .map_or(DEFAULT_WINDOW, |(_, w)| *w)
}

/// The configured providers by name, with the health of their credentials.
#[derive(Clone)]
pub struct Providers {
    map: BTreeMap<String, Arc<ProviderEntry>>,
    book: Arc<CredentialBook>,
    local_note: String,
}

impl Default for Providers {
    fn default() -> Self {
        Providers::new(Arc::new(CredentialBook::new(Arc::new(SystemClock))))
    }
}

/// A ureq agent for one provider: statuses come back as responses (we
/// classify them), connect within 10 s, the whole call within the timeout.
pub(crate) fn http_agent(cfg: &ProviderConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(cfg.timeout))
        .timeout_global(Some(cfg.timeout))
        .build()
        .into()
}

impl Providers {
    pub fn new(book: Arc<CredentialBook>) -> Providers {
        Providers {
            map: BTreeMap::new(),
            book,
            local_note: String::new(),
        }
    }

    pub fn from_config(cfg: &Config, book: Arc<CredentialBook>) -> Providers {
        let mut ps = Providers::new(book);
        for (name, p) in &cfg.providers {
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::Openai => Arc::new(openai::OpenAi::new(p)),
                ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(p)),
                ProviderKind::Gemini => Arc::new(gemini::Gemini::new(p)),
                // Needs the models directory: added by the daemon (add_local).
                ProviderKind::Local => continue,
            };
            ps.map.insert(
                name.clone(),
                Arc::new(ProviderEntry {
                    provider,
                    kind: p.kind.as_str(),
                    base_url: p.base_url.clone(),
                    credentials: p.credentials.clone(),
                    context_window: p.context_window,
                }),
            );
        }
        ps
    }

    /// Adds a provider by hand (unit tests).
    #[cfg(test)]
    pub fn insert(&mut self, name: &str, p: Arc<dyn Provider>, credentials: Vec<Credential>) {
        self.map.insert(
            name.to_string(),
            Arc::new(ProviderEntry {
                provider: p,
                kind: "custom",
                base_url: String::new(),
                credentials,
                context_window: None,
            }),
        );
    }

    /// Adds the in-process model under `name`; its replies as a fallback
    /// end with `note` (empty: none).
    pub fn add_local(&mut self, name: &str, p: local::LocalProvider, note: &str) {
        let where_ = p.path().display().to_string();
        let window = p.context_tokens();
        self.map.insert(
            name.to_string(),
            Arc::new(ProviderEntry {
                provider: Arc::new(p),
                kind: "local",
                base_url: where_,
                credentials: Vec::new(),
                context_window: Some(window),
            }),
        );
        self.local_note = note.to_string();
    }

    /// The note for replies the local model gave as a fallback.
    pub fn local_note(&self) -> &str {
        &self.local_note
    }

    /// The context window of `provider/model`, in tokens: the provider's
    /// `context_window` when configured, else [`known_window`].
    pub fn context_window(&self, model_ref: &str) -> usize {
        let (p, m) = model_ref.split_once('/').unwrap_or(("", model_ref));
        self.map
            .get(p)
            .and_then(|e| e.context_window)
            .unwrap_or_else(|| known_window(m))
    }

    pub fn kind_of(&self, name: &str) -> Option<&'static str> {
        self.map.get(name).map(|e| e.kind)
    }

    pub(crate) fn entry(&self, name: &str) -> Option<&Arc<ProviderEntry>> {
        self.map.get(name)
    }

    pub fn book(&self) -> &CredentialBook {
        &self.book
    }

    /// Providers, credentials (masked), their state and last error, for
    /// `status` and `models.list`. Never contains a key.
    pub fn status(&self) -> Vec<Value> {
        let now = self.book.now_ms();
        self.map
            .iter()
            .map(|(name, e)| {
                let ids: Vec<(String, Option<String>)> = if e.credentials.is_empty() {
                    vec![("none".into(), None)]
                } else {
                    e.credentials
                        .iter()
                        .map(|c| (c.id.clone(), Some(c.key.masked())))
                        .collect()
                };
                let creds: Vec<Value> = ids
                    .into_iter()
                    .map(|(id, masked)| {
                        let st = self.book.state(name, &id);
                        let cooling = st.until_ms > now;
                        json!({
                            "id": id,
                            "key": masked,
                            "state": if cooling { st.reason.clone().unwrap_or_else(|| "cooldown".into()) } else { "ok".into() },
                            "availableInMs": st.until_ms.saturating_sub(now),
                            "failures": st.failures,
                            "lastError": st.last_error,
                            "lastErrorAt": (st.last_error_ms > 0).then(|| crate::util::rfc3339(st.last_error_ms)),
                        })
                    })
                    .collect();
                json!({"name": name, "kind": e.kind, "baseUrl": e.base_url, "credentials": creds})
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_by_longest_prefix() {
        assert_eq!(known_window("gpt-4o-mini"), 128_000);
        assert_eq!(known_window("gpt-4"), 8_192);
        assert_eq!(known_window("gpt-4.1-nano"), 1_047_576);
        assert_eq!(known_window("claude-sonnet-4-5"), 200_000);
        assert_eq!(known_window("models/gemini-2.0-flash"), 1_048_576);
        assert_eq!(known_window("Meta/Llama-3.1-8B"), 128_000);
        assert_eq!(known_window("my-own-model"), DEFAULT_WINDOW);
    }
}
