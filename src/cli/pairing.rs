//! `hearth pairing`: the owner answers pairing requests from chat
//! channels (a sender Hearth does not know got a code).

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;

#[derive(Subcommand)]
pub enum PairingCmd {
    /// Codes waiting for an answer, and the senders approved so far
    List {
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
    },
    /// Approve a code: its sender may talk to Hearth from now on, as a
    /// household member (own session, device tools only) unless --owner
    Approve {
        /// The 8-character code the sender was given
        code: String,
        /// Approve as the owner (the main session, every tool): only for yourself
        #[arg(long)]
        owner: bool,
    },
    /// Take an approval back
    Revoke {
        /// The channel kind, e.g. telegram; `console` for a browser, `device`
        /// for an OpenClaw client's device token
        channel: String,
        /// The sender id, as `hearth pairing list` shows it
        sender: String,
        /// The channel account, if the channel has several
        #[arg(long, default_value = "")]
        account: String,
    },
}

pub async fn run(url: String, token: Option<String>, cmd: PairingCmd) -> anyhow::Result<i32> {
    let c = match Client::connect(&url, token.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth is not reachable: {e}");
            return Ok(1);
        }
    };
    let r = match &cmd {
        PairingCmd::List { .. } => c.request("pairing.list", json!({})).await,
        PairingCmd::Approve { code, owner } => {
            let trust = if *owner { "owner" } else { "member" };
            c.request("pairing.approve", json!({"code": code, "trust": trust}))
                .await
        }
        PairingCmd::Revoke {
            channel,
            sender,
            account,
        } => {
            c.request(
                "pairing.revoke",
                json!({"channel": channel, "sender": sender, "account": account}),
            )
            .await
        }
    };
    c.close().await;
    let v = match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    match cmd {
        PairingCmd::List { json: true } => println!("{}", serde_json::to_string_pretty(&v)?),
        PairingCmd::List { json: false } => print_list(&v),
        PairingCmd::Approve { .. } => println!(
            "approved: {} {} ({}) as {}",
            v["channel"].as_str().unwrap_or("?"),
            v["sender"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("no name"),
            v["trust"].as_str().unwrap_or("?")
        ),
        PairingCmd::Revoke { .. } => println!(
            "{}",
            if v["revoked"] == true {
                "revoked"
            } else {
                "there was no such approval"
            }
        ),
    }
    Ok(0)
}

fn print_list(v: &Value) {
    let reqs = v["requests"].as_array().cloned().unwrap_or_default();
    if reqs.is_empty() {
        println!("no pairing requests waiting");
    }
    for r in reqs {
        println!(
            "waiting: {}  {} {} ({})",
            r["code"].as_str().unwrap_or("?"),
            r["channel"].as_str().unwrap_or("?"),
            r["sender"].as_str().unwrap_or("?"),
            r["name"].as_str().unwrap_or("no name"),
        );
    }
    for d in v["devices"].as_array().cloned().unwrap_or_default() {
        println!(
            "device token: device {} ({}){}",
            d["device"].as_str().unwrap_or("?"),
            d["client"].as_str().unwrap_or("?"),
            if d["valid"] == true {
                ""
            } else {
                ", issued under an older gateway token"
            },
        );
    }
    for a in v["approved"].as_array().cloned().unwrap_or_default() {
        println!(
            "approved: {} {} ({}) as {}",
            a["channel"].as_str().unwrap_or("?"),
            a["sender"].as_str().unwrap_or("?"),
            a["name"].as_str().unwrap_or("no name"),
            a["trust"].as_str().unwrap_or("?"),
        );
    }
}
