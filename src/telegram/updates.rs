//! A Telegram update → an [`Inbound`]: who wrote, in which chat and topic,
//! whether a group message is for the bot, what media arrived. Every field
//! is the platform's word, never trusted for anything but addressing; the
//! gateway assigns the trust.

use serde_json::Value;

use super::config::TelegramConfig;
use super::Me;
use crate::inbound::{ChatKind, Inbound, Sender};

/// What to do with one update.
#[derive(Debug, Clone)]
pub enum Update {
    /// Hand it to the ingest handle; `media` is a file to keep first.
    Message { m: Inbound, media: Option<Media> },
    /// A button press: answer the callback, then hand in the message.
    Callback { id: String, m: Inbound },
    /// Not for Hearth (an edit, a channel post, a bot, a group it does
    /// not serve, a group message without a mention): acknowledge it.
    Ignore(&'static str),
}

/// A file that came with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub file_id: String,
    pub unique_id: String,
    pub size: u64,
    pub ext: &'static str,
}

/// The reply address of a chat (and forum topic): `<chat>[:<thread>]`.
pub fn address(chat: i64, thread: Option<i64>) -> String {
    match thread {
        Some(t) => format!("{chat}:{t}"),
        None => chat.to_string(),
    }
}

/// The chat id and topic of a reply address.
pub fn parse_address(a: &str) -> Option<(i64, Option<i64>)> {
    let (c, t) = match a.split_once(':') {
        Some((c, t)) => (c, Some(t.parse().ok()?)),
        None => (a, None),
    };
    Some((c.parse().ok()?, t))
}

pub fn parse(u: &Value, cfg: &TelegramConfig, me: &Me) -> Update {
    let update_id = u["update_id"].as_i64().unwrap_or(-1);
    if let Some(q) = u.get("callback_query") {
        let Some(msg) = q.get("message") else {
            return Update::Ignore("a button press on an inline message");
        };
        let data = q["data"].as_str().unwrap_or("").to_string();
        if data.is_empty() {
            return Update::Ignore("a button press without data");
        }
        return match inbound(msg, &q["from"], data, update_id, cfg, me, true) {
            Ok(m) => Update::Callback {
                id: q["id"].as_str().unwrap_or("").to_string(),
                m,
            },
            Err(why) => Update::Ignore(why),
        };
    }
    let Some(msg) = u.get("message") else {
        return Update::Ignore("not a new message (an edit, a channel post, a reaction, ...)");
    };
    let (text, media) = content(msg);
    if text.trim().is_empty() {
        return Update::Ignore("a message with nothing Hearth can read");
    }
    match inbound(msg, &msg["from"], text, update_id, cfg, me, false) {
        Ok(m) => Update::Message { m, media },
        Err(why) => Update::Ignore(why),
    }
}

