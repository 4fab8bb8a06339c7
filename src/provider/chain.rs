//! One model turn across the fallback chain, with retries and credential
//! rotation.
//!
//! Per turn, in this order, each step decided by the error's type:
//! 1. transient errors (server, timeout, network, malformed or cut streams)
//!    are retried with jittered backoff; a rate limit waits out a short
//!    `retry-after`;
//! 2. credential problems (rate limit, auth, billing) rotate to the
//!    provider's next available credential, and the failed one cools down
//!    (see `credentials`); a provider-wide failure that outlived its retries
//!    (server, timeout, network) cools the credential it used and skips the
//!    provider's other credentials, which share the same endpoint;
//! 3. then the next model in `fallbacks`; a bad request or context overflow
//!    goes there directly (another key would not help).
//!
//! The credential that answered sticks to the session until it fails.
//! Cooling and disabled credentials are skipped; if that leaves nothing to
//! try at all, the soonest-ready credential of each model is tried anyway
//! rather than failing without a call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{ChatRequest, ChatResponse, ProviderEntry, ProviderError, Providers};
use crate::config::{Credential, ModelChain};

/// Attempts per credential for transient errors.
const ATTEMPTS: u32 = 3;
/// Attempts when the provider cannot be reached at all (connection refused,
/// DNS): one quick retry, then move on.
const NETWORK_ATTEMPTS: u32 = 2;
/// The longest `retry-after` waited out in the turn; longer ones rotate.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The reply, which model ref and which credential produced it.
pub struct ChainReply {
    pub response: ChatResponse,
    pub model_ref: String,
    pub credential: String,
}

#[derive(Debug, PartialEq)]
enum Step {
    Retry(Duration),
    /// This credential is the problem: cool it, try the provider's next one.
    Rotate,
    /// The endpoint is the problem: cool this credential, next model.
    SkipProvider,
    /// The request is the problem: next model, credential untouched.
    SkipModel,
}

fn decide(e: &ProviderError, attempts: u32) -> Step {
    let retry = |max: u32, then: Step| {
        if attempts < max {
            Step::Retry(backoff(attempts - 1))
        } else {
            then
        }
    };
    match e {
        ProviderError::RateLimited { retry_after } => match retry_after {
            Some(d) if *d > MAX_RETRY_AFTER => Step::Rotate,
            Some(d) if attempts < ATTEMPTS => Step::Retry(*d),
            _ => retry(ATTEMPTS, Step::Rotate),
        },
        ProviderError::Auth | ProviderError::Billing => Step::Rotate,
        ProviderError::Network(_) => retry(NETWORK_ATTEMPTS, Step::SkipProvider),
        ProviderError::Timeout
        | ProviderError::Server { .. }
        | ProviderError::MalformedResponse(_) => retry(ATTEMPTS, Step::SkipProvider),
        ProviderError::BadRequest(_)
        | ProviderError::ContextOverflow
        | ProviderError::Unavailable(_)
        | ProviderError::Cancelled => Step::SkipModel,
    }
}

/// The credentials to try for one provider, in order: the session's sticky
/// one, then the others in config order, skipping any that are cooling down.
/// `None` stands for a keyless provider. With `last_resort`, only the
/// soonest-ready one, cooling or not.
fn order<'a>(
    ps: &Providers,
    provider: &str,
    e: &'a ProviderEntry,
    session: &str,
    last_resort: bool,
) -> Vec<Option<&'a Credential>> {
    let book = ps.book();
    if e.credentials.is_empty() {
        return if last_resort || book.available(provider, "none") {
            vec![None]
        } else {
            vec![]
        };
    }
    if last_resort {
        return e
            .credentials
            .iter()
            .min_by_key(|c| book.state(provider, &c.id).until_ms)
            .map(Some)
            .into_iter()
            .collect();
    }
    let sticky = book.sticky(session, provider);
    let mut out: Vec<Option<&Credential>> = Vec::new();
    if let Some(c) = e
        .credentials
        .iter()
        .find(|c| Some(&c.id) == sticky.as_ref())
    {
        if book.available(provider, &c.id) {
            out.push(Some(c));
        }
    }
    for c in &e.credentials {
        if Some(&c.id) != sticky.as_ref() && book.available(provider, &c.id) {
            out.push(Some(c));
        }
    }
    out
}

