//! `hearth serve`: wires the parts together and owns the process life.
//!
//! Start: config → state dir → single-instance lock → redb → agents and
//! workspaces → queue (resumes the inbox) → bind → READY=1.
//! Stop (SIGTERM/SIGINT): STOPPING=1 → close the listener and tell clients →
//! let runs finish until the drain deadline (cut ones stay in the inbox) →
//! drop the store → exit 0.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::agent::{context, AgentCtx};
use crate::config::{Config, ModelChain, ProviderKind};
use crate::events::EventBus;
use crate::gateway::Gateway;
use crate::models;
use crate::provider::credentials::{CredState, CredentialBook, SystemClock};
use crate::provider::local::LocalProvider;
use crate::provider::Providers;
use crate::queue::Queue;
use crate::store::Store;

/// Everything `serve` does after SIGTERM, below the unit's
/// `TimeoutStopSec=30` with room for redb to close the file. The stages:
pub const STOP_BUDGET: Duration = Duration::from_secs(25);
/// MQTT: the last replies, `offline`, disconnect.
pub const CHANNEL_STOP: Duration = Duration::from_secs(3);
/// The listener and the HTTP connections.
pub const SERVER_STOP: Duration = Duration::from_secs(2);
/// Runs cut at the drain deadline get this to stop.
pub const CUT_WAIT: Duration = Duration::from_secs(2);
/// Runs may finish until then; the rest of the budget is for the stages
/// after it.
pub const DRAIN_DEADLINE: Duration = STOP_BUDGET
    .saturating_sub(CHANNEL_STOP)
    .saturating_sub(SERVER_STOP)
    .saturating_sub(CUT_WAIT);

pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub bind: Option<SocketAddr>,
}

/// The state directory: flag, `$STATE_DIRECTORY` (systemd), `$HEARTH_STATE_DIR`,
/// `$XDG_STATE_HOME/hearth`, `~/.local/state/hearth`, else `/var/lib/hearth`.
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(s) = env("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let s = s
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(s);
    }
    if let Some(s) = env("HEARTH_STATE_DIR") {
        return PathBuf::from(s);
    }
    if let Some(x) = env("XDG_STATE_HOME") {
        return PathBuf::from(x).join("hearth");
    }
    if let Some(h) = env("HOME") {
        return PathBuf::from(h).join(".local/state/hearth");
    }
    PathBuf::from("/var/lib/hearth")
}

/// The config file: flag, `$HEARTH_CONFIG`, `$CONFIGURATION_DIRECTORY/hearth.toml`,
/// `/etc/hearth/hearth.toml` if present, else none (embedded defaults).
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("HEARTH_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("CONFIGURATION_DIRECTORY").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(d).join("hearth.toml");
        if p.exists() {
            return Some(p);
        }
    }
    let etc = PathBuf::from("/etc/hearth/hearth.toml");
    etc.exists().then_some(etc)
}

/// Starts again after a requested restart: the same binary with the same
/// arguments replaces this process (same PID). Under systemd the stop was
/// announced as `RELOADING=1`, and the new start's `READY=1` ends it, so
/// the unit stays active and its start limit is not touched.
pub fn restart_self() -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    tracing::info!(exe = %exe.display(), "starting again");
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(anyhow::anyhow!("cannot start again: {e}"))
}

/// Holds the exclusive lock on `<state>/hearth.lock` for the process life.
pub struct InstanceLock {
    _file: File,
}

/// Whether a `hearth serve` holds the state dir now (its lock file is
/// locked). Does not create or change the lock file.
pub fn running(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("hearth.lock"))
    else {
        return false;
    };
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

pub fn lock_state_dir(dir: &Path) -> anyhow::Result<InstanceLock> {
    let path = dir.join("hearth.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another `hearth serve` (pid {}) is already running with the state dir {}; \
                 two gateways on one state dir would answer messages twice. Stop it first, \
                 or use another --state-dir.",
                pid.trim(),
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(InstanceLock { _file: f })
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("sd_notify failed: {e}");
        }
    }
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let cfg_path = config_path(opts.config.as_deref());
    let dir = state_dir(opts.state_dir.as_deref());
    let cfg = Config::load_for_serve(cfg_path.as_deref(), &dir, opts.bind)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    run(cfg, dir, None, wait_for_signal()).await
}

