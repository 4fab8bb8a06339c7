//! Model providers behind one small blocking trait.
//!
//! A provider maps our transcript and tool schemas to its wire format, streams
//! text deltas through a callback and returns the complete reply. Calls block
//! (ureq), so the agent loop runs them on the blocking pool. Errors are typed
//! ([`ProviderError`]): the retry/fallback decision in [`run_chain`] uses the
//! variant, never the message text.

pub mod openai;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, ModelChain, ProviderKind};
use crate::store::{Entry, ToolCall};

/// A tool offered to the model.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

pub struct ChatRequest<'a> {
    pub system: &'a str,
    pub transcript: &'a [Entry],
    pub tools: &'a [ToolSpec],
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
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

pub trait Provider: Send + Sync {
    /// Streams one completion. `on_delta` gets text as it arrives; `cancel`
    /// is checked between chunks.
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError>;
}

/// The configured providers by name.
#[derive(Clone, Default)]
pub struct Providers {
    map: BTreeMap<String, Arc<dyn Provider>>,
}

impl Providers {
    pub fn from_config(cfg: &Config) -> Providers {
        let mut map: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for (name, p) in &cfg.providers {
            match p.kind {
                ProviderKind::Openai => {
                    map.insert(name.clone(), Arc::new(openai::OpenAi::new(p)));
                }
            }
        }
        Providers { map }
    }

    pub fn insert(&mut self, name: &str, p: Arc<dyn Provider>) {
        self.map.insert(name.to_string(), p);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.map.get(name)
    }
}

/// Outcome of a chain call: the reply and which model ref produced it.
pub struct ChainReply {
    pub response: ChatResponse,
    pub model_ref: String,
}

/// Retries transient errors (bounded, jittered backoff), then falls back to
/// the next model in the chain. Blocking; call from the blocking pool.
pub fn run_chain(
    providers: &Providers,
    chain: &ModelChain,
    req: &ChatRequest<'_>,
    on_delta: &mut dyn FnMut(&str),
    on_restart: &mut dyn FnMut(),
    cancel: &AtomicBool,
) -> Result<ChainReply, ProviderError> {
    const ATTEMPTS: u32 = 3;
    let mut last = ProviderError::Network("no model configured".into());
    for model_ref in chain.refs() {
        let Some((pname, model)) = model_ref.split_once('/') else {
            continue;
        };
        let Some(p) = providers.get(pname) else {
            continue;
        };
        for attempt in 0..ATTEMPTS {
            if cancel.load(Ordering::Relaxed) {
                return Err(ProviderError::Cancelled);
            }
            let mut emitted = false;
            let mut sink = |d: &str| {
                emitted = true;
                on_delta(d)
            };
            match p.chat(model, req, &mut sink, cancel) {
                Ok(r) => {
                    return Ok(ChainReply {
                        response: r,
                        model_ref: model_ref.to_string(),
                    })
                }
                Err(ProviderError::Cancelled) => return Err(ProviderError::Cancelled),
                Err(e) => {
                    tracing::warn!(model = model_ref, attempt, error = %e, "provider call failed");
                    if emitted {
                        // The partial text must not stand as the reply.
                        on_restart();
                    }
                    let transient = e.is_transient();
                    let wait = match &e {
                        ProviderError::RateLimited {
                            retry_after: Some(d),
                        } => (*d).min(Duration::from_secs(10)),
                        _ => backoff(attempt),
                    };
                    last = e;
                    if !transient || attempt + 1 == ATTEMPTS {
                        break;
                    }
                    sleep_cancellable(wait, cancel);
                }
            }
        }
    }
    Err(last)
}

/// 250 ms × 2^attempt with ±50% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64 << attempt.min(6);
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = u16::from_le_bytes(b) as u64 % base;
    Duration::from_millis(base / 2 + r)
}

fn sleep_cancellable(d: Duration, cancel: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Scripted(Mutex<Vec<Result<ChatResponse, ProviderError>>>);
    impl Provider for Scripted {
        fn chat(
            &self,
            _m: &str,
            _r: &ChatRequest<'_>,
            d: &mut dyn FnMut(&str),
            _c: &AtomicBool,
        ) -> Result<ChatResponse, ProviderError> {
            d("x");
            self.0.lock().unwrap().remove(0)
        }
    }

    #[test]
    fn retries_transient_then_falls_back() {
        let mut ps = Providers::default();
        ps.insert(
            "a",
            Arc::new(Scripted(Mutex::new(vec![
                Err(ProviderError::Server { status: 500 }),
                Err(ProviderError::Auth),
            ]))),
        );
        ps.insert(
            "b",
            Arc::new(Scripted(Mutex::new(vec![Ok(ChatResponse {
                text: "ok".into(),
                ..Default::default()
            })]))),
        );
        let chain = ModelChain {
            primary: "a/m".into(),
            fallbacks: vec!["b/m".into()],
        };
        let req = ChatRequest {
            system: "",
            transcript: &[],
            tools: &[],
        };
        let mut restarts = 0;
        let r = run_chain(
            &ps,
            &chain,
            &req,
            &mut |_| {},
            &mut || restarts += 1,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(r.model_ref, "b/m");
        assert_eq!(r.response.text, "ok");
        assert_eq!(restarts, 2);
    }
}
