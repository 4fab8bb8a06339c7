//! MQTT as a [`Channel`]: the connection task, the device tools, status.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rumqttc::EventLoop;
use serde_json::Value;

use super::client::Mqtt;
use crate::channel::{Channel, ChannelContext};
use crate::config::Config;
use crate::tool::Tool;

/// Within the daemon's stop budget: the last replies and `offline`.
pub const STOP_BUDGET: Duration = Duration::from_secs(3);

pub struct MqttChannel {
    pub mqtt: Arc<Mqtt>,
    ev: Mutex<Option<EventLoop>>,
}

/// `[channels.mqtt]` → the channel (opens `devices.redb`, reads the CA file).
pub fn build(cfg: &Config, state_dir: &Path) -> Result<Option<Arc<dyn Channel>>, String> {
    Ok(build_mqtt(cfg, state_dir)?.map(|c| c as Arc<dyn Channel>))
}

/// The same, typed (the daemon also hands the handle to `devices.*`).
pub fn build_mqtt(cfg: &Config, state_dir: &Path) -> Result<Option<Arc<MqttChannel>>, String> {
    let Some(m) = cfg.mqtt.clone() else {
        return Ok(None);
    };
    let (mqtt, ev) = Mqtt::new(m, state_dir).map_err(|e| format!("{e:#}"))?;
    mqtt.registry.set_aliases(cfg.devices.aliases.clone());
    Ok(Some(Arc::new(MqttChannel {
        mqtt,
        ev: Mutex::new(Some(ev)),
    })))
}

impl Channel for MqttChannel {
    fn kind(&self) -> &'static str {
        "mqtt"
    }
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        super::tools::tools(&self.mqtt)
    }
    fn status(&self) -> Value {
        self.mqtt.status_json()
    }
    fn run(self: Arc<Self>, cx: ChannelContext) -> BoxFuture<'static, ()> {
        let ev = self.ev.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            match ev {
                Some(ev) => self.mqtt.clone().run(ev, cx).await,
                None => tracing::error!("mqtt: the channel was started twice"),
            }
        })
    }
    fn stop_budget(&self) -> Duration {
        STOP_BUDGET
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