/// The daemon on a loaded config: `listener` (or, when `None`, a bind of
/// `[gateway] bind`), until `stop` resolves; then the ordered shutdown.
/// Tests start it in-process with their own listener and stop future.
pub async fn run(
    mut cfg: Config,
    dir: PathBuf,
    listener: Option<tokio::net::TcpListener>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cfg_path = cfg.source.clone();
    let unknown = crate::channel::check(&cfg);
    if !unknown.is_empty() {
        anyhow::bail!("{}", unknown.join("\n"));
    }
    for p in cfg.check_paths() {
        tracing::warn!("{p}");
    }
    let (local, local_status) = local_model(&mut cfg, &dir);
    let cfg = Arc::new(cfg);
    create_private_dir(&dir)?;
    let _lock = lock_state_dir(&dir)?;
    let token = crate::gateway::auth::Token::load(&cfg.gateway, &dir)
        .context("cannot set up the gateway token")?;
    check_fd_limit(&cfg);
    tracing::info!(state_dir = %dir.display(), config = %cfg_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded defaults".into()), "starting hearth {}", crate::VERSION);

    let mut recovered = Vec::new();
    let store = open_store(&dir, &mut recovered).await?;
    let mut providers = Providers::from_config(&cfg, credential_book(&store).await?);
    for (name, path) in local {
        providers.add_local(
            &name,
            LocalProvider::new(path, &cfg.models),
            &cfg.models.reply_note,
        );
    }
    let memory = crate::memory::service::Memory::new(
        &dir,
        cfg.memory.clone(),
        cfg.models.clone(),
        Some(store.clone()),
    );
    // Channels: built first (their tools go to the agents), started once
    // the gateway can take their messages
    let channels = {
        let (c, d) = (cfg.clone(), dir.clone());
        tokio::task::spawn_blocking(move || crate::channel::build_all(&c, &d))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot set up the {e}"))?
    };
    let bus = EventBus::new(1024);
    let wakers = crate::channel::Wakers::default();
    let outreach = crate::outreach::Outreach::new(
        cfg.clone(),
        store.clone(),
        wakers.clone(),
        bus.clone(),
        channels.iter().map(|c| c.kind().to_string()).collect(),
    );
    let channel_tools: Vec<_> = channels
        .iter()
        .flat_map(|c| c.tools())
        .chain([crate::outreach::tool(outreach.clone())])
        .collect();
    {
        // replies waiting for a channel that is no longer configured
        let keep: Vec<&'static str> = channels.iter().map(|c| c.kind()).collect();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.outbox().drop_except(&keep)).await? {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                replies = n,
                "dropped undelivered replies for channels no longer configured"
            ),
            Err(e) => tracing::warn!("cannot read the outbox: {e}"),
        }
    }
    // the offline intent stage reads the device registry, and language
    // files from <state>/intents/ beside the shipped ones
    let devices = channels.iter().find_map(|c| {
        c.as_any()
            .downcast_ref::<crate::mqtt::channel::MqttChannel>()
            .map(|m| m.mqtt.registry.clone())
    });
    let intents = Arc::new(crate::intent::Intents::load(Some(&dir.join("intents"))));
    let mut agents = HashMap::new();
    for a in &cfg.agents {
        let ws = a.workspace_in(&dir);
        context::ensure_workspace(&ws).with_context(|| {
            format!(
                "cannot create the workspace {} of agent {}",
                ws.display(),
                a.id
            )
        })?;
        if a.model.is_none() {
            tracing::warn!(agent = %a.id, "no model provider configured: chats get a reply explaining how to add one");
        }
        agents.insert(
            a.id.clone(),
            AgentCtx {
                store: store.clone(),
                providers: providers.clone(),
                agent: a.clone(),
                workspace: ws,
                memory: memory.clone(),
                tools: crate::agent::tools_for(&cfg, a, &memory, &channel_tools),
                devices: devices.clone(),
                intents: intents.clone(),
            },
        );
    }
    let queue = Queue::new(
        cfg.queue,
        cfg.reset,
        cfg.max_concurrent,
        store.clone(),
        bus.clone(),
        agents,
        wakers.clone(),
    );
    let shutdown = CancellationToken::new();

    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(cfg.gateway.bind)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another program using the port?)",
                    cfg.gateway.bind
                )
            })?,
    };
    let addr = listener.local_addr()?;
    // Older messages go first: resume the inbox before accepting new ones.
    let resumed = queue.resume().await.context("cannot read the inbox")?;
    if resumed > 0 {
        tracing::info!(
            messages = resumed,
            "resuming messages accepted before the last stop"
        );
    }
    let gw = Gateway::new(
        cfg.clone(),
        crate::gateway::Parts {
            queue: queue.clone(),
            bus: bus.clone(),
            providers: providers.clone(),
            state_dir: dir.clone(),
            memory: memory.clone(),
            shutdown: shutdown.clone(),
            token,
            recovered,
            local_model: local_status,
            outreach,
        },
    );
    let server = tokio::spawn(crate::gateway::server::serve(
        listener,
        gw.clone(),
        shutdown.clone(),
    ));
    let token_watch = gw.spawn_token_watch();
    write_addr_file(&dir, addr);
    tracing::info!("gateway listening on {addr} (web console http://{addr}/, gateway ws://{addr}, health http://{addr}/health)");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("listening on {addr}")),
    ]);
    let channel_stop = CancellationToken::new();
    let mut channel_tasks = Vec::new();
    for c in &channels {
        if let Some(m) = c
            .as_any()
            .downcast_ref::<crate::mqtt::channel::MqttChannel>()
        {
            let _ = gw.mqtt.set(m.mqtt.clone());
            crate::gateway::admin::spawn_device_events(gw.clone(), m.mqtt.clone());
        }
        let ingest: Arc<dyn crate::channel::Ingest> = gw.clone();
        let task = crate::channel::start(
            c.clone(),
            ingest,
            &store,
            &wakers,
            crate::channel::Drafts::new(bus.clone()),
            channel_stop.clone(),
            &dir,
        )
        .with_context(|| format!("cannot start the {} channel", c.kind()))?;
        channel_tasks.push((c.kind(), c.stop_budget(), task));
    }
    let _ = gw.channels.set(channels);
    let watchdog = spawn_watchdog(shutdown.clone());
    let pruner = spawn_pruner(store.clone(), cfg.run_retention, shutdown.clone());

    tokio::select! {
        _ = stop => {}
        _ = gw.restart.notified() => tracing::info!("restarting"),
    }
    tracing::info!(
        "stopping: draining runs (up to {} s, {} s in all)",
        DRAIN_DEADLINE.as_secs(),
        STOP_BUDGET.as_secs()
    );
    notify(&[
        if crate::gateway::restart_requested() {
            sd_notify::NotifyState::Reloading
        } else {
            sd_notify::NotifyState::Stopping
        },
        sd_notify::NotifyState::Status("draining"),
    ]);
    shutdown.cancel();
    queue.shutdown(DRAIN_DEADLINE, CUT_WAIT).await;
    // after the drain: the last replies still go out (MQTT: then `offline`)
    channel_stop.cancel();
    // all at once, within one deadline
    let until = tokio::time::Instant::now() + CHANNEL_STOP;
    for (kind, budget, t) in channel_tasks {
        let by = until.min(tokio::time::Instant::now() + budget);
        if tokio::time::timeout_at(by, t).await.is_err() {
            tracing::warn!("{kind}: did not stop in time");
        }
    }
    if tokio::time::timeout(SERVER_STOP, server).await.is_err() {
        tracing::warn!("gateway connections did not close in time");
    }
    token_watch.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = pruner.await;
    let _ = std::fs::remove_file(dir.join("gateway.json"));
    drop(gw);
    drop(queue);
    drop(store);
    let _ = std::fs::remove_file(dir.join(RUNNING_MARK));
    tracing::info!("stopped");
    Ok(())
}

