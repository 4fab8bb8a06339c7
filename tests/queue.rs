//! Sessions, queue modes, durability and the agent loop against the fake
//! OpenAI-compatible server.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn queue_cfg(fake: &FakeOpenAi, mode: &str, extra: &str) -> String {
    config_with(
        &fake.url,
        &format!("[messages.queue]\nmode = \"{mode}\"\ndebounce_ms = 300\n{extra}\n"),
    )
}

/// The last user message the model saw in request `i`.
fn last_user(req: &Value) -> String {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn idempotent_resend_also_across_restart() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&fake.url, "");
    let mut d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let first = send(&c, "main", "once only", "idem-1").await;
    terminal(&c, "idem-1").await;
    let again = send(&c, "main", "once only", "idem-1").await;
    assert_eq!(first, again);
    assert_eq!(fake.log.count(), 1);
    assert_eq!(d.term(), Some(0));

    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let third = send(&c, "main", "once only", "idem-1").await;
    assert_eq!(first, third);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.log.count(),
        1,
        "a repeat after restart called the model again"
    );
    let h = history(&c, "main").await;
    assert_eq!(h.len(), 2, "{h:?}");
}

#[tokio::test]
async fn two_sessions_never_see_each_other() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    send(&c, "alice", "my pin is 4711", "a1").await;
    send(&c, "bob", "what is alice's pin?", "b1").await;
    terminal(&c, "a1").await;
    let b = terminal(&c, "b1").await;
    assert!(!text_of(&b).contains("4711"));
    for m in history(&c, "bob").await {
        assert!(!m["content"][0]["text"].as_str().unwrap().contains("4711"));
    }
    for req in fake.log.all() {
        let all = req["messages"].to_string();
        if all.contains("alice's pin") {
            assert!(!all.contains("4711"), "bob's model call saw alice's text");
        }
    }
    assert_eq!(history(&c, "alice").await.len(), 2);
}

#[tokio::test]
async fn collect_merges_quick_messages_into_one_turn() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &queue_cfg(&fake, "collect", ""));
    let c = d.client().await;
    send(&c, "main", "[slow:60] first", "c0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    for (i, t) in ["buy milk", "and eggs", "and bread"].iter().enumerate() {
        send(&c, "main", t, &format!("c{}", i + 1)).await;
    }
    terminal(&c, "c0").await;
    let fin = terminal(&c, "c1").await;
    assert_eq!(fin["state"], "final");
    // The other two get the same final.
    assert_eq!(text_of(&terminal(&c, "c3").await), text_of(&fin));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reqs = fake.log.all();
    assert_eq!(reqs.len(), 2, "three quick messages must be one turn");
    let merged = last_user(&reqs[1]);
    assert!(
        merged.contains("buy milk") && merged.contains("and eggs") && merged.contains("and bread"),
        "{merged}"
    );
}

#[tokio::test]
async fn followup_runs_each_in_order() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &queue_cfg(&fake, "followup", ""));
    let c = d.client().await;
    send(&c, "main", "[slow:40] first", "f0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    for i in 1..=3 {
        send(&c, "main", &format!("msg {i}"), &format!("f{i}")).await;
    }
    for i in 1..=3 {
        assert_eq!(
            text_of(&terminal(&c, &format!("f{i}")).await),
            format!("echo: msg {i}")
        );
    }
    let reqs = fake.log.all();
    assert_eq!(reqs.len(), 4);
    for (i, req) in reqs.iter().enumerate().skip(1) {
        assert_eq!(last_user(req), format!("msg {i}"));
    }
}

#[tokio::test]
async fn interrupt_aborts_the_running_turn() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &queue_cfg(&fake, "interrupt", ""));
    let c = d.client().await;
    send(&c, "main", "[slow:200] long story", "i0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    send(&c, "main", "never mind", "i1").await;
    let t0 = terminal(&c, "i0").await;
    assert_eq!(t0["state"], "aborted");
    let t1 = terminal(&c, "i1").await;
    assert_eq!(text_of(&t1), "echo: never mind");
    let h = history(&c, "main").await;
    assert!(h.iter().any(|m| m["state"] == "aborted"));
}

#[tokio::test]
async fn steer_joins_the_running_turn_at_a_tool_boundary() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &queue_cfg(&fake, "steer", ""));
    let c = d.client().await;
    send(&c, "main", "[slowtool:300] tidy up", "s0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    send(&c, "main", "also check the notes", "s1").await;
    let t0 = terminal(&c, "s0").await;
    assert_eq!(text_of(&t0), "echo: also check the notes");
    assert_eq!(
        text_of(&terminal(&c, "s1").await),
        "echo: also check the notes"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.log.count(),
        2,
        "the steered message must not get a turn of its own"
    );
}

