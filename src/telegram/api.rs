//! The Bot API over HTTPS: ureq + rustls (ring), the TLS stack the
//! providers use. Blocking: called on the blocking pool. Errors are typed
//! so the channel can decide (wait, back off, stop), and no error text
//! ever carries the token (it is part of every URL).

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use super::config::TelegramConfig;

/// Largest API answer read (a getUpdates batch of 100 big updates fits).
const MAX_ANSWER: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 429: Telegram says when to come back.
    #[error("rate limited: retry after {0:?}")]
    RetryAfter(Duration),
    /// 401/404 on the bot URL: the token is wrong or revoked.
    #[error("the bot token was refused ({0}); get a new one from @BotFather")]
    Unauthorized(String),
    /// 5xx: Telegram's side; back off and try again.
    #[error("Telegram server error {0}")]
    Server(u16),
    /// No answer (connect, TLS, timeout, a cut connection).
    #[error("network: {0}")]
    Network(String),
    /// 400/403 and the like: this request will not work as it is.
    #[error("refused ({code}): {description}")]
    Rejected { code: u16, description: String },
}

impl ApiError {
    /// Worth sending the same request again later.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            ApiError::RetryAfter(_) | ApiError::Server(_) | ApiError::Network(_)
        )
    }
}

pub struct Api {
    base: String,
    token: String,
    poll: ureq::Agent,
    call: ureq::Agent,
    pub poll_timeout: Duration,
}

fn agent(total: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(total))
        .build()
        .into()
}

impl Api {
    pub fn new(cfg: &TelegramConfig) -> Api {
        Api {
            base: cfg.api_base.clone(),
            token: cfg.bot_token.expose().to_string(),
            // a long poll that hangs past its own timeout is cut here
            poll: agent(cfg.poll_timeout + Duration::from_secs(15)),
            call: agent(Duration::from_secs(30)),
            poll_timeout: cfg.poll_timeout,
        }
    }

    fn scrub(&self, s: String) -> String {
        if self.token.is_empty() {
            s
        } else {
            s.replace(&self.token, "<token>")
        }
    }

    /// `POST /bot<token>/<method>` with a JSON body; the `result` on success.
    pub fn call(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        let agent = if method == "getUpdates" {
            &self.poll
        } else {
            &self.call
        };
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| ApiError::Network(self.scrub(e.to_string())))?;
        let status = resp.status().as_u16();
        let mut text = String::new();
        resp.into_body()
            .into_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|e| ApiError::Network(self.scrub(e.to_string())))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && v["ok"] == true {
            return Ok(v["result"].clone());
        }
        if status < 300 {
            // a cut or garbled answer: whether it was done is unknown
            return Err(ApiError::Network(
                "an incomplete answer from the Bot API".into(),
            ));
        }
        let description: String = v["description"]
            .as_str()
            .unwrap_or("no description")
            .chars()
            .take(300)
            .collect();
        Err(match status {
            429 => ApiError::RetryAfter(Duration::from_secs(
                v["parameters"]["retry_after"]
                    .as_u64()
                    .unwrap_or(5)
                    .clamp(1, 3600),
            )),
            401 | 404 => ApiError::Unauthorized(self.scrub(description)),
            s if s >= 500 => ApiError::Server(s),
            s => ApiError::Rejected {
                code: s,
                description: self.scrub(description),
            },
        })
    }

    /// Downloads `file_path` (from getFile), refusing more than `max` bytes.
    pub fn download(&self, file_path: &str, max: u64) -> Result<Vec<u8>, ApiError> {
        if file_path.contains("..") || file_path.starts_with('/') {
            return Err(ApiError::Rejected {
                code: 0,
                description: "a file path that leaves the bot's files".into(),
            });
        }
        let url = format!("{}/file/bot{}/{file_path}", self.base, self.token);
        let resp = self
            .call
            .get(&url)
            .call()
            .map_err(|e| ApiError::Network(self.scrub(e.to_string())))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(match status {
                401 | 404 => ApiError::Unauthorized(format!("file download {status}")),
                s if s >= 500 => ApiError::Server(s),
                s => ApiError::Rejected {
                    code: s,
                    description: "file download refused".into(),
                },
            });
        }
        let mut out = Vec::new();
        resp.into_body()
            .into_reader()
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::Network(self.scrub(e.to_string())))?;
        if out.len() as u64 > max {
            return Err(ApiError::Rejected {
                code: 0,
                description: format!("larger than media_max_bytes ({max})"),
            });
        }
        Ok(out)
    }
}
