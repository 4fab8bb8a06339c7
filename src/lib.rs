//! # Hearth
//!
//! An always-on AI agent gateway for the home: one process per host that
//! turns channel messages into agent runs and replies.
//!
//! # Layout
//!
//! Read in this order; the flow of one message goes down the list.
//!
//! | module | concern |
//! |---|---|
//! | [`cli`] | command line (clap) and the glue each subcommand calls |
//! | [`daemon`] | `hearth serve`: state dir, instance lock, sd-notify, signals, ordered shutdown |
//! | [`config`] | TOML config in two stages, `${VAR}` interpolation, every problem at once |
//! | [`inbound`] | leaf: the normalized [`inbound::Inbound`], its sender, [`inbound::Trust`], [`inbound::Origin`] |
//! | [`channel`] | the channel boundary: [`channel::Channel`], [`channel::ChannelContext`] (ingest, outbox, shutdown, state dir), the one registry of kinds |
//! | [`gateway`] | WebSocket (OpenClaw protocol v4) + HTTP on one port; methods in `gateway::methods` (OpenClaw-client methods in `gateway::compat`, the console's admin methods in `gateway::admin`), the web console's embedded files in `gateway::console`, the channels' entry point (trust, pairing, routing) in `gateway::ingest`, the command layer in `gateway::commands` |
//! | [`routing`] | bindings → agent, OpenClaw session keys |
//! | [`queue`] | per-session serial runs, global concurrency, collect/followup/steer/interrupt, durability |
//! | [`agent`] | the agent loop: context → model → tools → … → reply; `agent::context` assembles every model call's input, `agent::call` is the one model-call path, `agent::compact` summarizes old turns |
//! | [`intent`] | the local intent stage: sentence files per language (`intent/lang/*.toml`), a matcher that turns common device commands and questions into device tool calls before any model is called |
//! | [`provider`] | the `Provider` trait, typed errors, the retry/rotate/fallback chain, credential health; kinds `openai`, `anthropic`, `gemini`, `local` |
//! | [`models`] | local candle models: embedder, chat models (llama, Gemma 3) and their tokenizers, tool-call grammar, GGUF requantization |
//! | [`memory`] | MEMORY.md + memory/*.md: chunking, BM25 (tantivy) + int8 embeddings (redb), hybrid ranking; session transcripts too |
//! | [`mqtt`] | MQTT devices as a channel (`mqtt::channel`), Home Assistant discovery registry, device tools, triggers |
//! | [`outreach`] | messages Hearth sends on its own: the `message` tool and the gateway's `send`, under a target policy |
//! | [`telegram`] | Telegram as a channel: Bot API long polling, replies in parts from the outbox |
//! | [`tool`] | the [`tool::Tool`] trait and the per-agent [`tool::Registry`] (policy, approval hook, timeout, output cap); the workspace-confined file tools |
//! | [`store`] | redb: inbox, transcripts, sessions, runs, idempotency keys, outbox, credentials, pairing, each behind a small handle; one writer thread (group commit); schema version |
//! | [`events`] | the event bus feeding `agent` / `chat` events to clients |
//! | [`client`] | a gateway client for `hearth chat` / `status` and the tests |
//! | [`logs`] | leaf: the bounded ring of recent log lines that `logs.tail` serves, and the secret scrub |
//! | [`secret`] | leaf: a string that never prints itself |
//! | [`util`] | small shared helpers |

pub mod agent;
pub mod channel;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod events;
pub mod gateway;
pub mod inbound;
pub mod intent;
pub mod logs;
pub mod memory;
pub mod models;
pub mod mqtt;
pub mod outreach;
pub mod provider;
pub mod queue;
pub mod routing;
pub mod secret;
pub mod store;
pub mod telegram;
pub mod tool;
pub mod util;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Sets up logging: plain lines without timestamps under systemd/journald
/// (it adds its own), timestamps otherwise. `HEARTH_LOG` / `RUST_LOG` filter.
/// The same lines (with timestamps, no colour) also go to the ring that
/// `logs.tail` serves ([`logs`]).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("HEARTH_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let stderr = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let stderr = if journald {
        stderr.without_time().with_ansi(false).boxed()
    } else {
        stderr
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let ring = fmt::layer()
        .with_writer(logs::ring_writer)
        .with_target(false)
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(ring)
        .init();
}