#[tokio::test]
async fn cap_with_each_drop_policy() {
    for policy in ["old", "new", "summarize"] {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(
            dir.path(),
            &queue_cfg(&fake, "followup", &format!("cap = 1\ndrop = \"{policy}\"")),
        );
        let c = d.client().await;
        send(&c, "main", "[slow:60] busy", "p0").await;
        until("first model call", Duration::from_secs(5), || {
            fake.log.count() == 1
        })
        .await;
        send(&c, "main", "second", "p1").await;
        let third = c
            .request(
                "chat.send",
                json!({"sessionKey": "main", "message": "third", "idempotencyKey": "p2"}),
            )
            .await;
        match policy {
            "old" => {
                assert_eq!(terminal(&c, "p1").await["state"], "error");
                assert_eq!(text_of(&terminal(&c, "p2").await), "echo: third");
            }
            "new" => {
                match third.unwrap_err() {
                    hearth::client::ClientError::Rpc { code, .. } => {
                        assert_eq!(code, "UNAVAILABLE")
                    }
                    e => panic!("{e}"),
                }
                assert_eq!(text_of(&terminal(&c, "p1").await), "echo: second");
            }
            _ => {
                assert_eq!(terminal(&c, "p1").await["state"], "error");
                let t = text_of(&terminal(&c, "p2").await);
                assert!(
                    t.contains("1 earlier message(s) were dropped")
                        && t.contains("\"second\"")
                        && t.ends_with("third"),
                    "{t}"
                );
            }
        }
        terminal(&c, "p0").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.log.count(), 2, "policy {policy}");
    }
}

#[tokio::test]
async fn kill9_with_queued_and_inflight_answers_each_once() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = queue_cfg(&fake, "followup", "");
    let mut d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    send(&c, "main", "[slow:100] in flight", "k0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    send(&c, "main", "queued one", "k1").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    d.kill9();
    drop(c);

    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let w0 = c
        .request("agent.wait", json!({"runId": "k0", "timeoutMs": 15000}))
        .await
        .unwrap();
    let w1 = c
        .request("agent.wait", json!({"runId": "k1", "timeoutMs": 15000}))
        .await
        .unwrap();
    assert_eq!(w0["status"], "ok", "{w0}");
    assert_eq!(w1["status"], "ok", "{w1}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = history(&c, "main").await;
    let texts: Vec<String> = h
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"][0]["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "user: [slow:100] in flight")
            .count(),
        1,
        "{texts:#?}"
    );
    assert_eq!(
        texts.iter().filter(|t| *t == "user: queued one").count(),
        1,
        "{texts:#?}"
    );
    assert_eq!(
        texts.iter().filter(|t| t.starts_with("assistant:")).count(),
        2,
        "{texts:#?}"
    );
    assert_eq!(texts.len(), 4, "{texts:#?}");
    // Resending after recovery does not run again.
    let n = fake.log.count();
    send(&c, "main", "queued one", "k1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.log.count(), n);
}

#[tokio::test]
async fn sigterm_drains_a_running_turn_and_exits_zero() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&fake.url, "");
    let mut d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    send(&c, "main", "[slow:50] finish me", "t0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    let code = tokio::task::spawn_blocking(move || {
        let code = d.term();
        (code, d)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let w = c
        .request("agent.wait", json!({"runId": "t0", "timeoutMs": 100}))
        .await
        .unwrap();
    assert_eq!(
        w["status"], "ok",
        "the run should have finished during the drain"
    );
    assert_eq!(fake.log.count(), 1);
}

#[tokio::test]
async fn max_steps_and_abort() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &config_with(&fake.url, "")
            .replace("max_concurrent = 4", "max_concurrent = 4\nmax_steps = 2"),
    );
    let c = d.client().await;
    send(&c, "main", "[tool:loop] keep going", "m0").await;
    let t = terminal(&c, "m0").await;
    assert_eq!(t["state"], "error");
    assert!(t["errorMessage"].as_str().unwrap().contains("max_steps"));
    assert_eq!(fake.log.count(), 2);

    send(&c, "main", "[slow:200] a long one", "m1").await;
    until("model call", Duration::from_secs(5), || {
        fake.log.count() == 3
    })
    .await;
    let r = c
        .request("chat.abort", json!({"sessionKey": "main"}))
        .await
        .unwrap();
    assert_eq!(r["aborted"], true);
    assert_eq!(r["runIds"][0], "m1");
    assert_eq!(terminal(&c, "m1").await["state"], "aborted");
    let w = c
        .request("agent.wait", json!({"runId": "m1"}))
        .await
        .unwrap();
    assert_eq!(w["status"], "aborted");
    let r = c
        .request("chat.abort", json!({"sessionKey": "main"}))
        .await
        .unwrap();
    assert_eq!(r["aborted"], false);
}

