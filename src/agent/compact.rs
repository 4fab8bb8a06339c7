//! Compaction: when a session's context nears the model's window, older
//! turns are summarized into one compaction entry and only the recent turns
//! stay verbatim (SPEC §6).
//!
//! 1. The cut: the last three turns (a turn starts at a user entry) are
//!    kept, fewer if they exceed `keep_recent_tokens` (a quarter of the
//!    window at most); the turn being answered is always kept. Cuts fall on
//!    turn starts, so a tool call and its result are never split.
//! 2. Memory flush: the agent gets one silent turn, with its file and memory
//!    tools, to write what should outlive the summary to its memory files.
//!    Nothing of it is stored in the transcript or delivered; `NO_REPLY` is
//!    the expected answer. Best effort: a failure is logged and compaction
//!    goes on.
//! 3. The summary: the session's model chain (local fallback included)
//!    summarizes the earlier summary plus the turns before the cut.
//! 4. `store.compact` appends the summary entry (role system, state
//!    `compaction`) and moves the context's start to the cut, in one
//!    durable write. The transcript itself keeps every entry.
//!
//! The agent loop runs this at most once per run, before a model call whose
//! estimated size passes `compact_at` of the window; `sessions.compact`
//! runs it by hand.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::call::{CallError, ModelCall};
use super::{context, exec_tool, AgentCtx};
use crate::config::ModelChain;
use crate::events::RunEvents;
use crate::inbound::{Origin, Trust};
use crate::provider::{ProviderError, ToolSpec};
use crate::store::{now_ms, Entry, Role, SessionContext, StoreError, COMPACTION_STATE};
use crate::tool::Scope;
use crate::util::estimate_tokens;

/// Turns compaction keeps verbatim at most.
pub const KEEP_TURNS: usize = 3;
/// Tool rounds the memory flush may take.
const FLUSH_STEPS: u32 = 3;
/// A tool result is cut to this many characters in the summary's input.
const TOOL_RESULT_CHARS: usize = 600;

const SUMMARY_SYSTEM: &str = "You compact a conversation between a user and an AI assistant. \
Write a summary that will replace the earlier turns in the assistant's context. Keep every fact, \
name, number, date, preference, decision, open task and promise that later turns may need; \
keep the facts of an earlier summary too. Drop greetings and chit-chat. Write short bullet points, \
at most 400 words. Do not answer the user or continue the conversation.";

/// The flush turn's instruction (a user message the user never sees).
pub fn flush_prompt(today: &str) -> String {
    format!(
        "[Pre-compaction memory flush] The older part of this conversation is about to be \
         summarized and removed from your context. Write anything that should be remembered \
         for later (facts about the user, decisions, open tasks) to memory/{today}.md or \
         MEMORY.md now, with your file tools. Do not repeat what is already there. If there \
         is nothing to store, reply with exactly NO_REPLY."
    )
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Entries folded into the summary.
    pub summarized: usize,
    /// Entries kept verbatim after the cut.
    pub kept: usize,
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// Whether the memory flush turn ran.
    pub flushed: bool,
    /// The model ref that wrote the summary.
    pub model: String,
}

impl Outcome {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"summarized": self.summarized, "kept": self.kept,
               "tokensBefore": self.tokens_before, "tokensAfter": self.tokens_after,
               "flushed": self.flushed, "model": self.model})
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("nothing to compact: the conversation is only its last turns")]
    Nothing,
    #[error("no model provider is configured")]
    NoModel,
    #[error("the model could not write the summary: {0}")]
    Provider(ProviderError),
    #[error("the model returned an empty summary")]
    EmptySummary,
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The context window of the agent's primary model, in tokens.
pub fn window(ctx: &AgentCtx) -> usize {
    ctx.agent
        .model
        .as_ref()
        .map_or(crate::provider::DEFAULT_WINDOW, |m| {
            ctx.providers.context_window(&m.primary)
        })
}

