//! Local models: where their files are, and loading them lazily.
//!
//! Files come from registry packages (`scripts/fetch-models`), never from a
//! model hub. The models directory holds:
//! - `all-MiniLM-L6-v2/`: `model.safetensors`, `tokenizer.json`,
//!   `config.json` (sentence embeddings, see [`embed`]);
//! - `smollm2-135m/`: `SmolLM2-135M-Instruct-Q8_0.gguf` (the default local
//!   chat model);
//! - `gemma3-270m/`: `gemma-3-270m-Q8_0.gguf` (opt-in: `fetch-models
//!   --gemma`, `[models] chat = "gemma3-270m"`).
//!
//! Inference runs on a dedicated rayon pool sized by the thread budget, so
//! it never takes more cores than configured, and always off the async
//! workers (callers use the blocking pool).

pub mod bench;
pub mod chat;
pub mod embed;
pub mod gemma3;
pub mod gguf;
pub mod grammar;
pub mod llama;
pub mod spm;
pub mod tokens;

use std::path::{Path, PathBuf};

/// The embedding model's folder name in the models directory.
pub const EMBED_DIR: &str = "all-MiniLM-L6-v2";
/// The default chat model's folder and file.
pub const CHAT_DIR: &str = "smollm2-135m";
pub const CHAT_FILE: &str = "SmolLM2-135M-Instruct-Q8_0.gguf";

/// A local chat model Hearth knows: its id (`[models] chat`, the model
/// part of `local/<id>`, and its folder in the models directory), its file.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatSpec {
    pub id: &'static str,
    pub file: &'static str,
    /// What installs it.
    pub fetch: &'static str,
}

/// The chat models, the default first.
pub const CHAT_MODELS: [ChatSpec; 2] = [
    ChatSpec {
        id: CHAT_DIR,
        file: CHAT_FILE,
        fetch: "scripts/fetch-models, or install hearth-models",
    },
    ChatSpec {
        id: "gemma3-270m",
        file: "gemma-3-270m-Q8_0.gguf",
        fetch: "scripts/fetch-models --gemma",
    },
];

/// The chat model called `id`.
pub fn chat_spec(id: &str) -> Option<&'static ChatSpec> {
    CHAT_MODELS.iter().find(|c| c.id == id)
}

impl ChatSpec {
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.id).join(self.file)
    }
}
/// Where the Debian package `hearth-models` installs them.
pub const PACKAGED_DIR: &str = "/usr/share/hearth/models";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} is missing (run scripts/fetch-models, or install hearth-models)")]
    Missing(PathBuf),
    #[error("model file {path} is unreadable or corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("the model needs about {need_mb} MB, over the memory budget of {budget_mb} MB")]
    OverBudget { need_mb: u64, budget_mb: u64 },
    #[error("local model inference failed: {0}")]
    Inference(String),
    #[error("cancelled")]
    Cancelled,
}

/// The models directory: `[models] dir` from the config, else
/// `$HEARTH_MODELS_DIR`, else `models/` next to the state dir, else
/// `<prefix>/share/hearth/models` for a binary in `<prefix>/bin`
/// (`scripts/install`: ~/.local), else the packaged
/// `/usr/share/hearth/models`, else `models/` in the source checkout this
/// binary was built from. The first that exists wins; `None` if none do.
pub fn find_dir(configured: Option<&Path>, state_dir: &Path) -> Option<PathBuf> {
    if let Some(d) = configured {
        return Some(d.to_path_buf());
    }
    let env = std::env::var_os("HEARTH_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let beside_state = state_dir.parent().map(|p| p.join("models"));
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let prefix = std::env::current_exe().ok().and_then(|e| {
        let bin = e.parent()?;
        (bin.file_name()? == "bin").then(|| bin.parent().map(|p| p.join("share/hearth/models")))?
    });
    env.into_iter()
        .chain(beside_state)
        .chain(prefix)
        .chain([PathBuf::from(PACKAGED_DIR), checkout])
        .find(|d| d.is_dir())
}

/// A rayon pool of `threads` threads for inference (at least 1).
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, ModelError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("hearth-model-{i}"))
        .build()
        .map_err(|e| ModelError::Inference(format!("cannot start model threads: {e}")))
}

pub(crate) fn corrupt(path: &Path, why: impl std::fmt::Display) -> ModelError {
    ModelError::Corrupt {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

pub(crate) fn need(path: &Path) -> Result<&Path, ModelError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::Missing(path.to_path_buf()))
    }
}
