//! Tools: the [`Tool`] trait every tool implements, and the per-agent
//! [`Registry`] that decides, in this one place, whether a call may run.
//!
//! A tool is its spec, its policy group (`fs`, `memory`, `devices`, ...),
//! the risk of one call, and the call itself. The registry applies, in
//! order: the agent's `tools` policy → the sender's policy (owner: the
//! agent's; anyone else: the binding's, the channel's, or the default for
//! their trust) → the run's group limit (compaction's flush) → the approval
//! hook (high-risk calls) → the timeout → the output cap. Tools can be
//! added while the daemon runs ([`Registry::add`]).
//!
//! - [`fs`]: `read`, `write`, `edit`, `ls`, confined to the workspace by [`dir`].

pub mod dir;
pub mod fs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::{SenderTools, ToolPolicy};
use crate::inbound::{Origin, Trust};

/// Largest tool result handed back to the model.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// A tool offered to the model.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

/// The risk of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Risk {
    Low,
    /// Operates something dangerous (a lock, an alarm, a garage door):
    /// `subject` names it; `preapproved` when the owner listed it.
    High {
        subject: String,
        preapproved: bool,
    },
}

/// What a call knows about its run.
#[derive(Debug, Clone)]
pub struct ToolCx {
    pub agent_id: String,
    pub session_key: String,
    pub workspace: PathBuf,
    pub origin: Origin,
    pub cancel: CancellationToken,
    /// The high-risk subject the approval hook allowed for this call; a
    /// tool must refuse any other high-risk subject.
    pub approved: Option<String>,
}

pub type ToolFuture<'a> = BoxFuture<'a, Result<String, String>>;

pub trait Tool: Send + Sync {
    fn spec(&self) -> &ToolSpec;
    /// The policy group, as in `group:<name>` (`fs`, `memory`, `devices`).
    fn group(&self) -> &'static str;
    /// The risk of this call (arguments already parsed).
    fn risk(&self, _args: &Value) -> Risk {
        Risk::Low
    }
    /// Runs the call. Blocking work goes to the blocking pool inside.
    fn call<'a>(&'a self, cx: &'a ToolCx, args: Value) -> ToolFuture<'a>;
}

/// What the approval hook says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// Decides high-risk calls. Today: pre-approval lists only (the safety
/// work adds asking the owner).
pub trait Approval: Send + Sync {
    fn decide(&self, tool: &str, risk: &Risk, origin: &Origin, policy: &SenderTools) -> Decision;
}

/// The default hook: the owner may run what the owner pre-approved
/// (`allow_high_risk`); anyone else only where the sender policy says
/// `high_risk = true`, and then also only pre-approved subjects.
pub struct StaticApproval;

impl Approval for StaticApproval {
    fn decide(&self, _tool: &str, risk: &Risk, origin: &Origin, policy: &SenderTools) -> Decision {
        let Risk::High {
            subject,
            preapproved,
        } = risk
        else {
            return Decision::Allow;
        };
        if origin.trust < Trust::Owner && !policy.high_risk {
            return Decision::Deny(format!(
                "{subject} is a high-risk device; only the owner may operate it (this message came from {})",
                origin.describe()
            ));
        }
        if !preapproved {
            return Decision::Deny(format!(
                "{subject} is a high-risk device (locks, alarms and doors need approval) and is \
                 not approved for agents. Tell the user; the owner can allow it with \
                 allow_high_risk = [\"{subject}\"] in [channels.mqtt]."
            ));
        }
        Decision::Allow
    }
}

/// The default tools of a sender who is not the owner, by trust.
pub fn default_sender_tools(trust: Trust) -> SenderTools {
    let allow: &[&str] = match trust {
        Trust::Owner => &["*"],
        // memory would show them the owner's conversations
        Trust::Member => &["group:devices"],
        Trust::Device => &["group:devices"],
        Trust::Unknown => &[],
    };
    SenderTools {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: vec![],
        high_risk: trust == Trust::Owner,
    }
}