/// Runs one model turn for `session` down the chain. Blocking; call from
/// the blocking pool. `on_restart` is called when a reply that already
/// streamed text is abandoned (its partial text must not stand).
pub fn run_chain(
    providers: &Providers,
    chain: &ModelChain,
    session: &str,
    req: &ChatRequest<'_>,
    on_delta: &mut dyn FnMut(&str),
    on_restart: &mut dyn FnMut(),
    cancel: &AtomicBool,
) -> Result<ChainReply, ProviderError> {
    let book = providers.book();
    let mut last = ProviderError::Network("no model configured".into());
    let mut tried = false;
    for last_resort in [false, true] {
        if last_resort && tried {
            break;
        }
        for model_ref in chain.refs() {
            let Some((pname, model)) = model_ref.split_once('/') else {
                continue;
            };
            let Some(entry) = providers.entry(pname) else {
                continue;
            };
            'creds: for cred in order(providers, pname, entry, session, last_resort) {
                tried = true;
                let cid = cred.map_or("none", |c| c.id.as_str());
                let mut attempts = 0;
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(ProviderError::Cancelled);
                    }
                    let mut emitted = false;
                    let mut sink = |d: &str| {
                        emitted = true;
                        on_delta(d)
                    };
                    let r =
                        entry
                            .provider
                            .chat(model, req, cred.map(|c| &c.key), &mut sink, cancel);
                    let e = match r {
                        Ok(response) => {
                            book.success(session, pname, cid);
                            return Ok(ChainReply {
                                response,
                                model_ref: model_ref.to_string(),
                                credential: cid.to_string(),
                            });
                        }
                        Err(ProviderError::Cancelled) => return Err(ProviderError::Cancelled),
                        Err(e) => e.redacted(&entry.credentials),
                    };
                    attempts += 1;
                    tracing::warn!(model = model_ref, credential = cid, attempt = attempts, error = %e, "provider call failed");
                    if emitted {
                        on_restart();
                    }
                    let next = decide(&e, attempts);
                    match next {
                        Step::Retry(wait) => {
                            sleep_cancellable(wait, cancel);
                            continue;
                        }
                        Step::Rotate => {
                            book.failure(pname, cid, &e);
                            last = e;
                            continue 'creds;
                        }
                        Step::SkipProvider => {
                            book.failure(pname, cid, &e);
                            last = e;
                            break 'creds;
                        }
                        Step::SkipModel => {
                            book.note(pname, cid, &e);
                            last = e;
                            break 'creds;
                        }
                    }
                }
            }
        }
    }
    Err(last)
}

/// 250 ms × 2^attempt with ±50% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64 << attempt.min(6);
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = u16::from_le_bytes(b) as u64 % base;
    Duration::from_millis(base / 2 + r)
}

