//! Replies from the outbox to Telegram: split into parts, each part
//! recorded as "sending" before its request and as sent right after the
//! answer (`Wire { part, sending }`), the row removed after the last one.
//! A restart goes on from the first part not recorded as sent. The one
//! window left open (the Bot API has no idempotency key): a crash after
//! Telegram took a part and before its record; that part is sent again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::ApiError;
use super::format;
use super::poll::Backoff;
use super::updates::parse_address;
use super::TelegramChannel;
use crate::channel::ChannelContext;
use crate::store::{OutboxItem, Wire};

/// "typing" lasts 5 s on Telegram's side; renewed a little before.
const TYPING_EVERY: Duration = Duration::from_millis(4500);

/// How one reply went.
enum Sent {
    Done,
    /// Try this reply again after the wait (rate limit, network, 5xx).
    Later(Duration),
    /// The token was refused: the channel stops.
    Stop,
}

pub async fn run(ch: Arc<TelegramChannel>, cx: ChannelContext) {
    let mut typing = tokio::time::interval(TYPING_EVERY);
    typing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // after a 429 or a fault: no request before this
    let mut resume_at: Option<tokio::time::Instant> = None;
    // kept across passes: an outage backs off to 60 s
    let mut backoff = Backoff::default();
    loop {
        if resume_at.is_none_or(|t| t <= tokio::time::Instant::now()) {
            resume_at = pass(&ch, &cx, &mut backoff)
                .await
                .map(|d| tokio::time::Instant::now() + d);
        }
        if ch.status_now().stopped.is_some() {
            return;
        }
        let until =
            resume_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => {
                // one more pass for what the drain committed (also when
                // the stop came during the pass above), unless Telegram
                // asked to wait longer than the stop budget
                if resume_at.is_none_or(|t| t <= tokio::time::Instant::now() + Duration::from_secs(1)) {
                    let _ = tokio::time::timeout(super::STOP_BUDGET - Duration::from_millis(500), pass(&ch, &cx, &mut backoff)).await;
                }
                return;
            }
            _ = cx.outbox.notified(), if resume_at.is_none() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = typing.tick(), if resume_at.is_none() => send_typing(&ch, false).await,
            _ = ch.typing_started.notified(), if resume_at.is_none() => send_typing(&ch, true).await,
        }
    }
}

/// Delivers every waiting reply in order; `Some(wait)` when one must be
/// tried again after `wait`.
async fn pass(
    ch: &TelegramChannel,
    cx: &ChannelContext,
    backoff: &mut Backoff,
) -> Option<Duration> {
    let ob = cx.outbox.clone();
    let pending = match tokio::task::spawn_blocking(move || ob.pending()).await {
        Ok(Ok(p)) => p,
        other => {
            tracing::error!("telegram: cannot read the outbox: {other:?}");
            return Some(Duration::from_secs(5));
        }
    };
    for (seq, item) in pending {
        match deliver(ch, cx, seq, &item, backoff).await {
            Sent::Done => {
                backoff.reset();
                ch.stop_typing(item.address());
                ch.drafts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(&item.run_id);
                ch.set_status(|s| s.replies += 1);
            }
            Sent::Later(d) => return Some(d),
            Sent::Stop => return None,
        }
    }
    None
}

async fn record(cx: &ChannelContext, seq: u64, wire: Wire) -> bool {
    let ob = cx.outbox.clone();
    match tokio::task::spawn_blocking(move || ob.set_wire(seq, wire)).await {
        Ok(Ok(())) => true,
        other => {
            tracing::error!("telegram: cannot record a reply part ({other:?}); will retry");
            false
        }
    }
}