/// Whether a policy list entry names this tool.
fn names(pattern: &str, tool: &str, group: &str) -> bool {
    pattern == "*" || pattern == tool || pattern.strip_prefix("group:").is_some_and(|g| g == group)
}

impl ToolPolicy {
    /// Deny wins over allow; an empty allow list allows every tool.
    pub fn permits(&self, tool: &str, group: &str) -> bool {
        if self.deny.iter().any(|p| names(p, tool, group)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| names(p, tool, group))
    }
}

impl SenderTools {
    /// Deny wins; an empty allow list allows nothing.
    pub fn permits(&self, tool: &str, group: &str) -> bool {
        !self.deny.iter().any(|p| names(p, tool, group))
            && self.allow.iter().any(|p| names(p, tool, group))
    }
}

/// Who is asking, for the policy: the message's origin and, for
/// compaction's flush, the groups the turn may use.
#[derive(Debug, Clone)]
pub struct Scope {
    pub origin: Origin,
    pub only_groups: Option<&'static [&'static str]>,
}

impl Scope {
    pub fn of(origin: &Origin) -> Scope {
        Scope {
            origin: origin.clone(),
            only_groups: None,
        }
    }
}

/// The tools of one agent and the policy around them.
pub struct Registry {
    tools: RwLock<Vec<Arc<dyn Tool>>>,
    agent: ToolPolicy,
    timeout: Duration,
    /// `[channels.<kind>] tools`: the policy for non-owner senders there.
    channel_tools: HashMap<String, SenderTools>,
    /// `[[bindings]] tools`, by binding index.
    binding_tools: HashMap<usize, SenderTools>,
    /// The approval hook (the safety work makes it configurable).
    approval: Arc<dyn Approval>,
}

impl Registry {
    pub fn new(
        agent: ToolPolicy,
        timeout: Duration,
        channel_tools: HashMap<String, SenderTools>,
        binding_tools: HashMap<usize, SenderTools>,
    ) -> Registry {
        Registry {
            tools: RwLock::new(Vec::new()),
            agent,
            timeout,
            channel_tools,
            binding_tools,
            approval: Arc::new(StaticApproval),
        }
    }

