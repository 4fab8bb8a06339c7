//! Compaction with the fake provider scripted to summarize (see
//! tests/common): the memory flush turn, the summary that replaces older
//! turns in the context, facts surviving into a later question, a second
//! compaction by hand (`sessions.compact`, `/compact`), and a restart.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

/// A 4,000-token window: the tool schemas and instructions take about a
/// quarter, so three long turns pass the 80% mark.
fn config(fake_url: &str) -> String {
    format!(
        "[providers.fake]\nkind = \"openai\"\nbase_url = \"{fake_url}\"\napi_key = \"sk-test-secret-key\"\n\
         context_window = 4000\n\n\
         [agents.defaults]\nmodel = \"fake/fake-1\"\n\n\
         [memory]\nkeep_recent_tokens = 500\n"
    )
}

fn filler(tag: &str) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 3000 {
        s.push_str(&format!(
            "{tag} filler sentence number {i} about nothing much. "
        ));
        i += 1;
    }
    s
}

async fn turn(c: &common::Client, text: &str, key: &str) -> String {
    let r = common::send(c, "main", text, key).await;
    let run = r["runId"].as_str().unwrap().to_string();
    let fin = common::terminal(c, &run).await;
    assert_eq!(fin["state"], "final", "{fin}");
    common::text_of(&fin)
}

