//! The normalized inbound message and who sent it: the one shape every
//! channel hands to the gateway (a leaf module: it imports nothing of
//! Hearth's).
//!
//! A channel fills in what the platform says ([`Inbound`], [`Sender`],
//! [`ChatKind`]); the gateway alone decides the [`Trust`], from the config
//! and the pairing records, never from the message.

use serde::{Deserialize, Serialize};

/// Kind of conversation on the platform side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// One person talking to Hearth.
    Direct,
    /// A group chat; the peer is the group.
    Group,
    /// A device (an MQTT panel, a sensor's trigger): not a person.
    Device,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Direct => "direct",
            ChatKind::Group => "group",
            ChatKind::Device => "device",
        }
    }
}

/// How far Hearth trusts the sender of a message; assigned by the gateway.
/// Ordered: `Unknown < Device < Member < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Not approved: nothing they send reaches an agent.
    Unknown,
    /// A device on the local network: its own session, device tools only.
    Device,
    /// A household member: `members`, or a pairing the owner approved.
    Member,
    /// The owner: the gateway token, an `allow_from` entry, a pairing approved with `--owner`.
    Owner,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Unknown => "unknown",
            Trust::Device => "device",
            Trust::Member => "member",
            Trust::Owner => "owner",
        }
    }
}

/// Who sent a message, as the platform names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The platform's stable id (a Telegram user id, a device id).
    pub id: String,
    /// What people call them, if the platform says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A normalized inbound message, the only thing a channel hands to the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inbound {
    pub channel: String,
    pub account: Option<String>,
    pub chat: ChatKind,
    /// Direct and device: the peer id; group: the group id.
    pub peer: String,
    /// Forum topic / thread inside a group.
    pub thread: Option<String>,
    pub sender: Sender,
    pub text: String,
    pub platform_message_id: Option<String>,
    /// Where the reply goes (`<channel>:<address>`, delivered through the
    /// outbox); `None` for channels that read the chat events.
    pub reply_to: Option<String>,
    /// Routes to this agent instead of the bindings (device triggers).
    pub agent: Option<String>,
}

/// The sender of a queued message as the gateway classified it; stored
/// with the inbox item, so a restart does not change who spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub channel: String,
    pub chat: ChatKind,
    pub sender: Sender,
    pub trust: Trust,
    /// The binding that routed the message (index in `[[bindings]]`), for
    /// its tool policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<usize>,
}

impl Origin {
    /// The owner on the gateway's own clients (web chat, CLI).
    pub fn owner(channel: &str) -> Origin {
        Origin {
            channel: channel.into(),
            chat: ChatKind::Direct,
            sender: Sender {
                id: "owner".into(),
                name: None,
            },
            trust: Trust::Owner,
            binding: None,
        }
    }

    /// How the source reads in the prompt: `mqtt device "kitchen-panel"
    /// (trust: device)`.
    pub fn describe(&self) -> String {
        let who = match &self.sender.name {
            Some(n) if n != &self.sender.id => format!("{:?} ({})", n, self.sender.id),
            _ => format!("{:?}", self.sender.id),
        };
        format!(
            "{} {} {who} (trust: {})",
            self.channel,
            self.chat.as_str(),
            self.trust.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_ordered_and_round_trips() {
        assert!(Trust::Unknown < Trust::Device && Trust::Device < Trust::Member);
        assert!(Trust::Member < Trust::Owner);
        let names: Vec<_> = [Trust::Unknown, Trust::Device, Trust::Member, Trust::Owner]
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(names, ["unknown", "device", "member", "owner"]);
    }
}