    /// Adds a tool, replacing one with the same name.
    pub fn add(&self, t: Arc<dyn Tool>) {
        let mut list = self.tools.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|x| x.spec().name != t.spec().name);
        list.push(t);
    }

    fn list(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The policy that applies to a sender.
    pub fn sender_policy(&self, origin: &Origin) -> SenderTools {
        if origin.trust == Trust::Owner {
            return default_sender_tools(Trust::Owner);
        }
        origin
            .binding
            .and_then(|b| self.binding_tools.get(&b))
            .or_else(|| self.channel_tools.get(&origin.channel))
            .cloned()
            .unwrap_or_else(|| default_sender_tools(origin.trust))
    }

    /// Why this tool may not run for this scope, if it may not.
    fn refusal(&self, t: &dyn Tool, scope: &Scope) -> Option<String> {
        let (name, group) = (t.spec().name.as_str(), t.group());
        if !self.agent.permits(name, group) {
            return Some(format!("tool {name:?} is not allowed for this agent"));
        }
        if scope.origin.trust == Trust::Unknown
            || !self.sender_policy(&scope.origin).permits(name, group)
        {
            return Some(format!(
                "tool {name:?} is not allowed for messages from {}",
                scope.origin.describe()
            ));
        }
        if scope.only_groups.is_some_and(|g| !g.contains(&group)) {
            return Some(format!("tool {name:?} is not available in this turn"));
        }
        None
    }

    /// The specs offered to the model for this scope.
    pub fn offered(&self, scope: &Scope) -> Vec<ToolSpec> {
        self.list()
            .iter()
            .filter(|t| self.refusal(t.as_ref(), scope).is_none())
            .map(|t| t.spec().clone())
            .collect()
    }

    /// Whether this scope may use any tool of `group`.
    pub fn offers_group(&self, scope: &Scope, group: &str) -> bool {
        self.list()
            .iter()
            .any(|t| t.group() == group && self.refusal(t.as_ref(), scope).is_none())
    }

    /// Runs one call under the policy, the approval hook, the timeout and
    /// the output cap. `None` when cancelled; otherwise (ok, result text).
    pub async fn call(
        &self,
        cx: &ToolCx,
        scope: &Scope,
        name: &str,
        args: &str,
    ) -> Option<(bool, String)> {
        let (ok, mut out) = self.call_uncapped(cx, scope, name, args).await?;
        truncate(&mut out);
        Some((ok, out))
    }

    async fn call_uncapped(
        &self,
        cx: &ToolCx,
        scope: &Scope,
        name: &str,
        args: &str,
    ) -> Option<(bool, String)> {
        let Some(t) = self.list().into_iter().find(|t| t.spec().name == name) else {
            return Some((false, format!("error: unknown tool {name:?}")));
        };
        if let Some(why) = self.refusal(t.as_ref(), scope) {
            tracing::warn!(tool = name, session = %cx.session_key, "tool call refused: {why}");
            return Some((false, format!("error: {why}")));
        }
        let args: Value = if args.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(args) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Some((
                        false,
                        "error: invalid arguments: arguments must be a JSON object".into(),
                    ))
                }
                Err(e) => {
                    return Some((
                        false,
                        format!("error: invalid arguments: arguments are not JSON: {e}"),
                    ))
                }
            }
        };
        let risk = t.risk(&args);
        let policy = self.sender_policy(&scope.origin);
        let mut cx = cx.clone();
        match self.approval.decide(name, &risk, &scope.origin, &policy) {
            Decision::Allow => {
                if let Risk::High { subject, .. } = &risk {
                    tracing::info!(tool = name, subject = %subject, origin = %scope.origin.describe(), "high-risk call approved");
                    cx.approved = Some(subject.clone());
                }
            }
            Decision::Deny(why) => {
                tracing::warn!(tool = name, origin = %scope.origin.describe(), "tool call refused: {why}");
                return Some((false, format!("error: {why}")));
            }
        }
        let cancel = cx.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => None,
            r = tokio::time::timeout(self.timeout, t.call(&cx, args)) => Some(match r {
                Ok(Ok(s)) => (true, s),
                Ok(Err(e)) => (false, format!("error: {e}")),
                Err(_) => (false, format!("error: tool timed out after {} s", self.timeout.as_secs())),
            }),
        }
    }
}

/// Cuts a tool result to [`MAX_OUTPUT`] with a visible notice.
pub fn truncate(s: &mut String) {
    if s.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = s.len();
        s.truncate(cut);
        s.push_str(&format!(
            "\n[output truncated: {total} bytes, showing the first {cut}]"
        ));
    }
}