/// `<state>/hearth.running` while `serve` runs; found at start, the last
/// run did not stop cleanly (power cut, kill, crash).
pub const RUNNING_MARK: &str = "hearth.running";

/// Opens `<state>/hearth.redb`. After an unclean stop redb's integrity
/// check runs first. A damaged file (empty, not a database, beyond repair)
/// is moved aside, loudly, and Hearth starts with an empty state; a file
/// that cannot be read for another reason (permissions, I/O) stops the
/// start instead, so nothing is thrown away on a transient error.
async fn open_store(dir: &Path, recovered: &mut Vec<String>) -> anyhow::Result<Store> {
    let mark = dir.join(RUNNING_MARK);
    let unclean = mark.exists();
    std::fs::write(&mark, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", mark.display()))?;
    let path = dir.join("hearth.redb");
    if unclean && path.exists() {
        tracing::warn!("the last run did not stop cleanly (power cut, kill or crash); checking the state database");
    }
    let p = path.clone();
    let (store, note) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        match Store::open_with(&p, unclean) {
            Ok(s) => Ok((s, None)),
            Err(crate::store::StoreError::Damaged(why)) => {
                let stamp = crate::util::rfc3339(crate::store::now_ms()).replace(':', "");
                let aside = p.with_file_name(format!("hearth.redb.damaged-{stamp}"));
                std::fs::rename(&p, &aside)
                    .with_context(|| format!("cannot move the damaged {} aside", p.display()))?;
                let note = format!(
                    "the state database was damaged ({why}) and was moved aside to {}; Hearth started with no sessions",
                    aside.display()
                );
                tracing::error!("{note}");
                Ok((Store::open(&p)?, Some(note)))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?
    .with_context(|| format!("cannot open the state database {}", path.display()))?;
    recovered.extend(note);
    Ok(store)
}

/// Warns when the connection limits do not fit the open-file limit (the
/// state files, indexes and models need about 128 more).
fn check_fd_limit(cfg: &Config) {
    let need = (cfg.gateway.max_connections + cfg.gateway.max_handshakes + 128) as u64;
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(cur) = lim.current {
        if cur < need {
            tracing::warn!(
                limit = cur,
                need,
                "the open-file limit is below what the gateway limits need; raise LimitNOFILE or lower [gateway] max_connections / max_handshakes"
            );
        }
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the state dir {}", dir.display()))
}

/// `<state>/gateway.json` lets `hearth status` / `hearth chat` find the gateway.
fn write_addr_file(dir: &Path, addr: SocketAddr) {
    let body = serde_json::json!({"url": format!("ws://{addr}"), "pid": std::process::id()});
    let tmp = dir.join("gateway.json.tmp");
    if std::fs::write(&tmp, body.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join("gateway.json"));
    }
}

/// WATCHDOG=1 at half of `$WATCHDOG_USEC` while the runtime is responsive.
fn spawn_watchdog(stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!("systemd watchdog: pinging every {} ms", every.as_millis());
    Some(tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = t.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    }))
}

/// Hourly (and at start): drop run records and idempotency keys older than
/// the retention, in small batches, so the state file does not grow forever.
fn spawn_pruner(
    store: Store,
    keep: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = t.tick() => {}
            }
            let cutoff = crate::store::now_ms().saturating_sub(keep.as_millis() as u64);
            let mut total = 0;
            loop {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.prune(cutoff, 500)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => total += n,
                    Ok(Err(e)) => {
                        tracing::warn!("pruning old run records failed: {e}");
                        break;
                    }
                    Err(_) => break,
                }
                if stop.is_cancelled() {
                    return;
                }
            }
            if total > 0 {
                tracing::info!(
                    rows = total,
                    "pruned run records and idempotency keys past the retention"
                );
            }
        }
    })
}

