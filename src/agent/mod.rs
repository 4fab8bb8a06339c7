//! The agent loop: context → model → (tools → model) × n → reply.
//!
//! A run gets a batch of inbox items (one, or several merged by `collect`),
//! writes the user turn to the transcript, then alternates model calls and
//! tool rounds up to `max_steps`. Every step is persisted and emitted as
//! `agent`/`chat` events. The run does not commit its end itself: it returns
//! a [`RunResult`] and the queue commits it together with removing the inbox
//! items (one transaction; see `store`).

pub mod call;
pub mod compact;
pub mod context;
mod local;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::events::RunEvents;
use crate::inbound::{Origin, Trust};
use crate::provider::Providers;
use crate::store::{now_ms, Entry, InboxItem, Role, Store};
use crate::tool::{Registry, Scope, ToolCx};
use call::{CallError, ModelCall, Next};

pub use crate::store::CONTEXT_ENTRIES;

pub const NO_PROVIDER: &str = "No model provider is configured, so I cannot answer yet. \
Add a provider to the config file, for example:\n\n\
[providers.openai]\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key = \"${OPENAI_API_KEY}\"\n\n\
[agents.defaults]\nmodel = \"openai/gpt-4o-mini\"\n\n\
then restart Hearth (see docs/configuration.md).";

/// What the agent loop needs; no config beyond its own agent.
#[derive(Clone)]
pub struct AgentCtx {
    pub store: Store,
    pub providers: Providers,
    pub agent: AgentConfig,
    pub workspace: PathBuf,
    pub memory: crate::memory::service::Memory,
    /// The agent's tools and the policy around them.
    pub tools: Arc<Registry>,
    /// The device registry (MQTT configured), for the local intent stage.
    pub devices: Option<Arc<crate::mqtt::registry::Registry>>,
    pub intents: Arc<crate::intent::Intents>,
}

/// The tool registry of one agent: the file and memory tools, plus what
/// the channels give (MQTT's device tools), under the agent's policy and
/// the channels' and bindings' sender policies.
pub fn tools_for(
    cfg: &crate::config::Config,
    agent: &AgentConfig,
    memory: &crate::memory::service::Memory,
    extra: &[Arc<dyn crate::tool::Tool>],
) -> Arc<Registry> {
    let channel_tools = cfg
        .access
        .iter()
        .filter_map(|(k, a)| a.tools.clone().map(|t| (k.clone(), t)))
        .collect();
    let binding_tools = cfg
        .bindings
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.tools.clone().map(|t| (i, t)))
        .collect();
    let reg = Registry::new(
        agent.tools.clone(),
        agent.tool_timeout,
        channel_tools,
        binding_tools,
    );
    for t in crate::tool::fs::tools()
        .into_iter()
        .chain(crate::memory::service::tools(memory))
        .chain(extra.iter().cloned())
    {
        reg.add(t);
    }
    Arc::new(reg)
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Ok(String),
    /// A user-facing message; the detail was logged.
    Error(String),
    /// Aborted; the partial text so far.
    Aborted(String),
}

pub struct RunResult {
    pub end: RunEnd,
    /// Items answered by this run (the batch plus steered-in messages).
    pub items: Vec<InboxItem>,
    /// The model that wrote the reply (`provider/model`), and whether it
    /// is the in-process local model.
    pub model: Option<(String, bool)>,
    /// When the run started (ms since the epoch).
    pub started_ms: u64,
}

/// Source of messages to steer into a running turn at the next tool boundary.
pub type SteerFn = Box<dyn FnMut() -> Vec<InboxItem> + Send>;

/// The user turn text for a batch (merged for `collect`).
pub fn turn_text(items: &[InboxItem]) -> String {
    let mut parts = Vec::new();
    for it in items {
        if !it.dropped.is_empty() {
            let list: Vec<String> = it
                .dropped
                .iter()
                .map(|t| format!("\"{}\"", t.chars().take(80).collect::<String>()))
                .collect();
            parts.push(format!(
                "[{} earlier message(s) were dropped because the queue was full: {}]",
                it.dropped.len(),
                list.join("; ")
            ));
        }
        parts.push(it.text.clone());
    }
    parts.join("\n\n")
}

