//! The `getUpdates` long-polling loop. The offset (the next update id to
//! ask for) lives in `<state>/channels/telegram/offset` and moves past an
//! update only after the ingest handle answered for it: Telegram keeps
//! every update it was not told to forget, so a kill -9 or a power cut
//! loses nothing, and an update seen again is a duplicate by its id.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::api::ApiError;
use super::updates::{self, Media, Update};
use super::{Me, TelegramChannel};
use crate::channel::{ChannelContext, IngestOutcome};

/// Exponential backoff with jitter: 1 s doubling to 60 s.
#[derive(Default)]
pub struct Backoff(u32);

impl Backoff {
    pub fn wait(&mut self) -> Duration {
        let base = 1000u64 << self.0.min(6);
        self.0 += 1;
        let jitter = crate::util::random_u64() % (base / 2 + 1);
        Duration::from_millis((base / 2 + jitter).min(60_000))
    }
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The total kept in the media directory; the oldest files go first.
const MEDIA_TOTAL: u64 = 200 << 20;

fn offset_file(cx: &ChannelContext) -> PathBuf {
    cx.state_dir.join("offset")
}

/// The saved offset of bot `bot` (another bot's, or none: 0).
pub fn read_offset(path: &Path, bot: i64) -> i64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut it = s.split_whitespace();
    match (
        it.next().and_then(|b| b.parse::<i64>().ok()),
        it.next().and_then(|o| o.parse().ok()),
    ) {
        (Some(b), Some(o)) if b == bot => o,
        _ => 0,
    }
}

/// Written to a temporary file, synced, renamed: a power cut leaves the
/// old offset or the new one (an old one only repeats duplicates).
pub fn write_offset(path: &Path, bot: i64, offset: i64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{bot} {offset}").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub async fn run(ch: Arc<TelegramChannel>, cx: ChannelContext, me: Arc<Me>) {
    let path = offset_file(&cx);
    let mut offset = read_offset(&path, me.id);
    ch.set_status(|s| s.offset = offset);
    let mut backoff = Backoff::default();
    let timeout = ch.cfg.poll_timeout.as_secs();
    loop {
        let body = json!({"offset": offset, "timeout": timeout, "limit": 100,
                          "allowed_updates": ["message", "callback_query"]});
        let res = tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            r = ch.call("getUpdates", body) => r,
        };
        let wait = match res {
            Ok(list) => {
                backoff.reset();
                ch.set_status(|s| {
                    s.polling = true;
                    s.last_poll_ms = crate::store::now_ms();
                    s.last_error = None;
                });
                let empty = Vec::new();
                let list = list.as_array().unwrap_or(&empty);
                let retry = handle_batch(&ch, &cx, &me, list, &path, &mut offset).await;
                ch.set_status(|s| s.offset = offset);
                if retry {
                    // shutting down or the state database failed: the
                    // update stays with Telegram
                    Some(Duration::from_secs(3))
                } else {
                    None
                }
            }
            Err(ApiError::RetryAfter(d)) => {
                tracing::warn!("telegram: rate limited; polling again in {} s", d.as_secs());
                Some(d)
            }
            Err(e @ ApiError::Unauthorized(_)) => {
                ch.stop_unauthorized(&e);
                return;
            }
            Err(e) => {
                let d = backoff.wait();
                tracing::warn!(
                    "telegram: polling failed ({e}); again in {} ms",
                    d.as_millis()
                );
                ch.set_status(|s| {
                    s.polling = false;
                    s.last_error = Some(e.to_string());
                });
                Some(d)
            }
        };
        if let Some(d) = wait {
            tokio::select! {
                _ = cx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(d) => {}
            }
        }
    }
}

/// Hands in a batch in order, saving the offset after every update (a
/// command or a refusal has no idempotency key: it must not come again);
/// true when one must be tried again later.
async fn handle_batch(
    ch: &TelegramChannel,
    cx: &ChannelContext,
    me: &Me,
    list: &[serde_json::Value],
    path: &Path,
    offset: &mut i64,
) -> bool {
    for u in list {
        let Some(id) = u["update_id"].as_i64() else {
            continue;
        };
        // an id below the offset (Telegram restarting its numbering) is
        // handled like any: repeats are caught by the update id
        ch.set_status(|s| s.handling = Some(id));
        if !handle(ch, cx, me, u).await {
            return true;
        }
        *offset = id + 1;
        save(path, me.id, *offset).await;
    }
    ch.set_status(|s| s.handling = None);
    false
}

pub async fn save(path: &Path, bot: i64, offset: i64) {
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || write_offset(&p, bot, offset)).await {
        Ok(Ok(())) => {}
        other => tracing::warn!("telegram: cannot save the update offset ({other:?}); updates may be seen again (they are answered once)"),
    }
}