/// The local chat model: every `kind = "local"` provider, plus (with
/// `[models] local_fallback`, the default) a provider `local` appended as
/// the last fallback of every agent when the model file is present, so the
/// house still answers without the internet. Returns (name, model path) and
/// what `status` says about it.
fn local_model(cfg: &mut Config, state: &Path) -> (Vec<(String, PathBuf)>, serde_json::Value) {
    let (out, path) = local_model_refs(cfg, state);
    let problem = if path.is_file() {
        None
    } else if let Some(d) = cfg.models.dir.as_ref().filter(|d| !d.is_dir()) {
        Some(format!("[models] dir {} does not exist", d.display()))
    } else {
        Some(format!(
            "{} is missing (run {})",
            path.display(),
            cfg.models.chat.fetch
        ))
    };
    let status = serde_json::json!({"model": cfg.models.chat.id, "path": path,
        "available": problem.is_none(), "problem": problem,
        "maxTokens": cfg.models.max_tokens, "contextTokens": cfg.models.context_tokens});
    (out, status)
}

fn local_model_refs(cfg: &mut Config, state: &Path) -> (Vec<(String, PathBuf)>, PathBuf) {
    let dir = models::find_dir(cfg.models.dir.as_deref(), state);
    let path = dir
        .as_ref()
        .map(|d| cfg.models.chat.path(d))
        .unwrap_or_else(|| cfg.models.chat.path(Path::new(models::PACKAGED_DIR)));
    let mut out: Vec<(String, PathBuf)> = cfg
        .providers
        .values()
        .filter(|p| p.kind == ProviderKind::Local)
        .map(|p| (p.name.clone(), path.clone()))
        .collect();
    if !path.is_file() {
        if !out.is_empty() {
            tracing::warn!(path = %path.display(), "a local provider is configured but the model file is missing (run {})", cfg.models.chat.fetch);
        }
        return (out, path);
    }
    tracing::info!(path = %path.display(), "local chat model available");
    if !cfg.models.local_fallback {
        return (out, path);
    }
    let name = match out.first() {
        Some((n, _)) => n.clone(),
        None => {
            out.push(("local".into(), path.clone()));
            "local".into()
        }
    };
    let r = format!("{name}/{}", cfg.models.chat.id);
    for a in &mut cfg.agents {
        match &mut a.model {
            Some(chain) if chain.refs().any(|x| x == r) => {}
            Some(chain) => chain.fallbacks.push(r.clone()),
            None => {
                a.model = Some(ModelChain {
                    primary: r.clone(),
                    fallbacks: Vec::new(),
                })
            }
        }
    }
    (out, path)
}