pub async fn run(
    ctx: AgentCtx,
    mut items: Vec<InboxItem>,
    ev: Arc<RunEvents>,
    cancel: CancellationToken,
    mut steer: SteerFn,
) -> RunResult {
    let run_id = ev.run_id.clone();
    let session = ev.session_key.clone();
    // one sender per turn (the queue batches so)
    let origin = items[0].origin();
    let started_ms = now_ms();
    ev.agent(
        "lifecycle",
        json!({"phase": "start", "startedAt": started_ms}),
    );
    tracing::info!(run_id = %run_id, session = %session, messages = items.len(), "run started");

    let mut user = Entry::new(Role::User, turn_text(&items), Some(&run_id));
    user.source = (origin.trust < Trust::Owner).then(|| origin.describe());
    {
        let store = ctx.store.clone();
        let mut its = items.clone();
        let rid = run_id.clone();
        let aid = ctx.agent.id.clone();
        match tokio::task::spawn_blocking(move || {
            store.start_run(&mut its, &rid, &aid, &[user]).map(|_| its)
        })
        .await
        {
            Ok(Ok(its)) => items = its,
            Ok(Err(e)) => {
                return fail(&ev, items, format!("state database error: {e}"), started_ms)
            }
            Err(e) => return fail(&ev, items, format!("internal error: {e}"), started_ms),
        }
    }

    let timeout = ctx.agent.run_timeout;
    let mut model = None;
    let fut = turn_loop(
        &ctx, &mut items, &ev, &cancel, &mut steer, &origin, &mut model,
    );
    let end = tokio::select! {
        end = fut => end,
        _ = tokio::time::sleep(timeout) => {
            cancel.cancel();
            RunEnd::Error(format!("The reply took longer than the run timeout ({} s) and was stopped.", timeout.as_secs()))
        }
    };
    match &end {
        RunEnd::Ok(_) => ev.agent("lifecycle", json!({"phase": "end", "endedAt": now_ms()})),
        RunEnd::Aborted(_) => ev.agent(
            "lifecycle",
            json!({"phase": "end", "aborted": true, "endedAt": now_ms()}),
        ),
        RunEnd::Error(m) => ev.agent(
            "lifecycle",
            json!({"phase": "error", "error": m, "endedAt": now_ms()}),
        ),
    }
    let outcome = match &end {
        RunEnd::Ok(_) => "ok",
        RunEnd::Error(_) => "error",
        RunEnd::Aborted(_) => "aborted",
    };
    tracing::info!(run_id = %run_id, session = %session, outcome, "run ended");
    RunResult {
        end,
        items,
        model,
        started_ms,
    }
}

fn fail(ev: &RunEvents, items: Vec<InboxItem>, msg: String, started_ms: u64) -> RunResult {
    tracing::error!(run_id = %ev.run_id, session = %ev.session_key, "{msg}");
    RunResult {
        end: RunEnd::Error("Hearth could not start this reply; see the log.".into()),
        items,
        model: None,
        started_ms,
    }
}

