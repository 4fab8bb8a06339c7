//! Who may talk to the gateway.
//!
//! - **The token.** There is always one: `[gateway] token` from the config,
//!   or else `<state>/gateway.token` (mode 0600), made on the first start.
//!   Every client presents it in `connect`, on loopback too; local commands
//!   (`hearth chat`, `status`, ...) read the file. `hearth token --rotate`
//!   replaces the file; the daemon notices within [`WATCH_EVERY`] and closes
//!   the connections that signed in with the old one.
//! - **The Host header** must name the gateway itself (a loopback name, the
//!   address the client connected to, the bind address, the machine's
//!   hostname and `<hostname>.local`, or `[gateway] hostnames`), else 403:
//!   a DNS-rebinding page has its own domain in Host.
//! - **Browser origins**: a WebSocket with an `Origin` must come from the
//!   gateway's own origin or `[gateway] allowed_origins`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{GatewayConfig, Secret};

/// The generated token's file in the state dir.
pub const TOKEN_FILE: &str = "gateway.token";
/// How often the daemon looks for a rotated token file.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("cannot read the gateway token {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the gateway token {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the gateway token is set in the config ([gateway] token); change it there")]
    Configured,
}

/// A new random token: 32 bytes as 64 hex characters.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A token read from a file is usable when it is long enough and printable
/// without spaces (a cut-off write leaves an empty or short file).
fn usable(t: &str) -> bool {
    t.len() >= 16 && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic())
}

/// The token in `<dir>/gateway.token`, if the file holds a usable one.
pub fn read_token_file(dir: &Path) -> Result<Option<String>, TokenError> {
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|t| usable(t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// Writes a new random token to `<dir>/gateway.token` (0600, atomically).
pub fn write_new_token(dir: &Path) -> Result<String, TokenError> {
    let path = dir.join(TOKEN_FILE);
    let token = random_token();
    let tmp = dir.join(format!("{TOKEN_FILE}.tmp-{}", std::process::id()));
    let werr = |source| TokenError::Write {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    // `sudo hearth token --rotate` on a packaged install: the file belongs
    // to the state dir's owner (the daemon's user), not to root.
    if let Ok(m) = std::fs::metadata(dir) {
        if rustix::process::geteuid().is_root() && m.uid() != 0 {
            rustix::fs::fchown(
                &f,
                Some(rustix::fs::Uid::from_raw(m.uid())),
                Some(rustix::fs::Gid::from_raw(m.gid())),
            )
            .map_err(|e| werr(e.into()))?;
        }
    }
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(werr)?;
    std::fs::rename(&tmp, &path).map_err(werr)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(token)
}

/// The state-dir token, made now if there is none. `true` when it was made.
pub fn ensure_token_file(dir: &Path) -> Result<(String, bool), TokenError> {
    match read_token_file(dir)? {
        Some(t) => Ok((t, false)),
        None => Ok((write_new_token(dir)?, true)),
    }
}

/// The token the gateway checks: fixed (config) or the state-dir file.
pub struct Token {
    inner: Mutex<Current>,
    file: Option<PathBuf>,
}

struct Current {
    secret: Secret,
    /// (inode, mtime ns, length) of the file it was read from.
    stamp: Option<(u64, i64, u64)>,
    generation: u64,
}

fn stamp(p: &Path) -> Option<(u64, i64, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.len()))
}

impl Token {
    /// A token from the config (never changes while the daemon runs).
    pub fn fixed(secret: Secret) -> Token {
        Token {
            inner: Mutex::new(Current {
                secret,
                stamp: None,
                generation: 0,
            }),
            file: None,
        }
    }

    /// The config's token, or the state dir's (made now if missing).
    pub fn load(cfg: &GatewayConfig, state_dir: &Path) -> Result<Token, TokenError> {
        if let Some(t) = &cfg.token {
            return Ok(Token::fixed(t.clone()));
        }
        let path = state_dir.join(TOKEN_FILE);
        if path.exists() && read_token_file(state_dir)?.is_none() {
            tracing::warn!(path = %path.display(), "the gateway token file holds no usable token (16-512 printable characters); replacing it");
        }
        let (t, made) = ensure_token_file(state_dir)?;
        if made {
            tracing::info!(path = %path.display(), "made a gateway token; clients on this machine read it from there, others need it (`hearth token` prints it)");
        } else {
            tracing::info!(path = %path.display(), "gateway token from the state dir");
        }
        Ok(Token {
            inner: Mutex::new(Current {
                secret: Secret::new(t),
                stamp: stamp(&path),
                generation: 0,
            }),
            file: Some(path),
        })
    }

    /// Where the token lives, for `status` ("config" or the file).
    pub fn source(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "config ([gateway] token)".into(),
        }
    }

    /// Re-reads the file when it changed (`hearth token --rotate`). An
    /// unreadable or unusable file keeps the token in memory.
    pub fn refresh(&self) {
        let Some(path) = &self.file else { return };
        let now = stamp(path);
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || now == c.stamp {
            return;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        match read_token_file(dir) {
            Ok(Some(t)) if t != c.secret.expose() => {
                c.secret = Secret::new(t);
                c.generation += 1;
                tracing::info!(path = %path.display(), "the gateway token changed; connections with the old one are closed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}; keeping the current gateway token"),
        }
        c.stamp = now;
    }

    /// Bumped on every change; a connection remembers the one it signed in with.
    pub fn generation(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// The token now (to mask it in log lines a client reads).
    pub fn current(&self) -> Secret {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .secret
            .clone()
    }

    /// A short digest of the token now: device tokens issued under it are
    /// valid only while it is (rotating the token signs out every device).
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.current().expose().as_bytes())[..16].to_string()
    }

    /// Whether `got` is the token (constant time). Returns the generation
    /// it matched.
    pub fn check(&self, got: &str) -> Option<u64> {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        constant_time_eq(got.as_bytes(), c.secret.expose().as_bytes()).then_some(c.generation)
    }
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (*a.get(i).unwrap_or(&0) ^ *b.get(i).unwrap_or(&0)) as usize;
    }
    diff == 0
}