async fn deliver(
    ch: &TelegramChannel,
    cx: &ChannelContext,
    seq: u64,
    item: &OutboxItem,
    backoff: &mut Backoff,
) -> Sent {
    let Some((chat, thread)) = parse_address(item.address()) else {
        tracing::error!(to = %item.to, "telegram: a reply to an address that is not a chat id; dropped");
        return finish(cx, seq).await;
    };
    let parts = format::parts(&item.text);
    let wire = item.wire.unwrap_or_default();
    // a draft of this reply is on the screen: it becomes the first part
    let draft = {
        let _io = ch.draft_io.lock().await;
        ch.drafts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finishing(&item.run_id)
            .filter(|d| d.chat == item.address())
    };
    if wire.sending {
        tracing::warn!(run_id = %item.run_id, part = wire.part, "telegram: a reply part may have gone out before the last stop; sending it again");
    }
    for (k, part) in parts.iter().enumerate().skip(wire.part as usize) {
        let k = k as u32;
        if !record(
            cx,
            seq,
            Wire {
                part: k,
                sending: true,
                ..Wire::default()
            },
        )
        .await
        {
            return Sent::Later(Duration::from_secs(2));
        }
        let sent = match (&draft, k) {
            (Some(d), 0) => edit_part(ch, chat, thread, d.message_id, part).await,
            _ => send_part(ch, chat, thread, part).await,
        };
        match sent {
            Ok(()) => {}
            Err(ApiError::RetryAfter(d)) => {
                tracing::warn!(
                    "telegram: rate limited; the reply goes on in {} s",
                    d.as_secs()
                );
                return Sent::Later(d);
            }
            Err(e @ ApiError::Unauthorized(_)) => {
                ch.stop_unauthorized(&e);
                return Sent::Stop;
            }
            Err(e) if e.transient() => {
                let d = backoff.wait();
                tracing::warn!(
                    "telegram: cannot send a reply part ({e}); again in {} ms",
                    d.as_millis()
                );
                ch.set_status(|s| s.last_error = Some(e.to_string()));
                return Sent::Later(d);
            }
            Err(e) => {
                // the chat is gone, the bot was blocked: nobody to give it to
                tracing::error!(run_id = %item.run_id, chat, "telegram: reply refused ({e}); dropped");
                return finish(cx, seq).await;
            }
        }
        if !record(
            cx,
            seq,
            Wire {
                part: k + 1,
                ..Wire::default()
            },
        )
        .await
        {
            return Sent::Later(Duration::from_secs(2));
        }
        crate::util::crash_hook("telegram-after-part-record");
    }
    finish(cx, seq).await
}

/// The draft becomes part one; a draft Telegram will not edit any more
/// (too old, deleted) is left, and the part goes as a new message.
async fn edit_part(
    ch: &TelegramChannel,
    chat: i64,
    thread: Option<i64>,
    id: i64,
    part: &format::Part,
) -> Result<(), ApiError> {
    let body = json!({"chat_id": chat, "message_id": id, "text": part.html, "parse_mode": "HTML",
                      "link_preview_options": {"is_disabled": true}});
    match ch.call("editMessageText", body.clone()).await {
        Ok(_) => Ok(()),
        Err(ApiError::Rejected { description, .. }) if description.contains("not modified") => {
            Ok(())
        }
        Err(ApiError::Rejected {
            code: 400,
            description,
        }) if description.contains("parse entities") => {
            let mut plain = body;
            plain["text"] = Value::String(part.plain.clone());
            if let Some(o) = plain.as_object_mut() {
                o.remove("parse_mode");
            }
            ch.call("editMessageText", plain).await.map(|_| ())
        }
        Err(e) if e.transient() || matches!(e, ApiError::Unauthorized(_)) => Err(e),
        Err(e) => {
            tracing::warn!("telegram: cannot turn the draft into the reply ({e}); sending it anew");
            send_part(ch, chat, thread, part).await
        }
    }
}

async fn finish(cx: &ChannelContext, seq: u64) -> Sent {
    let ob = cx.outbox.clone();
    match tokio::task::spawn_blocking(move || ob.done(&[seq])).await {
        Ok(Ok(())) => Sent::Done,
        other => {
            tracing::error!("telegram: cannot remove a delivered reply ({other:?})");
            Sent::Later(Duration::from_secs(2))
        }
    }
}

/// One part as HTML; markup Telegram cannot parse goes again as plain text.
async fn send_part(
    ch: &TelegramChannel,
    chat: i64,
    thread: Option<i64>,
    part: &format::Part,
) -> Result<(), ApiError> {
    let mut body = json!({"chat_id": chat, "text": part.html, "parse_mode": "HTML",
                          "link_preview_options": {"is_disabled": true}});
    if let Some(t) = thread {
        body["message_thread_id"] = json!(t);
    }
    match ch.call("sendMessage", body.clone()).await {
        Err(ApiError::Rejected {
            code: 400,
            description,
        }) if description.contains("parse entities") => {
            tracing::warn!("telegram: markup refused ({description}); sending as plain text");
            let mut plain = body;
            plain["text"] = Value::String(part.plain.clone());
            if let Some(o) = plain.as_object_mut() {
                o.remove("parse_mode");
            }
            ch.call("sendMessage", plain).await.map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

async fn send_typing(ch: &TelegramChannel, only_new: bool) {
    for chat in ch.typing_chats(only_new) {
        let Some((c, t)) = parse_address(&chat) else {
            continue;
        };
        let mut body = json!({"chat_id": c, "action": "typing"});
        if let Some(t) = t {
            body["message_thread_id"] = json!(t);
        }
        if let Err(e) = ch.call("sendChatAction", body).await {
            tracing::debug!("telegram: typing: {e}");
        }
    }
}