async fn turn_loop(
    ctx: &AgentCtx,
    items: &mut Vec<InboxItem>,
    ev: &Arc<RunEvents>,
    cancel: &CancellationToken,
    steer: &mut SteerFn,
    origin: &Origin,
    model: &mut Option<(String, bool)>,
) -> RunEnd {
    let scope = Scope::of(origin);
    let devices = ctx.tools.offers_group(&scope, "devices");
    // the local intent stage: common device commands with no model
    let mut device_note = None;
    if devices {
        match local::intents(ctx, items, ev, cancel, &scope).await {
            local::Local::Done(end) => {
                *model = Some((local::MODEL_REF.into(), false));
                return end;
            }
            local::Local::Hint { note, question } => {
                // a 135M-parameter model asks back less reliably than
                // the matcher does: only a cloud model gets the candidates
                let local_only = ctx.agent.model.as_ref().is_none_or(|c| {
                    c.primary
                        .split_once('/')
                        .is_some_and(|(p, _)| ctx.providers.kind_of(p) == Some("local"))
                });
                if local_only {
                    *model = Some((local::MODEL_REF.into(), false));
                    return RunEnd::Ok(question);
                }
                device_note = Some(note);
            }
            local::Local::Skip => {}
        }
    }
    let Some(chain) = ctx.agent.model.clone() else {
        return RunEnd::Error(NO_PROVIDER.into());
    };
    let specs = ctx.tools.offered(&scope);
    if devices {
        if let Some(list) = ctx.devices.as_ref().map(|d| local::device_list(d)) {
            device_note = Some(match device_note {
                Some(h) => format!("{list}{h}\n"),
                None => list,
            });
        }
    }
    let mut steps = 0u32;
    let mut partial = String::new();
    let window = compact::window(ctx);
    let mem = ctx.memory.config().clone();
    // The local model fits its small window itself (oldest turns first);
    // compacting with it would cost two slow extra calls on every run.
    let primary_is_local = chain
        .primary
        .split_once('/')
        .is_some_and(|(p, _)| ctx.providers.kind_of(p) == Some("local"));
    let auto_compact = mem.compaction && !primary_is_local;
    let mut compacted = false;
    loop {
        if cancel.is_cancelled() {
            return RunEnd::Aborted(partial);
        }
        // The context: workspace files are re-read every call (the agent
        // may have just edited MEMORY.md), the transcript from the latest
        // compaction on, pruned in this copy only. Blocking file and redb
        // I/O, so on the blocking pool.
        let (store, ws, rt_agent, key, org, specs2, note) = (
            ctx.store.clone(),
            ctx.workspace.clone(),
            ctx.agent.id.clone(),
            ev.session_key.clone(),
            origin.clone(),
            specs.clone(),
            device_note.clone(),
        );
        let assembled = tokio::task::spawn_blocking(move || {
            let sc = store.transcripts().context(&key, CONTEXT_ENTRIES)?;
            let mut rt = context::Runtime::new(&rt_agent, &key, &org, devices);
            rt.device_note = note.as_deref();
            let (system, mut transcript) = context::assemble(&ws, &rt, &specs2, &sc);
            context::prune(&mut transcript, window * crate::util::CHARS_PER_TOKEN);
            Ok::<_, crate::store::StoreError>((system, transcript))
        })
        .await;
        let (system, transcript) = match assembled {
            Ok(Ok(t)) => t,
            other => {
                tracing::error!(run_id = %ev.run_id, "transcript read failed: {other:?}");
                return RunEnd::Error(
                    "Hearth could not read this conversation; see the log.".into(),
                );
            }
        };
        let tokens = compact::call_tokens(&system, &specs, &transcript);
        if auto_compact && !compacted && tokens as f32 > mem.compact_at * window as f32 {
            compacted = true;
            tracing::info!(run_id = %ev.run_id, tokens, window, "context near the model's window");
            match compact::compact(ctx, &ev.session_key, origin, cancel, Some(ev)).await {
                Ok(_) => continue,
                Err(compact::CompactError::Cancelled) => return RunEnd::Aborted(partial),
                Err(e) => {
                    tracing::warn!(run_id = %ev.run_id, "compaction failed: {e}; calling the model with the full context");
                }
            }
        }

        // One model call; its deltas stream out as events (chat deltas
        // throttled to one per 50 ms).
        let mut call = ModelCall::start(
            ctx,
            &chain,
            &ev.session_key,
            system,
            transcript,
            specs.clone(),
        );
        let mut text = String::new();
        let mut last_delta = std::time::Instant::now() - Duration::from_secs(1);
        let res = loop {
            match call.next(cancel).await {
                Next::Delta(d) => {
                    if d.is_empty() {
                        continue;
                    }
                    text.push_str(&d);
                    ev.agent("assistant", json!({"text": text, "delta": d}));
                    if last_delta.elapsed() >= Duration::from_millis(50) {
                        last_delta = std::time::Instant::now();
                        ev.chat_delta(&text);
                    }
                }
                Next::Reset => {
                    text.clear();
                    ev.agent("assistant", json!({"text": "", "reset": true}));
                }
                Next::Done(r) => break r,
            }
        };
        let reply = match res {
            Ok(r) => r,
            Err(CallError::Cancelled) => {
                partial.push_str(&text);
                return RunEnd::Aborted(partial);
            }
            Err(CallError::Provider(e)) => {
                tracing::error!(run_id = %ev.run_id, session = %ev.session_key, error = ?e, "model call failed");
                return RunEnd::Error(format!("The model provider failed: {e}. Try again later."));
            }
            Err(e) => {
                tracing::error!(run_id = %ev.run_id, "model task failed: {e}");
                return RunEnd::Error(
                    "Internal error while calling the model; see the log.".into(),
                );
            }
        };
        let response = reply.response;
        if response.tool_calls.is_empty() {
            let mut text = response.text;
            // Say briefly when the offline model stood in for the configured one.
            let pname = reply.model_ref.split('/').next().unwrap_or("");
            let local = ctx.providers.kind_of(pname) == Some("local");
            *model = Some((reply.model_ref.clone(), local));
            let note = ctx.providers.local_note();
            if reply.model_ref != chain.primary
                && ctx.providers.kind_of(pname) == Some("local")
                && !note.is_empty()
            {
                text = format!("{text}\n\n{note}");
            }
            return RunEnd::Ok(text);
        }

        // A tool round.
        steps += 1;
        partial.push_str(&response.text);
        let Some((mut round, _)) = tool_round(
            ctx,
            ev,
            &scope,
            &response.text,
            &response.tool_calls,
            cancel,
        )
        .await
        else {
            return RunEnd::Aborted(partial);
        };
        // Steer: messages that arrived meanwhile join this turn here.
        let steered = steer();
        if !steered.is_empty() {
            let mut e = Entry::new(Role::User, turn_text(&steered), Some(&ev.run_id));
            e.source = (origin.trust < Trust::Owner).then(|| origin.describe());
            round.push(e);
            items.extend(steered);
        }
        if let Err(end) = append(ctx, ev, round).await {
            return end;
        }
        if steps >= ctx.agent.max_steps {
            return RunEnd::Error(format!(
                "I stopped after {steps} tool steps (max_steps) without finishing. Ask again or raise agents.defaults.max_steps."
            ));
        }
    }
}