/// One update; false when it must be tried again (not acknowledged).
async fn handle(ch: &TelegramChannel, cx: &ChannelContext, me: &Me, u: &serde_json::Value) -> bool {
    let (m, callback, media) = match updates::parse(u, &ch.cfg, me) {
        Update::Ignore(why) => {
            let chat = &u["message"]["chat"]["id"];
            if why.starts_with("a group that is not") {
                // the owner looks here for the id to put in `groups`
                tracing::info!(chat = %chat, "telegram: ignored: {why}");
            } else {
                tracing::debug!(update = %u["update_id"], chat = %chat, "telegram: ignored: {why}");
            }
            return true;
        }
        Update::Message { m, media } => (m, None, media),
        Update::Callback { id, m } => (m, Some(id), None),
    };
    if let Some(id) = callback {
        // the spinner on the button stops; failures are harmless
        let _ = ch
            .call("answerCallbackQuery", json!({"callback_query_id": id}))
            .await;
    }
    let mut m = m;
    let mut kept = None;
    if let Some(f) = media {
        (m.text, kept) = keep_media(ch, cx, &m.peer, &f, m.text).await;
    }
    let chat = m.reply_to.clone().unwrap_or_default();
    let chat = chat.strip_prefix("telegram:").unwrap_or("").to_string();
    let outcome = cx.ingest.accept(m).await;
    if let Some(file) = kept {
        // a file of a message that did not get in is not kept, and only
        // what got in makes older files go
        let root = cx.state_dir.join("media");
        let accepted = matches!(
            outcome,
            IngestOutcome::Accepted { .. } | IngestOutcome::Duplicate { .. }
        );
        let _ = tokio::task::spawn_blocking(move || {
            if accepted {
                prune_media(&root, MEDIA_TOTAL);
            } else {
                let _ = std::fs::remove_file(file);
            }
        })
        .await;
    }
    match outcome {
        IngestOutcome::Accepted { run_id, .. } => {
            ch.set_status(|s| s.inbound += 1);
            ch.start_typing(&chat);
            if ch.cfg.streaming {
                ch.drafts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .follow(&run_id, &chat);
            }
            true
        }
        IngestOutcome::Duplicate { .. } | IngestOutcome::Command { .. } => true,
        IngestOutcome::RetryLater(why) => {
            tracing::warn!(
                "telegram: update not taken now ({why}); it stays with Telegram and comes again"
            );
            false
        }
        IngestOutcome::Refused { why, reply } => {
            tracing::info!("telegram: message refused: {why}");
            if let (Some(r), Some((c, t))) = (reply, updates::parse_address(&chat)) {
                let mut body = json!({"chat_id": c, "text": r});
                if let Some(t) = t {
                    body["message_thread_id"] = json!(t);
                }
                if let Err(e) = ch.call("sendMessage", body).await {
                    tracing::warn!("telegram: cannot send the refusal: {e}");
                }
            }
            true
        }
    }
}

/// Downloads a message's file into `media/<chat>/` when it is within
/// `media_max_bytes` (once: a file already there is kept as it is);
/// returns the text with what happened to it, and the file.
async fn keep_media(
    ch: &TelegramChannel,
    cx: &ChannelContext,
    chat: &str,
    f: &Media,
    text: String,
) -> (String, Option<PathBuf>) {
    let max = ch.cfg.media_max_bytes;
    if max == 0 || f.size > max {
        return (
            format!("{text} (not kept: larger than media_max_bytes)"),
            None,
        );
    }
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() < 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !safe(&f.unique_id) || !chat.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return (text, None);
    }
    let dir = cx.state_dir.join("media").join(chat);
    let name = format!("{}.{}", f.unique_id, f.ext);
    let target = dir.join(&name);
    let kept = |n: u64| {
        format!(
            "{text} (kept as media/{chat}/{name}, {} KB)",
            n.div_ceil(1024)
        )
    };
    if let Ok(m) = std::fs::metadata(&target) {
        return (kept(m.len()), Some(target));
    }
    let info = match ch.call("getFile", json!({"file_id": f.file_id})).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("telegram: getFile failed: {e}");
            return (format!("{text} (could not be downloaded)"), None);
        }
    };
    let Some(path) = info["file_path"].as_str().map(str::to_string) else {
        return (format!("{text} (could not be downloaded)"), None);
    };
    let api = ch.api();
    let t2 = target.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let bytes = api.download(&path, max).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(&t2, &bytes).map_err(|e| e.to_string())?;
        Ok(bytes.len() as u64)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match r {
        Ok(n) => (kept(n), Some(target)),
        Err(e) => {
            tracing::warn!("telegram: cannot keep a file: {e}");
            (format!("{text} (could not be downloaded)"), None)
        }
    }
}

/// Deletes the oldest files under `root` until the rest fit in `total`.
fn prune_media(root: &Path, total: u64) {
    let mut files = Vec::new();
    for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if let Ok(m) = f.metadata() {
                files.push((m.modified().ok(), m.len(), f.path()));
            }
        }
    }
    let mut sum: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, p) in files {
        if sum <= total {
            break;
        }
        if std::fs::remove_file(&p).is_ok() {
            sum -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_survives_and_backoff_grows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("offset");
        assert_eq!(read_offset(&p, 7), 0);
        write_offset(&p, 7, 812).unwrap();
        assert_eq!(read_offset(&p, 7), 812);
        assert_eq!(read_offset(&p, 8), 0, "another bot starts over");
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(
            read_offset(&p, 7),
            0,
            "a damaged file starts over (duplicates are recognized)"
        );
        let mut b = Backoff::default();
        let first = b.wait();
        for _ in 0..10 {
            b.wait();
        }
        let late = b.wait();
        assert!(
            first <= Duration::from_secs(1)
                && late >= Duration::from_secs(32)
                && late <= Duration::from_secs(60)
        );
    }
}
