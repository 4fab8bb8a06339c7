//! The local chat model: SmolLM2-135M-Instruct (llama architecture, GGUF
//! Q8_0) with a quantized llama forward pass ([`super::llama`]), its ChatML template, token
//! streaming, and tool calls constrained by [`super::grammar`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::gemma3::Gemma3;
use super::grammar::Automaton;
use super::llama::Llama;
use super::tokens::{meta, meta_u64, Tok};
use super::{corrupt, need, pool, ModelError};

/// The system message SmolLM2's chat template uses when there is none.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// What opens a tool call in the model's output (Hermes style).
pub const CALL_OPEN: &str = "<tool_call>\n";

/// One chat message for the template.
#[derive(Debug, Clone)]
pub struct Msg {
    pub role: &'static str,
    pub content: String,
}

/// Whether the reply may, must or must not be a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_new_tokens: usize,
    /// Most tokens of conversation (everything but the system message) in
    /// the prompt; older turns are left out. Keeps prefill time, and the
    /// small model's focus, the same however long the session grows.
    pub history_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub seed: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_new_tokens: 256,
            history_tokens: 768,
            temperature: 0.3,
            seed: 299792458,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Text(String),
    /// A call whose arguments (JSON text) satisfy the tool's schema.
    Call {
        name: String,
        arguments: String,
    },
}

/// Top-k (40) then top-p (0.9) sampling with temperature over the finite
/// logits (masked tokens are -inf), greedy at temperature 0. Seeded, so a
/// generation is reproducible.
struct Sampler {
    state: u64,
    temperature: f64,
}

impl Sampler {
    fn new(seed: u64, temperature: f64) -> Sampler {
        Sampler {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            temperature,
        }
    }

    /// SplitMix64, as a uniform float in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        if c.is_empty() {
            return None;
        }
        c.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.temperature <= 0.0 {
            return Some(c[0].0);
        }
        c.truncate(40);
        let max = c[0].1 as f64;
        let mut w: Vec<f64> = c
            .iter()
            .map(|(_, l)| ((*l as f64 - max) / self.temperature).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let mut keep = w.len();
        for (i, x) in w.iter_mut().enumerate() {
            *x /= total;
            acc += *x;
            if acc >= 0.9 {
                keep = i + 1;
                break;
            }
        }
        let mass: f64 = w[..keep].iter().sum();
        let mut r = self.uniform() * mass;
        for (i, x) in w[..keep].iter().enumerate() {
            if r < *x {
                return Some(c[i].0);
            }
            r -= x;
        }
        Some(c[keep - 1].0)
    }
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub prompt: usize,
    pub generated: usize,
    /// The reply reached the token limit before the model ended it.
    pub cut: bool,
}

/// The network behind a chat model, by GGUF architecture.
enum Net {
    Llama(Llama),
    Gemma3(Gemma3),
}

impl Net {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Net::Llama(m) => m.forward(x, pos),
            Net::Gemma3(m) => m.forward(x, pos),
        }
    }
}

/// How messages are laid out for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Template {
    /// `<|im_start|>role\n...<|im_end|>` (SmolLM2).
    ChatMl,
    /// `<start_of_turn>user|model\n...<end_of_turn>`, the system text at
    /// the head of the first user turn (Gemma).
    Gemma,
}

pub struct ChatModel {
    weights: Mutex<Net>,
    tokenizer: Tok,
    template: Template,
    /// Each token's text, for the tool-call constraint.
    texts: Vec<String>,
    special: Vec<bool>,
    /// Characters per token, and whether a token is plain string content
    /// (no quote, backslash, control or replacement character).
    nchars: Vec<usize>,
    plain: Vec<bool>,
    /// Tokens made of digits only (held back when a call must finish).
    digits: Vec<bool>,
    stop: Vec<u32>,
    pool: rayon::ThreadPool,
    /// Prompt plus reply must fit in this many tokens.
    pub context: usize,
}