/// The names a request's Host header may carry (lowercase, no port).
pub struct HostPolicy {
    names: Vec<String>,
    bind: IpAddr,
}

/// The machine's hostname (uname; /proc may be hidden under systemd).
pub fn hostname() -> Option<String> {
    let u = rustix::system::uname();
    let n = u.nodename().to_str().ok()?.trim().to_ascii_lowercase();
    (!n.is_empty() && n != "(none)").then_some(n)
}

impl HostPolicy {
    pub fn new(cfg: &GatewayConfig) -> HostPolicy {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(h) = hostname() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
        names.extend(cfg.hostnames.iter().map(|h| h.to_ascii_lowercase()));
        HostPolicy {
            names,
            bind: cfg.bind.ip(),
        }
    }

    /// Whether `host` (the header, maybe with a port) names this gateway.
    /// `local` is the address the client connected to.
    pub fn allows(&self, host: Option<&str>, local: Option<IpAddr>) -> bool {
        let Some(name) = host.and_then(host_name) else {
            return false;
        };
        if self.names.contains(&name) {
            return true;
        }
        // an IPv4 client of a dual-stack socket is ::ffff:a.b.c.d there
        let local = local.map(|l| l.to_canonical());
        match name.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                ip.is_loopback()
                    || (!self.bind.is_unspecified() && ip == self.bind.to_canonical())
                    || Some(ip) == local
            }
            Err(_) => false,
        }
    }
}

pub use crate::util::host_name;

/// A browser origin may open the socket only if it is the gateway's own
/// origin (same host:port as the Host header, which [`HostPolicy`] checked)
/// or explicitly configured.
pub fn origin_allowed(origin: &str, host: &str, extra: &[String]) -> bool {
    if extra.iter().any(|o| o == origin) {
        return true;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!(rest, Some(h) if !host.is_empty() && h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bind: &str, extra: &[&str]) -> HostPolicy {
        let mut cfg = crate::config::Config::embedded().gateway;
        cfg.bind = bind.parse().unwrap();
        cfg.hostnames = extra.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(&cfg)
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("LocalHost:18789").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:18789").as_deref(), Some("::1"));
        assert_eq!(host_name("::1").as_deref(), Some("::1"));
        assert_eq!(host_name("hearth.local.").as_deref(), Some("hearth.local"));
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name("x:port"), None);
        assert_eq!(host_name("[::1]x"), None);
        assert_eq!(host_name(""), None);
    }

    #[test]
    fn hosts() {
        let p = policy("127.0.0.1:18789", &["Hearth.Example"]);
        assert!(p.allows(Some("localhost:18789"), None));
        assert!(p.allows(Some("127.0.0.1:18789"), None));
        assert!(p.allows(Some("127.0.0.2"), None));
        assert!(p.allows(Some("[::1]:18789"), None));
        assert!(p.allows(Some("hearth.example:18789"), None));
        assert!(!p.allows(Some("rebind.evil.example:18789"), None));
        assert!(!p.allows(Some("localhost.evil.example"), None));
        assert!(!p.allows(None, None));
        assert!(!p.allows(Some("192.168.1.9:18789"), None));
        let local = "192.168.1.9".parse().ok();
        assert!(p.allows(Some("192.168.1.9:18789"), local));
        let mapped = "::ffff:192.168.1.9".parse().ok();
        assert!(p.allows(Some("192.168.1.9:18789"), mapped));
        let lan = policy("10.0.0.5:18789", &[]);
        assert!(lan.allows(Some("10.0.0.5:18789"), None));
        if let Some(h) = hostname() {
            assert!(lan.allows(Some(&format!("{h}.local:18789")), None));
            assert!(lan.allows(Some(&h), None));
        }
    }

    #[test]
    fn origins() {
        use super::origin_allowed as ok;
        assert!(ok("http://127.0.0.1:18789", "127.0.0.1:18789", &[]));
        assert!(!ok("https://evil.example", "127.0.0.1:18789", &[]));
        assert!(!ok("http://localhost:3000", "127.0.0.1:18789", &[]));
        assert!(ok("https://ha.local", "x", &["https://ha.local".into()]));
        assert!(!ok("null", "127.0.0.1:18789", &[]));
    }

    #[test]
    fn token_file_is_private_and_rotates() {
        let d = tempfile::tempdir().unwrap();
        let (t, made) = ensure_token_file(d.path()).unwrap();
        assert!(made && t.len() == 64);
        let mode = std::fs::metadata(d.path().join(TOKEN_FILE)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ensure_token_file(d.path()).unwrap(), (t.clone(), false));
        let mut cfg = crate::config::Config::embedded().gateway;
        cfg.token = None;
        let tok = Token::load(&cfg, d.path()).unwrap();
        assert_eq!(tok.check(&t), Some(0));
        assert_eq!(tok.check("nope"), None);
        let t2 = write_new_token(d.path()).unwrap();
        tok.refresh();
        assert_eq!(tok.check(&t), None);
        assert_eq!(tok.check(&t2), Some(1));
        // a cut-off file is not a token: a new one is made
        std::fs::write(d.path().join(TOKEN_FILE), "").unwrap();
        assert!(read_token_file(d.path()).unwrap().is_none());
        assert!(ensure_token_file(d.path()).unwrap().1);
    }
}
