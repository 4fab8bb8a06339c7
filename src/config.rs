//! Configuration: TOML in two stages.
//!
//! Stage one reads the file into a `toml::Table`, expands `${VAR}` in every
//! string and deserializes each section on its own, so one bad section does not
//! hide the problems of the next. Stage two validates the raw sections into a
//! [`Config`] (model refs point at real providers, a non-loopback bind has a
//! token, bindings name real agents, ...). Every problem is collected as a
//! [`ConfigProblem`] with the file and key; `hearth config validate` and
//! `hearth serve` run exactly the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

mod access;
pub mod devices;
mod lenient;
pub mod setup;
mod vars;

pub use vars::expand;
use vars::interpolate;

pub use access::{ChannelAccess, DmPolicy, SenderTools};

pub const DEFAULT_BIND: &str = "127.0.0.1:18789";
pub const DEFAULT_AGENT: &str = "main";

pub use crate::secret::Secret;

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// All problems of one configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmScope {
    Main,
    PerPeer,
    PerChannelPeer,
    PerAccountChannelPeer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    Collect,
    Followup,
    Steer,
    Interrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicy {
    Old,
    New,
    Summarize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetMode {
    None,
    Daily,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    /// The in-process candle model (see `[models]`).
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Local => "local",
        }
    }

    /// The public endpoint used when `base_url` is not set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
            ProviderKind::Local => "local:",
        }
    }
}

// ---------------------------------------------------------------- raw stage

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    bind: Option<String>,
    token: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    max_connections: Option<u64>,
    max_handshakes: Option<u64>,
    max_handshakes_per_peer: Option<u64>,
    max_inflight: Option<u64>,
    tick_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: ProviderKind,
    base_url: Option<String>,
    api_key: Option<String>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    profiles: Vec<RawProfile>,
    timeout_secs: Option<u64>,
    max_tokens: Option<u64>,
    context_window: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    dir: Option<PathBuf>,
    chat: Option<String>,
    threads: Option<u64>,
    memory_mb: Option<u64>,
    context_tokens: Option<u64>,
    max_tokens: Option<u64>,
    history_tokens: Option<u64>,
    local_fallback: Option<bool>,
    reply_note: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    vector_weight: Option<f32>,
    text_weight: Option<f32>,
    half_life_days: Option<f32>,
    mmr_lambda: Option<f32>,
    max_results: Option<u64>,
    min_score: Option<f32>,
    chunk_tokens: Option<u64>,
    chunk_overlap: Option<u64>,
    index_sessions: Option<bool>,
    compaction: Option<bool>,
    compact_at: Option<f32>,
    keep_recent_tokens: Option<u64>,
    memory_flush: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    api_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawModel {
    One(String),
    Chain {
        primary: String,
        #[serde(default)]
        fallbacks: Vec<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentDefaults {
    model: Option<RawModel>,
    workspace: Option<PathBuf>,
    max_concurrent: Option<u64>,
    max_steps: Option<u64>,
    run_timeout_secs: Option<u64>,
    tool_timeout_secs: Option<u64>,
    tools: Option<RawTools>,
    intents: Option<Intents>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    workspace: Option<PathBuf>,
    model: Option<RawModel>,
    max_steps: Option<u64>,
    run_timeout_secs: Option<u64>,
    tool_timeout_secs: Option<u64>,
    tools: Option<RawTools>,
    intents: Option<Intents>,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    #[serde(default)]
    defaults: RawAgentDefaults,
    #[serde(default)]
    /// Each entry is read on its own, so problems keep the user's index.
    list: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    agent: String,
    #[serde(rename = "match", default)]
    matches: RawBindingMatch,
    tools: Option<access::RawSenderTools>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindingMatch {
    channel: Option<String>,
    account: Option<String>,
    peer: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    dm_scope: Option<DmScope>,
    run_retention_days: Option<u64>,
    #[serde(default)]
    reset: RawReset,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReset {
    mode: Option<ResetMode>,
    at_hour: Option<u32>,
    idle_minutes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessages {
    #[serde(default)]
    queue: RawQueue,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    mode: Option<QueueMode>,
    debounce_ms: Option<u64>,
    cap: Option<u64>,
    drop: Option<DropPolicy>,
}

// ---------------------------------------------------------- validated stage

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub bind: SocketAddr,
    pub token: Option<Secret>,
    /// Extra browser origins allowed to open the WebSocket (the gateway's own
    /// origin and loopback origins are always allowed).
    pub allowed_origins: Vec<String>,
    /// Names the Host header may carry besides the loopback names, the
    /// bind address and the machine's hostname (DNS-rebinding defence).
    pub hostnames: Vec<String>,
    /// Signed-in WebSocket connections.
    pub max_connections: usize,
    /// Connections that have not signed in yet (HTTP requests, handshakes).
    pub max_handshakes: usize,
    /// The same, per peer address off loopback.
    pub max_handshakes_per_peer: usize,
    /// Requests of one connection running at once.
    pub max_inflight: usize,
    /// How often idle connections get a `tick` event.
    pub tick_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// In rotation order. Empty for keyless servers (Ollama, llama.cpp).
    pub credentials: Vec<Credential>,
    pub timeout: Duration,
    /// Reply length limit sent to APIs that require one (Anthropic).
    pub max_tokens: u32,
    /// The context window of this provider's models, in tokens, when set;
    /// otherwise it is looked up by model name (`provider::context_window`).
    pub context_window: Option<usize>,
}

/// Local models (`[models]`).
#[derive(Debug, Clone)]
pub struct ModelsConfig {
    /// Where the model files are; None = search (see `models::find_dir`).
    pub dir: Option<PathBuf>,
    /// The local chat model (`[models] chat`, default SmolLM2-135M).
    pub chat: &'static crate::models::ChatSpec,
    /// Threads for local inference (a 2-4 core board also serves the
    /// gateway).
    pub threads: usize,
    /// The chat model refuses to load if it would need more.
    pub memory_mb: u64,
    /// Prompt plus reply, in tokens, for the local chat model.
    pub context_tokens: usize,
    /// Longest local reply, in tokens (a longer one is cut, and says so).
    pub max_tokens: usize,
    /// Most tokens of conversation the local model sees (newest turns).
    pub history_tokens: usize,
    /// Append `local/<chat>` to every agent's chain when the file is there.
    pub local_fallback: bool,
    /// Added to replies the local model gave as a fallback ("" = nothing).
    pub reply_note: String,
}

/// Memory search (`[memory]`).
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Weight of the vector cosine in the hybrid score.
    pub vector_weight: f32,
    /// Weight of the normalized BM25 score.
    pub text_weight: f32,
    /// Half-life of dated notes (`memory/YYYY-MM-DD.md`); 0 = no decay.
    pub half_life_days: f32,
    /// MMR trade-off: 1 = relevance only, 0 = diversity only.
    pub mmr_lambda: f32,
    pub max_results: usize,
    pub min_score: f32,
    /// Chunk size and overlap, in (estimated) tokens.
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    /// Index session transcripts too (`sessions/<key>` in results).
    pub index_sessions: bool,
    /// Summarize older turns when the context nears the model's window.
    pub compaction: bool,
    /// Fraction of the window at which compaction starts.
    pub compact_at: f32,
    /// Recent conversation kept verbatim by compaction (at most the last
    /// three turns), in tokens.
    pub keep_recent_tokens: usize,
    /// Give the agent one silent turn to write notes before compacting.
    pub memory_flush: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            vector_weight: 0.7,
            text_weight: 0.3,
            half_life_days: 30.0,
            mmr_lambda: 0.7,
            max_results: 6,
            // Below the 0.35 of OpenClaw's defaults: MiniLM's cosines for a
            // paraphrase are 0.4-0.5, so a match without shared words scores
            // 0.28-0.35 (docs/memory.md has the measurement).
            min_score: 0.2,
            chunk_tokens: 400,
            chunk_overlap: 80,
            index_sessions: true,
            compaction: true,
            compact_at: 0.8,
            keep_recent_tokens: 20_000,
            memory_flush: true,
        }
    }
}

/// One API key of a provider, with a name for status output and cooldowns:
/// a profile's name, `default` for `api_key`, `key1`, `key2`, ... for
/// `api_keys`.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub key: Secret,
}

