//! Credential health: cooldowns, disabled keys, last errors and per-session
//! stickiness, for every provider credential.
//!
//! A credential that keeps failing cools down 1 min → 5 min → 25 min → 1 h
//! (longer if the provider's `retry-after` says so); auth and billing
//! failures disable it for [`DISABLE_FOR`]. One success resets it. The state
//! is written through to redb (via the `persist` hook) and loaded at start,
//! so a restart does not hammer a rate-limited key. Time comes from a
//! [`Clock`], so the schedule is testable with tokio's paused time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ProviderError;

/// Cooldown after the 1st, 2nd, 3rd and later consecutive failures.
pub const SCHEDULE: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(25 * 60),
    Duration::from_secs(60 * 60),
];

/// How long an auth or billing failure takes a key out of rotation.
pub const DISABLE_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Sessions whose credential choice is remembered (in memory).
const MAX_STICKY: usize = 10_000;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::store::now_ms()
    }
}

/// Wall-clock time that follows tokio's clock from a fixed start, so tests
/// with `start_paused` can move it with `tokio::time::advance`.
#[cfg(test)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

#[cfg(test)]
impl TokioClock {
    pub fn new(base_ms: u64) -> TokioClock {
        TokioClock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

/// Persisted state of one credential (`provider/credential` in redb).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CredState {
    /// Consecutive failures that led to a cooldown.
    pub failures: u32,
    /// Out of rotation until then (ms since epoch); 0 = available.
    pub until_ms: u64,
    /// Why it is out: `cooldown`, `auth` or `billing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_ms: u64,
    #[serde(default)]
    pub last_ok_ms: u64,
}

type Persist = Box<dyn Fn(&str, &CredState) + Send + Sync>;

#[derive(Default)]
struct Inner {
    state: HashMap<String, CredState>,
    /// (session, provider) → credential id.
    sticky: HashMap<(String, String), String>,
}

pub struct CredentialBook {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    persist: Option<Persist>,
}

fn key(provider: &str, cred: &str) -> String {
    format!("{provider}/{cred}")
}

impl CredentialBook {
    pub fn new(clock: Arc<dyn Clock>) -> CredentialBook {
        CredentialBook {
            inner: Mutex::new(Inner::default()),
            clock,
            persist: None,
        }
    }

