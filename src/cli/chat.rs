//! `hearth chat`: one message, or an interactive session.
//!
//! The keyboard is read while a reply streams: `/stop` or Ctrl-C aborts
//! the run in the daemon (`chat.abort`), a second Ctrl-C quits; a line typed
//! meanwhile is sent once the reply has ended. At the prompt Ctrl-C or
//! Ctrl-D quits.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::client::Client;

/// How a turn ended.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Done,
    Failed,
    Stopped,
    /// Ctrl-C twice: leave now.
    Quit,
}

/// What the person did while a reply streamed.
struct Keyboard<'a> {
    lines: Option<&'a mut mpsc::Receiver<String>>,
    /// Lines typed during the reply, sent after it.
    later: &'a mut VecDeque<String>,
    interrupts: &'a mut Signal,
}

pub(super) async fn chat(
    url: String,
    token: Option<String>,
    session: String,
    message: Option<String>,
) -> anyhow::Result<i32> {
    let c = match Client::connect(&url, token.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nIs `hearth serve` running? Use --url to point at another gateway.");
            return Ok(1);
        }
    };
    let mut interrupts = signal(SignalKind::interrupt())?;
    let code = match message {
        Some(m) => {
            let mut later = VecDeque::new();
            let kb = Keyboard {
                lines: None,
                later: &mut later,
                interrupts: &mut interrupts,
            };
            turn(&c, &session, &m, kb).await.map(|t| match t {
                Turn::Done => 0,
                Turn::Stopped | Turn::Quit => 130,
                Turn::Failed => 1,
            })
        }
        None => interactive(&c, &url, &session, &mut interrupts).await,
    };
    c.close().await;
    code
}

async fn interactive(
    c: &Client,
    url: &str,
    session: &str,
    interrupts: &mut Signal,
) -> anyhow::Result<i32> {
    eprintln!(
        "Connected to {url} (session {session}). Type a message; /new starts over, \
         /stop or Ctrl-C stops a reply, /quit or Ctrl-D leaves."
    );
    let (tx, mut rx) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(l) = line else { break };
            if tx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    let mut later = VecDeque::new();
    loop {
        let line = match later.pop_front() {
            Some(l) => l,
            None => {
                eprint!("> ");
                tokio::select! {
                    l = rx.recv() => match l {
                        Some(l) => l,
                        None => { eprintln!(); return Ok(0) }
                    },
                    _ = interrupts.recv() => { eprintln!(); return Ok(0) }
                }
            }
        };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" || line == "/exit" {
            return Ok(0);
        }
        let kb = Keyboard {
            lines: Some(&mut rx),
            later: &mut later,
            interrupts,
        };
        if turn(c, session, &line, kb).await? == Turn::Quit {
            return Ok(0);
        }
    }
}

/// Sends one message and streams the reply to stdout, while watching the
/// keyboard for `/stop` and Ctrl-C.
async fn turn(c: &Client, session: &str, text: &str, kb: Keyboard<'_>) -> anyhow::Result<Turn> {
    let idem = crate::store::new_id();
    let r = c
        .request(
            "chat.send",
            json!({"sessionKey": session, "message": text, "idempotencyKey": idem}),
        )
        .await?;
    let run_id = r["runId"].as_str().unwrap_or(&idem).to_string();
    if r["reset"] == true {
        println!("Started a new session.");
        return Ok(Turn::Done);
    }
    if r.get("aborted").is_some() {
        let stopped = r["aborted"] == true;
        println!(
            "{}",
            if stopped {
                "Stopped."
            } else {
                "Nothing to stop."
            }
        );
        return Ok(Turn::Done);
    }
    let Keyboard {
        mut lines,
        later,
        interrupts,
    } = kb;
    let mut shown = 0usize;
    let mut stopping = false;
    loop {
        let next = c.wait_event("chat", Duration::from_secs(3600), |p| {
            p["runId"] == run_id.as_str()
        });
        let p = tokio::select! {
            p = next => p,
            l = async {
                match lines.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match l {
                    Some(l) if matches!(l.trim(), "/stop" | "/abort") => {
                        if !stopping {
                            stopping = abort(c, session, &run_id).await?;
                        }
                    }
                    Some(l) => later.push_back(l),
                    // Ctrl-D during a reply: let it finish, then leave.
                    None => {
                        lines = None;
                        later.push_back("/quit".into());
                    }
                }
                continue;
            }
            _ = interrupts.recv() => {
                if stopping {
                    eprintln!("\n[left; the reply may still be stopping]");
                    return Ok(Turn::Quit);
                }
                eprintln!("\n[stopping the reply; Ctrl-C again quits]");
                stopping = abort(c, session, &run_id).await?;
                if !stopping {
                    // a second Ctrl-C still quits
                    stopping = true;
                }
                continue;
            }
        };
        let Some(p) = p else {
            anyhow::bail!("the gateway closed the connection before the reply was complete");
        };
        if let Some(end) = show(&p, &mut shown) {
            return Ok(end);
        }
    }
}

/// Asks the daemon to stop the run; false (with a note) when it was not
/// running yet (queued behind another run), so a later `/stop` tries again.
async fn abort(c: &Client, session: &str, run_id: &str) -> anyhow::Result<bool> {
    let r = c
        .request(
            "chat.abort",
            json!({"sessionKey": session, "runId": run_id}),
        )
        .await?;
    if r["aborted"] == true {
        return Ok(true);
    }
    eprintln!("\n[the reply has not started yet; /stop again once it streams]");
    Ok(false)
}

/// Prints what a `chat` event adds; `Some` when the run has ended.
fn show(p: &Value, shown: &mut usize) -> Option<Turn> {
    let text = message_text(p);
    let mut out = std::io::stdout();
    match p["state"].as_str() {
        Some("delta") if text.len() > *shown && text.is_char_boundary(*shown) => {
            print!("{}", &text[*shown..]);
            *shown = text.len();
            out.flush().ok();
            None
        }
        Some("final") => {
            if text.len() >= *shown && text.is_char_boundary(*shown) {
                print!("{}", &text[*shown..]);
            } else {
                print!("\n{text}");
            }
            println!();
            Some(Turn::Done)
        }
        Some("aborted") => {
            println!("\n[stopped]");
            Some(Turn::Stopped)
        }
        Some("error") => {
            if *shown > 0 {
                println!();
            }
            eprintln!(
                "{}",
                p["errorMessage"].as_str().unwrap_or("the reply failed")
            );
            Some(Turn::Failed)
        }
        _ => None,
    }
}

fn message_text(p: &Value) -> String {
    p["message"]["content"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}
