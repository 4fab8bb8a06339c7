//! Signing in: the gateway token, a device token, or a console pairing.
//!
//! - **The gateway token** (`auth.token`, or `auth.password` as OpenClaw's
//!   Control UI also sends it): the owner. A client that also proves a
//!   device key (`device {id, publicKey, signature, signedAt, nonce}`,
//!   OpenClaw's ed25519 device identity) gets a **device token** in
//!   hello-ok (`auth.deviceToken`), so it can sign in again without the
//!   gateway token (the Control UI after a reload).
//! - **A device token** with the same device proof: the owner, while the
//!   gateway token it was issued under is unchanged. The proof is checked
//!   as OpenClaw's gateway checks it: the id is the SHA-256 of the key,
//!   the signature covers the challenge nonce and is at most 2 min old.
//! - **A console pairing** (Hearth's console, no device key): a random
//!   secret the browser keeps, sent as `auth.deviceToken`. Unknown, it
//!   gets a pairing code (`NOT_PAIRED`, `details.code`); once the owner ran
//!   `hearth pairing approve CODE --owner`, the same secret signs in.
//!   Strangers may ask: a pending code is answered without a write, at
//!   most one new request is written per `NEW_REQUEST_EVERY` over the
//!   whole gateway, and a request is named by the peer's address.

use base64::Engine;
use serde_json::{json, Value};

use super::auth::sha256_hex;
use super::protocol::ErrorShape;
use super::{Gateway, PROTOCOL};
use crate::inbound::Trust;
use crate::store::devices::DeviceToken;
use crate::store::now_ms;

/// What a `connect` frame asks for, once its shape is checked.
#[derive(Debug)]
pub struct Connect {
    pub id: String,
    /// `auth.token` (or `auth.password`), "" when absent.
    pub token: String,
    /// `auth.deviceToken`, "" when absent.
    pub device_token: String,
    pub role: String,
    pub scopes: Vec<Value>,
    /// `device`: an OpenClaw device proof, checked by `devices::sign_in`.
    pub device: Option<Value>,
    /// What a device signature covers (OpenClaw's v2/v3 payload).
    pub client_id: String,
    pub client_mode: String,
    pub platform: String,
    pub device_family: String,
    pub scopes_signed: Vec<String>,
    pub signed_token: String,
}

/// The scopes a signed-in connection has: all of an operator's (every
/// client that signs in is the owner).
pub const SCOPES: [&str; 6] = [
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.approvals",
    "operator.questions",
    "operator.pairing",
];

/// Checks the first frame's shape and protocol range (no token check).
/// Errors carry (request id, error, close code).
pub fn parse_connect(text: &str) -> Result<Connect, (String, ErrorShape, u16)> {
    let (id, method, params) = super::protocol::parse_request(text).map_err(|(id, _)| {
        (
            id,
            ErrorShape::invalid("first request must be connect"),
            1008,
        )
    })?;
    if method != "connect" {
        return Err((
            id,
            ErrorShape::invalid("first request must be connect"),
            1008,
        ));
    }
    let minp = params["minProtocol"].as_u64();
    let maxp = params["maxProtocol"].as_u64();
    let (Some(minp), Some(maxp)) = (minp, maxp) else {
        return Err((
            id,
            ErrorShape::invalid("connect needs minProtocol and maxProtocol"),
            1008,
        ));
    };
    if !(minp..=maxp).contains(&PROTOCOL) {
        let mut e = ErrorShape::new(
            "PROTOCOL_MISMATCH",
            format!("this gateway speaks protocol {PROTOCOL}; the client offered {minp}..{maxp}"),
        );
        e.details = Some(Box::new(json!({"expectedProtocol": PROTOCOL})));
        return Err((id, e, 1002));
    }
    let token = params["auth"]["token"]
        .as_str()
        .or_else(|| params["auth"]["password"].as_str())
        .unwrap_or("")
        .to_string();
    let role: String = params["role"]
        .as_str()
        .unwrap_or("operator")
        .chars()
        .take(64)
        .collect();
    let scopes: Vec<Value> = params["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v.is_string())
                .take(32)
                .cloned()
                .collect()
        })
        .unwrap_or_else(|| vec![json!("operator.admin")]);
    let text = |v: &Value| -> String { v.as_str().unwrap_or("").chars().take(256).collect() };
    let auth = &params["auth"];
    let signed_token = [
        &auth["token"],
        &auth["deviceToken"],
        &auth["bootstrapToken"],
    ]
    .into_iter()
    .find_map(|v| v.as_str())
    .unwrap_or("")
    .to_string();
    Ok(Connect {
        id,
        token,
        device_token: text(&auth["deviceToken"]),
        role,
        scopes_signed: scopes
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        scopes,
        device: params["device"]
            .is_object()
            .then(|| params["device"].clone()),
        client_id: text(&params["client"]["id"]),
        client_mode: text(&params["client"]["mode"]),
        platform: text(&params["client"]["platform"]),
        device_family: text(&params["client"]["deviceFamily"]),
        signed_token,
    })
}