/// Memory beyond the file (weights stay quantized, token embeddings
/// included): the KV cache for a full context (a Gemma sliding-window layer
/// keeps only its window and one prefill chunk), the attention scores of one
/// prefill chunk over the full context, the vocabulary's tables, and slack.
fn footprint_mb(
    c: &gguf_file::Content,
    arch: &str,
    context: usize,
    path: &Path,
) -> Result<u64, ModelError> {
    let k = |s: &str| format!("{arch}.{s}");
    let dim = meta_u64(c, &k("embedding_length"), path)?;
    let layers = meta_u64(c, &k("block_count"), path)?;
    let heads = meta_u64(c, &k("attention.head_count"), path)?.max(1);
    let kv_heads = meta_u64(c, &k("attention.head_count_kv"), path).unwrap_or(heads);
    let head_dim = meta_u64(c, &k("attention.key_length"), path).unwrap_or(dim / heads);
    // In f64: a hostile header cannot overflow the arithmetic.
    let ctx = context as f64;
    let chunk = super::llama::PREFILL_CHUNK as f64;
    let layers = layers as f64;
    let positions = match meta_u64(c, &k("attention.sliding_window"), path) {
        // Every 6th layer is global, the others keep a window and a chunk
        // (`gemma3.rs`).
        Ok(w) if arch == "gemma3" => {
            let global = (layers / super::gemma3::SLIDING_PATTERN as f64).floor();
            global * ctx + (layers - global) * ctx.min(w as f64 + chunk)
        }
        _ => layers * ctx,
    };
    let mb = |bytes: f64| (bytes / 1_048_576.0) as u64;
    let kv_mb = mb(positions * 2.0 * kv_heads as f64 * head_dim as f64 * 4.0);
    let att_mb = mb(heads as f64 * chunk * ctx * 4.0 * 2.0);
    let vocab = match meta(c, "tokenizer.ggml.tokens", path)? {
        gguf_file::Value::Array(a) => a.len() as f64,
        _ => 0.0,
    };
    // The token strings (twice: list and lookup map), their decoded texts,
    // scores, types and flags: about 224 bytes a token (Gemma's 262,144
    // tokens: 56 MB).
    let vocab_mb = mb(vocab * 224.0);
    Ok(kv_mb
        .saturating_add(att_mb)
        .saturating_add(vocab_mb)
        .saturating_add(32))
}

impl ChatModel {
    /// Loads the GGUF model if its estimated footprint fits `budget_mb`.
    pub fn load(
        path: &Path,
        threads: usize,
        budget_mb: u64,
        context: usize,
    ) -> Result<ChatModel, ModelError> {
        let mut f = std::fs::File::open(need(path)?).map_err(|e| corrupt(path, e))?;
        let content = gguf_file::Content::read(&mut f).map_err(|e| corrupt(path, e))?;
        let arch = meta(&content, "general.architecture", path)?
            .to_string()
            .map_err(|e| corrupt(path, e))?
            .clone();
        let template = match arch.as_str() {
            "llama" => Template::ChatMl,
            "gemma3" => Template::Gemma,
            _ => {
                return Err(corrupt(
                    path,
                    format!("architecture {arch:?} is not supported (llama or gemma3)"),
                ))
            }
        };
        let file_mb = f.metadata().map_err(|e| corrupt(path, e))?.len() >> 20;
        let need_mb = file_mb.saturating_add(footprint_mb(&content, &arch, context, path)?);
        if need_mb > budget_mb {
            return Err(ModelError::OverBudget { need_mb, budget_mb });
        }
        let chat_template = meta(&content, "tokenizer.chat_template", path)
            .ok()
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        // Gemma 3 270M as published on PyPI is the pretrained model, whose
        // GGUF has no template; Gemma's turn markers are in its vocabulary.
        if template == Template::ChatMl && !chat_template.contains("<|im_start|>") {
            return Err(corrupt(path, "only ChatML chat templates are supported"));
        }
        let (tokenizer, special) = Tok::from_gguf(&content, path)?;
        let pool = pool(threads)?;
        let weights = pool
            .install(|| match template {
                Template::ChatMl => Llama::from_gguf(content, &mut f).map(Net::Llama),
                Template::Gemma => Gemma3::from_gguf(content, &mut f).map(Net::Gemma3),
            })
            .map_err(|e| corrupt(path, e))?;
        let texts: Vec<String> = (0..special.len() as u32)
            .map(|i| tokenizer.decode(&[i], true).unwrap_or_default())
            .collect();
        let nchars = texts.iter().map(|t| t.chars().count()).collect();
        let plain = texts
            .iter()
            .map(|t| {
                !t.is_empty()
                    && !t
                        .chars()
                        .any(|c| c == '"' || c == '\\' || c.is_control() || c == '\u{FFFD}')
            })
            .collect();
        let digits = texts
            .iter()
            .map(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            .collect();
        let stop = ["<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        Ok(ChatModel {
            weights: Mutex::new(weights),
            tokenizer,
            template,
            texts,
            special,
            nchars,
            plain,
            digits,
            stop,
            pool,
            context,
        })
    }

