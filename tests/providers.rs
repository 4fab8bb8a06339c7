//! Provider kinds and self-healing against fake Anthropic and Gemini APIs
//! on loopback (real wire formats), with the real daemon: tool turns,
//! retries, key rotation, cooldowns across a restart, fallbacks, cut and
//! broken streams, timeouts, and keys kept out of logs.

mod common;

use std::time::{Duration, Instant};

use common::cloud::{FakeCloud, Fault};
use common::*;
use serde_json::{json, Value};

fn anthropic_cfg(url: &str, keys: &str, extra: &str) -> String {
    format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{url}\"\n{keys}\n\n\
         [agents.defaults]\nmodel = {{ primary = \"claude/claude-test\", fallbacks = [] }}\n{extra}\n"
    )
}

fn status(code: u16, body: Value, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        code,
        body: body.to_string(),
        retry_after,
    }
}

fn a_err(t: &str) -> Value {
    json!({"type": "error", "error": {"type": t, "message": "fake"}})
}

async fn ask(c: &Client, session: &str, text: &str, key: &str) -> Value {
    send(c, session, text, key).await;
    terminal(c, key).await
}

async fn cred(c: &Client, provider: &str, id: &str) -> Value {
    let st = c.request("status", json!({})).await.unwrap();
    st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == provider)
        .and_then(|p| {
            p["credentials"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no credential {provider}/{id} in {st}"))
}

#[tokio::test]
async fn anthropic_full_tool_turn() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &anthropic_cfg(&fake.url, "api_key = \"sk-ant-test-0001\"", ""),
    );
    std::fs::write(
        dir.path().join("state/workspace/notes.txt"),
        "milk and eggs",
    )
    .unwrap();
    let c = d.client().await;
    let t = ask(&c, "main", "what is in [tool:read:notes.txt]?", "a1").await;
    assert_eq!(t["state"], "final", "{t}");
    assert_eq!(text_of(&t), "tool said: milk and eggs");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let h = |r: &common::cloud::CloudReq, k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        h(&reqs[0], "x-api-key").as_deref(),
        Some("sk-ant-test-0001")
    );
    assert_eq!(
        h(&reqs[0], "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(reqs[0].model, "claude-test");
    assert!(reqs[0].body["system"]
        .as_str()
        .unwrap()
        .contains("AGENTS.md"));
    assert_eq!(reqs[0].body["max_tokens"], 4096);
    assert!(reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "read"));
    // The second call carries the tool_use and its tool_result.
    let m = reqs[1].body["messages"].as_array().unwrap();
    let n = m.len();
    assert_eq!(m[n - 2]["role"], "assistant");
    assert_eq!(m[n - 2]["content"][1]["type"], "tool_use");
    assert_eq!(m[n - 2]["content"][1]["input"]["path"], "notes.txt");
    assert_eq!(m[n - 1]["content"][0]["type"], "tool_result");
    assert_eq!(m[n - 1]["content"][0]["tool_use_id"], "toolu_01");
    assert!(!d.log().contains("sk-ant-test-0001"));
}

#[tokio::test]
async fn gemini_full_tool_turn() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[providers.g]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"AIza-test-0002\"\n\n\
         [agents.defaults]\nmodel = \"g/gemini-test\"\n",
        fake.url
    );
    let d = Daemon::start(dir.path(), &cfg);
    std::fs::write(dir.path().join("state/workspace/notes.txt"), "bread").unwrap();
    let c = d.client().await;
    let t = ask(&c, "main", "[tool:read:notes.txt]", "g1").await;
    assert_eq!(t["state"], "final", "{t}");
    assert_eq!(text_of(&t), "tool said: bread");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].key, "AIza-test-0002");
    assert_eq!(reqs[0].model, "gemini-test");
    assert!(reqs[0].body["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("AGENTS.md"));
    let decls = &reqs[0].body["tools"][0]["functionDeclarations"];
    assert!(decls
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "read"));
    let contents = reqs[1].body["contents"].as_array().unwrap();
    let n = contents.len();
    assert_eq!(contents[n - 2]["role"], "model");
    assert_eq!(
        contents[n - 2]["parts"][1]["functionCall"]["args"]["path"],
        "notes.txt"
    );
    assert_eq!(
        contents[n - 1]["parts"][0]["functionResponse"]["name"],
        "read"
    );
    assert!(!d.log().contains("AIza-test-0002"));
}