#[tokio::test]
async fn tools_work_inside_and_refuse_escapes() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    send(&c, "main", "[tool:read:AGENTS.md] read it", "w0").await;
    let t = text_of(&terminal(&c, "w0").await);
    assert!(t.starts_with("tool said: # AGENTS.md"), "{t}");
    // The agent event stream shows the tool call and its result, in order.
    let start = c
        .wait_event("agent", Duration::from_secs(5), |p| {
            p["runId"] == "w0" && p["stream"] == "tool" && p["data"]["phase"] == "start"
        })
        .await
        .expect("tool start event");
    assert_eq!(start["data"]["name"], "read");
    assert_eq!(start["data"]["args"], "{\"path\":\"AGENTS.md\"}");
    let result = c
        .wait_event("agent", Duration::from_secs(5), |p| {
            p["runId"] == "w0" && p["stream"] == "tool" && p["data"]["phase"] == "result"
        })
        .await
        .expect("tool result event");
    assert_eq!(result["data"]["isError"], false);
    assert!(result["seq"].as_u64() > start["seq"].as_u64());

    let ws = d.state.join("workspace");
    std::os::unix::fs::symlink(dir.path(), ws.join("link")).unwrap();
    for (i, p) in ["../secret.txt", "/etc/hostname", "link/secret.txt"]
        .iter()
        .enumerate()
    {
        let k = format!("w{}", i + 1);
        send(&c, "main", &format!("[tool:read:{p}] go"), &k).await;
        let t = text_of(&terminal(&c, &k).await);
        assert!(
            t.contains("outside the workspace") || t.contains("symbolic link"),
            "{p}: {t}"
        );
        assert!(!t.contains("TOP-SECRET"));
    }
    // Every step is in the transcript: tool call and tool result.
    let h = history(&c, "main").await;
    assert!(h.iter().any(|m| m["toolCalls"][0]["name"] == "read"));
    assert!(h
        .iter()
        .any(|m| m["role"] == "tool" && m["toolCallId"] == "call_1"));
}

#[tokio::test]
async fn run_timeout_stops_a_slow_reply() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&fake.url, "").replace(
        "max_concurrent = 4",
        "max_concurrent = 4\nrun_timeout_secs = 1",
    );
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t0 = std::time::Instant::now();
    send(&c, "main", "[slow:300] take your time", "rt0").await;
    let t = terminal(&c, "rt0").await;
    assert_eq!(t["state"], "error");
    assert!(
        t["errorMessage"].as_str().unwrap().contains("run timeout"),
        "{t}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    // The session is free again.
    send(&c, "main", "hello", "rt1").await;
    assert_eq!(text_of(&terminal(&c, "rt1").await), "echo: hello");
}

#[tokio::test]
async fn max_concurrent_bounds_runs_across_sessions() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&fake.url, "").replace("max_concurrent = 4", "max_concurrent = 1");
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    send(&c, "one", "[slow:50] first", "mc0").await;
    until("first model call", Duration::from_secs(5), || {
        fake.log.count() == 1
    })
    .await;
    send(&c, "two", "second", "mc1").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        fake.log.count(),
        1,
        "a second session ran while max_concurrent = 1 was taken"
    );
    let st = c.request("status", json!({})).await.unwrap();
    assert_eq!(
        (
            st["queue"]["running"].as_u64(),
            st["queue"]["pending"].as_u64()
        ),
        (Some(1), Some(1))
    );
    terminal(&c, "mc0").await;
    assert_eq!(text_of(&terminal(&c, "mc1").await), "echo: second");
}

#[tokio::test]
async fn broken_model_output_is_retried_then_reported() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    for (i, marker) in ["[garbage]", "[cut]"].iter().enumerate() {
        let key = format!("g{i}");
        let before = fake.log.count();
        send(&c, "main", &format!("{marker} hello"), &key).await;
        let t = terminal(&c, &key).await;
        assert_eq!(t["state"], "error", "{marker}: {t}");
        let msg = t["errorMessage"].as_str().unwrap();
        assert!(msg.contains("malformed response"), "{marker}: {msg}");
        // Three attempts, then a clear error; the partial text never became a reply.
        assert_eq!(fake.log.count() - before, 3, "{marker}");
        let h = history(&c, "main").await;
        assert!(!h.iter().any(|m| m["role"] == "assistant"
            && m["state"].is_null()
            && m["content"][0]["text"] == "half a rep"));
    }
    // The session still works.
    send(&c, "main", "fine now?", "g9").await;
    assert_eq!(text_of(&terminal(&c, "g9").await), "echo: fine now?");
    assert!(d.log().contains("provider call failed"));
}

#[tokio::test]
async fn unreachable_provider_gives_a_clear_error_and_keeps_running() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &config_with(&format!("http://127.0.0.1:{port}/v1"), ""),
    );
    let c = d.client().await;
    send(&c, "main", "anyone there?", "u0").await;
    let t = terminal(&c, "u0").await;
    assert_eq!(t["state"], "error");
    assert!(
        t["errorMessage"]
            .as_str()
            .unwrap()
            .contains("cannot reach the provider"),
        "{t}"
    );
    let h = c.request("health", json!({})).await.unwrap();
    assert_eq!(h["ok"], true);
    assert!(!d.log().contains("sk-test-secret-key"));
}