/// Credential health from redb, written back on every change, so cooldowns
/// survive a restart.
async fn credential_book(store: &Store) -> anyhow::Result<Arc<CredentialBook>> {
    let s = store.clone();
    let saved = tokio::task::spawn_blocking(move || s.credentials().list())
        .await?
        .context("cannot read provider credential state")?;
    let saved = saved
        .into_iter()
        .filter_map(|(k, v)| match serde_json::from_slice::<CredState>(&v) {
            Ok(st) => Some((k, st)),
            Err(e) => {
                tracing::warn!(credential = %k, "ignoring unreadable credential state: {e}");
                None
            }
        })
        .collect();
    let s = store.clone();
    Ok(Arc::new(CredentialBook::with_state(
        Arc::new(SystemClock),
        saved,
        Box::new(move |k, st| {
            let v = serde_json::to_vec(st).expect("json");
            if let Err(e) = s.credentials().put(k, v) {
                tracing::warn!(credential = %k, "cannot save credential state: {e}");
            }
        }),
    )))
}

/// Waits for SIGTERM or SIGINT. SIGHUP, whose default action would kill the
/// daemon, is logged and ignored: there is no live reload.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM received"),
            _ = int.recv() => return tracing::info!("SIGINT received"),
            _ = hup.recv() => tracing::warn!(
                "SIGHUP ignored: Hearth has no live reload; restart it to apply config changes (systemctl restart hearth)"
            ),
        }
    }
}
