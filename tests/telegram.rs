//! Telegram against the fake Bot API (tests/common/telegram.rs) and the
//! real daemon: pairing, groups and topics, long replies, formatting,
//! kill -9 with updates and reply parts in flight, rate limits, a revoked
//! token, a doorbell trigger reaching the owner's phone.

mod common;

use std::time::{Duration, Instant};

use common::telegram::{FakeTelegram, Fault};
use common::{Daemon, FakeOpenAi};
use serde_json::{json, Value};

const OWNER: i64 = 111;
const STRANGER: i64 = 222;
const GROUP: i64 = -100500;

fn cfg(fake: &FakeOpenAi, tg: &FakeTelegram, extra: &str) -> String {
    common::config_with(
        &fake.url,
        &tg.section(&format!(
            "allow_from = [{OWNER}]\ngroups = [{GROUP}]\n{extra}"
        )),
    )
}

async fn telegram_status(d: &Daemon) -> Value {
    let c = d.client().await;
    let s = c.request("status", json!({})).await.unwrap();
    c.close().await;
    s["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["kind"] == "telegram").cloned())
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_polling(d: &Daemon) {
    let t = Instant::now();
    while telegram_status(d).await["polling"] != true {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never polled:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages with words `<prefix><number>`, and those words in order.
fn numbered(sent: Vec<String>, prefix: char) -> (Vec<String>, Vec<String>) {
    let is = |w: &str| {
        w.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let parts: Vec<String> = sent
        .into_iter()
        .filter(|t| t.split_whitespace().any(is))
        .collect();
    let words = parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .filter(|w| is(w))
        .map(str::to_string)
        .collect();
    (parts, words)
}

/// `sessions.list` as text.
async fn sessions(d: &Daemon) -> String {
    let c = d.client().await;
    let list = c
        .request("sessions.list", json!({}))
        .await
        .unwrap()
        .to_string();
    c.close().await;
    list
}

fn asked(fake: &FakeOpenAi, what: &str) -> usize {
    fake.log
        .all()
        .iter()
        .filter(|r| r.to_string().contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_is_answered_and_a_stranger_pairs_first() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &cfg(&fake, &tg, ""));
    wait_polling(&d).await;
    assert_eq!(telegram_status(&d).await["bot"], common::telegram::BOT_NAME);

    tg.message(OWNER, OWNER, "hello from my phone");
    tg.wait_sent(OWNER, Duration::from_secs(20), |t| {
        t == "echo: hello from my phone"
    })
    .await;
    // "typing" while a reply is being written: at once (within a second),
    // not at the next 4.5 s renewal
    let sent_at = std::time::Instant::now();
    tg.message(OWNER, OWNER, "[slow:600] think about it");
    tg.wait_sent(OWNER, Duration::from_secs(30), |t| {
        t.contains("think about it")
    })
    .await;
    let answered = std::time::Instant::now();
    let typing = tg.calls("sendChatAction");
    assert!(
        typing.iter().any(|c| c.body["chat_id"] == OWNER
            && c.body["action"] == "typing"
            && c.at > sent_at
            && c.at < answered.min(sent_at + Duration::from_secs(1))),
        "no typing while the reply was written: {typing:?}"
    );

    // a stranger gets a code, and nothing reaches the model
    tg.message(STRANGER, STRANGER, "let me in");
    let code_msg = tg
        .wait_sent(STRANGER, Duration::from_secs(20), |t| {
            t.contains("pairing code")
        })
        .await;
    assert_eq!(asked(&fake, "let me in"), 0);
    let code = code_msg
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .find(|w| {
            w.len() == 8
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(|| panic!("no code in {code_msg:?}"));
    let out = std::process::Command::new(common::bin())
        .args(["pairing", "approve", code, "--url", &d.url, "--state-dir"])
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    tg.message(STRANGER, STRANGER, "am I in now");
    tg.wait_sent(STRANGER, Duration::from_secs(20), |t| {
        t == "echo: am I in now"
    })
    .await;
    // a member talks in a session of their own
    let list = sessions(&d).await;
    assert!(
        list.contains(&format!("agent:main:telegram:direct:{STRANGER}")),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_answer_when_mentioned_and_topics_are_sessions() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &cfg(&fake, &tg, ""));
    wait_polling(&d).await;
    tg.message(GROUP, OWNER, "just chatting among us");
    tg.message(-999, OWNER, "@hearth_test_bot a group it does not serve");
    tg.message(GROUP, OWNER, "@hearth_test_bot what time is it");
    tg.wait_sent(GROUP, Duration::from_secs(20), |t| {
        t == "echo: what time is it"
    })
    .await;
    tg.push(json!({"message": {"message_id": 2, "date": 0, "is_topic_message": true, "message_thread_id": 7,
        "chat": {"id": GROUP, "type": "supergroup"}, "from": {"id": OWNER, "is_bot": false, "first_name": "Dana"},
        "text": "@Hearth_Test_Bot in the garden topic"}}));
    tg.wait_sent(GROUP, Duration::from_secs(20), |t| {
        t == "echo: in the garden topic"
    })
    .await;
    assert_eq!(asked(&fake, "just chatting"), 0);
    assert_eq!(asked(&fake, "does not serve"), 0);
    assert!(tg.sent_to(-999).is_empty());
    let topic = tg
        .sent()
        .into_iter()
        .find(|s| s.text.contains("garden"))
        .unwrap();
    assert_eq!(topic.thread, Some(7), "the reply goes to the topic");
    let list = sessions(&d).await;
    assert!(
        list.contains(&format!("agent:main:telegram:group:{GROUP}\"")),
        "{list}"
    );
    assert!(
        list.contains(&format!("agent:main:telegram:group:{GROUP}:topic:7")),
        "{list}"
    );
    // a button press comes in as a message from the presser
    tg.push(
        json!({"callback_query": {"id": "cb1", "data": "lights off", "chat_instance": "x",
        "from": {"id": OWNER, "is_bot": false, "first_name": "Dana"},
        "message": {"message_id": 9, "date": 0, "chat": {"id": OWNER, "type": "private"}}}}),
    );
    tg.wait_sent(OWNER, Duration::from_secs(20), |t| t == "echo: lights off")
        .await;
    assert!(tg
        .calls("answerCallbackQuery")
        .iter()
        .any(|c| c.body["callback_query_id"] == "cb1"));
    // a dropped connection during a poll: polling goes on
    tg.fail("getUpdates", Fault::Drop);
    tg.message(OWNER, OWNER, "before the drop");
    common::until("the dropped poll", Duration::from_secs(20), || {
        tg.faults_left() == 0
    })
    .await;
    tg.message(OWNER, OWNER, "after the drop");
    tg.wait_sent(OWNER, Duration::from_secs(20), |t| {
        t == "echo: after the drop"
    })
    .await;
    // a photo: described to the model, the file kept
    tg.add_file("photos/ph1.jpg", b"JPEG");
    tg.push(json!({"message": {"message_id": 3, "date": 0, "chat": {"id": OWNER, "type": "private"},
        "from": {"id": OWNER, "is_bot": false, "first_name": "Dana"}, "caption": "the porch",
        "photo": [{"file_id": "ph1", "file_unique_id": "uph1", "width": 1280, "height": 720, "file_size": 4}]}}));
    let r = tg
        .wait_sent(OWNER, Duration::from_secs(20), |t| t.contains("porch"))
        .await;
    assert!(
        r.starts_with("echo: [photo 1280×720] the porch (kept as media/111/uph1.jpg"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(d.state.join("channels/telegram/media/111/uph1.jpg")).unwrap(),
        b"JPEG"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replies_arrive_in_order_and_special_characters_intact() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &cfg(&fake, &tg, ""));
    wait_polling(&d).await;
    let specials = "Specials: _ * [ ] ( ) ~ ` > # + - = | { } . ! & < \" ' and **bold** too";
    tg.message(OWNER, OWNER, specials);
    // (a streamed draft may show the start first; the reply replaces it)
    let got = tg
        .wait_sent(OWNER, Duration::from_secs(20), |t| {
            t.starts_with("echo: Specials") && t.ends_with("too")
        })
        .await;
    assert_eq!(
        got,
        "echo: Specials: _ * [ ] ( ) ~ ` > # + - = | { } . ! & < \" ' and bold too"
    );

    let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
    let long = words.join(" ");
    assert!(long.len() >= 10_000);
    tg.message(OWNER, OWNER, &long);
    let t = Instant::now();
    loop {
        let all = tg.sent_to(OWNER).join(" ");
        if all.contains("w1999") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no end of the long reply"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (parts, seen) = numbered(tg.sent_to(OWNER), 'w');
    assert!(parts.len() >= 3, "{}", parts.len());
    assert!(parts.iter().all(|p| p.chars().count() <= 4096));
    assert_eq!(seen, words, "every word once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_updates_and_reply_parts_in_flight() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg(&fake, &tg, "");
    // updates in flight: five queued, killed while the first runs
    let mut d = Daemon::start(dir.path(), &cfg);
    for i in 0..5 {
        tg.message(OWNER, OWNER, &format!("[slow:40] queued {i}"));
    }
    let t = Instant::now();
    while asked(&fake, "queued") == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", d.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.kill9();
    let d = Daemon::start(dir.path(), &cfg);
    let t = Instant::now();
    while (0..5).any(|i| {
        !tg.sent_to(OWNER)
            .iter()
            .any(|s| s.contains(&format!("queued {i}")))
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}\n{}",
            tg.sent_to(OWNER),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..5 {
        let n = tg
            .sent_to(OWNER)
            .iter()
            .filter(|s| s.contains(&format!("queued {i}")))
            .count();
        assert_eq!(n, 1, "reply {i}: {:?}", tg.sent_to(OWNER));
    }
    assert_eq!(tg.unconfirmed(), 0, "every update confirmed");
    drop(d);

    // reply parts half sent: the process dies right after part 1 was recorded
    let words: Vec<String> = (0..2000).map(|i| format!("p{i}")).collect();
    let mut d = Daemon::start_env(
        dir.path(),
        &cfg,
        &[("HEARTH_TEST_CRASH", "telegram-after-part-record")],
    );
    tg.message(OWNER, OWNER, &words.join(" "));
    let t = Instant::now();
    while d.child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never crashed:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.child.take();
    let before = numbered(tg.sent_to(OWNER), 'p').0.len();
    assert_eq!(before, 1, "one part out before the crash");
    let _d = Daemon::start(dir.path(), &cfg);
    let t = Instant::now();
    while !tg.sent_to(OWNER).join(" ").contains("p1999") {
        assert!(t.elapsed() < Duration::from_secs(30), "the rest never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, seen) = numbered(tg.sent_to(OWNER), 'p');
    assert_eq!(seen, words, "no part twice, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_honoured_and_a_revoked_token_stops_only_the_channel() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &cfg(&fake, &tg, "streaming = false"));
    wait_polling(&d).await;
    tg.fail(
        "sendMessage",
        Fault::Status {
            code: 429,
            description: "Too Many Requests: retry after 2".into(),
            retry_after: Some(2),
        },
    );
    tg.fail(
        "sendMessage",
        Fault::Status {
            code: 502,
            description: "Bad Gateway".into(),
            retry_after: None,
        },
    );
    tg.fail("sendMessage", Fault::Drop);
    tg.message(OWNER, OWNER, "slow down");
    tg.wait_sent(OWNER, Duration::from_secs(30), |t| t == "echo: slow down")
        .await;
    let sends = tg.calls("sendMessage");
    assert_eq!(sends[0].status, 429);
    assert!(
        sends[1].at.duration_since(sends[0].at) >= Duration::from_secs(2),
        "a request before retry_after"
    );
    assert_eq!(sends[1].status, 502);
    assert_eq!(
        sends.len(),
        4,
        "429, 502, a dropped connection, then the reply"
    );
    assert_eq!(
        tg.sent_to(OWNER)
            .iter()
            .filter(|t| *t == "echo: slow down")
            .count(),
        1
    );
    assert_eq!(sends.last().unwrap().status, 200);
    assert!(
        tg.calls("editMessageText").is_empty(),
        "streaming = false sends no drafts"
    );

    tg.revoke();
    let t = Instant::now();
    loop {
        let s = telegram_status(&d).await;
        if let Some(why) = s["stopped"].as_str() {
            assert!(
                why.contains("bot token was refused") && why.contains("BotFather"),
                "{why}"
            );
            assert!(!why.contains(common::telegram::TOKEN));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !d.log().contains(common::telegram::TOKEN),
        "the token is in the log"
    );
    // the rest of the daemon runs on
    let c = d.client().await;
    common::send(&c, "main", "still here", "k1").await;
    assert_eq!(
        common::text_of(&common::terminal(&c, "k1").await),
        "echo: still here"
    );
    let polls = tg.calls("getUpdates").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tg.calls("getUpdates").len(),
        polls,
        "no polling with a refused token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doorbell_reaches_the_owners_phone() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let broker = common::broker::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mqtt = format!(
        "[channels.mqtt]\nurl = \"{}\"\nclient_id = \"hearth-tg\"\n\n[[channels.mqtt.triggers]]\nname = \"doorbell\"\ntopic = \"home/doorbell\"\nmessage = \"Someone rang the doorbell\"\nreply_to = \"telegram:{OWNER}\"\n",
        broker.url()
    );
    let cfg = common::config_with(
        &fake.url,
        &format!("{}\n{mqtt}", tg.section(&format!("allow_from = [{OWNER}]"))),
    );
    let d = Daemon::start(dir.path(), &cfg);
    wait_polling(&d).await;
    let c = d.client().await;
    common::broker::wait_status(&c, "connected", |s| s["connected"] == true).await;
    let bell = common::broker::TestClient::connect(broker.port, "bell", &[]).await;
    bell.publish("home/doorbell", "pressed", false).await;
    let got = tg
        .wait_sent(OWNER, Duration::from_secs(20), |t| t.contains("doorbell"))
        .await;
    assert!(got.starts_with("echo: "), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_tool_and_send_reach_only_allowed_targets() {
    let (fake, tg) = (FakeOpenAi::start().await, FakeTelegram::start().await);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &cfg(&fake, &tg, ""));
    wait_polling(&d).await;
    let c = d.client().await;
    // the owner's agent sends to the owner's phone
    common::send(
        &c,
        "main",
        r#"[call:message:{"to":"telegram:111","text":"Dinner is ready"}]"#,
        "m1",
    )
    .await;
    let fin = common::terminal(&c, "m1").await;
    assert!(
        common::text_of(&fin).contains("queued for telegram:111"),
        "{fin}"
    );
    tg.wait_sent(OWNER, Duration::from_secs(20), |t| t == "Dinner is ready")
        .await;
    // a chat that is not the owner's is refused, and nothing is sent
    common::send(
        &c,
        "main",
        r#"[call:message:{"to":"telegram:222","text":"spam"}]"#,
        "m2",
    )
    .await;
    let fin = common::terminal(&c, "m2").await;
    assert!(common::text_of(&fin).contains("not a target"), "{fin}");
    // `send` with channel/to: once per idempotency key
    for _ in 0..2 {
        let r = c
            .request("send", json!({"channel": "telegram", "to": "111", "message": "From the gateway", "idempotencyKey": "s1"}))
            .await
            .unwrap();
        assert_eq!(r["runId"], "s1");
    }
    let err = c
        .request(
            "send",
            json!({"channel": "telegram", "to": "-5", "message": "x", "idempotencyKey": "s2"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a target"), "{err}");
    tg.wait_sent(OWNER, Duration::from_secs(20), |t| t == "From the gateway")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        tg.sent_to(OWNER)
            .iter()
            .filter(|t| *t == "From the gateway")
            .count(),
        1
    );
    assert!(tg.sent_to(222).is_empty() && tg.sent_to(-5).is_empty());
}