/// The pairing channel of browsers that asked for console access.
pub const CONSOLE_CHANNEL: &str = "console";
/// How old a device signature may be.
const MAX_SKEW_MS: u64 = 120_000;

/// A signed-in client: the token generation it counts under, and the
/// device token to hand it (with when it was issued).
pub struct SignedIn {
    pub generation: u64,
    pub device_token: Option<(String, u64)>,
}

fn mismatch(token_given: bool) -> ErrorShape {
    let msg = if token_given {
        "gateway token mismatch"
    } else {
        "this gateway needs its token (auth.token); on this machine `hearth token` prints it"
    };
    ErrorShape::new("AUTH_TOKEN_MISMATCH", msg)
}

/// Decides a `connect` (after its shape was checked).
pub async fn sign_in(
    g: &Gateway,
    c: &Connect,
    nonce: &str,
    peer: std::net::IpAddr,
) -> Result<SignedIn, ErrorShape> {
    let device = match &c.device {
        Some(d) => Some(verify(d, c, nonce)?),
        None => None,
    };
    if !c.token.is_empty() {
        let generation = g.token.check(&c.token).ok_or_else(|| mismatch(true))?;
        let device_token = match device {
            Some(id) => Some(issue(g, &id, &c.client_id).await?),
            None => None,
        };
        return Ok(SignedIn {
            generation,
            device_token,
        });
    }
    if c.device_token.is_empty() {
        return Err(mismatch(false));
    }
    match device {
        Some(id) => reuse(g, &id, &c.device_token).await,
        None => console(g, &c.device_token, peer).await,
    }
}

fn b64(v: &Value, k: &str) -> Result<Vec<u8>, ErrorShape> {
    let s = v[k].as_str().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| ErrorShape::invalid(format!("device.{k} is not base64url")))
}

/// Checks a device proof; returns the device id.
fn verify(d: &Value, c: &Connect, nonce: &str) -> Result<String, ErrorShape> {
    let bad = |m: &str| ErrorShape::invalid(format!("device auth failed: {m}"));
    let id = d["id"].as_str().unwrap_or("");
    let key = b64(d, "publicKey")?;
    let sig = b64(d, "signature")?;
    if key.len() != 32 || id != sha256_hex(&key) {
        return Err(bad("device identity mismatch"));
    }
    let signed_at = d["signedAt"]
        .as_u64()
        .ok_or_else(|| bad("signedAt missing"))?;
    if now_ms().abs_diff(signed_at) > MAX_SKEW_MS {
        return Err(bad("device signature expired (check the clock)"));
    }
    if d["nonce"].as_str() != Some(nonce) || nonce.is_empty() {
        return Err(bad("device nonce does not match the challenge"));
    }
    let v2 = format!(
        "v2|{id}|{}|{}|{}|{}|{signed_at}|{}|{nonce}",
        c.client_id,
        c.client_mode,
        c.role,
        c.scopes_signed.join(","),
        c.signed_token
    );
    let v3 = format!(
        "{}|{}|{}",
        v2.replacen("v2|", "v3|", 1),
        c.platform.trim().to_lowercase(),
        c.device_family.trim().to_lowercase()
    );
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key);
    if pk.verify(v3.as_bytes(), &sig).is_ok() || pk.verify(v2.as_bytes(), &sig).is_ok() {
        Ok(id.to_string())
    } else {
        Err(bad("device signature invalid"))
    }
}