/// `provider/model` plus ordered fallbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChain {
    pub primary: String,
    pub fallbacks: Vec<String>,
}

impl ModelChain {
    pub fn refs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.as_str()).chain(self.fallbacks.iter().map(|s| s.as_str()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub id: String,
    /// `None` means the default `<state>/workspace` (or `workspace-<id>`).
    pub workspace: Option<PathBuf>,
    /// `None` when no provider is configured at all.
    pub model: Option<ModelChain>,
    pub max_steps: u32,
    pub run_timeout: Duration,
    pub tool_timeout: Duration,
    pub tools: ToolPolicy,
    /// Whether device commands go through the local intent stage first.
    pub intents: Intents,
}

/// `intents = "local-first" | "model-only"`: whether a message from a
/// sender allowed to control devices is tried against the local intent
/// matcher before any model is called (see `intent`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intents {
    #[default]
    LocalFirst,
    ModelOnly,
}

impl AgentConfig {
    pub fn workspace_in(&self, state_dir: &Path) -> PathBuf {
        match &self.workspace {
            Some(p) => p.clone(),
            None if self.id == DEFAULT_AGENT => state_dir.join("workspace"),
            None => state_dir.join(format!("workspace-{}", self.id)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingMatch {
    pub channel: Option<String>,
    pub account: Option<String>,
    pub peer: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub agent: String,
    pub matches: BindingMatch,
    /// The tools of senders other than the owner whose messages this
    /// binding routes (default: by their trust).
    pub tools: Option<SenderTools>,
}

#[derive(Debug, Clone, Copy)]
pub struct ResetPolicy {
    pub mode: ResetMode,
    /// Hour of day (UTC) for `daily`.
    pub at_hour: u32,
    pub idle_minutes: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub mode: QueueMode,
    pub debounce: Duration,
    pub cap: usize,
    pub drop: DropPolicy,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub gateway: GatewayConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub agents: Vec<AgentConfig>,
    pub default_agent: String,
    pub max_concurrent: usize,
    pub bindings: Vec<Binding>,
    pub dm_scope: DmScope,
    pub reset: ResetPolicy,
    pub queue: QueueConfig,
    /// How long run records and idempotency keys are kept.
    pub run_retention: Duration,
    pub models: ModelsConfig,
    pub memory: MemoryConfig,
    /// `[channels.mqtt]`; `None` = no MQTT.
    pub mqtt: Option<crate::mqtt::config::MqttConfig>,
    /// `[devices]`: aliases.
    pub devices: devices::DevicesConfig,
    /// Who may talk to Hearth on each configured channel, and with which tools.
    pub access: BTreeMap<String, ChannelAccess>,
    /// The sections of channel kinds the config does not parse itself
    /// (each channel module reads its own); checked by `channel::check`.
    pub channels: BTreeMap<String, toml::Table>,
}

impl Config {
    /// The embedded defaults: loopback gateway, agent `main`, no provider.
    pub fn embedded() -> Config {
        Config::from_str("", None, &|_| None).expect("embedded defaults are valid")
    }

    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// Loads `path` (or the embedded defaults when `path` is `None`),
    /// expanding `${VAR}` from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        Config::load_over(path, None, &BTreeMap::new())
    }

    /// [`load`](Self::load) with the console's setup (`config::setup`)
    /// from `state` merged over it, its secrets resolving `${VAR}` first.
    pub fn load_with_setup(path: Option<&Path>, state: &Path) -> Result<Config, ConfigErrors> {
        let over = setup::read_table(state).map_err(|m| {
            ConfigErrors(vec![ConfigProblem {
                file: setup::toml_path(state).display().to_string(),
                key: String::new(),
                message: m,
            }])
        })?;
        Config::load_over(path, over.as_ref(), &setup::read_env(state))
    }

    /// [`load`](Self::load) with `over` merged in and `extra` variables
    /// resolved before the process environment.
    pub fn load_over(
        path: Option<&Path>,
        over: Option<&toml::Table>,
        extra: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let env = |k: &str| extra.get(k).cloned().or_else(|| std::env::var(k).ok());
        match path {
            None => Config::from_str_over("", None, &env, over),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigProblem {
                        file: p.display().to_string(),
                        key: String::new(),
                        message: format!("cannot read the file: {e}"),
                    }])
                })?;
                Config::from_str_over(&text, Some(p), &env, over)
            }
        }
    }

    /// What only this machine can show: a configured path that is not
    /// there. `hearth config validate` reports these once the config is
    /// otherwise valid; `serve`
    /// logs them and runs without what they name (`status` says so).
    pub fn check_paths(&self) -> Vec<ConfigProblem> {
        let file = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded defaults>".into());
        let mut out = Vec::new();
        if let Some(d) = &self.models.dir {
            if !d.is_dir() {
                out.push(ConfigProblem {
                    file,
                    key: "models.dir".into(),
                    message: format!(
                        "{} is not a directory, so the local models are not available (put them there with `scripts/fetch-models {}`, or remove the key to search the usual places)",
                        d.display(),
                        d.display()
                    ),
                });
            }
        }
        out
    }

    /// [`load`](Self::load) with `hearth serve --bind` applied and checked
    /// as `gateway.bind` is, so what validates is what starts.
    pub fn load_for_serve(
        path: Option<&Path>,
        state: &Path,
        bind: Option<SocketAddr>,
    ) -> Result<Config, ConfigErrors> {
        let mut c = Config::load_with_setup(path, state)?;
        if let Some(b) = bind {
            if !b.ip().is_loopback() && c.gateway.token.is_none() {
                return Err(ConfigErrors(vec![ConfigProblem {
                    file: "--bind".into(),
                    key: "gateway.token".into(),
                    message: format!("required because --bind {b} is not a loopback address; set token = \"${{HEARTH_GATEWAY_TOKEN}}\" in [gateway]"),
                }]));
            }
            c.gateway.bind = b;
        }
        Ok(c)
    }

    /// Parses and validates config text. `env` resolves `${VAR}`.
    pub fn from_str(
        text: &str,
        source: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::from_str_over(text, source, env, None)
    }

    /// [`from_str`](Self::from_str) with `over` (what the console's setup
    /// wrote, `config::setup`) merged over the file's tables first.
    pub fn from_str_over(
        text: &str,
        source: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        over: Option<&toml::Table>,
    ) -> Result<Config, ConfigErrors> {
        let file = source
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded defaults>".into());
        let mut probs = Problems {
            file: file.clone(),
            list: Vec::new(),
        };
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                probs.add("", format!("not valid TOML: {}", e.message().trim()));
                if let Some(span) = e.span() {
                    let line = text[..span.start].lines().count().max(1);
                    probs.list.last_mut().unwrap().message += &format!(" (line {line})");
                }
                return Err(ConfigErrors(probs.list));
            }
        };
        if let Some(o) = over {
            setup::merge(&mut table, o);
        }
        for (k, v) in table.iter_mut() {
            interpolate(v, k, env, &mut probs);
        }
        const KNOWN: [&str; 10] = [
            "channels",
            "devices",
            "memory",
            "models",
            "gateway",
            "providers",
            "agents",
            "bindings",
            "session",
            "messages",
        ];
        for k in table.keys() {
            if !KNOWN.contains(&k.as_str()) {
                let hint = match lenient::closest(k, &KNOWN) {
                    Some(c) => format!("did you mean [{c}]?"),
                    None => format!("known: {}", KNOWN.join(", ")),
                };
                probs.add(k, format!("unknown section ({hint})"));
            }
        }
        let gateway: RawGateway = section(&table, "gateway", &mut probs).unwrap_or_default();
        let providers: BTreeMap<String, toml::Value> =
            section(&table, "providers", &mut probs).unwrap_or_default();
        let agents: RawAgents = section(&table, "agents", &mut probs).unwrap_or_default();
        let bindings: Vec<toml::Value> =
            section(&table, "bindings", &mut probs).unwrap_or_default();
        let session: RawSession = section(&table, "session", &mut probs).unwrap_or_default();
        let messages: RawMessages = section(&table, "messages", &mut probs).unwrap_or_default();
        let rm: RawModels = section(&table, "models", &mut probs).unwrap_or_default();
        if rm.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            probs.add(
                "models.dir",
                "is empty; remove the key to search the usual places",
            );
        }
        let chat = match rm.chat.as_deref() {
            None => &crate::models::CHAT_MODELS[0],
            Some(id) => crate::models::chat_spec(id).unwrap_or_else(|| {
                let known: Vec<&str> = crate::models::CHAT_MODELS.iter().map(|c| c.id).collect();
                probs.add(
                    "models.chat",
                    format!("unknown chat model {id:?} (known: {})", known.join(", ")),
                );
                &crate::models::CHAT_MODELS[0]
            }),
        };
        let models = ModelsConfig {
            dir: rm.dir.filter(|d| !d.as_os_str().is_empty()),
            chat,
            threads: probs.range("models.threads", rm.threads, 1..=64, 1) as usize,
            memory_mb: probs.range("models.memory_mb", rm.memory_mb, 64..=65_536, 400),
            context_tokens: probs.range(
                "models.context_tokens",
                rm.context_tokens,
                256..=4096,
                2048,
            ) as usize,
            max_tokens: probs.range("models.max_tokens", rm.max_tokens, 1..=4096, 256) as usize,
            history_tokens: probs.range("models.history_tokens", rm.history_tokens, 64..=4096, 768)
                as usize,
            local_fallback: rm.local_fallback.unwrap_or(true),
            reply_note: rm
                .reply_note
                .unwrap_or_else(|| "(Answered offline by the local model.)".into()),
        };

        let mut channels: BTreeMap<String, toml::Table> =
            section(&table, "channels", &mut probs).unwrap_or_default();
        let access = access::parse(&mut channels, &mut |k, m| probs.add(k, m));
        let mqtt = channels
            .remove("mqtt")
            .and_then(|t| {
                lenient::deserialize::<crate::mqtt::config::RawMqtt>(
                    toml::Value::Table(t),
                    "channels.mqtt",
                    &mut probs,
                )
            })
            .and_then(|m| crate::mqtt::config::parse(m, &mut |k, m| probs.add(k, m)));

        let rdev: devices::RawDevices = section(&table, "devices", &mut probs).unwrap_or_default();
        let devices = devices::parse(rdev, &mut |k, m| probs.add(k, m));

        let rmem: RawMemory = section(&table, "memory", &mut probs).unwrap_or_default();
        let d = MemoryConfig::default();
        let unit = |k: &str, v: Option<f32>, dflt: f32, probs: &mut Problems| match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                probs.add(format!("memory.{k}"), "must be between 0 and 1");
                dflt
            }
            Some(x) => x,
            None => dflt,
        };
        let memory = MemoryConfig {
            vector_weight: unit(
                "vector_weight",
                rmem.vector_weight,
                d.vector_weight,
                &mut probs,
            ),
            text_weight: unit("text_weight", rmem.text_weight, d.text_weight, &mut probs),
            mmr_lambda: unit("mmr_lambda", rmem.mmr_lambda, d.mmr_lambda, &mut probs),
            min_score: unit("min_score", rmem.min_score, d.min_score, &mut probs),
            half_life_days: match rmem.half_life_days {
                Some(x) if !(x >= 0.0 && x.is_finite()) => {
                    probs.add("memory.half_life_days", "must be 0 (no decay) or more");
                    d.half_life_days
                }
                Some(x) => x,
                None => d.half_life_days,
            },
            max_results: probs.range(
                "memory.max_results",
                rmem.max_results,
                1..=50,
                d.max_results as u64,
            ) as usize,
            chunk_tokens: probs.range(
                "memory.chunk_tokens",
                rmem.chunk_tokens,
                50..=2000,
                d.chunk_tokens as u64,
            ) as usize,
            chunk_overlap: probs.range(
                "memory.chunk_overlap",
                rmem.chunk_overlap,
                0..=1000,
                d.chunk_overlap as u64,
            ) as usize,
            index_sessions: rmem.index_sessions.unwrap_or(d.index_sessions),
            compaction: rmem.compaction.unwrap_or(d.compaction),
            compact_at: match rmem.compact_at {
                Some(x) if !(0.3..=0.95).contains(&x) => {
                    probs.add("memory.compact_at", "must be between 0.3 and 0.95");
                    d.compact_at
                }
                Some(x) => x,
                None => d.compact_at,
            },
            keep_recent_tokens: probs.range(
                "memory.keep_recent_tokens",
                rmem.keep_recent_tokens,
                100..=10_000_000,
                d.keep_recent_tokens as u64,
            ) as usize,
            memory_flush: rmem.memory_flush.unwrap_or(d.memory_flush),
        };
        if memory.chunk_overlap * 2 > memory.chunk_tokens
            && !probs.under("memory.chunk_tokens")
            && !probs.under("memory.chunk_overlap")
        {
            probs.add(
                "memory.chunk_overlap",
                "must be at most half of chunk_tokens",
            );
        }

        // gateway
        let bind_s = gateway.bind.unwrap_or_else(|| DEFAULT_BIND.to_string());
        let bind = match bind_s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                probs.add(
                    "gateway.bind",
                    format!("{bind_s:?} is not an ADDRESS:PORT like \"127.0.0.1:18789\""),
                );
                DEFAULT_BIND.parse().unwrap()
            }
        };
        let token = gateway.token.filter(|t| !t.is_empty()).map(Secret);
        if let Some(t) = &token {
            let n = t.expose().chars().count();
            if !(16..=512).contains(&n) || !t.expose().bytes().all(|b| b.is_ascii_graphic()) {
                probs.add(
                    "gateway.token",
                    "must be 16-512 printable characters without spaces (e.g. from `openssl rand -hex 24`)",
                );
            }
        }
        if !bind.ip().is_loopback() && token.is_none() && !probs.under("gateway.token") {
            probs.add(
                "gateway.token",
                format!("required because gateway.bind ({bind}) is not a loopback address; set token = \"${{HEARTH_GATEWAY_TOKEN}}\""),
            );
        }
        let tick_ms = probs.range(
            "gateway.tick_interval_ms",
            gateway.tick_interval_ms,
            100..=3_600_000,
            30_000,
        );
        let max_connections = probs.range(
            "gateway.max_connections",
            gateway.max_connections,
            1..=1024,
            32,
        ) as usize;
        let max_handshakes = probs.range(
            "gateway.max_handshakes",
            gateway.max_handshakes,
            1..=1024,
            64,
        ) as usize;
        let max_handshakes_per_peer = probs.range(
            "gateway.max_handshakes_per_peer",
            gateway.max_handshakes_per_peer,
            1..=1024,
            8,
        ) as usize;
        let max_inflight =
            probs.range("gateway.max_inflight", gateway.max_inflight, 1..=1024, 32) as usize;
        for (i, h) in gateway.hostnames.iter().enumerate() {
            if crate::util::host_name(h).as_deref() != Some(h.to_ascii_lowercase().as_str()) {
                probs.add(
                    format!("gateway.hostnames[{i}]"),
                    format!("{h:?} is not a host name (give the name only, like \"hearth.example.net\")"),
                );
            }
        }

        // providers
        let mut prov = BTreeMap::new();
        for (name, v) in providers {
            let key = format!("providers.{name}");
            if !valid_id(&name) {
                probs.add(&key, "provider names may use a-z, 0-9, '-' and '_' only");
            }
            if let Some(p) = lenient::deserialize::<RawProvider>(v, &key, &mut probs) {
                let base_url = p
                    .base_url
                    .unwrap_or_else(|| p.kind.default_base_url().to_string());
                if p.kind != ProviderKind::Local
                    && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
                {
                    probs.add(
                        format!("{key}.base_url"),
                        format!("{base_url:?} must start with http:// or https://"),
                    );
                }
                let mut credentials = Vec::new();
                if let Some(k) = p.api_key.filter(|k| !k.is_empty()) {
                    credentials.push(Credential {
                        id: "default".into(),
                        key: Secret(k),
                    });
                }
                for (i, k) in p.api_keys.into_iter().enumerate() {
                    if k.is_empty() {
                        probs.add(format!("{key}.api_keys"), format!("key {} is empty", i + 1));
                        continue;
                    }
                    credentials.push(Credential {
                        id: format!("key{}", i + 1),
                        key: Secret(k),
                    });
                }
                for (i, pr) in p.profiles.into_iter().enumerate() {
                    let pk = format!("{key}.profiles[{i}]");
                    if !valid_id(&pr.name) {
                        probs.add(
                            format!("{pk}.name"),
                            "profile names may use a-z, 0-9, '-' and '_' only",
                        );
                    }
                    if pr.api_key.is_empty() {
                        probs.add(format!("{pk}.api_key"), "is empty");
                        continue;
                    }
                    credentials.push(Credential {
                        id: pr.name,
                        key: Secret(pr.api_key),
                    });
                }
                let mut ids = std::collections::BTreeSet::new();
                for c in &credentials {
                    if !ids.insert(c.id.clone()) {
                        probs.add(
                                &key,
                                format!("two credentials are named {:?}; profile names must be unique and not default/keyN", c.id),
                            );
                    }
                }
                if credentials.is_empty()
                    && !matches!(p.kind, ProviderKind::Openai | ProviderKind::Local)
                {
                    probs.add(
                            &key,
                            format!(
                                "a {} provider needs an API key: set api_key, api_keys or [[{key}.profiles]]",
                                p.kind.as_str()
                            ),
                        );
                }
                let timeout_secs =
                    probs.range(format!("{key}.timeout_secs"), p.timeout_secs, 1..=3600, 120);
                let max_tokens = probs.range(
                    format!("{key}.max_tokens"),
                    p.max_tokens,
                    1..=1_000_000,
                    4096,
                ) as u32;
                let context_window = p.context_window.map(|w| {
                    probs.range(
                        format!("{key}.context_window"),
                        Some(w),
                        1024..=100_000_000,
                        1024,
                    ) as usize
                });
                prov.insert(
                    name.clone(),
                    ProviderConfig {
                        name,
                        kind: p.kind,
                        base_url: base_url.trim_end_matches('/').to_string(),
                        credentials,
                        timeout: Duration::from_secs(timeout_secs),
                        max_tokens,
                        context_window,
                    },
                );
            }
        }

        // agents
        let d = &agents.defaults;
        let default_model = d.model.as_ref().map(chain);
        if default_model.is_none() && !prov.is_empty() && !probs.under("agents.defaults.model") {
            let p = prov.keys().next().expect("non-empty");
            probs.add(
                "agents.defaults.model",
                format!("a provider is configured but no model: set model = \"{p}/<model-id>\""),
            );
        }
        let limits = |probs: &mut Problems,
                      key: &str,
                      ws: &Option<PathBuf>,
                      steps: Option<u64>,
                      rt: Option<u64>,
                      tt: Option<u64>| {
            if let Some(w) = ws {
                if w.as_os_str().is_empty() {
                    probs.add(
                        format!("{key}.workspace"),
                        "is empty; remove the key for the default <state>/workspace",
                    );
                } else if !w.is_absolute() {
                    probs.add(
                        format!("{key}.workspace"),
                        format!("{w:?} must be an absolute path"),
                    );
                }
            }
            (
                probs.range_opt(format!("{key}.max_steps"), steps, 1..=1000),
                probs.range_opt(format!("{key}.run_timeout_secs"), rt, 1..=86_400),
                probs.range_opt(format!("{key}.tool_timeout_secs"), tt, 1..=3600),
            )
        };
        let (d_steps, d_rt, d_tt) = limits(
            &mut probs,
            "agents.defaults",
            &d.workspace,
            d.max_steps,
            d.run_timeout_secs,
            d.tool_timeout_secs,
        );
        let mk = |id: String,
                  ws: Option<PathBuf>,
                  model: Option<&RawModel>,
                  steps: Option<u64>,
                  rt: Option<u64>,
                  tt: Option<u64>,
                  tools: Option<&RawTools>,
                  intents: Option<Intents>| {
            let tools = tools.or(d.tools.as_ref()).cloned().unwrap_or_default();
            AgentConfig {
                id,
                workspace: ws.or_else(|| d.workspace.clone()),
                model: model.map(chain).or_else(|| default_model.clone()),
                max_steps: steps.or(d_steps).unwrap_or(8) as u32,
                run_timeout: Duration::from_secs(rt.or(d_rt).unwrap_or(300)),
                tool_timeout: Duration::from_secs(tt.or(d_tt).unwrap_or(30)),
                tools: ToolPolicy {
                    allow: tools.allow,
                    deny: tools.deny,
                },
                intents: intents.or(d.intents).unwrap_or_default(),
            }
        };
        let mut list = Vec::new();
        let mut default_agent = None;
        let mut seen = BTreeSet::new();
        let mut dropped_agent = false;
        for (i, v) in agents.list.iter().enumerate() {
            let key = format!("agents.list[{i}]");
            let Some(a) = lenient::deserialize::<RawAgent>(v.clone(), &key, &mut probs) else {
                dropped_agent = true;
                continue;
            };
            let a = &a;
            if !valid_id(&a.id) {
                probs.add(
                    format!("{key}.id"),
                    "agent ids may use a-z, 0-9, '-' and '_' only",
                );
            }
            if !seen.insert(a.id.clone()) {
                probs.add(
                    format!("{key}.id"),
                    format!("duplicate agent id {:?}", a.id),
                );
            }
            if a.default {
                if default_agent.is_some() {
                    probs.add(
                        format!("{key}.default"),
                        "only one agent can be the default",
                    );
                }
                default_agent = Some(a.id.clone());
            }
            let (steps, rt, tt) = limits(
                &mut probs,
                &key,
                &a.workspace,
                a.max_steps,
                a.run_timeout_secs,
                a.tool_timeout_secs,
            );
            list.push(mk(
                a.id.clone(),
                a.workspace.clone(),
                a.model.as_ref(),
                steps,
                rt,
                tt,
                a.tools.as_ref(),
                a.intents,
            ));
        }
        if !seen.contains(DEFAULT_AGENT) {
            list.insert(
                0,
                mk(
                    DEFAULT_AGENT.into(),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ),
            );
        }
        let default_agent = default_agent.unwrap_or_else(|| DEFAULT_AGENT.into());
        for a in &list {
            if let Some(m) = &a.model {
                for r in m.refs() {
                    match r.split_once('/') {
                        Some((p, model)) if !model.is_empty() => {
                            // (a provider left out for its own problem is not missing)
                            if !prov.contains_key(p) && !probs.under(&format!("providers.{p}")) {
                                probs.add(
                                    format!("agents[{}].model", a.id),
                                    format!("{r:?} names provider {p:?}, which is not configured under [providers]"),
                                );
                            }
                        }
                        _ => probs.add(
                            format!("agents[{}].model", a.id),
                            format!("{r:?} is not a model ref of the form \"<provider>/<model>\""),
                        ),
                    }
                }
            }
        }
        let max_concurrent = probs.range(
            "agents.defaults.max_concurrent",
            d.max_concurrent,
            1..=64,
            2,
        ) as usize;

        // bindings
        let mut binds = Vec::new();
        for (i, v) in bindings.into_iter().enumerate() {
            let key = format!("bindings[{i}]");
            if let Some(b) = lenient::deserialize::<RawBinding>(v, &key, &mut probs) {
                // (an agent left out for its own problem is not unknown)
                if !list.iter().any(|a| a.id == b.agent)
                    && !dropped_agent
                    && !probs
                        .list
                        .iter()
                        .any(|p| p.key == "agents" || p.key == "agents.list")
                {
                    probs.add(
                        format!("{key}.agent"),
                        format!("unknown agent {:?}", b.agent),
                    );
                }
                let m = b.matches;
                if m.peer.is_some() && m.group.is_some() {
                    probs.add(format!("{key}.match"), "set peer or group, not both");
                }
                binds.push(Binding {
                    tools: b
                        .tools
                        .map(|t| t.check(&format!("{key}.tools"), &mut |k, m| probs.add(k, m))),
                    agent: b.agent,
                    matches: BindingMatch {
                        channel: m.channel,
                        account: m.account,
                        peer: m.peer,
                        group: m.group,
                    },
                });
            }
        }

        // session
        let reset = ResetPolicy {
            mode: session.reset.mode.unwrap_or(ResetMode::None),
            at_hour: session.reset.at_hour.unwrap_or(4),
            idle_minutes: session.reset.idle_minutes.unwrap_or(0),
        };
        if reset.at_hour > 23 {
            probs.add("session.reset.at_hour", "must be 0..=23");
        }
        probs.range_opt(
            "session.reset.idle_minutes",
            session.reset.idle_minutes,
            0..=525_600,
        );
        let retention_days = probs.range(
            "session.run_retention_days",
            session.run_retention_days,
            1..=3650,
            7,
        );
        if reset.mode == ResetMode::Idle && reset.idle_minutes == 0 {
            probs.add(
                "session.reset.idle_minutes",
                "must be set (> 0) when mode = \"idle\"",
            );
        }

        // queue
        let q = messages.queue;
        let queue = QueueConfig {
            mode: q.mode.unwrap_or(QueueMode::Collect),
            debounce: Duration::from_millis(probs.range(
                "messages.queue.debounce_ms",
                q.debounce_ms,
                0..=600_000,
                1000,
            )),
            cap: probs.range("messages.queue.cap", q.cap, 1..=1000, 20) as usize,
            drop: q.drop.unwrap_or(DropPolicy::Summarize),
        };

        if !probs.list.is_empty() {
            return Err(ConfigErrors(probs.list));
        }
        Ok(Config {
            source: source.map(Path::to_path_buf),
            gateway: GatewayConfig {
                bind,
                token,
                allowed_origins: gateway.allowed_origins,
                hostnames: gateway.hostnames,
                max_connections,
                max_handshakes,
                max_handshakes_per_peer,
                max_inflight,
                tick_interval: Duration::from_millis(tick_ms),
            },
            providers: prov,
            agents: list,
            default_agent,
            max_concurrent,
            bindings: binds,
            dm_scope: session.dm_scope.unwrap_or(DmScope::Main),
            reset,
            queue,
            run_retention: Duration::from_secs(retention_days * 86_400),
            models,
            memory,
            mqtt,
            devices,
            access,
            channels,
        })
    }
}

