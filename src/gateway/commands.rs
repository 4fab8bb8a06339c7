//! The command layer: `/new`, `/reset`, `/stop`, `/compact`, `/context`,
//! `/status`, `/help` behave the same from every channel (the gateway's
//! clients through `chat.send`, and every channel through the ingest
//! handle), and only for senders whose trust allows them.

use serde_json::{json, Value};

use super::protocol::ErrorShape;
use super::Gateway;
use crate::events::RunEvents;
use crate::inbound::{Origin, Trust};
use crate::routing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Stop,
    New,
    Compact,
    Context { detail: bool },
    Status,
    Help,
}

/// A command, when the whole message is one (`/new`, `/context detail`;
/// `/new@HearthBot` as Telegram sends them in groups).
pub fn parse(text: &str) -> Option<Command> {
    let t = text.trim();
    let mut words = t.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    let name = first.strip_prefix('/')?.split('@').next()?;
    let rest: Vec<&str> = words.collect();
    let cmd = match (name, rest.as_slice()) {
        ("stop" | "abort", []) => Command::Stop,
        ("new" | "reset", []) => Command::New,
        ("compact", []) => Command::Compact,
        ("context", []) => Command::Context { detail: false },
        ("context", [d]) if d.eq_ignore_ascii_case("detail") => Command::Context { detail: true },
        ("status", []) => Command::Status,
        ("help", []) => Command::Help,
        _ => return None,
    };
    Some(cmd)
}

impl Command {
    /// The least trust that may use it. Every command acts on the
    /// sender's own session only; `/status` shows the whole appliance.
    pub fn needs(self) -> Trust {
        match self {
            Command::Stop | Command::New | Command::Help => Trust::Device,
            Command::Compact | Command::Context { .. } => Trust::Member,
            Command::Status => Trust::Owner,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Stop => "/stop",
            Command::New => "/new",
            Command::Compact => "/compact",
            Command::Context { .. } => "/context",
            Command::Status => "/status",
            Command::Help => "/help",
        }
    }
}

pub const HELP: [(Command, &str); 6] = [
    (Command::New, "/new or /reset: start a new conversation"),
    (Command::Stop, "/stop: stop the reply being written"),
    (
        Command::Compact,
        "/compact: summarize the older part of this conversation",
    ),
    (
        Command::Context { detail: false },
        "/context [detail]: what the next model call holds",
    ),
    (Command::Status, "/status: how Hearth is doing"),
    (Command::Help, "/help: this list"),
];

/// Runs a command for `origin` on `session`. Returns the text for the
/// sender and the fields `chat.send` answers with.
pub async fn run(
    g: &Gateway,
    cmd: Command,
    session: &str,
    origin: &Origin,
) -> Result<(String, Value), ErrorShape> {
    if origin.trust < cmd.needs() {
        tracing::warn!(command = cmd.name(), origin = %origin.describe(), "command refused for this sender");
        return Ok((
            format!("{} is not available to you here.", cmd.name()),
            json!({"refused": true}),
        ));
    }
    Ok(match cmd {
        Command::Stop => {
            let aborted = g.queue.abort(session, None);
            let text = if aborted.is_some() {
                "Stopped."
            } else {
                "Nothing to stop."
            };
            (text.into(), json!({"aborted": aborted.is_some()}))
        }
        Command::New => {
            let store = g.queue.store().clone();
            let k = session.to_string();
            super::blocking(move || store.sessions().reset(&k)).await?;
            ("Started a new session.".into(), json!({"reset": true}))
        }
        Command::Context { detail } => {
            let text = context_report(g, session, origin, detail).await?;
            (text.clone(), json!({"context": text}))
        }
        Command::Compact => {
            let text = match compact_session(g, session, origin).await {
                Ok(o) => format!(
                    "Compacted the conversation: {} older entries summarized, {} kept; context about {} → {} tokens{}.",
                    o.summarized,
                    o.kept,
                    o.tokens_before,
                    o.tokens_after,
                    if o.flushed { ", notes saved to memory first" } else { "" }
                ),
                Err(e) => format!("Not compacted: {}", e.message),
            };
            (text.clone(), json!({"compact": text}))
        }
        Command::Status => {
            let text = status_text(g);
            (text.clone(), json!({"statusText": text}))
        }
        Command::Help => {
            let lines: Vec<&str> = HELP
                .iter()
                .filter(|(c, _)| origin.trust >= c.needs())
                .map(|(_, l)| *l)
                .collect();
            let text = format!("Commands:\n{}", lines.join("\n"));
            (text.clone(), json!({"help": text}))
        }
    })
}

