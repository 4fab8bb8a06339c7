//! MQTT: local devices as a channel, and smart-home control through Home
//! Assistant MQTT discovery (SPEC §2, §10).
//!
//! - [`channel`]: MQTT as a [`crate::channel::Channel`].
//! - [`config`]: the `channels.mqtt` section.
//! - [`template`]: the small part of Home Assistant's Jinja templates that
//!   discovery payloads use (`{{ value_json.state }}`, filters).
//! - [`discovery`]: discovery payloads (abbreviations, `~`) → entities,
//!   state messages → normalized state, actions → command payloads.
//! - [`registry`]: the entities in memory and in `<state>/devices.redb`,
//!   the topic index, fuzzy name resolution.
//! - [`tools`]: `devices_list`, `device_state`, `device_set` for agents.
//! - [`outbox`]: replies from the durable outbox onto the wire, exactly
//!   once at QoS 2.
//! - [`topic`]: which topic names and filters are acceptable.
//! - [`client`]: the connection task: reconnects, subscriptions, manual
//!   QoS 1 acks after the inbound message is in the state database, the
//!   durable outbox for replies, birth and last will, triggers.

pub mod channel;
pub mod client;
pub mod config;
pub mod discovery;
pub mod outbox;
pub mod registry;
pub mod template;
pub mod tools;
pub mod topic;