/// Runs blocking tool work on the blocking pool.
pub async fn blocking<F>(f: F) -> Result<String, String>
where
    F: FnOnce() -> Result<String, String> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("tool crashed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::{ChatKind, Sender};

    /// A tool that sleeps, answers big, or is high-risk, as asked.
    struct Probe(ToolSpec, &'static str);

    impl Tool for Probe {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        fn group(&self) -> &'static str {
            self.1
        }
        fn risk(&self, args: &Value) -> Risk {
            match args["lock"].as_str() {
                Some(s) => Risk::High {
                    subject: s.into(),
                    preapproved: s == "lock.ok",
                },
                None => Risk::Low,
            }
        }
        fn call<'a>(&'a self, cx: &'a ToolCx, args: Value) -> ToolFuture<'a> {
            Box::pin(async move {
                if let Some(ms) = args["sleep"].as_u64() {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if let Some(n) = args["big"].as_u64() {
                    return Ok("x".repeat(n as usize));
                }
                Ok(format!("ran; approved {:?}", cx.approved))
            })
        }
    }

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        }
    }

    fn origin(trust: Trust, channel: &str) -> Origin {
        Origin {
            channel: channel.into(),
            chat: ChatKind::Direct,
            sender: Sender {
                id: "x".into(),
                name: None,
            },
            trust,
            binding: None,
        }
    }

    fn registry(channel_tools: HashMap<String, SenderTools>) -> Registry {
        let r = Registry::new(
            ToolPolicy::default(),
            Duration::from_millis(200),
            channel_tools,
            HashMap::new(),
        );
        r.add(Arc::new(Probe(spec("read"), "fs")));
        r.add(Arc::new(Probe(spec("device_set"), "devices")));
        r
    }

    fn cx(o: &Origin) -> ToolCx {
        ToolCx {
            agent_id: "main".into(),
            session_key: "s".into(),
            workspace: PathBuf::from("/nonexistent"),
            origin: o.clone(),
            cancel: CancellationToken::new(),
            approved: None,
        }
    }

    async fn call(r: &Registry, o: &Origin, name: &str, args: &str) -> Option<(bool, String)> {
        r.call(&cx(o), &Scope::of(o), name, args).await
    }

    #[tokio::test]
    async fn policy_by_trust_and_channel() {
        let r = registry(HashMap::new());
        let owner = origin(Trust::Owner, "webchat");
        let device = origin(Trust::Device, "mqtt");
        let unknown = origin(Trust::Unknown, "x");
        assert_eq!(r.offered(&Scope::of(&owner)).len(), 2);
        let names: Vec<_> = r
            .offered(&Scope::of(&device))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["device_set"]);
        assert!(r.offered(&Scope::of(&unknown)).is_empty());
        let (ok, out) = call(&r, &device, "read", "{}").await.unwrap();
        assert!(
            !ok && out.contains("not allowed for messages from mqtt"),
            "{out}"
        );
        assert!(call(&r, &owner, "read", "{}").await.unwrap().0);
        // the channel widens it for its non-owners
        let wide = SenderTools {
            allow: vec!["group:fs".into()],
            ..Default::default()
        };
        let r = registry(HashMap::from([("mqtt".to_string(), wide)]));
        assert!(call(&r, &device, "read", "{}").await.unwrap().0);
        assert!(!call(&r, &device, "device_set", "{}").await.unwrap().0);
        // the turn's group limit (compaction's flush)
        let flush = Scope {
            origin: owner.clone(),
            only_groups: Some(&["fs"]),
        };
        let (ok, _) = r
            .call(&cx(&owner), &flush, "device_set", "{}")
            .await
            .unwrap();
        assert!(!ok);
        // bad arguments and unknown tools are results, not crashes
        assert!(!call(&r, &owner, "read", "[1]").await.unwrap().0);
        assert!(!call(&r, &owner, "nope", "{}").await.unwrap().0);
    }

    #[tokio::test]
    async fn high_risk_needs_the_owner_and_a_preapproval() {
        let r = registry(HashMap::new());
        let owner = origin(Trust::Owner, "webchat");
        let device = origin(Trust::Device, "mqtt");
        let (ok, out) = call(&r, &owner, "device_set", r#"{"lock":"lock.ok"}"#)
            .await
            .unwrap();
        assert!(ok && out.contains("Some(\"lock.ok\")"), "{out}");
        let (ok, out) = call(&r, &owner, "device_set", r#"{"lock":"lock.new"}"#)
            .await
            .unwrap();
        assert!(!ok && out.contains("allow_high_risk"), "{out}");
        let (ok, out) = call(&r, &device, "device_set", r#"{"lock":"lock.ok"}"#)
            .await
            .unwrap();
        assert!(!ok && out.contains("only the owner"), "{out}");
    }

    #[tokio::test]
    async fn timeout_cap_and_cancellation() {
        let r = registry(HashMap::new());
        let owner = origin(Trust::Owner, "webchat");
        let (ok, out) = call(&r, &owner, "read", r#"{"sleep":5000}"#).await.unwrap();
        assert!(!ok && out.contains("timed out"), "{out}");
        let (ok, out) = call(&r, &owner, "read", r#"{"big":200000}"#).await.unwrap();
        assert!(ok && out.len() < MAX_OUTPUT + 100 && out.contains("output truncated"));
        let c = cx(&owner);
        let cancel = c.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        let r2 = r
            .call(&c, &Scope::of(&owner), "read", r#"{"sleep":150}"#)
            .await;
        assert!(r2.is_none(), "a cancelled call has no result");
    }
}
