//! Session transcripts as a memory source: each session of an agent is
//! indexed as `sessions/<session key>`, rendered from the state database
//! (messages of the user and the assistant, with their time; tool traffic
//! and compaction summaries are left out). A transcript is re-rendered when
//! its entry count or last update changes; content-defined chunking means
//! only its newest chunks are new, so a growing conversation embeds only
//! what it added.

use super::{MemoryError, Transcripts, SESSIONS_DIR};
use crate::store::{Entry, Role, Store};

/// One agent's sessions in the state database.
pub struct StoreTranscripts<'a> {
    pub store: &'a Store,
    pub agent: &'a str,
}

impl Transcripts for StoreTranscripts<'_> {
    fn list(&self) -> Vec<(String, u64, u64)> {
        match self.store.sessions().list() {
            Ok(list) => list
                .into_iter()
                .filter(|s| s.agent_id == self.agent && s.next_index > 0)
                .map(|s| {
                    (
                        format!("{SESSIONS_DIR}{}", s.key),
                        s.next_index,
                        s.updated_ms,
                    )
                })
                .collect(),
            Err(e) => {
                tracing::warn!("memory: cannot list sessions: {e}");
                Vec::new()
            }
        }
    }

    fn text(&self, path: &str) -> Option<String> {
        let key = path.strip_prefix(SESSIONS_DIR)?;
        match self.store.transcripts().all(key) {
            Ok(e) => Some(render(&e)),
            Err(e) => {
                tracing::warn!("memory: cannot read the transcript of {key}: {e}");
                None
            }
        }
    }
}

/// The indexed text of a transcript.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let who = match e.role {
            Role::User => "user",
            Role::Assistant if e.state.is_none() => "assistant",
            _ => continue,
        };
        let text = e.text.trim();
        if text.is_empty() {
            continue;
        }
        let ts = crate::util::rfc3339(e.ts);
        let when = ts.get(..16).unwrap_or(&ts).replace('T', " ");
        out.push_str(&format!("[{when}] {who}: {text}\n"));
    }
    out
}

/// Lines of a transcript for `memory_get` (1-based `from`); the caller
/// checked that the session exists and is the agent's.
pub fn get(store: &Store, path: &str, from: usize, lines: usize) -> Result<String, MemoryError> {
    let key = path
        .strip_prefix(SESSIONS_DIR)
        .ok_or_else(|| MemoryError::BadRequest(format!("{path:?} is not a session path")))?;
    let entries = store
        .transcripts()
        .all(key)
        .map_err(|e| MemoryError::BadRequest(format!("cannot read {path}: {e}")))?;
    Ok(render(&entries)
        .lines()
        .skip(from.max(1) - 1)
        .take(lines.max(1))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_keeps_the_conversation_only() {
        let mut tool = Entry::new(Role::Tool, "{\"files\": []}", None);
        tool.ts = 0;
        let mut sum = Entry::new(Role::System, "summary", None);
        sum.state = Some("compaction".into());
        let mut err = Entry::new(Role::Assistant, "The model provider failed", None);
        err.state = Some("error".into());
        let mut u = Entry::new(Role::User, "where are the spare keys?\nthe blue ones", None);
        u.ts = 86_400_000 + 90_000;
        let a = Entry {
            ts: 86_400_000 + 95_000,
            ..Entry::new(Role::Assistant, "In the drawer.", None)
        };
        let t = render(&[u, tool, sum, err, a]);
        assert_eq!(
            t,
            "[1970-01-02 00:01] user: where are the spare keys?\nthe blue ones\n\
             [1970-01-02 00:01] assistant: In the drawer.\n"
        );
    }

    #[test]
    fn memory_get_reads_own_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let e = |r, t: &str| Entry::new(r, t, None);
        store
            .transcripts()
            .append(
                "agent:main:main",
                "main",
                &[e(Role::User, "first"), e(Role::Assistant, "second")],
            )
            .unwrap();
        store
            .transcripts()
            .append("agent:work:main", "work", &[e(Role::User, "private")])
            .unwrap();
        let cfg = crate::config::Config::embedded();
        let mem = crate::memory::service::Memory::new(
            dir.path(),
            cfg.memory.clone(),
            cfg.models.clone(),
            Some(store),
        );
        let get = |path: &str| {
            let args = serde_json::json!({"path": path, "from": 2}).to_string();
            mem.tool("main", dir.path(), None, "memory_get", &args)
        };
        let out = get("sessions/agent:main:main").unwrap();
        assert!(
            out.ends_with("assistant: second") && !out.contains("first"),
            "{out}"
        );
        assert!(get("sessions/agent:work:main")
            .unwrap_err()
            .contains("no session"));
        assert!(get("sessions/nope").is_err());
    }
}
