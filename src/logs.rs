//! The log tail the gateway serves (`logs.tail`, the console's log view):
//! the daemon's recent log lines in a bounded ring in memory, beside the
//! normal stderr/journald output. A leaf module.
//!
//! Bounded by lines and bytes ([`MAX_LINES`], [`MAX_BYTES`]; a single line
//! is cut at [`MAX_LINE`]), so a chatty component cannot grow it. Each line
//! has a number; a reader's cursor is the number after the last line it
//! got. A cursor older than the ring's first line comes back with
//! `reset` (lines were lost between two reads).
//!
//! Secrets: log lines never carry a key by design (secrets are
//! [`crate::secret::Secret`], URLs with tokens are scrubbed where they are
//! logged), and [`scrub`] masks the configured secrets once more before
//! a line leaves the gateway.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, OnceLock};

pub const MAX_LINES: usize = 2000;
pub const MAX_BYTES: usize = 512 * 1024;
pub const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Inner {
    lines: VecDeque<String>,
    /// The number of `lines[0]`.
    first: u64,
    bytes: usize,
}

/// Recent log lines.
#[derive(Default)]
pub struct Ring {
    inner: Mutex<Inner>,
}

/// One `tail` answer.
#[derive(Debug, PartialEq)]
pub struct Tail {
    pub lines: Vec<String>,
    /// Pass this back for the lines after these.
    pub cursor: u64,
    /// The cursor asked for was older than the ring: lines were lost.
    pub reset: bool,
    /// More lines than `limit`/`max_bytes` were waiting; call again.
    pub truncated: bool,
    /// Bytes held now.
    pub size: usize,
}

impl Ring {
    pub fn push(&self, line: &str) {
        let mut line = line.trim_end_matches(['\n', '\r']).to_string();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.bytes += line.len();
        g.lines.push_back(line);
        while g.lines.len() > MAX_LINES || g.bytes > MAX_BYTES {
            let Some(old) = g.lines.pop_front() else {
                break;
            };
            g.bytes -= old.len();
            g.first += 1;
        }
    }

    /// The lines from `cursor` on (or the last `limit` without one), at
    /// most `limit` lines and about `max_bytes` bytes.
    pub fn tail(&self, cursor: Option<u64>, limit: usize, max_bytes: usize) -> Tail {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let end = g.first + g.lines.len() as u64;
        let (start, reset) = match cursor {
            None => (end.saturating_sub(limit as u64).max(g.first), false),
            Some(c) if c < g.first => (g.first, true),
            Some(c) => (c.min(end), false),
        };
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut at = start;
        while at < end && lines.len() < limit {
            let l = &g.lines[(at - g.first) as usize];
            if !lines.is_empty() && bytes + l.len() > max_bytes {
                break;
            }
            bytes += l.len();
            lines.push(l.clone());
            at += 1;
        }
        Tail {
            lines,
            cursor: at,
            reset,
            truncated: at < end,
            size: g.bytes,
        }
    }
}

/// The process's ring (fed by the logging set up in [`crate::init_logging`]).
pub fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(Ring::default)
}

/// A `tracing_subscriber` writer into [`ring`]: one formatted event per
/// write call sequence, pushed when the writer is dropped.
pub struct RingWriter(Vec<u8>);

impl io::Write for RingWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.0.len() < MAX_LINE * 2 {
            self.0.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            for l in String::from_utf8_lossy(&self.0).lines() {
                ring().push(l);
            }
        }
    }
}

pub fn ring_writer() -> RingWriter {
    RingWriter(Vec::new())
}

/// Masks every occurrence of a secret (8 characters or longer), the
/// password of a URL (`scheme://user:password@host`) and Telegram bot
/// tokens in URLs (`/bot<id>:<secret>/`).
pub fn scrub(line: &str, secrets: &[&str]) -> String {
    let mut s = url_passwords(line);
    for sec in secrets.iter().filter(|x| x.len() >= 8) {
        if s.contains(sec) {
            s = s.replace(sec, "****");
        }
    }
    let mut from = 0;
    while let Some(i) = s[from..].find("/bot").map(|i| i + from) {
        from = i + 4;
        let rest = &s[from..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(':') {
            continue;
        }
        let tok_start = from + digits + 1;
        let tok_len = s[tok_start..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        s.replace_range(tok_start..tok_start + tok_len, "****");
    }
    s
}

/// `://user:password@` → `://user:****@`, everywhere in `line`.
fn url_passwords(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let auth_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        match tail[..auth_end].rfind('@') {
            Some(at) => {
                let userinfo = &tail[..at];
                match userinfo.find(':') {
                    Some(c) => {
                        out.push_str(&userinfo[..c]);
                        out.push_str(":****");
                    }
                    None => out.push_str(userinfo),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_follows_a_cursor_and_says_when_lines_were_lost() {
        let r = Ring::default();
        for i in 0..10 {
            r.push(&format!("line {i}\n"));
        }
        let t = r.tail(None, 3, 1 << 20);
        assert_eq!(t.lines, ["line 7", "line 8", "line 9"]);
        assert_eq!((t.cursor, t.reset, t.truncated), (10, false, false));
        r.push("line 10");
        let t = r.tail(Some(10), 100, 1 << 20);
        assert_eq!(t.lines, ["line 10"]);
        let t = r.tail(Some(2), 3, 1 << 20);
        assert_eq!(t.lines, ["line 2", "line 3", "line 4"]);
        assert!(t.truncated);
        for i in 0..MAX_LINES {
            r.push(&format!("more {i}"));
        }
        let t = r.tail(Some(5), 1, 1 << 20);
        assert!(t.reset, "cursor 5 fell out of the ring");
        assert_eq!(t.lines, ["more 0"]);
    }

    #[test]
    fn the_ring_stays_bounded_by_bytes_and_cuts_long_lines() {
        let r = Ring::default();
        let big = "é".repeat(MAX_LINE);
        for _ in 0..1000 {
            r.push(&big);
        }
        let t = r.tail(None, MAX_LINES, usize::MAX);
        assert!(t.size <= MAX_BYTES, "{}", t.size);
        assert!(t.lines[0].len() <= MAX_LINE + '…'.len_utf8());
    }

    #[test]
    fn scrub_masks_configured_secrets_and_bot_tokens() {
        let s = scrub(
            "key sk-abcdef123456 and url https://api.telegram.org/bot123:AAE-x_y/getMe ok",
            &["sk-abcdef123456", "short"],
        );
        assert_eq!(
            s,
            "key **** and url https://api.telegram.org/bot123:****/getMe ok"
        );
        assert_eq!(
            scrub("/botany then /bot1:AAA-b and /bot2:CC", &[]),
            "/botany then /bot1:**** and /bot2:****"
        );
        assert_eq!(scrub("nothing here", &[]), "nothing here");
        assert_eq!(
            scrub("url=mqtt://home:pw-1@broker:1883 and https://a.b/x@y", &[]),
            "url=mqtt://home:****@broker:1883 and https://a.b/x@y"
        );
    }
}