struct Problems {
    file: String,
    list: Vec<ConfigProblem>,
}

impl Problems {
    /// `v` when inside `r`; `None` when absent or out of range (a problem).
    fn range_opt(
        &mut self,
        key: impl AsRef<str>,
        v: Option<u64>,
        r: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let x = v?;
        if r.contains(&x) {
            return Some(x);
        }
        self.add(
            key,
            format!("must be between {} and {} (got {x})", r.start(), r.end()),
        );
        None
    }

    /// `v` (or `default`) when inside `r`; else a problem, and `default`.
    fn range(
        &mut self,
        key: impl AsRef<str>,
        v: Option<u64>,
        r: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        match v {
            None => default,
            v => self.range_opt(key, v, r).unwrap_or(default),
        }
    }

    /// Whether a problem was reported for `key`, a key inside it or a table
    /// that holds it (then a check that would only repeat its consequence
    /// stays quiet).
    fn under(&self, key: &str) -> bool {
        let inside = |a: &str, b: &str| {
            a == b
                || a.strip_prefix(b)
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        };
        self.list
            .iter()
            .any(|p| inside(&p.key, key) || (!p.key.is_empty() && inside(key, &p.key)))
    }

    fn add(&mut self, key: impl AsRef<str>, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            file: self.file.clone(),
            key: key.as_ref().to_string(),
            message: message.into(),
        });
    }
}