fn system_of(req: &Value) -> String {
    req["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn message_texts(req: &Value) -> String {
    req["messages"].as_array().unwrap()[1..]
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_facts_a_later_question_needs() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = common::Daemon::start(dir.path(), &config(&fake.url));
    let c = d.client().await;

    let first = format!("Remember this: [keep:locker code 4417]. {}", filler("one"));
    turn(&c, &first, "t1").await;
    turn(&c, &filler("two"), "t2").await;
    let before = fake.log.count();
    assert!(
        fake.log
            .all()
            .iter()
            .all(|r| !system_of(r).contains("You compact")),
        "no compaction yet"
    );

    // the third long turn passes 80% of the window: flush, summary, then
    // the model call with the compacted context
    let reply = turn(&c, &filler("three"), "t3").await;
    assert!(reply.starts_with("echo: three filler"), "{reply}");
    let reqs = fake.log.all()[before..].to_vec();
    let pos = |f: &dyn Fn(&Value) -> bool| reqs.iter().position(f);
    let flush = pos(&|r| message_texts(r).contains("[Pre-compaction memory flush]"))
        .expect("a memory flush turn");
    let summary =
        pos(&|r| system_of(r).contains("You compact a conversation")).expect("a summary call");
    assert!(flush < summary, "the flush comes first");
    let sreq = &reqs[summary];
    assert!(sreq["tools"].is_null(), "the summarizer gets no tools");
    assert!(message_texts(sreq).contains("one filler sentence number 0"));
    assert!(
        !message_texts(sreq).contains("three filler"),
        "the turn being answered is kept, not summarized"
    );
    let last = reqs.last().unwrap();
    assert!(
        system_of(last).contains("## Earlier conversation (summary)")
            && system_of(last).contains("[keep:locker code 4417]"),
        "the summary is in the system prompt"
    );
    assert!(
        !message_texts(last).contains("one filler"),
        "the summarized turns left the context"
    );
    assert!(message_texts(last).contains("three filler"));

    // the flush wrote its note through the file tool
    let note = std::fs::read_to_string(d.state.join("workspace/memory/flush.md")).unwrap();
    assert!(note.contains("[keep:locker code 4417]"), "{note}");

    // a later question gets the fact from the summary
    let reply = turn(&c, "What was the code? [recall:locker]", "t4").await;
    assert_eq!(reply, "recalled: [keep:locker code 4417]");

    // the stored transcript keeps everything, plus one compaction entry;
    // the silent flush turn is neither stored nor delivered
    let h = common::history(&c, "main").await;
    let texts: Vec<String> = h
        .iter()
        .map(|m| m["content"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(texts.iter().any(|t| t.starts_with("Remember this")));
    let comp: Vec<&Value> = h.iter().filter(|m| m["state"] == "compaction").collect();
    assert_eq!(comp.len(), 1, "{h:?}");
    assert_eq!(comp[0]["role"], "system");
    assert!(texts.iter().all(|t| !t.contains("NO_REPLY")));
    assert!(texts.iter().all(|t| !t.contains("Pre-compaction")));

    // /context shows the summary as its own part
    let r = c
        .request(
            "chat.send",
            json!({"sessionKey": "main", "message": "/context", "idempotencyKey": "ctx1"}),
        )
        .await
        .unwrap();
    let ctx = r["context"].as_str().unwrap();
    assert!(
        ctx.contains("compaction summary: ") && !ctx.contains("compaction summary: none"),
        "{ctx}"
    );
    assert!(ctx.contains("of a 4000-token window"), "{ctx}");

    // by hand: two more turns, then sessions.compact
    turn(&c, "Also remember [keep:bins go out on tuesday]", "t5").await;
    for (i, t) in ["thanks", "ok", "bye"].iter().enumerate() {
        turn(&c, t, &format!("t6-{i}")).await;
    }
    let r = c
        .request("sessions.compact", json!({"key": "main"}))
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // turns 3, 4 and 5 go; the last three (thanks, ok, bye) stay
    assert_eq!(r["compacted"]["summarized"], 6, "{r}");
    assert_eq!(r["compacted"]["kept"], 6, "{r}");
    assert_eq!(r["compacted"]["flushed"], true, "{r}");

    // both facts survive the second compaction, and a restart
    d.term();
    let d = common::Daemon::start(dir.path(), &config(&fake.url));
    let c = d.client().await;
    let n = fake.log.count();
    let reply = turn(&c, "[recall:o] again?", "t7").await;
    assert!(
        reply.contains("[keep:locker code 4417]")
            && reply.contains("[keep:bins go out on tuesday]"),
        "{reply}"
    );
    let last = fake.log.all()[n..].last().unwrap().clone();
    assert!(!message_texts(&last).contains("Remember this"));
    assert!(
        !message_texts(&last).contains("tuesday"),
        "turn 5 was summarized"
    );
    drop(c);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_compact_refuses_clearly() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &config(&fake.url));
    let c = d.client().await;

    let e = c
        .request("sessions.compact", json!({"key": "nobody"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no session"), "{e}");

    // one turn: nothing older to summarize, no model call
    turn(&c, "hello", "h1").await;
    let n = fake.log.count();
    let e = c
        .request("sessions.compact", json!({"key": "main"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to compact"), "{e}");
    assert_eq!(fake.log.count(), n);

    // busy: a slow run holds the session
    let r = common::send(&c, "main", "[slow:200] take your time", "h2").await;
    let run = r["runId"].as_str().unwrap().to_string();
    common::until("the run to start", Duration::from_secs(10), || {
        fake.log.count() > n
    })
    .await;
    let e = c
        .request("sessions.compact", json!({"key": "main"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("in progress"), "{e}");
    common::terminal(&c, &run).await;

    // /compact in chat, now that there are four turns (the last three stay)
    turn(&c, "a", "h3a").await;
    turn(&c, "b", "h3b").await;
    let r = c
        .request(
            "chat.send",
            json!({"sessionKey": "main", "message": "/compact", "idempotencyKey": "h3"}),
        )
        .await
        .unwrap();
    let text = r["compact"].as_str().unwrap();
    assert!(
        text.starts_with("Compacted the conversation: 2 older entries summarized"),
        "{text}"
    );

    // and the session goes on
    assert_eq!(turn(&c, "after", "h4").await, "echo: after");
}

/// Issue 13 item 11: a client that asks for `sessions.compact` and goes
/// away before the answer (5b0ef1f: the session never answered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_compaction_does_not_wedge_the_session() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &config(&fake.url));
    let c = d.client().await;
    turn(
        &c,
        "Remember [keep:the spare key is under the mat] [slowcompact:3000]",
        "a1",
    )
    .await;
    for (i, t) in ["one", "two", "three", "four"].iter().enumerate() {
        turn(&c, t, &format!("a2-{i}")).await;
    }
    let quitter = d.client().await;
    let _pending = quitter
        .start("sessions.compact", json!({"key": "main"}))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(_pending);
    drop(quitter);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = common::send(&c, "main", "still there?", "a3").await;
    let run = r["runId"].as_str().unwrap().to_string();
    let fin = common::terminal_within(&c, &run, Duration::from_secs(15)).await;
    assert_eq!(common::text_of(&fin), "echo: still there?", "{fin}");
    assert!(d.log().contains("compaction abandoned"), "{}", d.log());
}