/// Estimated tokens of a transcript (text and tool-call arguments).
pub fn entry_tokens(entries: &[Entry]) -> usize {
    estimate_tokens(
        entries
            .iter()
            .map(|e| {
                e.text.chars().count()
                    + e.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum(),
    )
}

/// Estimated tokens of a whole model call.
pub fn call_tokens(system: &str, tools: &[ToolSpec], transcript: &[Entry]) -> usize {
    let tools_chars: usize = tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
        .sum();
    estimate_tokens(system.chars().count() + tools_chars) + entry_tokens(transcript)
}

/// Position in `entries` where the kept part starts: at most
/// [`KEEP_TURNS`] turn starts back and within `budget` tokens, but always
/// the last turn. 0 means there is nothing older to summarize.
pub fn cut(entries: &[Entry], budget: usize) -> usize {
    let starts: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.role == Role::User)
        .map(|(i, _)| i)
        .collect();
    let Some(&last) = starts.last() else {
        return 0;
    };
    let mut at = last;
    for &s in starts.iter().rev().skip(1).take(KEEP_TURNS - 1) {
        if entry_tokens(&entries[s..]) > budget {
            break;
        }
        at = s;
    }
    at
}

/// The text the summarizer reads: the earlier summary, then each entry.
fn render(summary: Option<&str>, entries: &[Entry], max_chars: usize) -> String {
    let mut parts = Vec::new();
    for e in entries {
        let line = match e.role {
            Role::User => format!("User: {}", e.text),
            Role::Assistant if !e.tool_calls.is_empty() => {
                let calls: Vec<String> = e
                    .tool_calls
                    .iter()
                    .map(|c| format!("{}({})", c.name, c.arguments))
                    .collect();
                format!("Assistant: {} [called {}]", e.text, calls.join(", "))
            }
            Role::Assistant => format!("Assistant: {}", e.text),
            Role::Tool => {
                let t: String = e.text.chars().take(TOOL_RESULT_CHARS).collect();
                format!("Tool result: {t}")
            }
            Role::System => format!("Note: {}", e.text),
        };
        parts.push(line);
    }
    let mut body = parts.join("\n\n");
    // keep the newest part if it cannot all be read (the earlier summary
    // is kept whole)
    let n = body.chars().count();
    if n > max_chars {
        let skip = n - max_chars;
        body = format!(
            "[… {skip} characters of the oldest turns left out]\n{}",
            body.chars().skip(skip).collect::<String>()
        );
    }
    match summary {
        Some(s) => format!("Summary of the conversation before these turns:\n{s}\n\nConversation to summarize:\n{body}"),
        None => format!("Conversation to summarize:\n{body}"),
    }
}

impl From<CallError> for CompactError {
    fn from(e: CallError) -> CompactError {
        match e {
            CallError::Cancelled => CompactError::Cancelled,
            CallError::Provider(e) => CompactError::Provider(e),
            CallError::Internal(e) => CompactError::Internal(e),
        }
    }
}

/// Compacts `session` now. `origin` is who the run speaks for (the flush
/// turn's runtime facts and tool policy); `ev` (inside a run) gets
/// `compaction` agent events.
pub async fn compact(
    ctx: &AgentCtx,
    session: &str,
    origin: &Origin,
    cancel: &CancellationToken,
    ev: Option<&RunEvents>,
) -> Result<Outcome, CompactError> {
    let chain = ctx.agent.model.clone().ok_or(CompactError::NoModel)?;
    let store = ctx.store.clone();
    let key = session.to_string();
    let sc: SessionContext = tokio::task::spawn_blocking(move || {
        store.transcripts().context(&key, super::CONTEXT_ENTRIES)
    })
    .await
    .map_err(|e| CompactError::Internal(e.to_string()))??;
    let win = window(ctx);
    let budget = ctx.memory.config().keep_recent_tokens.min(win / 4);
    let entries = context::model_view(&sc);
    let at = cut(&entries, budget);
    if at == 0 {
        return Err(CompactError::Nothing);
    }
    let tokens_before = entry_tokens(&entries)
        + sc.summary
            .as_deref()
            .map_or(0, |s| estimate_tokens(s.chars().count()));
    if let Some(ev) = ev {
        ev.agent("compaction", json!({"phase": "start", "entries": at}));
    }
    tracing::info!(
        session,
        entries = at,
        tokens_before,
        "compacting the conversation"
    );

    let flushed =
        ctx.memory.config().memory_flush && flush(ctx, &chain, session, origin, &sc, cancel).await;

    // The summarizer gets no tools and a short prompt, so most of the
    // window is room for the turns (which were in the context already).
    let room = win * crate::util::CHARS_PER_TOKEN * 85 / 100;
    let input = render(sc.summary.as_deref(), &entries[..at], room);
    let reply = ModelCall::start(
        ctx,
        &chain,
        session,
        SUMMARY_SYSTEM.to_string(),
        vec![Entry::new(Role::User, input, None)],
        vec![],
    )
    .finish(cancel)
    .await?;
    let summary = reply.response.text.trim().to_string();
    if summary.is_empty() {
        return Err(CompactError::EmptySummary);
    }
    let keep_from = sc.entries[at].0;
    let mut entry = Entry::new(Role::System, summary.clone(), ev.map(|e| e.run_id.as_str()));
    entry.state = Some(COMPACTION_STATE.to_string());
    let (store, key, aid) = (ctx.store.clone(), session.to_string(), ctx.agent.id.clone());
    tokio::task::spawn_blocking(move || store.transcripts().compact(&key, &aid, entry, keep_from))
        .await
        .map_err(|e| CompactError::Internal(e.to_string()))??;
    let out = Outcome {
        summarized: at,
        kept: entries.len() - at,
        tokens_before,
        tokens_after: entry_tokens(&entries[at..]) + estimate_tokens(summary.chars().count()),
        flushed,
        model: reply.model_ref,
    };
    tracing::info!(session, summarized = out.summarized, kept = out.kept, tokens_after = out.tokens_after, model = %out.model, "conversation compacted");
    if let Some(ev) = ev {
        ev.agent(
            "compaction",
            json!({"phase": "end", "summarized": out.summarized, "kept": out.kept,
                   "tokensBefore": out.tokens_before, "tokensAfter": out.tokens_after}),
        );
    }
    Ok(out)
}

/// The groups the flush turn may use: no device control while flushing.
const FLUSH_GROUPS: &[&str] = &["fs", "memory"];

/// The silent memory-flush turn. True when it ran to an answer. It runs
/// only when the owner may write files and wrote every message in the
/// conversation: words of a device or a guest never become the owner's
/// memory.
async fn flush(
    ctx: &AgentCtx,
    chain: &ModelChain,
    session: &str,
    origin: &Origin,
    sc: &SessionContext,
    cancel: &CancellationToken,
) -> bool {
    // a group session mixes people, and its summary may carry their words
    if origin.trust < Trust::Owner
        || session.contains(":group:")
        || sc
            .entries
            .iter()
            .any(|(_, e)| e.role == Role::User && e.source.is_some())
    {
        tracing::info!(
            session,
            "memory flush skipped: the conversation has messages from others than the owner"
        );
        return false;
    }
    let scope = Scope {
        origin: origin.clone(),
        only_groups: Some(FLUSH_GROUPS),
    };
    let tools: Vec<ToolSpec> = ctx.tools.offered(&scope);
    if !tools.iter().any(|t| t.name == "write" || t.name == "edit") {
        tracing::info!(
            session,
            "memory flush skipped: the agent may not write files"
        );
        return false;
    }
    // as the agent's own turns say it (the flush offers no device tools)
    let devices = ctx.tools.offers_group(&Scope::of(origin), "devices");
    let (ws, aid, key, org) = (
        ctx.workspace.clone(),
        ctx.agent.id.clone(),
        session.to_string(),
        origin.clone(),
    );
    let t2 = tools.clone();
    let sc2 = sc.clone();
    let Ok((system, mut transcript)) = tokio::task::spawn_blocking(move || {
        let rt = context::Runtime::new(&aid, &key, &org, devices);
        context::assemble(&ws, &rt, &t2, &sc2)
    })
    .await
    else {
        return false;
    };
    let today = crate::util::rfc3339(now_ms());
    transcript.push(Entry::new(
        Role::User,
        flush_prompt(today.get(..10).unwrap_or("today")),
        None,
    ));
    for step in 0..=FLUSH_STEPS {
        let r = match ModelCall::start(
            ctx,
            chain,
            session,
            system.clone(),
            transcript.clone(),
            tools.clone(),
        )
        .finish(cancel)
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session, "memory flush failed: {e}; compacting without it");
                return false;
            }
        };
        if r.response.tool_calls.is_empty() {
            tracing::info!(session, reply = %r.response.text.chars().take(80).collect::<String>(), "memory flush done");
            return true;
        }
        if step == FLUSH_STEPS {
            break;
        }
        transcript.push(Entry {
            tool_calls: r.response.tool_calls.clone(),
            ..Entry::new(Role::Assistant, r.response.text.clone(), None)
        });
        for c in &r.response.tool_calls {
            // the registry refuses what this turn does not offer
            let Some((ok, out)) = exec_tool(ctx, session, &scope, c, cancel).await else {
                return false;
            };
            tracing::info!(session, tool = %c.name, ok, "memory flush tool call");
            transcript.push(Entry {
                tool_call_id: Some(c.id.clone()),
                ..Entry::new(
                    Role::Tool,
                    context::mark_untrusted("tool result", &out),
                    None,
                )
            });
        }
    }
    tracing::warn!(session, "memory flush used all its tool steps");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(role: Role, n: usize) -> Entry {
        Entry::new(role, "x".repeat(n), None)
    }

    #[test]
    fn cut_keeps_three_turns_within_budget() {
        let mut t = Vec::new();
        for _ in 0..6 {
            t.push(e(Role::User, 40));
            t.push(e(Role::Assistant, 40));
        }
        // 6 turns of 20 tokens: the last three are kept
        assert_eq!(cut(&t, 1000), 6);
        // a budget of 45 tokens holds two turns
        assert_eq!(cut(&t, 45), 8);
        // the last turn is kept whatever its size
        assert_eq!(cut(&t, 1), 10);
        // one turn: nothing to summarize
        assert_eq!(cut(&t[..2], 1000), 0);
    }

    #[test]
    fn cut_never_splits_a_tool_round() {
        let mut t = vec![e(Role::User, 8), e(Role::Assistant, 8)];
        t.push(e(Role::User, 8));
        t.push(Entry {
            tool_calls: vec![crate::store::ToolCall {
                id: "c1".into(),
                name: "ls".into(),
                arguments: "{}".into(),
            }],
            ..e(Role::Assistant, 0)
        });
        t.push(e(Role::Tool, 4000));
        t.push(e(Role::Assistant, 8));
        t.push(e(Role::User, 8));
        // the tool round is too big for the budget: its turn goes whole
        assert_eq!(cut(&t, 100), 6);
        assert_eq!(t[cut(&t, 100)].role, Role::User);
    }

    #[test]
    fn render_keeps_earlier_summary_and_newest_turns() {
        let t = vec![
            Entry::new(Role::User, "old ".repeat(100), None),
            Entry::new(Role::Assistant, "newest answer", None),
        ];
        let s = render(Some("- locker code 4417"), &t, 100);
        assert!(s.contains("locker code 4417"));
        assert!(s.contains("newest answer"));
        assert!(s.contains("characters of the oldest turns left out"));
    }
}