#[tokio::test]
async fn rate_limited_key_rotates_and_stays_cooled_across_a_restart() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = anthropic_cfg(&fake.url, "api_keys = [\"sk-k1-aaaa\", \"sk-k2-bbbb\"]", "");
    // k1 is rate limited for two minutes: too long to wait in the turn.
    fake.fail(
        Some("sk-k1-aaaa"),
        status(429, a_err("rate_limit_error"), Some(120)),
    );
    let mut d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t = ask(&c, "main", "hello", "r1").await;
    assert_eq!(text_of(&t), "echo: hello");
    assert_eq!(fake.keys(), ["sk-k1-aaaa", "sk-k2-bbbb"]);
    let k1 = cred(&c, "claude", "key1").await;
    assert_eq!(k1["state"], "cooldown", "{k1}");
    let wait = k1["availableInMs"].as_u64().unwrap();
    assert!(
        (110_000..=120_000).contains(&wait),
        "retry-after wins over 1 min: {wait}"
    );
    assert_eq!(k1["key"], "sk-…aa");
    drop(c);
    assert_eq!(d.term(), Some(0));

    // After a restart the cooldown holds: a new session goes straight to k2.
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t = ask(&c, "other", "again", "r2").await;
    assert_eq!(text_of(&t), "echo: again");
    assert_eq!(fake.keys()[2..], ["sk-k2-bbbb"]);
    assert_eq!(cred(&c, "claude", "key1").await["state"], "cooldown");
    assert_eq!(cred(&c, "claude", "key2").await["state"], "ok");
}

#[tokio::test]
async fn auth_and_billing_failures_disable_keys() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = anthropic_cfg(
        &fake.url,
        "[[providers.claude.profiles]]\nname = \"home\"\napi_key = \"sk-home-1111\"\n\
         [[providers.claude.profiles]]\nname = \"work\"\napi_key = \"sk-work-2222\"\n\
         [[providers.claude.profiles]]\nname = \"spare\"\napi_key = \"sk-spare-3333\"",
        "",
    );
    fake.fail(
        Some("sk-home-1111"),
        status(401, a_err("authentication_error"), None),
    );
    fake.fail(
        Some("sk-work-2222"),
        status(402, a_err("billing_error"), None),
    );
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t = ask(&c, "main", "hi", "b1").await;
    assert_eq!(text_of(&t), "echo: hi");
    assert_eq!(
        fake.keys(),
        ["sk-home-1111", "sk-work-2222", "sk-spare-3333"]
    );
    let home = cred(&c, "claude", "home").await;
    assert_eq!(home["state"], "auth", "{home}");
    assert!(home["availableInMs"].as_u64().unwrap() > 23 * 3600 * 1000);
    assert!(home["lastError"].as_str().unwrap().contains("credentials"));
    assert_eq!(cred(&c, "claude", "work").await["state"], "billing");
    // The session sticks to the key that answered.
    ask(&c, "main", "again", "b2").await;
    assert_eq!(fake.keys()[3], "sk-spare-3333");
    // `hearth status` shows it, masked.
    let out = std::process::Command::new(bin())
        .args(["status", "--url", &d.url])
        .arg("--state-dir")
        .arg(&d.state)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("home sk-…11 auth for 24 h"), "{s}");
    assert!(s.contains("last error"), "{s}");
    assert!(s.contains("spare sk-…33 ok"), "{s}");
    assert!(!s.contains("sk-home-1111"));
}

#[tokio::test]
async fn server_errors_retry_then_fall_back_to_the_next_model() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{u}\"\napi_key = \"sk-a-0000\"\n\n\
         [providers.g]\nkind = \"gemini\"\nbase_url = \"{u}\"\napi_key = \"AIza-b-0000\"\n\n\
         [agents.defaults]\nmodel = {{ primary = \"claude/c1\", fallbacks = [\"g/g1\"] }}\n",
        u = fake.url
    );
    for _ in 0..3 {
        fake.fail(Some("sk-a-0000"), status(500, a_err("api_error"), None));
    }
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t = ask(&c, "main", "lights?", "f1").await;
    assert_eq!(text_of(&t), "echo: lights?");
    let apis: Vec<&str> = fake.requests().iter().map(|r| r.api).collect();
    assert_eq!(apis, ["anthropic", "anthropic", "anthropic", "gemini"]);
    // The primary now cools down: the next turn goes to the fallback directly.
    ask(&c, "main", "and now?", "f2").await;
    assert_eq!(fake.requests().last().unwrap().api, "gemini");
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(cred(&c, "claude", "default").await["state"], "cooldown");
    let ml = c.request("models.list", json!({})).await.unwrap();
    let avail: Vec<(String, bool)> = ml["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ref"].as_str().unwrap().to_string(),
                m["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(avail, [("claude/c1".into(), false), ("g/g1".into(), true)]);
}

