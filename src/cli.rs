//! The command line: clap definitions and the thin glue that calls the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{Client, ClientError};

mod chat;
mod pairing;
use crate::config::Config;
use crate::daemon;

#[derive(Parser)]
#[command(name = "hearth", version = crate::VERSION, about = "Hearth: an always-on AI agent gateway for the home",
          long_about = "Hearth runs one small daemon (`hearth serve`) that connects chat channels to AI models.\n\
Start it with no flags to run on the embedded defaults (gateway on 127.0.0.1:18789), then talk to it with `hearth chat`.")]
pub struct Cli {
    /// Print error codes and more detail with errors
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// An error for the person at the terminal: the message; with --verbose
/// also the gateway's error code.
pub fn describe(e: &anyhow::Error, verbose: bool) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Rpc { code, message }) if verbose => format!("{code}: {message}"),
        _ if verbose => format!("{e:?}"),
        _ => format!("{e:#}"),
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon (gateway, queue, agents) in the foreground
    Serve {
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory (default: $STATE_DIRECTORY under systemd, else ~/.local/state/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Listen address, overriding [gateway] bind (e.g. 127.0.0.1:18789; port 0 picks a free port)
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Check the configuration
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Chat with a running gateway (one message, or interactive without MESSAGE)
    Chat {
        /// Gateway WebSocket URL
        #[arg(long, env = "HEARTH_URL", default_value = "ws://127.0.0.1:18789")]
        url: String,
        /// Gateway token (default: the state dir's gateway.token, as `hearth token` prints it)
        #[arg(long, env = "HEARTH_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// State directory to read the token from (default: as `hearth serve`, then /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Session key (e.g. "main" or "agent:main:main")
        #[arg(long, default_value = "main")]
        session: String,
        /// The message; omit for an interactive chat
        message: Option<String>,
    },
    /// Local models (embeddings, the offline chat model)
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Memory search over each agent's MEMORY.md and memory/*.md (works with or without a running daemon)
    Memory {
        #[command(subcommand)]
        cmd: MemoryCmd,
    },
    /// List the smart-home devices found through MQTT discovery (works with or without a running daemon)
    Devices {
        /// Words of the name, e.g. kitchen
        query: Option<String>,
        /// Only devices in this area (as named in Home Assistant, e.g. "kitchen")
        #[arg(long)]
        area: Option<String>,
        /// light, switch, fan, cover, lock, climate, sensor, binary_sensor, button, scene
        #[arg(long)]
        component: Option<String>,
        /// Print one JSON array
        #[arg(long)]
        json: bool,
        /// Forget this entity id (and its high-risk pin) so that its next
        /// announcement is taken as new: for a lock or door whose config
        /// really changed
        #[arg(long, value_name = "ENTITY")]
        forget: Option<String>,
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory (default: as `hearth serve`: $STATE_DIRECTORY, ~/.local/state/hearth, /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Answer pairing requests: approve a sender that got a code, list, revoke
    Pairing {
        #[command(subcommand)]
        cmd: pairing::PairingCmd,
        /// Gateway WebSocket URL
        #[arg(
            long,
            env = "HEARTH_URL",
            default_value = "ws://127.0.0.1:18789",
            global = true
        )]
        url: String,
        /// Gateway token (default: the state dir's gateway.token)
        #[arg(
            long,
            env = "HEARTH_GATEWAY_TOKEN",
            hide_env_values = true,
            global = true
        )]
        token: Option<String>,
        /// State directory to read the token from (default: as `hearth serve`, then /var/lib/hearth)
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
    },
    /// Show the state of a running gateway
    Status {
        /// Gateway WebSocket URL
        #[arg(long, env = "HEARTH_URL", default_value = "ws://127.0.0.1:18789")]
        url: String,
        /// Gateway token (default: the state dir's gateway.token)
        #[arg(long, env = "HEARTH_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// State directory to read the token from (default: as `hearth serve`, then /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the gateway token clients sign in with (made on the first start); --rotate replaces it
    #[command(long_about = "Print the gateway token clients sign in with.\n\n\
Without [gateway] token in the config, `hearth serve` makes a random token on its first start and keeps it in \
<state>/gateway.token (mode 0600). Local commands (`hearth chat`, `status`, ...) read it from there; other \
clients (a phone, OpenClaw's apps) need it once. --rotate makes a new one: the running gateway closes the \
connections signed in with the old one within seconds. On a packaged install run it with sudo.")]
    Token {
        /// Replace the token with a new random one
        #[arg(long)]
        rotate: bool,
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory (default: as `hearth serve`: $STATE_DIRECTORY, ~/.local/state/hearth, /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Find the local models, load each and report (exit 1 if one is missing or broken)
    Check {
        /// Models directory (default: $HEARTH_MODELS_DIR, models/ next to the state dir,
        /// /usr/share/hearth/models, models/ in the source checkout)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the embedding of TEXT as a JSON array (384 numbers, unit length)
    Embed {
        /// The text to embed
        text: String,
        /// Models directory (default: as `hearth models check`)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Measure one model (used by scripts/bench-models): embed | chat
    #[command(hide = true)]
    Bench {
        /// embed or chat
        what: String,
        /// Models directory (default: as `hearth models check`)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The chat model (smollm2-135m or gemma3-270m)
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Inference threads
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Rewrite a GGUF model's Q4_0/Q4_1/Q5_0/Q5_1 tensors as Q8_0 (used by scripts/fetch-models)
    #[command(hide = true)]
    Requantize {
        /// The Q4 GGUF file
        input: PathBuf,
        /// Where the Q8_0 file is written
        output: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum MemoryCmd {
    /// Bring every agent's memory index up to date with its workspace files, then exit
    Reindex {
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory (default: as `hearth serve`: $STATE_DIRECTORY, ~/.local/state/hearth, /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Search an agent's memory: ranked results with path, lines, score and snippet
    Search {
        /// What to look for, in plain words
        query: String,
        /// Agent id (default: the default agent)
        #[arg(long)]
        agent: Option<String>,
        /// Most results (default: [memory] max_results, 6)
        #[arg(long)]
        max_results: Option<usize>,
        /// Print one JSON array
        #[arg(long)]
        json: bool,
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory (default: as `hearth serve`: $STATE_DIRECTORY, ~/.local/state/hearth, /var/lib/hearth)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Measure the index on a synthetic corpus (used by scripts/bench-memory)
    #[command(hide = true)]
    Bench {
        /// Chunks in the synthetic corpus
        #[arg(long)]
        chunks: usize,
        /// Where the corpus and index are built
        #[arg(long)]
        dir: PathBuf,
        /// Search queries to time
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Build the corpus and index (else: measure search on the built one)
        #[arg(long)]
        build: bool,
    },
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Report every problem in the config at once; exit 1 if there is any
    Validate {
        /// Config file (default: $HEARTH_CONFIG, /etc/hearth/hearth.toml if present, else embedded defaults)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// State directory, where the console's setup.toml lives (default: as `hearth serve`)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Serve {
            config,
            state_dir,
            bind,
        } => {
            let rt = runtime()?;
            let r = rt.block_on(daemon::serve(daemon::ServeOptions {
                config,
                state_dir,
                bind,
            }));
            // A model or tool call cut at the drain deadline may still sit
            // in a blocking read; the process must not wait for it (the
            // state is committed and closed by now).
            rt.shutdown_timeout(Duration::from_millis(500));
            r?;
            if crate::gateway::restart_requested() {
                return daemon::restart_self();
            }
            Ok(0)
        }
        Cmd::Config {
            cmd: ConfigCmd::Validate { config, state_dir },
        } => {
            let path = daemon::config_path(config.as_deref());
            let state = daemon::state_dir(state_dir.as_deref());
            match crate::channel::check_config(path.as_deref(), &state, None) {
                Ok(c) => {
                    let what = path
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "embedded defaults".into());
                    println!(
                        "{what}: OK ({} agent(s), {} provider(s), gateway {})",
                        c.agents.len(),
                        c.providers.len(),
                        c.gateway.bind
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(1)
                }
            }
        }
        Cmd::Chat {
            url,
            token,
            state_dir,
            session,
            message,
        } => {
            let token = client_token(token, state_dir.as_deref(), &url);
            runtime()?.block_on(chat::chat(url, token, session, message))
        }
        Cmd::Status {
            url,
            token,
            state_dir,
            json,
        } => {
            let token = client_token(token, state_dir.as_deref(), &url);
            runtime()?.block_on(status(url, token, json))
        }
        Cmd::Token {
            rotate,
            config,
            state_dir,
        } => token_cmd(rotate, config, state_dir),
        Cmd::Pairing {
            cmd,
            url,
            token,
            state_dir,
        } => {
            let token = client_token(token, state_dir.as_deref(), &url);
            runtime()?.block_on(pairing::run(url, token, cmd))
        }
        Cmd::Models { cmd } => models(cmd),
        Cmd::Memory { cmd } => memory(cmd),
        Cmd::Devices {
            json,
            forget: Some(id),
            config,
            state_dir,
            ..
        } => forget_device(&id, json, config, state_dir),
        Cmd::Devices {
            query,
            area,
            component,
            json,
            forget: None,
            config,
            state_dir,
        } => devices(query, area, component, json, config, state_dir),
    }
}

/// The state dir a client command looks in: the flag, else the first of
/// `hearth serve`'s default and /var/lib/hearth (a packaged install) that
/// holds a token or a lock file (or cannot be read: reading says so).
fn client_state_dir(flag: Option<&std::path::Path>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    let first = daemon::state_dir(None);
    for d in [first.clone(), PathBuf::from(PACKAGED_STATE)] {
        for f in [TOKEN_FILE, "hearth.lock"] {
            match d.join(f).try_exists() {
                Ok(false) => {}
                Ok(true) | Err(_) => return d,
            }
        }
    }
    first
}

const PACKAGED_STATE: &str = "/var/lib/hearth";
use crate::gateway::auth::TOKEN_FILE;

/// Whether a gateway URL names this machine (`ws://127.0.0.1:…`,
/// `ws://localhost:…`, `ws://[::1]:…`): only then is the local token sent
/// without being asked for.
fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    crate::gateway::auth::host_name(authority).is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The token a client command signs in with: the flag or
/// `$HEARTH_GATEWAY_TOKEN`; for a gateway on this machine also, in the
/// daemon's order, the config's `[gateway] token`, else the state dir's
/// file. `None` when there is none to read (the gateway then says it needs
/// one).
fn client_token(
    flag: Option<String>,
    state_dir: Option<&std::path::Path>,
    url: &str,
) -> Option<String> {
    if flag.is_some() || !loopback_url(url) {
        return flag;
    }
    if let Ok(cfg) = Config::load(daemon::config_path(None).as_deref()) {
        if let Some(t) = cfg.gateway.token {
            return Some(t.expose().to_string());
        }
    }
    match crate::gateway::auth::read_token_file(&client_state_dir(state_dir)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("note: {e} (run as the user hearth runs as, with sudo, or pass --token)");
            None
        }
    }
}

/// `hearth token [--rotate]`.
fn token_cmd(
    rotate: bool,
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    use crate::gateway::auth;
    let cfg = match Config::load(daemon::config_path(config.as_deref()).as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    if let Some(t) = &cfg.gateway.token {
        if rotate {
            eprintln!("{}", auth::TokenError::Configured);
            return Ok(1);
        }
        println!("{}", t.expose());
        return Ok(0);
    }
    let dir = client_state_dir(state_dir.as_deref());
    if let Err(e) = dir.join(TOKEN_FILE).try_exists() {
        eprintln!(
            "cannot read {}: {e}; run it as the user hearth runs as (sudo on a packaged install)",
            dir.display()
        );
        return Ok(1);
    }
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the state dir {}", dir.display()))?;
    }
    let token = if rotate {
        let t = auth::write_new_token(&dir)?;
        eprintln!(
            "new token in {}; a running gateway closes the connections signed in with the old one within {} s",
            dir.join(TOKEN_FILE).display(),
            auth::WATCH_EVERY.as_secs()
        );
        t
    } else {
        auth::ensure_token_file(&dir)?.0
    };
    println!("{token}");
    Ok(0)
}

/// The config (problems printed: the caller exits 2) and the state dir of
/// a command that works with or without a daemon.
fn config_and_state(
    config: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
) -> Option<(Config, PathBuf)> {
    let path = daemon::config_path(config);
    match Config::load(path.as_deref()) {
        Ok(c) => Some((c, daemon::state_dir(state_dir))),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// `devices.redb` opened without a daemon (its topic checks need the
/// configured prefix).
fn open_registry(
    cfg: &Config,
    file: &std::path::Path,
) -> anyhow::Result<crate::mqtt::registry::Registry> {
    let prefix = cfg
        .mqtt
        .as_ref()
        .map_or("hearth", |m| m.topic_prefix.as_str());
    Ok(crate::mqtt::registry::Registry::open(file, prefix)?)
}

/// `hearth devices --forget ID`: through the running daemon, or in
/// `<state>/devices.redb` without one.
fn forget_device(
    id: &str,
    json: bool,
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let Some((cfg, state)) = config_and_state(config.as_deref(), state_dir.as_deref()) else {
        return Ok(2);
    };
    let forgotten = if daemon::running(&state) {
        let p = json!({"entity": id});
        let r = runtime()?.block_on(memory_via_gateway(&cfg, &state, "devices.forget", p))?;
        r["forgotten"] == true
    } else {
        let file = state.join("devices.redb");
        file.is_file() && open_registry(&cfg, &file)?.forget(id)?
    };
    if json {
        println!("{}", json!({"entity": id, "forgotten": forgotten}));
    } else if forgotten {
        println!("forgot {id}: its next announcement is taken as new");
    } else {
        println!("no entity {id} in the registry");
    }
    Ok(if forgotten { 0 } else { 1 })
}

/// `hearth devices`: the registry, from the running daemon or, without
/// one, from `<state>/devices.redb`.
fn devices(
    query: Option<String>,
    area: Option<String>,
    component: Option<String>,
    json: bool,
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let Some((cfg, state)) = config_and_state(config.as_deref(), state_dir.as_deref()) else {
        return Ok(2);
    };
    let list: Vec<Value> = if daemon::running(&state) {
        let p = json!({"query": query, "area": area, "component": component});
        let r = runtime()?.block_on(memory_via_gateway(&cfg, &state, "devices.list", p))?;
        r["devices"].as_array().cloned().unwrap_or_default()
    } else {
        let file = state.join("devices.redb");
        if !file.is_file() {
            eprintln!(
                "no device registry yet in {} (configure [channels.mqtt] and start hearth)",
                state.display()
            );
            if json {
                println!("[]");
            }
            return Ok(0);
        }
        open_registry(&cfg, &file)?.list(query.as_deref(), area.as_deref(), component.as_deref())
    };
    if json {
        println!("{}", Value::Array(list));
        return Ok(0);
    }
    if list.is_empty() {
        println!("no devices");
    }
    for d in &list {
        let mut extra = Vec::new();
        for k in [
            "brightness",
            "position",
            "percentage",
            "target_temperature",
            "current_temperature",
        ] {
            if !d[k].is_null() {
                extra.push(format!("{k} {}", d[k]));
            }
        }
        if d["available"] == false {
            extra.push("unavailable".into());
        }
        println!(
            "{:<36} {:<28} {:<12} {}{}{}",
            d["entity"].as_str().unwrap_or("?"),
            d["name"].as_str().unwrap_or(""),
            d["area"].as_str().unwrap_or("-"),
            d["state"].as_str().unwrap_or("unknown"),
            d["unit"]
                .as_str()
                .map(|u| format!(" {u}"))
                .unwrap_or_default(),
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            }
        );
    }
    Ok(0)
}

/// Asks the running daemon (it holds the index files open).
async fn memory_via_gateway(
    cfg: &Config,
    state: &std::path::Path,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    // the daemon writes where it listens into the state dir
    let written = std::fs::read_to_string(state.join("gateway.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["url"].as_str().map(String::from));
    let url = written.unwrap_or_else(|| {
        let mut addr = cfg.gateway.bind;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("ws://{addr}")
    });
    let token = std::env::var("HEARTH_GATEWAY_TOKEN")
        .ok()
        .or_else(|| cfg.gateway.token.as_ref().map(|t| t.expose().to_string()))
        .or_else(|| crate::gateway::auth::read_token_file(state).ok().flatten());
    let c = crate::client::Client::connect(&url, token.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("the memory index is in use by a daemon, and its gateway at {url} is not reachable: {e}"))?;
    let r = c.request(method, params).await;
    c.close().await;
    Ok(r?)
}

/// Opens agent `id`'s memory index, then loads the embedder for it (not
/// before: a running daemon holding the index answers instead).
fn open_memory(
    cfg: &Config,
    state: &std::path::Path,
    id: &str,
) -> anyhow::Result<(crate::memory::index::MemoryIndex, PathBuf)> {
    let Some(agent) = cfg.agent(id) else {
        anyhow::bail!("no agent {id:?} in the config");
    };
    let mut idx = crate::memory::index::MemoryIndex::open(
        &state.join("memory").join(id),
        None,
        cfg.memory.clone(),
    )?;
    match crate::memory::service::load_embedder(&cfg.models, state) {
        Ok(e) => idx.set_embedder(Some(e)),
        Err(why) => eprintln!("note: {why}; memory search is BM25 only"),
    }
    Ok((idx, agent.workspace_in(state)))
}

/// The state database, for indexing session transcripts from the command
/// line (only when no daemon runs: it holds the database then). `None`
/// when transcripts are not indexed or there is no database yet.
fn memory_store(
    cfg: &Config,
    state: &std::path::Path,
) -> anyhow::Result<Option<crate::store::Store>> {
    let path = state.join("hearth.redb");
    if !cfg.memory.index_sessions || !path.is_file() {
        return Ok(None);
    }
    crate::store::Store::open(&path)
        .map(Some)
        .with_context(|| format!("cannot open the state database {}", path.display()))
}

fn reindex_cli(
    idx: &mut crate::memory::index::MemoryIndex,
    ws: &std::path::Path,
    store: Option<&crate::store::Store>,
    agent: &str,
) -> Result<crate::memory::index::ReindexStats, crate::memory::MemoryError> {
    match store {
        Some(store) => idx.reindex_with(
            ws,
            Some(&crate::memory::sessions::StoreTranscripts { store, agent }),
        ),
        None => idx.reindex(ws),
    }
}

fn memory(cmd: MemoryCmd) -> anyhow::Result<i32> {
    let (config, state_dir) = match &cmd {
        MemoryCmd::Bench {
            chunks,
            dir,
            queries,
            build,
        } => {
            println!(
                "{}",
                crate::memory::bench::run(*chunks, dir, *queries, *build)?
            );
            return Ok(0);
        }
        MemoryCmd::Reindex { config, state_dir } => (config, state_dir),
        MemoryCmd::Search {
            config, state_dir, ..
        } => (config, state_dir),
    };
    let Some((cfg, state)) = config_and_state(config.as_deref(), state_dir.as_deref()) else {
        return Ok(2);
    };
    // A running daemon holds the index and the state database: ask it.
    let daemon = daemon::running(&state);
    let busy = |e: &anyhow::Error| {
        matches!(
            e.downcast_ref::<crate::memory::MemoryError>(),
            Some(crate::memory::MemoryError::Busy(_))
        )
    };
    let open = |id: &str| {
        if daemon {
            return Err(anyhow::Error::new(crate::memory::MemoryError::Busy(
                state.join("memory").join(id),
            )));
        }
        open_memory(&cfg, &state, id)
    };
    let store = if daemon {
        None
    } else {
        memory_store(&cfg, &state)?
    };
    match cmd {
        MemoryCmd::Bench { .. } => Ok(0), // answered above
        MemoryCmd::Reindex { .. } => {
            for agent in &cfg.agents {
                let (mut idx, ws) = match open(&agent.id) {
                    Ok(x) => x,
                    Err(e) if busy(&e) => {
                        let r = runtime()?.block_on(memory_via_gateway(
                            &cfg,
                            &state,
                            "memory.reindex",
                            json!({"agentId": agent.id}),
                        ))?;
                        println!("{}: {} (through the running daemon)", agent.id, r["stats"]);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let t = std::time::Instant::now();
                let s = reindex_cli(&mut idx, &ws, store.as_ref(), &agent.id)?;
                println!(
                    "{}: {} files ({} changed, {} removed), chunks +{} -{} ={}, {} embedded, {}, {} ms",
                    agent.id,
                    s.files,
                    s.files_changed,
                    s.files_removed,
                    s.chunks_added,
                    s.chunks_removed,
                    s.chunks_kept,
                    s.embedded,
                    idx.mode().as_str(),
                    t.elapsed().as_millis()
                );
            }
            Ok(0)
        }
        MemoryCmd::Search {
            query,
            agent,
            max_results,
            json,
            ..
        } => {
            let id = agent.unwrap_or_else(|| cfg.default_agent.clone());
            if query.trim().is_empty() {
                eprintln!("the query is empty");
                return Ok(2);
            }
            let hits: Vec<crate::memory::Hit> = match open(&id) {
                Ok((mut idx, ws)) => {
                    // cheap when nothing changed: files are compared by size and mtime
                    reindex_cli(&mut idx, &ws, store.as_ref(), &id)?;
                    match idx.search(&query, max_results) {
                        Ok(h) => h,
                        Err(crate::memory::MemoryError::BadRequest(m)) => {
                            eprintln!("{m}");
                            return Ok(2);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) if busy(&e) => {
                    let mut p = json!({"agentId": id, "query": query});
                    if let Some(n) = max_results {
                        p["maxResults"] = json!(n);
                    }
                    let r = runtime()?.block_on(memory_via_gateway(
                        &cfg,
                        &state,
                        "memory.search",
                        p,
                    ))?;
                    serde_json::from_value(r["results"].clone())?
                }
                Err(e) => return Err(e),
            };
            if json {
                println!("{}", serde_json::to_string(&hits)?);
            } else if hits.is_empty() {
                println!("no results");
            } else {
                for h in &hits {
                    println!(
                        "{} (lines {}-{})  score {:.3}",
                        h.path, h.from, h.to, h.score
                    );
                    for l in h.snippet.lines().take(6) {
                        println!("    {l}");
                    }
                }
            }
            Ok(0)
        }
    }
}

fn models(cmd: ModelsCmd) -> anyhow::Result<i32> {
    use crate::models::{self, embed::Embedder};
    match cmd {
        ModelsCmd::Requantize { input, output } => {
            let n = models::gguf::requantize_q8_0(&input, &output)?;
            println!("{}: {n} tensors requantized to Q8_0", output.display());
            Ok(0)
        }
        ModelsCmd::Bench {
            what,
            dir,
            model,
            threads,
        } => {
            let Some(dir) = models::find_dir(dir.as_deref(), &daemon::state_dir(None)) else {
                anyhow::bail!("no models directory found");
            };
            let Some(spec) = models::chat_spec(&model) else {
                anyhow::bail!("unknown chat model {model:?}");
            };
            println!("{}", models::bench::run(&what, &dir, spec, threads)?);
            Ok(0)
        }
        ModelsCmd::Embed { text, dir } => {
            let Some(dir) = models::find_dir(dir.as_deref(), &daemon::state_dir(None)) else {
                eprintln!("no models directory found (run scripts/fetch-models, or install hearth-models)");
                return Ok(1);
            };
            let e = models::embed::BertEmbedder::load(&dir.join(models::EMBED_DIR), 1)?;
            let v = e.embed(&[text.as_str()])?;
            println!("{}", serde_json::to_string(&v[0])?);
            Ok(0)
        }
        ModelsCmd::Check { dir } => {
            let state = daemon::state_dir(None);
            let Some(dir) = models::find_dir(dir.as_deref(), &state) else {
                eprintln!("no models directory found (run scripts/fetch-models, or install hearth-models)");
                return Ok(1);
            };
            println!("models    {}", dir.display());
            let t = std::time::Instant::now();
            match models::embed::BertEmbedder::load(&dir.join(models::EMBED_DIR), 1) {
                Ok(e) => {
                    let v = e.embed(&["The kitchen light is on."])?;
                    println!(
                        "embedding {} ok: {} dimensions, loaded and ran in {} ms",
                        models::EMBED_DIR,
                        v[0].len(),
                        t.elapsed().as_millis()
                    );
                }
                Err(e) => {
                    println!("embedding {} FAILED: {e}", models::EMBED_DIR);
                    return Ok(1);
                }
            }
            let mut ok = true;
            for (i, spec) in models::CHAT_MODELS.iter().enumerate() {
                let path = spec.path(&dir);
                if i > 0 && !path.exists() {
                    println!(
                        "chat      {} not installed (opt-in: {})",
                        spec.id, spec.fetch
                    );
                    continue;
                }
                ok &= check_chat(spec, &path)?;
            }
            Ok(if ok { 0 } else { 1 })
        }
    }
}

/// Loads a chat model and has it say hello; false if it cannot.
fn check_chat(spec: &crate::models::ChatSpec, path: &Path) -> anyhow::Result<bool> {
    use crate::models::chat::{ChatModel, GenOptions, Msg, Output, ToolMode};
    let t = std::time::Instant::now();
    let m = match ChatModel::load(path, 1, 1024, 2048) {
        Ok(m) => m,
        Err(e) => {
            println!("chat      {} FAILED: {e}", spec.id);
            return Ok(false);
        }
    };
    let loaded = t.elapsed();
    let msgs = [Msg {
        role: "user",
        content: "Say hello in one short sentence.".into(),
    }];
    let opts = GenOptions {
        max_new_tokens: 24,
        temperature: 0.0,
        ..Default::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (out, n) = m.generate(&msgs, &[], ToolMode::None, &opts, &mut |_| {}, &cancel)?;
    let reply = match out {
        Output::Text(t) => t,
        Output::Call { name, arguments } => format!("(a call of {name} {arguments})"),
    };
    println!(
        "chat      {} ok: loaded in {} ms, {} tokens in {} ms: \"{}\"",
        spec.id,
        loaded.as_millis(),
        n.generated,
        (t.elapsed() - loaded).as_millis(),
        reply
    );
    Ok(true)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `@bot, polling (last poll ...)`, or why it stopped.
fn telegram_line(t: &serde_json::Value) -> String {
    let bot = t["bot"]
        .as_str()
        .map(|b| format!("@{b}"))
        .unwrap_or_else(|| "(not connected yet)".into());
    if let Some(why) = t["stopped"].as_str() {
        return format!("{bot} {why}");
    }
    let state = if t["polling"] == true {
        "polling"
    } else {
        "NOT polling"
    };
    let last = t["lastPoll"]
        .as_str()
        .map(|l| format!(", last poll {l}"))
        .unwrap_or_default();
    let err = t["lastError"]
        .as_str()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    format!(
        "{bot}, {state}{last}{err}, {} in, {} replies",
        t["inbound"], t["replies"]
    )
}

async fn status(url: String, token: Option<String>, raw: bool) -> anyhow::Result<i32> {
    let c = match Client::connect(&url, token.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth is not reachable: {e}");
            return Ok(1);
        }
    };
    let s = c.request("status", json!({})).await;
    c.close().await;
    let s = s?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    println!(
        "hearth {} — up {} s",
        s["version"].as_str().unwrap_or("?"),
        s["uptimeMs"].as_u64().unwrap_or(0) / 1000
    );
    println!(
        "gateway   {} (auth: {})",
        s["gateway"]["bind"].as_str().unwrap_or("?"),
        s["gateway"]["auth"].as_str().unwrap_or("?")
    );
    println!(
        "token     {}",
        s["gateway"]["token"].as_str().unwrap_or("?")
    );
    println!("config    {}", s["config"].as_str().unwrap_or("?"));
    for r in s["recovered"].as_array().into_iter().flatten() {
        println!("WARNING   {}", r.as_str().unwrap_or("?"));
    }
    println!("state     {}", s["stateDir"].as_str().unwrap_or("?"));
    let q = &s["queue"];
    println!(
        "queue     mode {}, {} running, {} pending, max {} concurrent",
        q["mode"].as_str().unwrap_or("?"),
        q["running"],
        q["pending"],
        q["maxConcurrent"]
    );
    let m = &s["memory"];
    println!(
        "memory    {}{}",
        m["mode"].as_str().unwrap_or("?"),
        m["reason"]
            .as_str()
            .or(m["note"].as_str())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let lm = &s["localModel"];
    if !lm.is_null() {
        match lm["problem"].as_str() {
            None => println!(
                "local     {} ({}, replies up to {} tokens)",
                lm["model"].as_str().unwrap_or("?"),
                lm["path"].as_str().unwrap_or("?"),
                lm["maxTokens"]
            ),
            Some(p) => println!("local     NOT available: {p}"),
        }
    }
    let mq = &s["mqtt"];
    if !mq.is_null() {
        println!(
            "mqtt      {} {}{}, {} entities",
            mq["url"].as_str().unwrap_or("?"),
            if mq["connected"] == true {
                "connected"
            } else {
                "NOT connected"
            },
            mq["lastError"]
                .as_str()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default(),
            mq["entities"]
        );
    }
    for c in s["channels"].as_array().into_iter().flatten() {
        if c["kind"] == "telegram" {
            println!("telegram  {}", telegram_line(&c["status"]));
        }
    }
    for a in s["agents"].as_array().into_iter().flatten() {
        let model = a["model"]["primary"]
            .as_str()
            .unwrap_or("(no provider configured)");
        println!(
            "agent     {}{} — model {model}",
            a["id"].as_str().unwrap_or("?"),
            if a["default"] == true {
                " (default)"
            } else {
                ""
            }
        );
    }
    for p in s["providers"].as_array().into_iter().flatten() {
        println!(
            "provider  {} ({}) {}",
            p["name"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            p["baseUrl"].as_str().unwrap_or("?"),
        );
        for c in p["credentials"].as_array().into_iter().flatten() {
            let state = c["state"].as_str().unwrap_or("?");
            let wait = c["availableInMs"].as_u64().unwrap_or(0);
            let mut line = format!(
                "  key     {} {} {state}",
                c["id"].as_str().unwrap_or("?"),
                c["key"].as_str().unwrap_or("(no key)")
            );
            if wait > 0 {
                line.push_str(&format!(" for {}", human_wait(wait)));
            }
            if let Some(e) = c["lastError"].as_str() {
                line.push_str(&format!(
                    "; last error {}: {e}",
                    c["lastErrorAt"].as_str().unwrap_or("?")
                ));
            }
            println!("{line}");
        }
    }
    Ok(0)
}

/// "4 min 10 s" from milliseconds.
fn human_wait(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    /// Issue 14: several options had no help text.
    #[test]
    fn every_option_and_argument_has_help() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && id != "help" && id != "version" {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hearth", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_local_token_goes_to_this_machine_only() {
        use super::loopback_url as l;
        assert!(l("ws://127.0.0.1:18789"));
        assert!(l("ws://localhost:18789/"));
        assert!(l("ws://[::1]:18789"));
        assert!(!l("ws://192.168.1.20:18789"));
        assert!(!l("wss://hearth.example.net"));
        assert!(!l("ws://localhost.evil.example:18789"));
    }
}