/// Runs a round of tool calls, each with its start and result events:
/// the transcript entries (the assistant's calls, then each result) and
/// the results. `None` when cancelled.
pub(crate) async fn tool_round(
    ctx: &AgentCtx,
    ev: &RunEvents,
    scope: &Scope,
    text: &str,
    calls: &[crate::store::ToolCall],
    cancel: &CancellationToken,
) -> Option<(Vec<Entry>, Vec<(bool, String)>)> {
    let mut round = vec![Entry {
        tool_calls: calls.to_vec(),
        ..Entry::new(Role::Assistant, text.to_string(), Some(&ev.run_id))
    }];
    let mut results = Vec::with_capacity(calls.len());
    for call in calls {
        ev.agent(
            "tool",
            json!({"phase": "start", "name": call.name, "toolCallId": call.id, "args": call.arguments}),
        );
        let (ok, out) = exec_tool(ctx, &ev.session_key, scope, call, cancel).await?;
        ev.agent(
            "tool",
            json!({"phase": "result", "name": call.name, "toolCallId": call.id, "isError": !ok, "result": out}),
        );
        round.push(Entry {
            tool_call_id: Some(call.id.clone()),
            ..Entry::new(Role::Tool, out.clone(), Some(&ev.run_id))
        });
        results.push((ok, out));
    }
    Some((round, results))
}

/// Appends a round to the session's transcript (on the blocking pool).
async fn append(ctx: &AgentCtx, ev: &RunEvents, round: Vec<Entry>) -> Result<(), RunEnd> {
    let store = ctx.store.clone();
    let key = ev.session_key.clone();
    let aid = ctx.agent.id.clone();
    if let Ok(Err(e)) | Err(e) =
        tokio::task::spawn_blocking(move || store.transcripts().append(&key, &aid, &round))
            .await
            .map_err(|e| crate::store::StoreError::Io(e.to_string()))
    {
        tracing::error!(run_id = %ev.run_id, "transcript write failed: {e}");
        return Err(RunEnd::Error(
            "Hearth could not save this conversation; see the log.".into(),
        ));
    }
    Ok(())
}

/// Runs one tool call through the agent's registry (policy, approval,
/// timeout, output cap). `None` when cancelled; otherwise (ok, result).
pub(crate) async fn exec_tool(
    ctx: &AgentCtx,
    session: &str,
    scope: &Scope,
    call: &crate::store::ToolCall,
    cancel: &CancellationToken,
) -> Option<(bool, String)> {
    let cx = ToolCx {
        agent_id: ctx.agent.id.clone(),
        session_key: session.to_string(),
        workspace: ctx.workspace.clone(),
        origin: scope.origin.clone(),
        cancel: cancel.clone(),
        approved: None,
    };
    ctx.tools
        .call(&cx, scope, &call.name, &call.arguments)
        .await
}