#[tokio::test]
async fn cut_and_broken_streams_are_retried_into_one_coherent_reply() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &anthropic_cfg(&fake.url, "api_key = \"sk-c-0000\"", ""),
    );
    let c = d.client().await;
    fake.fail(None, Fault::Cut);
    fake.fail(None, Fault::Garbage);
    let t = ask(&c, "main", "tell me", "c1").await;
    assert_eq!(t["state"], "final");
    assert_eq!(text_of(&t), "echo: tell me");
    assert_eq!(fake.requests().len(), 3);
    let h = history(&c, "main").await;
    let replies: Vec<&Value> = h.iter().filter(|m| m["role"] == "assistant").collect();
    assert_eq!(replies.len(), 1, "{h:?}");
    assert_eq!(replies[0]["content"][0]["text"], "echo: tell me");
    // The withdrawn partial was announced to clients.
    assert!(c
        .wait_event("agent", Duration::from_secs(1), |p| p["data"]["reset"]
            == true)
        .await
        .is_some());
}

#[tokio::test]
async fn a_hung_provider_times_out_and_is_retried() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = anthropic_cfg(&fake.url, "api_key = \"sk-t-0000\"\ntimeout_secs = 1", "");
    fake.fail(None, Fault::Hang(3000));
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let t = ask(&c, "main", "slow?", "t1").await;
    assert_eq!(text_of(&t), "echo: slow?");
    assert_eq!(fake.requests().len(), 2);
    assert!(d.log().contains("did not answer in time"), "{}", d.log());
}

#[tokio::test]
async fn keys_in_error_bodies_never_reach_the_log_or_the_user() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-leaky-9f8e7d6c5b4a";
    let d = Daemon::start(
        dir.path(),
        &anthropic_cfg(&fake.url, &format!("api_key = \"{key}\""), ""),
    );
    let body = json!({"type": "error", "error": {"type": "invalid_request_error",
                      "message": format!("bad request for key {key}")}});
    fake.fail(None, status(400, body.clone(), None));
    fake.fail(None, status(401, body, None));
    let c = d.client().await;
    let t1 = ask(&c, "main", "one", "k1").await;
    let t2 = ask(&c, "main", "two", "k2").await;
    assert_eq!(t1["state"], "error");
    assert!(
        t1["errorMessage"]
            .as_str()
            .unwrap()
            .contains("rejected the request"),
        "{t1}"
    );
    assert_eq!(t2["state"], "error");
    assert!(
        t2["errorMessage"].as_str().unwrap().contains("credentials"),
        "{t2}"
    );
    let st = c.request("status", json!({})).await.unwrap();
    let cg = c.request("config.get", json!({})).await.unwrap();
    let everything = format!("{}{t1}{t2}{st}{cg}", d.log());
    assert!(!everything.contains(key), "the key leaked");
    assert!(!everything.contains("9f8e7d6c5b4a"));
    for ev in ["agent", "chat"] {
        let leak = c
            .wait_event(ev, Duration::from_millis(200), |p| {
                p.to_string().contains("9f8e7d6c5b4a")
            })
            .await;
        assert!(leak.is_none(), "the key leaked in a {ev} event: {leak:?}");
    }
}

#[tokio::test]
async fn fallback_after_connection_refused_is_quick() {
    let fake = FakeCloud::start().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[providers.down]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{port}\"\napi_key = \"sk-d-0000\"\n\n\
         [providers.g]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"AIza-u-0000\"\n\n\
         [agents.defaults]\nmodel = {{ primary = \"down/c1\", fallbacks = [\"g/g1\"] }}\n",
        fake.url
    );
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    let start = Instant::now();
    let t = ask(&c, "main", "still there?", "n1").await;
    assert_eq!(text_of(&t), "echo: still there?");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(cred(&c, "down", "default").await["state"], "cooldown");
}

#[tokio::test]
async fn non_streamed_answers_are_understood() {
    let fake = FakeCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{u}\"\napi_key = \"sk-j-0000\"\n\n\
         [providers.g]\nkind = \"gemini\"\nbase_url = \"{u}\"\napi_key = \"AIza-j-0000\"\n\n\
         [agents.defaults]\nmodel = \"claude/c1\"\n\n\
         [[agents.list]]\nid = \"gem\"\nmodel = \"g/g1\"\n",
        u = fake.url
    );
    fake.fail(None, Fault::NonStreaming);
    fake.fail(None, Fault::NonStreaming);
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    assert_eq!(
        text_of(&ask(&c, "main", "plain?", "j1").await),
        "echo: plain?"
    );
    assert_eq!(
        text_of(&ask(&c, "agent:gem:main", "plain too?", "j2").await),
        "echo: plain too?"
    );
    let apis: Vec<&str> = fake.requests().iter().map(|r| r.api).collect();
    assert_eq!(apis, ["anthropic", "gemini"]);
    assert_eq!(fake.faults_left(), 0);
}