/// `chat.send` with a command: the answer as a `chat` final event (except
/// `/stop`, which only says whether it stopped something) and in the response.
pub async fn answer_client(
    g: &Gateway,
    cmd: Command,
    session: &str,
    idem: &str,
    origin: &Origin,
) -> Result<Value, ErrorShape> {
    let (text, mut extra) = run(g, cmd, session, origin).await?;
    if cmd != Command::Stop {
        RunEvents::new(g.bus.clone(), idem, session).chat_final(&text, &[]);
    }
    extra["runId"] = json!(idem);
    extra["status"] = json!("ok");
    Ok(extra)
}

fn status_text(g: &Gateway) -> String {
    let (running, pending) = g.queue.load();
    let up = g.started.elapsed().as_secs();
    let providers = g.providers.status();
    let n = providers.len();
    format!(
        "Hearth {} up {}h{:02}m; {running} running, {pending} waiting; {n} provider(s); local model: {}.",
        crate::VERSION,
        up / 3600,
        up / 60 % 60,
        if g.local_model["available"].as_bool() == Some(true) {
            "ready"
        } else {
            "not available"
        }
    )
}

/// `/context`: sizes of the parts of the session's next model call, with
/// the tools this sender would be offered.
async fn context_report(
    g: &Gateway,
    session: &str,
    origin: &Origin,
    detail: bool,
) -> Result<String, ErrorShape> {
    let agent_id = routing::agent_of(session).unwrap_or(&g.cfg.default_agent);
    let ctx = g
        .queue
        .agent(agent_id)
        .cloned()
        .ok_or_else(|| ErrorShape::invalid(format!("no agent {agent_id:?}")))?;
    let store = g.queue.store().clone();
    let key = session.to_string();
    let window = ctx
        .agent
        .model
        .as_ref()
        .map_or(crate::provider::DEFAULT_WINDOW, |m| {
            g.providers.context_window(&m.primary)
        });
    let scope = crate::tool::Scope::of(origin);
    let tools = ctx.tools.offered(&scope);
    let devices = ctx.tools.offers_group(&scope, "devices");
    let origin = origin.clone();
    super::blocking(move || {
        let sc = store
            .transcripts()
            .context(&key, crate::agent::CONTEXT_ENTRIES)?;
        let rt = crate::agent::context::Runtime::new(&ctx.agent.id, &key, &origin, devices);
        Ok(crate::agent::context::report(
            &ctx.workspace,
            &rt,
            &tools,
            &sc,
            window,
            detail,
        ))
    })
    .await
}

pub async fn compact_session(
    g: &Gateway,
    session: &str,
    by: &Origin,
) -> Result<crate::agent::compact::Outcome, ErrorShape> {
    use crate::agent::compact::CompactError;
    use crate::queue::CompactRefused;
    g.queue.compact(session, by).await.map_err(|e| match e {
        CompactRefused::NoSession => ErrorShape::invalid(format!("no session {session:?}")),
        CompactRefused::Busy => ErrorShape::unavailable(e.to_string()),
        CompactRefused::Compact(CompactError::Nothing | CompactError::NoModel) => {
            ErrorShape::invalid(e.to_string())
        }
        CompactRefused::Compact(CompactError::Provider(_) | CompactError::EmptySummary) => {
            ErrorShape::unavailable(e.to_string())
        }
        _ => {
            tracing::error!(session, "compaction failed: {e}");
            ErrorShape::unavailable("compaction failed; see the log")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_whole_messages_only() {
        assert_eq!(parse(" /NEW "), Some(Command::New));
        assert_eq!(parse("/reset@HearthBot"), Some(Command::New));
        assert_eq!(
            parse("/context detail"),
            Some(Command::Context { detail: true })
        );
        assert_eq!(parse("/abort"), Some(Command::Stop));
        assert_eq!(parse("/new please"), None);
        assert_eq!(parse("please /new"), None);
        assert_eq!(parse("/unknown"), None);
        assert_eq!(parse(""), None);
        assert!(Command::Status.needs() > Command::New.needs());
    }
}