    /// Starts from saved state and writes every change through `persist`.
    pub fn with_state(
        clock: Arc<dyn Clock>,
        saved: Vec<(String, CredState)>,
        persist: Persist,
    ) -> CredentialBook {
        let b = CredentialBook {
            inner: Mutex::new(Inner::default()),
            clock,
            persist: Some(persist),
        };
        b.inner.lock().expect("book").state = saved.into_iter().collect();
        b
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn state(&self, provider: &str, cred: &str) -> CredState {
        let g = self.inner.lock().expect("book");
        g.state
            .get(&key(provider, cred))
            .cloned()
            .unwrap_or_default()
    }

    /// Usable now (not cooling down, not disabled).
    pub fn available(&self, provider: &str, cred: &str) -> bool {
        self.state(provider, cred).until_ms <= self.now_ms()
    }

    pub fn sticky(&self, session: &str, provider: &str) -> Option<String> {
        let g = self.inner.lock().expect("book");
        g.sticky
            .get(&(session.to_string(), provider.to_string()))
            .cloned()
    }

    fn update(&self, provider: &str, cred: &str, f: impl FnOnce(&mut CredState)) {
        let k = key(provider, cred);
        let snapshot = {
            let mut g = self.inner.lock().expect("book");
            let st = g.state.entry(k.clone()).or_default();
            let before = st.clone();
            f(st);
            (*st != before).then(|| st.clone())
        };
        if let (Some(st), Some(p)) = (snapshot, &self.persist) {
            p(&k, &st);
        }
    }

    /// A reply came back: the credential is healthy and sticks to the session.
    pub fn success(&self, session: &str, provider: &str, cred: &str) {
        let now = self.now_ms();
        {
            let mut g = self.inner.lock().expect("book");
            // Bounded: a household has few sessions, but channels can mint
            // many; forgetting stickiness only costs a prompt-cache miss.
            if g.sticky.len() >= MAX_STICKY {
                g.sticky.clear();
            }
            g.sticky.insert(
                (session.to_string(), provider.to_string()),
                cred.to_string(),
            );
        }
        self.update(provider, cred, |st| {
            st.failures = 0;
            st.until_ms = 0;
            st.reason = None;
            // Keep the last error for status output, but refresh last_ok
            // at most once a minute so steady use does not write every turn.
            if now.saturating_sub(st.last_ok_ms) >= 60_000 {
                st.last_ok_ms = now;
            }
        });
    }

    /// The credential failed with `e`: cool it down (or disable it for auth
    /// and billing) and unstick it from every session.
    pub fn failure(&self, provider: &str, cred: &str, e: &ProviderError) {
        let now = self.now_ms();
        {
            let mut g = self.inner.lock().expect("book");
            g.sticky
                .retain(|(_, p), c| !(p.as_str() == provider && c.as_str() == cred));
        }
        self.update(provider, cred, |st| {
            st.last_error = Some(e.to_string());
            st.last_error_ms = now;
            match e {
                ProviderError::Auth | ProviderError::Billing => {
                    st.reason = Some(
                        if matches!(e, ProviderError::Auth) {
                            "auth"
                        } else {
                            "billing"
                        }
                        .into(),
                    );
                    st.until_ms = now + DISABLE_FOR.as_millis() as u64;
                }
                _ => {
                    let step = SCHEDULE[(st.failures as usize).min(SCHEDULE.len() - 1)];
                    st.failures = st.failures.saturating_add(1);
                    let wait = match e {
                        ProviderError::RateLimited {
                            retry_after: Some(r),
                        } => step.max(*r),
                        _ => step,
                    };
                    st.reason = Some("cooldown".into());
                    st.until_ms = now + wait.as_millis() as u64;
                }
            }
        });
    }

    /// An error that says nothing about the credential (a bad request, a
    /// context overflow): only remembered for status output.
    pub fn note(&self, provider: &str, cred: &str, e: &ProviderError) {
        let now = self.now_ms();
        self.update(provider, cred, |st| {
            st.last_error = Some(e.to_string());
            st.last_error_ms = now;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> CredentialBook {
        CredentialBook::new(Arc::new(TokioClock::new(1_000_000)))
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_schedule_and_reset() {
        let b = book();
        let e = ProviderError::Server { status: 503 };
        for (i, want) in [60u64, 300, 1500, 3600, 3600].iter().enumerate() {
            b.failure("p", "k", &e);
            assert!(!b.available("p", "k"), "step {i}");
            tokio::time::advance(Duration::from_secs(want - 1)).await;
            assert!(
                !b.available("p", "k"),
                "step {i}: still cooling at {}s",
                want - 1
            );
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(b.available("p", "k"), "step {i}: back after {want}s");
        }
        assert_eq!(b.state("p", "k").failures, 5);
        b.success("s", "p", "k");
        assert_eq!(b.state("p", "k").failures, 0);
        b.failure("p", "k", &e);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            b.available("p", "k"),
            "a success resets the schedule to 1 min"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_longer_than_the_step_wins() {
        let b = book();
        b.failure(
            "p",
            "k",
            &ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(120)),
            },
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!b.available("p", "k"));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.available("p", "k"));
    }

    #[tokio::test(start_paused = true)]
    async fn auth_and_billing_disable_for_a_day() {
        let b = book();
        b.failure("p", "a", &ProviderError::Auth);
        b.failure("p", "b", &ProviderError::Billing);
        tokio::time::advance(Duration::from_secs(23 * 3600)).await;
        assert!(!b.available("p", "a") && !b.available("p", "b"));
        assert_eq!(b.state("p", "a").reason.as_deref(), Some("auth"));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(b.available("p", "a") && b.available("p", "b"));
    }

    #[test]
    fn stickiness_until_failure_and_persistence() {
        let saved = Arc::new(Mutex::new(Vec::new()));
        let s2 = saved.clone();
        let b = CredentialBook::with_state(
            Arc::new(SystemClock),
            vec![],
            Box::new(move |k, st| s2.lock().unwrap().push((k.to_string(), st.clone()))),
        );
        b.success("sess", "p", "k2");
        assert_eq!(b.sticky("sess", "p").as_deref(), Some("k2"));
        assert_eq!(b.sticky("other", "p"), None);
        b.failure("p", "k2", &ProviderError::Timeout);
        assert_eq!(b.sticky("sess", "p"), None);
        let last = saved.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.0, "p/k2");
        assert_eq!(last.1.failures, 1);
        // A restart starts from the saved state.
        let b2 = CredentialBook::with_state(Arc::new(SystemClock), vec![last], Box::new(|_, _| {}));
        assert!(!b2.available("p", "k2"));
    }
}