async fn issue(g: &Gateway, device: &str, client: &str) -> Result<(String, u64), ErrorShape> {
    let token = crate::gateway::auth::random_token();
    let rec = DeviceToken {
        device: device.to_string(),
        hash: sha256_hex(token.as_bytes()),
        under: g.token.fingerprint(),
        client: client.chars().take(64).collect(),
        issued_ms: now_ms(),
    };
    let at = rec.issued_ms;
    let store = g.queue.store().clone();
    super::blocking(move || store.devices().put(rec)).await?;
    Ok((token, at))
}

async fn reuse(g: &Gateway, device: &str, token: &str) -> Result<SignedIn, ErrorShape> {
    let store = g.queue.store().clone();
    let d = device.to_string();
    let rec = super::blocking(move || store.devices().get(&d)).await?;
    let hash = sha256_hex(token.as_bytes());
    match rec {
        Some(r) if r.hash == hash && r.under == g.token.fingerprint() => Ok(SignedIn {
            generation: g.token.generation(),
            device_token: Some((token.to_string(), r.issued_ms)),
        }),
        _ => Err(ErrorShape::new(
            "AUTH_DEVICE_TOKEN_MISMATCH",
            "this device token is unknown or was issued under an older gateway token; sign in with the gateway token",
        )),
    }
}

/// The sender id a console secret pairs as.
pub fn console_id(secret: &str) -> String {
    sha256_hex(secret.as_bytes())[..32].to_string()
}

/// New console pairing requests over the whole gateway: at most one per
/// this interval (each is a durable write, and strangers may ask).
const NEW_REQUEST_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

fn new_request_allowed() -> bool {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let now = std::time::Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < NEW_REQUEST_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

async fn console(
    g: &Gateway,
    secret: &str,
    peer: std::net::IpAddr,
) -> Result<SignedIn, ErrorShape> {
    if secret.len() < 32 || secret.len() > 256 {
        return Err(ErrorShape::invalid(
            "a console device token is 32 to 256 characters",
        ));
    }
    let id = console_id(secret);
    let store = g.queue.store().clone();
    // the name the owner sees in `hearth pairing list`: where it came from
    let (i, name) = (id.clone(), format!("browser at {}", peer.to_canonical()));
    let (trust, code) = super::blocking(move || {
        let p = store.pairing();
        if let Some(t) = p.approved(CONSOLE_CHANNEL, "", &i)? {
            return Ok((Some(t), None));
        }
        // asking again: the same code, no write
        let mine = p
            .requests()?
            .into_iter()
            .find(|r| r.channel == CONSOLE_CHANNEL && r.sender == i);
        if let Some(r) = mine {
            return Ok((None, Some(r.code)));
        }
        if !new_request_allowed() {
            return Ok((None, None));
        }
        Ok((None, Some(p.request(CONSOLE_CHANNEL, "", &i, Some(&name))?)))
    })
    .await?;
    match (trust, code) {
        (Some(Trust::Owner), _) => Ok(SignedIn {
            generation: g.token.generation(),
            device_token: None,
        }),
        (Some(_), _) => Err(ErrorShape::new(
            "NOT_PAIRED",
            "this browser was approved without --owner; the console needs `hearth pairing approve CODE --owner`",
        )),
        (None, None) => Err(ErrorShape {
            retryable: Some(true),
            retry_after_ms: Some(NEW_REQUEST_EVERY.as_millis() as u64),
            ..ErrorShape::unavailable(
                "too many browsers are asking to pair; try again in a few seconds",
            )
        }),
        (None, code) => {
            let mut e = ErrorShape::new(
                "NOT_PAIRED",
                "this browser is not approved yet: the owner runs `hearth pairing approve CODE --owner` on the board",
            );
            e.details = Some(Box::new(serde_json::json!({"code": code, "channel": CONSOLE_CHANNEL})));
            Err(e)
        }
    }
}