fn sleep_cancellable(d: Duration, cancel: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::provider::Provider;
    use std::sync::{Arc, Mutex};

    /// Answers from a script, per credential id, and records the calls.
    struct Scripted {
        script: Mutex<Vec<(String, Result<ChatResponse, ProviderError>)>>,
        calls: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(s: Vec<(&str, Result<ChatResponse, ProviderError>)>) -> Arc<Scripted> {
            Arc::new(Scripted {
                script: Mutex::new(s.into_iter().map(|(k, r)| (k.to_string(), r)).collect()),
                calls: Mutex::new(Vec::new()),
            })
        }
    }

    impl Provider for Scripted {
        fn chat(
            &self,
            _m: &str,
            _r: &ChatRequest<'_>,
            key: Option<&Secret>,
            d: &mut dyn FnMut(&str),
            _c: &AtomicBool,
        ) -> Result<ChatResponse, ProviderError> {
            let k = key.map_or("none".to_string(), |k| k.expose().to_string());
            self.calls.lock().unwrap().push(k.clone());
            d("x");
            let mut s = self.script.lock().unwrap();
            let i = s
                .iter()
                .position(|(sk, _)| *sk == k || sk == "*")
                .unwrap_or_else(|| panic!("no scripted answer for {k}"));
            s.remove(i).1
        }
    }

    fn ok(t: &str) -> Result<ChatResponse, ProviderError> {
        Ok(ChatResponse {
            text: t.into(),
            ..Default::default()
        })
    }

    fn creds(keys: &[&str]) -> Vec<Credential> {
        keys.iter()
            .map(|k| Credential {
                id: format!("id-{k}"),
                key: Secret::new(*k),
            })
            .collect()
    }

    fn run(
        ps: &Providers,
        chain: &ModelChain,
        session: &str,
    ) -> (Result<ChainReply, ProviderError>, u32) {
        let req = ChatRequest {
            system: "",
            transcript: &[],
            tools: &[],
        };
        let mut restarts = 0;
        let r = run_chain(
            ps,
            chain,
            session,
            &req,
            &mut |_| {},
            &mut || restarts += 1,
            &AtomicBool::new(false),
        );
        (r, restarts)
    }

    fn chain(p: &str, f: &[&str]) -> ModelChain {
        ModelChain {
            primary: p.into(),
            fallbacks: f.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn retries_transient_then_falls_back() {
        let mut ps = Providers::default();
        let a = Scripted::new(vec![
            ("none", Err(ProviderError::Server { status: 500 })),
            ("none", Err(ProviderError::Auth)),
        ]);
        ps.insert("a", a.clone(), vec![]);
        ps.insert("b", Scripted::new(vec![("none", ok("ok"))]), vec![]);
        let (r, restarts) = run(&ps, &chain("a/m", &["b/m"]), "s");
        let r = r.unwrap();
        assert_eq!(
            (r.model_ref.as_str(), r.response.text.as_str()),
            ("b/m", "ok")
        );
        assert_eq!(restarts, 2, "both abandoned partial replies were withdrawn");
        assert!(
            !ps.book().available("a", "none"),
            "the failed provider cools down"
        );
    }

    #[test]
    fn rate_limit_rotates_to_the_next_key_and_sticks() {
        let mut ps = Providers::default();
        let long = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        let a = Scripted::new(vec![
            ("k1", Err(long)),
            ("k2", ok("one")),
            ("k2", ok("two")),
        ]);
        ps.insert("a", a.clone(), creds(&["k1", "k2"]));
        let c = chain("a/m", &[]);
        let r = run(&ps, &c, "s").0.unwrap();
        assert_eq!(
            (r.response.text.as_str(), r.credential.as_str()),
            ("one", "id-k2")
        );
        assert_eq!(
            ps.book().state("a", "id-k1").reason.as_deref(),
            Some("cooldown")
        );
        // The next turn goes straight to the sticky, healthy key.
        let r = run(&ps, &c, "s").0.unwrap();
        assert_eq!(r.response.text, "two");
        assert_eq!(*a.calls.lock().unwrap(), ["k1", "k2", "k2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_keeps_its_key_after_the_other_recovers() {
        use crate::provider::credentials::{CredentialBook, TokioClock};
        let book = Arc::new(CredentialBook::new(Arc::new(TokioClock::new(1_000_000))));
        let mut ps = Providers::new(book);
        let limited = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        let a = Scripted::new(vec![
            ("k1", Err(limited)),
            ("k2", ok("s")),
            ("k2", ok("s again")),
            ("k1", ok("t")),
        ]);
        ps.insert("a", a.clone(), creds(&["k1", "k2"]));
        let c = chain("a/m", &[]);
        assert_eq!(run(&ps, &c, "s").0.unwrap().response.text, "s");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            ps.book().available("a", "id-k1"),
            "k1 is back after its minute"
        );
        // Session s stays on k2 (prompt caches live per key); a new one starts on k1.
        assert_eq!(run(&ps, &c, "s").0.unwrap().response.text, "s again");
        assert_eq!(run(&ps, &c, "t").0.unwrap().response.text, "t");
        assert_eq!(*a.calls.lock().unwrap(), ["k1", "k2", "k2", "k1"]);
    }

    #[test]
    fn auth_failure_disables_the_key_and_rotates() {
        let mut ps = Providers::default();
        let a = Scripted::new(vec![("k1", Err(ProviderError::Auth)), ("k2", ok("fine"))]);
        ps.insert("a", a, creds(&["k1", "k2"]));
        let r = run(&ps, &chain("a/m", &[]), "s").0.unwrap();
        assert_eq!(r.credential, "id-k2");
        assert_eq!(
            ps.book().state("a", "id-k1").reason.as_deref(),
            Some("auth")
        );
    }

    #[test]
    fn server_outage_skips_the_other_keys_and_falls_back() {
        let mut ps = Providers::default();
        let a = Scripted::new(vec![("*", Err(ProviderError::Server { status: 503 }))]);
        for _ in 0..5 {
            a.script
                .lock()
                .unwrap()
                .push(("*".into(), Err(ProviderError::Server { status: 503 })));
        }
        ps.insert("a", a.clone(), creds(&["k1", "k2"]));
        ps.insert("b", Scripted::new(vec![("none", ok("from b"))]), vec![]);
        let r = run(&ps, &chain("a/m", &["b/m"]), "s").0.unwrap();
        assert_eq!(r.response.text, "from b");
        assert_eq!(
            *a.calls.lock().unwrap(),
            ["k1", "k1", "k1"],
            "k2 shares the endpoint"
        );
    }

    #[test]
    fn bad_request_goes_to_the_next_model_without_cooling() {
        let mut ps = Providers::default();
        ps.insert(
            "a",
            Scripted::new(vec![("k1", Err(ProviderError::ContextOverflow))]),
            creds(&["k1", "k2"]),
        );
        ps.insert("b", Scripted::new(vec![("none", ok("bigger"))]), vec![]);
        let r = run(&ps, &chain("a/m", &["b/m"]), "s").0.unwrap();
        assert_eq!(r.model_ref, "b/m");
        assert!(ps.book().available("a", "id-k1"));
        assert!(ps.book().state("a", "id-k1").last_error.is_some());
    }

    #[test]
    fn everything_cooling_still_tries_the_soonest_key() {
        let mut ps = Providers::default();
        let a = Scripted::new(vec![("k2", ok("tried anyway"))]);
        ps.insert("a", a, creds(&["k1", "k2"]));
        ps.book().failure("a", "id-k1", &ProviderError::Auth); // a day
        ps.book().failure("a", "id-k2", &ProviderError::Timeout); // a minute
        let r = run(&ps, &chain("a/m", &[]), "s").0.unwrap();
        assert_eq!(r.response.text, "tried anyway");
    }

    #[test]
    fn keys_in_error_messages_are_redacted() {
        let mut ps = Providers::default();
        let a = Scripted::new(vec![(
            "sk-secret-1234",
            Err(ProviderError::BadRequest(
                "bad key sk-secret-1234 here".into(),
            )),
        )]);
        ps.insert("a", a, creds(&["sk-secret-1234"]));
        let e = run(&ps, &chain("a/m", &[]), "s").0.err().unwrap();
        assert_eq!(e, ProviderError::BadRequest("bad key *** here".into()));
        let st = ps.book().state("a", "id-sk-secret-1234");
        assert!(!st.last_error.unwrap().contains("sk-secret-1234"));
    }

    #[test]
    fn decisions_follow_the_type() {
        assert!(matches!(decide(&ProviderError::Timeout, 1), Step::Retry(_)));
        assert_eq!(decide(&ProviderError::Timeout, 3), Step::SkipProvider);
        assert!(matches!(
            decide(&ProviderError::Network("x".into()), 1),
            Step::Retry(_)
        ));
        assert_eq!(
            decide(&ProviderError::Network("x".into()), 2),
            Step::SkipProvider
        );
        assert_eq!(
            decide(
                &ProviderError::RateLimited {
                    retry_after: Some(Duration::from_secs(2))
                },
                1
            ),
            Step::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            decide(
                &ProviderError::RateLimited {
                    retry_after: Some(Duration::from_secs(60))
                },
                1
            ),
            Step::Rotate
        );
        assert_eq!(decide(&ProviderError::Billing, 1), Step::Rotate);
        assert_eq!(
            decide(&ProviderError::BadRequest("x".into()), 1),
            Step::SkipModel
        );
    }
}