fn section<T: DeserializeOwned>(t: &toml::Table, key: &str, p: &mut Problems) -> Option<T> {
    lenient::deserialize(t.get(key)?.clone(), key, p)
}

fn clean_de(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn chain(m: &RawModel) -> ModelChain {
    match m {
        RawModel::One(s) => ModelChain {
            primary: s.clone(),
            fallbacks: vec![],
        },
        RawModel::Chain { primary, fallbacks } => ModelChain {
            primary: primary.clone(),
            fallbacks: fallbacks.clone(),
        },
    }
}

pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "TOKEN").then(|| "s3cret-token-0123456789".to_string())
    }

    #[test]
    fn embedded_defaults() {
        let c = Config::embedded();
        assert_eq!(c.gateway.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.default_agent, "main");
        assert!(c.agent("main").unwrap().model.is_none());
        assert_eq!(c.queue.mode, QueueMode::Collect);
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            expand("a${TOKEN}b", &env).unwrap(),
            "as3cret-token-0123456789b"
        );
        assert_eq!(expand("$${TOKEN}", &env).unwrap(), "${TOKEN}");
        assert_eq!(expand("${NOPE:-x}", &env).unwrap(), "x");
        assert!(expand("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert_eq!(expand("cost $5", &env).unwrap(), "cost $5");
    }

    #[test]
    fn reports_every_problem() {
        let text = r#"
            bogus = 1
            [gateway]
            bind = "0.0.0.0:18789"
            [providers.fake]
            kind = "openai"
            base_url = "ftp://x"
            api_key = "${MISSING}"
            [agents.defaults]
            model = "nope/x"
            [messages.queue]
            mode = "sideways"
        "#;
        let e = Config::from_str(text, Some(Path::new("h.toml")), &env).unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "bogus",
            "gateway.token",
            "providers.fake.api_key",
            "providers.fake.base_url",
            "agents[main].model",
            "messages.queue.mode",
        ] {
            assert!(keys.contains(&want), "missing {want} in {keys:?}");
        }
        assert!(e.to_string().contains("h.toml"));
    }

    #[test]
    fn memory_section_defaults_and_problems() {
        let c = Config::from_str("", None, &env).unwrap();
        assert_eq!((c.memory.max_results, c.memory.chunk_tokens), (6, 400));
        let c = Config::from_str(
            "[memory]\nmin_score = 0.35\nhalf_life_days = 0\n",
            None,
            &env,
        )
        .unwrap();
        assert_eq!((c.memory.min_score, c.memory.half_life_days), (0.35, 0.0));
        assert!(c.memory.compaction && c.memory.memory_flush && c.memory.index_sessions);
        assert_eq!(
            (c.memory.compact_at, c.memory.keep_recent_tokens),
            (0.8, 20_000)
        );
        let text = "[memory]\nvector_weight = 1.5\nmax_results = 0\nchunk_tokens = 100\nchunk_overlap = 60\nhalf_life_days = -1\ncompact_at = 0.99\nkeep_recent_tokens = 5\n\n\
                    [providers.p]\nkind = \"openai\"\ncontext_window = 100\n[agents.defaults]\nmodel = \"p/m\"\n";
        let e = Config::from_str(text, None, &env).unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "memory.vector_weight",
            "memory.max_results",
            "memory.chunk_overlap",
            "memory.half_life_days",
            "memory.compact_at",
            "memory.keep_recent_tokens",
            "providers.p.context_window",
        ] {
            assert!(keys.contains(&want), "missing {want} in {keys:?}");
        }
        let e = Config::from_str("[memory]\ncolour = 1\n", None, &env).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn a_provider_without_a_model_is_an_error() {
        let e = Config::from_str(
            "[providers.ollama]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\n",
            None,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "agents.defaults.model");
        assert!(e.0[0].message.contains("ollama/<model-id>"));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = Config::from_str(
            "[gateway]\nbind = \"0.0.0.0:1\"\ntoken = \"${TOKEN}\"",
            None,
            &env,
        )
        .unwrap();
        assert_eq!(
            c.gateway.token.as_ref().unwrap().expose(),
            "s3cret-token-0123456789"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn model_chain_and_policy() {
        let c = Config::from_str(
            r#"
            [providers.a]
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [agents.defaults]
            model = { primary = "a/m1", fallbacks = ["a/m2"] }
            [[agents.list]]
            id = "home"
            tools = { deny = ["write"] }
            [[bindings]]
            agent = "home"
            match = { channel = "mqtt" }
            "#,
            None,
            &env,
        )
        .unwrap();
        let home = c.agent("home").unwrap();
        assert_eq!(home.model.as_ref().unwrap().fallbacks, vec!["a/m2"]);
        assert!(!home.tools.permits("write", "fs"));
        assert!(home.tools.permits("read", "fs"));
        assert_eq!(c.bindings[0].agent, "home");
    }
}