    /// Sets every token the automaton does not accept to -inf. Tokens are
    /// first screened by their first character (one check per distinct
    /// character), and plain tokens inside a free string by length only.
    fn mask(&self, a: &Automaton, logits: &mut [f32], finishing: bool) {
        let room = a.free_string_room();
        let mut first: std::collections::HashMap<char, bool> = std::collections::HashMap::new();
        for (i, v) in logits.iter_mut().enumerate() {
            let t = &self.texts[i];
            let ok = !self.special[i]
                && !(finishing && (self.plain[i] && room.is_some() || self.digits[i]))
                && match (room, self.plain[i]) {
                    (Some(r), true) => self.nchars[i] <= r,
                    _ => match t.chars().next() {
                        None => false,
                        Some(c) => {
                            *first
                                .entry(c)
                                .or_insert_with(|| a.accepts(c.encode_utf8(&mut [0; 4])))
                                && !t.contains('\u{FFFD}')
                                && (self.nchars[i] == 1 || a.accepts(t))
                        }
                    },
                };
            if !ok {
                *v = f32::NEG_INFINITY;
            }
        }
    }

    /// Token ids back to text, special tokens included (for tests and
    /// debugging prompts).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// Text the model is to read as text (message content, forced parts
    /// of a tool call).
    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer.content(text)
    }

    /// What opens a turn of `role`.
    fn opener(&self, role: &str) -> &'static str {
        match (self.template, role) {
            (Template::ChatMl, "assistant") => "<|im_start|>assistant\n",
            (Template::ChatMl, "system") => "<|im_start|>system\n",
            (Template::ChatMl, _) => "<|im_start|>user\n",
            (Template::Gemma, "assistant") => "<start_of_turn>model\n",
            (Template::Gemma, _) => "<start_of_turn>user\n",
        }
    }

    /// One message in the template.
    fn render(&self, m: &Msg) -> Result<Vec<u32>, ModelError> {
        let t = &self.tokenizer;
        let mut ids = t.template(self.opener(m.role))?;
        ids.extend(t.content(&m.content)?);
        ids.extend(t.template(match self.template {
            Template::ChatMl => "<|im_end|>\n",
            Template::Gemma => "<end_of_turn>\n",
        })?);
        Ok(ids)
    }

    /// The system text ahead of the conversation. Gemma has no system
    /// turn: the text opens the first user turn, whose own opener
    /// [`Self::join`] then leaves out.
    fn render_system(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match self.template {
            Template::ChatMl if text.is_empty() => Ok(Vec::new()),
            Template::ChatMl => self.render(&Msg {
                role: "system",
                content: text.to_string(),
            }),
            Template::Gemma => {
                let mut ids = self.tokenizer.template("<bos>")?;
                if !text.is_empty() {
                    ids.extend(self.tokenizer.template(self.opener("user"))?);
                    ids.extend(self.tokenizer.content(text)?);
                    ids.extend(self.tokenizer.template("\n\n")?);
                }
                Ok(ids)
            }
        }
    }

    /// What opens the reply.
    fn render_tail(&self, prefix: &str) -> Result<Vec<u32>, ModelError> {
        let mut ids = self.tokenizer.template(self.opener("assistant"))?;
        ids.extend(self.encode(prefix)?);
        Ok(ids)
    }

    /// System part, then the kept messages, oldest first.
    fn join(
        &self,
        sys: Vec<u32>,
        with_system_text: bool,
        kept: Vec<Vec<u32>>,
    ) -> Result<Vec<u32>, ModelError> {
        let mut out = sys;
        let mut kept = kept.into_iter();
        if self.template == Template::Gemma && with_system_text {
            let opener = self.tokenizer.template(self.opener("user"))?;
            match kept.next() {
                Some(first) if first.starts_with(&opener) => out.extend(&first[opener.len()..]),
                first => {
                    out.extend(self.tokenizer.template("<end_of_turn>\n")?);
                    out.extend(first.into_iter().flatten());
                }
            }
        }
        for ids in kept {
            out.extend(ids);
        }
        Ok(out)
    }

    fn default_system(&self) -> &'static str {
        match self.template {
            Template::ChatMl => DEFAULT_SYSTEM,
            Template::Gemma => "",
        }
    }

    /// The prompt: the system message and the newest messages that
    /// fit in `history` tokens (always the newest one; whole messages, not
    /// starting with an assistant reply), then, if it is still too long,
    /// the system text cut, until it leaves `reserve` tokens for the reply.
    pub fn prompt(
        &self,
        msgs: &[Msg],
        prefix: &str,
        reserve: usize,
        history: usize,
    ) -> Result<Vec<u32>, ModelError> {
        let budget = self.context.saturating_sub(reserve).max(64);
        let (system, rest): (Vec<&Msg>, Vec<&Msg>) = msgs.iter().partition(|m| m.role == "system");
        let mut sys_text: String = system
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        if sys_text.is_empty() {
            // What the model's own template puts there.
            sys_text = self.default_system().to_string();
        }
        let tail = self.render_tail(prefix)?;
        loop {
            let sys = self.render_system(&sys_text)?;
            let mut used = sys.len() + tail.len();
            let mut conv = 0usize;
            let mut kept: Vec<(&str, Vec<u32>)> = Vec::new();
            for m in rest.iter().rev() {
                let ids = self.render(m)?;
                let over = used + ids.len() > budget || conv + ids.len() > history;
                if over && !kept.is_empty() {
                    break;
                }
                used += ids.len();
                conv += ids.len();
                kept.push((m.role, ids));
            }
            // A reply without the message it answers confuses the model.
            while kept.len() > 1 && kept.last().is_some_and(|(r, _)| *r == "assistant") {
                let (_, ids) = kept.pop().expect("non-empty");
                used -= ids.len();
            }
            if used <= budget || sys_text.is_empty() {
                let kept = kept.into_iter().rev().map(|(_, ids)| ids).collect();
                let mut out = self.join(sys, !sys_text.is_empty(), kept)?;
                out.extend(tail);
                // Still too long (one huge message): keep the start
                // (`<bos>`, the turn's opener) and the end of the text.
                if out.len() > budget {
                    let head = self.render_system("")?.len()
                        + self.tokenizer.template(self.opener("user"))?.len();
                    let cut = out.len() - budget;
                    out.drain(head..head + cut);
                }
                return Ok(out);
            }
            // Halve the system text and try again.
            let cut = sys_text.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|i| sys_text.is_char_boundary(*i))
                .unwrap_or(0);
            sys_text.truncate(cut);
        }
    }

    /// Generates a reply. With tools (`mode` Auto), a reply that starts
    /// with `<tool_call>` continues under the constraint and ends as a valid
    /// call; `Required` starts one directly. Text is streamed to `on_delta`.
    pub fn generate(
        &self,
        msgs: &[Msg],
        tools: &[(String, Value)],
        mode: ToolMode,
        opts: &GenOptions,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<(Output, Counts), ModelError> {
        let mode = if tools.is_empty() {
            ToolMode::None
        } else {
            mode
        };
        let prefix = if mode == ToolMode::Required {
            CALL_OPEN
        } else {
            ""
        };
        let prompt = self.prompt(msgs, prefix, opts.max_new_tokens, opts.history_tokens)?;
        let mut w = self.weights.lock().unwrap_or_else(|p| p.into_inner());
        self.decode(&mut w, prompt, tools, mode, opts, on_delta, cancel)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        w: &mut Net,
        prompt: Vec<u32>,
        tools: &[(String, Value)],
        mode: ToolMode,
        opts: &GenOptions,
        on_delta: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<(Output, Counts), ModelError> {
        let inf = |e: candle_core::Error| ModelError::Inference(e.to_string());
        let mut sampler = Sampler::new(opts.seed, opts.temperature);
        let counts_prompt = prompt.len();
        let mut input = prompt;
        let mut pos = 0usize;
        let mut out: Vec<u32> = Vec::new();
        let mut shown = 0usize;
        // None: plain text so far; Some: inside a tool call.
        let mut call: Option<(Automaton, String)> =
            (mode == ToolMode::Required).then(|| (Automaton::new(tools), String::new()));
        let mut decided = mode != ToolMode::Auto;
        let mut cut = false;
        let limit = opts
            .max_new_tokens
            .min(self.context.saturating_sub(counts_prompt));
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            if let Some((a, text)) = call.as_mut() {
                if a.is_complete() {
                    break;
                }
                // Fixed parts of the call are fed, not sampled.
                if let Some(lit) = a.forced() {
                    let ids = self.encode(lit)?;
                    a.feed_str(lit);
                    text.push_str(lit);
                    input.extend(ids);
                    continue; // it may have completed the call
                }
            }
            if out.len() >= limit {
                cut = call.is_none();
                break;
            }
            let x = Tensor::new(input.as_slice(), &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(inf)?;
            // The model's matmuls run on the budgeted pool.
            let logits = self.pool.install(|| w.forward(&x, pos)).map_err(inf)?;
            pos += input.len();
            input.clear();
            let mut l: Vec<f32> = logits
                .squeeze(0)
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1())
                .map_err(inf)?;
            // A light repeat penalty: small models loop.
            let recent: std::collections::HashSet<u32> =
                out.iter().rev().take(64).copied().collect();
            for t in recent {
                if let Some(v) = l.get_mut(t as usize) {
                    *v = if *v > 0.0 { *v / 1.1 } else { *v * 1.1 };
                }
            }
            if let Some((a, _)) = &call {
                // Near the token limit, close what is open instead of
                // extending strings and numbers, so the call always ends.
                let finishing = out.len() * 4 >= limit * 3;
                self.mask(a, &mut l, finishing);
            }
            let Some(tok) = sampler.sample(&l) else {
                return Err(ModelError::Inference(format!(
                    "no token is allowed here ({:?})",
                    call.as_ref().map(|(_, t)| t)
                )));
            };
            if call.is_none() && self.stop.contains(&tok) {
                break;
            }
            out.push(tok);
            input.push(tok);
            match call.as_mut() {
                Some((a, text)) => {
                    let t = &self.texts[tok as usize];
                    if !a.feed_str(t) {
                        return Err(ModelError::Inference(
                            "constrained sampling picked a rejected token".into(),
                        ));
                    }
                    text.push_str(t);
                }
                None => {
                    let so_far = self.tokenizer.decode(&out, false)?;
                    if !decided {
                        let head = so_far.trim_start();
                        if head.is_empty()
                            || (CALL_OPEN.starts_with(head) && head.len() < CALL_OPEN.len())
                        {
                            // Could still become "<tool_call>": wait.
                            if head.starts_with('<') {
                                // Commit: finish the opener and start the call.
                                let rest = &CALL_OPEN[head.len()..];
                                input.extend(self.encode(rest)?);
                                call = Some((Automaton::new(tools), String::new()));
                                decided = true;
                            }
                            continue;
                        }
                        decided = true;
                    }
                    if !so_far.ends_with('\u{FFFD}') {
                        if let Some(new) = so_far.get(shown..).filter(|n| !n.is_empty()) {
                            on_delta(new);
                            shown = so_far.len();
                        }
                    }
                }
            }
        }
        let counts = Counts {
            prompt: counts_prompt,
            generated: out.len(),
            cut,
        };
        if let Some((a, text)) = call {
            if !a.is_complete() {
                return Err(ModelError::Inference(
                    "the tool call did not finish within the token limit".into(),
                ));
            }
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Inference(format!("constrained call is not JSON: {e}")))?;
            return Ok((
                Output::Call {
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    arguments: v["arguments"].to_string(),
                },
                counts,
            ));
        }
        let text = self.tokenizer.decode(&out, false)?;
        if let Some(new) = text.get(shown..).filter(|n| !n.is_empty()) {
            on_delta(new);
        }
        Ok((Output::Text(text.trim().to_string()), counts))
    }
}
