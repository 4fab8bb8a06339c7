//! The local intent stage of a turn: before any model is called, a
//! message from a sender who may operate devices goes through the
//! sentence matcher (`crate::intent`). A match runs its device tool calls
//! through the agent's registry (policy, approvals and the high-risk rule
//! apply as to a model's calls), records them in the transcript like a
//! model's tool round, and replies; no model is called. An ambiguous name
//! goes to the model with the candidates; anything else goes to the model
//! untouched.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{append, tool_round, AgentCtx, RunEnd};
use crate::config::Intents as Mode;
use crate::events::RunEvents;
use crate::intent::Plan;
use crate::mqtt::registry::Registry;
use crate::store::{InboxItem, ToolCall};
use crate::tool::Scope;

/// What a run handled by the matcher reports as its model.
pub const MODEL_REF: &str = "hearth/intents";

/// Devices listed in the model's prompt, and the characters they may take.
const LIST_MAX: usize = 40;
const LIST_CHARS: usize = 2400;

pub enum Local {
    /// Handled: the run's end.
    Done(RunEnd),
    /// A name fits several devices: a note for the model, and the
    /// question to ask when there is no model.
    Hint { note: String, question: String },
    /// For the model.
    Skip,
}

/// Runs the intent stage for a turn's messages.
pub async fn intents(
    ctx: &AgentCtx,
    items: &[InboxItem],
    ev: &Arc<RunEvents>,
    cancel: &CancellationToken,
    scope: &Scope,
) -> Local {
    // one message only: a `collect` batch is a conversation for the model
    let ([item], Mode::LocalFirst, Some(reg)) = (items, ctx.agent.intents, ctx.devices.as_ref())
    else {
        return Local::Skip;
    };
    let started = Instant::now();
    let (lang, steps) = match ctx.intents.plan(reg, &item.text) {
        Plan::Act { lang, steps } => (lang, steps),
        Plan::Ambiguous { note, question } => return Local::Hint { note, question },
        Plan::Say(s) => return Local::Done(RunEnd::Ok(s)),
        Plan::NoMatch => return Local::Skip,
    };
    let calls: Vec<ToolCall> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| ToolCall {
            id: format!("intent_{}_{i}", ev.run_id),
            name: s.tool.to_string(),
            arguments: s.args.to_string(),
        })
        .collect();
    let Some((round, results)) = tool_round(ctx, ev, scope, "", &calls, cancel).await else {
        return Local::Done(RunEnd::Aborted(String::new()));
    };
    if let Err(end) = append(ctx, ev, round).await {
        return Local::Done(end);
    }
    let reply = ctx.intents.reply(lang, &steps, &results);
    tracing::info!(
        run_id = %ev.run_id,
        calls = calls.len(),
        failed = results.iter().filter(|(ok, _)| !ok).count(),
        ms = started.elapsed().as_millis() as u64,
        "handled by the local intent matcher"
    );
    Local::Done(RunEnd::Ok(reply))
}

/// The devices as they are now, one line each, for the model's prompt
/// (bounded: a big house lists the first ones and says how to find more).
pub fn device_list(reg: &Registry) -> String {
    let mut es = reg.entities();
    es.sort_by(|a, b| (&a.area, &a.name).cmp(&(&b.area, &b.name)));
    let mut out = String::from("Devices (name, id, area: state); device_set takes the id:\n");
    for (i, e) in es.iter().enumerate() {
        if i >= LIST_MAX || out.len() > LIST_CHARS {
            out.push_str(&format!(
                "- and {} more; device_list finds them.\n",
                es.len() - i
            ));
            break;
        }
        let area = e.area.as_deref().map(clean).unwrap_or_default();
        let state = e.state.value.as_deref().map(clean);
        out.push_str(&format!(
            "- {} ({}{}{}): {}\n",
            clean(&e.name),
            e.id,
            if area.is_empty() { "" } else { ", " },
            area,
            state.as_deref().unwrap_or("unknown"),
        ));
    }
    out
}

/// A name or state from a discovery payload, on one line and short.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(48)
        .collect()
}