fn inbound(
    msg: &Value,
    from: &Value,
    mut text: String,
    update_id: i64,
    cfg: &TelegramConfig,
    me: &Me,
    pressed: bool,
) -> Result<Inbound, &'static str> {
    if from["is_bot"] == true {
        return Err("a bot's message");
    }
    let Some(chat) = msg["chat"]["id"].as_i64() else {
        return Err("no chat id");
    };
    let Some(sender) = from["id"].as_i64() else {
        return Err("no sender");
    };
    let kind = match msg["chat"]["type"].as_str() {
        Some("private") => ChatKind::Direct,
        Some("group" | "supergroup") => ChatKind::Group,
        _ => return Err("not a private chat or a group"),
    };
    let mut thread = None;
    if kind == ChatKind::Group {
        let id = chat.to_string();
        if !cfg.groups.iter().any(|g| g == "*" || *g == id) {
            return Err("a group that is not in channels.telegram.groups");
        }
        if msg["is_topic_message"] == true {
            thread = msg["message_thread_id"].as_i64();
        }
        let mention = format!("@{}", me.username);
        let mentioned = !me.username.is_empty() && !mention_spans(&text, &mention).is_empty();
        let replied = msg["reply_to_message"]["from"]["id"].as_i64() == Some(me.id) && me.id != 0;
        if cfg.require_mention && !mentioned && !replied && !pressed {
            return Err("a group message that does not mention the bot");
        }
        if mentioned {
            text = strip_mention(&text, &mention);
        }
    }
    let name = [from["first_name"].as_str(), from["last_name"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let name = if name.is_empty() {
        from["username"].as_str().map(str::to_string)
    } else {
        Some(name)
    };
    Ok(Inbound {
        channel: "telegram".into(),
        account: (me.id != 0).then(|| me.id.to_string()),
        chat: kind,
        peer: chat.to_string(),
        thread: thread.map(|t| t.to_string()),
        sender: Sender {
            id: sender.to_string(),
            name,
        },
        text: text.trim().to_string(),
        platform_message_id: Some(format!("update:{update_id}")),
        reply_to: Some(format!("telegram:{}", address(chat, thread))),
        agent: None,
    })
}

/// Where `@bot` stands in `text` as a whole word (not `@botfan`, not
/// `x@bot.org`), any case. Bot user names are ASCII: the ASCII-only fold
/// keeps byte offsets (a full lowercase changes lengths, e.g. 'İ').
fn mention_spans(text: &str, mention: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let m = mention.to_ascii_lowercase();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(j) = lower[from..].find(&m) {
        let (s, e) = (from + j, from + j + m.len());
        // after a word only as a command's address: `/status@bot`
        let mut w = s;
        while w > 0 && word(bytes[w - 1]) {
            w -= 1;
        }
        let command = w < s && w > 0 && bytes[w - 1] == b'/';
        let before_ok = s == 0 || command || !(word(bytes[s - 1]) || bytes[s - 1] == b'@');
        let after_ok = e == bytes.len()
            || !(word(bytes[e]) || bytes[e] == b'.' && bytes.get(e + 1).is_some_and(|b| word(*b)));
        if before_ok && after_ok {
            out.push((s, e));
        }
        from = e;
    }
    out
}

/// `@bot` out of the text (`/new@bot` → `/new`).
fn strip_mention(text: &str, mention: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    for (s, e) in mention_spans(text, mention) {
        out.push_str(&text[i..s]);
        i = e;
    }
    out.push_str(&text[i..]);
    out
}

/// The text the model gets: the message text or caption, with what else
/// arrived described ("[photo 1280×720]"); the largest file to keep.
pub fn content(msg: &Value) -> (String, Option<Media>) {
    let caption = msg["text"]
        .as_str()
        .or_else(|| msg["caption"].as_str())
        .unwrap_or("");
    let file = |f: &Value, ext: &'static str| {
        Some(Media {
            file_id: f["file_id"].as_str()?.to_string(),
            unique_id: f["file_unique_id"].as_str()?.to_string(),
            size: f["file_size"].as_u64().unwrap_or(0),
            ext,
        })
    };
    let (what, media) = if let Some(sizes) = msg["photo"].as_array() {
        // the sizes come smallest first
        let big = sizes.iter().max_by_key(|p| {
            p["width"]
                .as_u64()
                .unwrap_or(0)
                .saturating_mul(p["height"].as_u64().unwrap_or(0))
        });
        match big {
            Some(p) => (
                format!(
                    "[photo {}×{}]",
                    p["width"].as_u64().unwrap_or(0),
                    p["height"].as_u64().unwrap_or(0)
                ),
                file(p, "jpg"),
            ),
            None => ("[photo]".to_string(), None),
        }
    } else if msg["voice"].is_object() {
        let d = msg["voice"]["duration"].as_u64().unwrap_or(0);
        (
            format!("[voice note {}:{:02}, not transcribed]", d / 60, d % 60),
            file(&msg["voice"], "ogg"),
        )
    } else if msg["audio"].is_object() {
        let d = msg["audio"]["duration"].as_u64().unwrap_or(0);
        (
            format!("[audio {}:{:02}]", d / 60, d % 60),
            file(&msg["audio"], "audio"),
        )
    } else if msg["document"].is_object() {
        let d = &msg["document"];
        let name: String = d["file_name"]
            .as_str()
            .unwrap_or("file")
            .chars()
            .filter(|c| {
                !c.is_control()
                    && !('\u{202a}'..='\u{202e}').contains(c)
                    && !('\u{2066}'..='\u{2069}').contains(c)
            })
            .take(80)
            .collect();
        let mime = d["mime_type"].as_str().unwrap_or("unknown type");
        let kb = d["file_size"].as_u64().unwrap_or(0).div_ceil(1024);
        (
            format!("[document \"{name}\", {mime}, {kb} KB]"),
            file(d, "bin"),
        )
    } else if msg["video"].is_object() || msg["video_note"].is_object() {
        let v = if msg["video"].is_object() {
            &msg["video"]
        } else {
            &msg["video_note"]
        };
        let d = v["duration"].as_u64().unwrap_or(0);
        (format!("[video {}:{:02}]", d / 60, d % 60), None)
    } else if msg["sticker"].is_object() {
        (
            format!(
                "[sticker {}]",
                msg["sticker"]["emoji"].as_str().unwrap_or("")
            ),
            None,
        )
    } else if msg["location"].is_object() {
        let l = &msg["location"];
        (
            format!(
                "[location {}, {}]",
                l["latitude"].as_f64().unwrap_or(0.0),
                l["longitude"].as_f64().unwrap_or(0.0)
            ),
            None,
        )
    } else if msg["contact"].is_object() {
        ("[a contact card]".to_string(), None)
    } else {
        (String::new(), None)
    };
    let text = match (what.is_empty(), caption.is_empty()) {
        (true, _) => caption.to_string(),
        (false, true) => what,
        (false, false) => format!("{what} {caption}"),
    };
    (text, media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> TelegramConfig {
        let c = crate::config::Config::from_str(
            "[channels.telegram]\nbot_token = \"1:AAAAAAAAAAAAAAAAAAAAAAAA\"\ngroups = [-100]\n",
            None,
            &|_| None,
        )
        .unwrap();
        super::super::config::parse(&c).unwrap().unwrap()
    }

    fn me() -> Me {
        Me {
            id: 99,
            username: "HearthBot".into(),
        }
    }

    fn msg(chat: Value, text: &str) -> Value {
        json!({"update_id": 7, "message": {"message_id": 1, "chat": chat, "from": {"id": 42, "first_name": "Dana", "is_bot": false}, "text": text}})
    }

    #[test]
    fn direct_messages_groups_and_topics() {
        let Update::Message { m, .. } = parse(
            &msg(json!({"id": 42, "type": "private"}), "hi"),
            &cfg(),
            &me(),
        ) else {
            panic!()
        };
        assert_eq!(
            (m.chat, m.peer.as_str(), m.sender.id.as_str()),
            (ChatKind::Direct, "42", "42")
        );
        assert_eq!(m.reply_to.as_deref(), Some("telegram:42"));
        assert_eq!(m.platform_message_id.as_deref(), Some("update:7"));
        assert_eq!(m.sender.name.as_deref(), Some("Dana"));

        let group = json!({"id": -100, "type": "supergroup"});
        assert!(matches!(
            parse(&msg(group.clone(), "hi all"), &cfg(), &me()),
            Update::Ignore(_)
        ));
        let Update::Message { m, .. } =
            parse(&msg(group.clone(), "@hearthbot lights off?"), &cfg(), &me())
        else {
            panic!()
        };
        assert_eq!((m.chat, m.text.as_str()), (ChatKind::Group, "lights off?"));
        let mut t = msg(group, "/status@HearthBot");
        t["message"]["is_topic_message"] = json!(true);
        t["message"]["message_thread_id"] = json!(5);
        let Update::Message { m, .. } = parse(&t, &cfg(), &me()) else {
            panic!()
        };
        assert_eq!(
            (m.thread.as_deref(), m.text.as_str()),
            (Some("5"), "/status")
        );
        assert_eq!(m.reply_to.as_deref(), Some("telegram:-100:5"));
        // letters whose lowercase is longer do not shift the cut
        let Update::Message { m, .. } = parse(
            &msg(json!({"id": -100, "type": "group"}), "İİİ @HearthBot İx"),
            &cfg(),
            &me(),
        ) else {
            panic!()
        };
        assert_eq!(m.text, "İİİ  İx");
        // a longer name or an e-mail address is not a mention
        for other in ["@HearthBotFan hi", "mail x@hearthbot.org", "@@HearthBot"] {
            assert!(
                matches!(
                    parse(
                        &msg(json!({"id": -100, "type": "group"}), other),
                        &cfg(),
                        &me()
                    ),
                    Update::Ignore(_)
                ),
                "{other}"
            );
        }
        // a reply to the bot needs no mention
        let mut r = msg(json!({"id": -100, "type": "group"}), "and the hall?");
        r["message"]["reply_to_message"] = json!({"from": {"id": 99}});
        assert!(matches!(parse(&r, &cfg(), &me()), Update::Message { .. }));
        // another group, a bot, an edit
        assert!(matches!(
            parse(
                &msg(json!({"id": -5, "type": "group"}), "@HearthBot hi"),
                &cfg(),
                &me()
            ),
            Update::Ignore(_)
        ));
        let mut b = msg(json!({"id": 42, "type": "private"}), "hi");
        b["message"]["from"]["is_bot"] = json!(true);
        assert!(matches!(parse(&b, &cfg(), &me()), Update::Ignore(_)));
        assert!(matches!(
            parse(
                &json!({"update_id": 8, "edited_message": {}}),
                &cfg(),
                &me()
            ),
            Update::Ignore(_)
        ));
    }

    #[test]
    fn media_is_described() {
        let m = json!({"photo": [{"file_id": "s", "file_unique_id": "us", "width": 90, "height": 60},
                                  {"file_id": "b", "file_unique_id": "ub", "width": 1280, "height": 720, "file_size": 1000}],
                       "caption": "the porch"});
        let (t, f) = content(&m);
        assert_eq!(t, "[photo 1280×720] the porch");
        assert_eq!(f.unwrap().file_id, "b");
        let (t, _) =
            content(&json!({"voice": {"file_id": "v", "file_unique_id": "uv", "duration": 67}}));
        assert_eq!(t, "[voice note 1:07, not transcribed]");
        let (t, _) = content(
            &json!({"document": {"file_id": "d", "file_unique_id": "ud", "file_name": "bill\u{202e}.pdf", "mime_type": "application/pdf", "file_size": 2048}}),
        );
        assert_eq!(t, "[document \"bill.pdf\", application/pdf, 2 KB]");
        assert_eq!(parse_address("-100:5"), Some((-100, Some(5))));
        assert_eq!(parse_address("x"), None);
    }
}
