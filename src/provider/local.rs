//! `kind = "local"`: the in-process chat model (`[models] chat`: SmolLM2-135M
//! by default, or Gemma 3 270M; candle). It
//! loads lazily on first use and keeps the result (a load error too, so a
//! broken file is reported once per turn, not re-read every time). When the
//! agent offers tools, the reply is either plain text or a tool call whose
//! arguments satisfy the tool's schema (constrained decoding).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{ChatRequest, ChatResponse, Provider, ProviderError, Usage};
use crate::config::{ModelsConfig, Secret};
use crate::models::chat::{ChatModel, GenOptions, Msg, Output, ToolMode};
use crate::models::ModelError;
use crate::store::{Role, ToolCall};

pub struct LocalProvider {
    path: PathBuf,
    cfg: ModelsConfig,
    model: Mutex<Option<Result<Arc<ChatModel>, String>>>,
}

impl LocalProvider {
    pub fn new(path: PathBuf, cfg: &ModelsConfig) -> LocalProvider {
        LocalProvider {
            path,
            cfg: cfg.clone(),
            model: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Prompt plus reply, in tokens (`[models] context_tokens`).
    pub fn context_tokens(&self) -> usize {
        self.cfg.context_tokens
    }

    fn model(&self) -> Result<Arc<ChatModel>, ProviderError> {
        let mut g = self.model.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let t = std::time::Instant::now();
            let r = ChatModel::load(
                &self.path,
                self.cfg.threads,
                self.cfg.memory_mb,
                self.cfg.context_tokens,
            );
            match &r {
                Ok(_) => {
                    tracing::info!(path = %self.path.display(), ms = t.elapsed().as_millis() as u64, threads = self.cfg.threads, "local chat model loaded")
                }
                Err(e) => tracing::error!("local chat model cannot be loaded: {e}"),
            }
            *g = Some(r.map(Arc::new).map_err(|e| e.to_string()));
        }
        match g.as_ref().expect("set above") {
            Ok(m) => Ok(m.clone()),
            Err(e) => Err(ProviderError::Unavailable(e.clone())),
        }
    }
}

/// Our transcript as ChatML messages; tools are described in the system
/// message, earlier calls and results in the Hermes style the constraint
/// produces.
pub fn messages(req: &ChatRequest<'_>) -> Vec<Msg> {
    let mut system = req.system.to_string();
    if !req.tools.is_empty() {
        system.push_str(
            "\n\n# Tools\nTo use a tool, reply with only:\n<tool_call>\n{\"name\": <tool name>, \"arguments\": <JSON arguments>}\n</tool_call>\nAvailable tools:\n",
        );
        for t in req.tools {
            system.push_str(
                &json!({"name": t.name, "description": t.description, "parameters": t.parameters})
                    .to_string(),
            );
            system.push('\n');
        }
        system.push_str("Otherwise answer in plain text.");
    }
    let mut out = vec![Msg {
        role: "system",
        content: system,
    }];
    for e in req.transcript {
        match e.role {
            Role::System => out[0].content.push_str(&format!("\n\n{}", e.text)),
            Role::User => out.push(Msg {
                role: "user",
                content: e.text.clone(),
            }),
            Role::Assistant => {
                let mut content = e.text.clone();
                for c in &e.tool_calls {
                    let args = super::args_object(&c.arguments);
                    content.push_str(&format!(
                        "<tool_call>\n{}\n</tool_call>",
                        json!({"name": c.name, "arguments": args})
                    ));
                }
                out.push(Msg {
                    role: "assistant",
                    content,
                });
            }
            Role::Tool => out.push(Msg {
                role: "user",
                content: format!("<tool_response>\n{}\n</tool_response>", e.text),
            }),
        }
    }
    out
}

impl Provider for LocalProvider {
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest<'_>,
        _key: Option<&Secret>,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<ChatResponse, ProviderError> {
        if model != self.cfg.chat.id {
            return Err(ProviderError::BadRequest(format!(
                "unknown local model {model:?} (the local model is {:?}; `[models] chat` picks it)",
                self.cfg.chat.id
            )));
        }
        let m = self.model()?;
        let tools: Vec<(String, Value)> = req
            .tools
            .iter()
            .map(|t| (t.name.clone(), t.parameters.clone()))
            .collect();
        // A fresh seed per call, so a retry is a new sample.
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let opts = GenOptions {
            max_new_tokens: self.cfg.max_tokens,
            history_tokens: self.cfg.history_tokens,
            seed: u64::from_le_bytes(seed),
            ..Default::default()
        };
        let (out, n) = m
            .generate(
                &messages(req),
                &tools,
                ToolMode::Auto,
                &opts,
                on_delta,
                cancel,
            )
            .map_err(|e| match e {
                ModelError::Cancelled => ProviderError::Cancelled,
                other => ProviderError::Unavailable(other.to_string()),
            })?;
        let usage = Some(Usage {
            input_tokens: n.prompt as u64,
            output_tokens: n.generated as u64,
        });
        Ok(match out {
            Output::Text(text) if text.is_empty() => {
                return Err(ProviderError::MalformedResponse(
                    "the local model gave an empty reply".into(),
                ))
            }
            Output::Text(mut text) if n.cut => {
                // the real limit: max_tokens, or what the window left
                let note = cut_note(n.generated);
                on_delta(&note);
                text.push_str(&note);
                ChatResponse {
                    text,
                    tool_calls: Vec::new(),
                    finish_reason: Some("length".into()),
                    usage,
                }
            }
            Output::Text(text) => ChatResponse {
                text,
                tool_calls: Vec::new(),
                finish_reason: Some("stop".into()),
                usage,
            },
            Output::Call { name, arguments } => ChatResponse {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: format!("call_local_{}", crate::store::new_id()),
                    name,
                    arguments,
                }],
                finish_reason: Some("tool_calls".into()),
                usage,
            },
        })
    }
}

/// Added to a reply that reached `[models] max_tokens`, so it does not just
/// stop mid-sentence without a sign.
pub fn cut_note(max_tokens: usize) -> String {
    format!(
        " …\n\n[Cut off: the local model's replies are limited to {max_tokens} tokens ([models] max_tokens).]"
    )
}
