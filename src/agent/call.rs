//! The one model-call path. A run's turns and compaction's summary and
//! flush turns all call the model through [`ModelCall`]: the provider
//! chain runs on the blocking pool, streamed text comes back as
//! [`Next::Delta`], and the call stops at its next check when cancelled or
//! when the `ModelCall` is dropped (a run timeout, a client gone).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AgentCtx;
use crate::config::ModelChain;
use crate::provider::{run_chain, ChainReply, ChatRequest, ProviderError};
use crate::store::Entry;
use crate::tool::ToolSpec;

/// Why a model call ended without a reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Provider(ProviderError),
    #[error("model task failed: {0}")]
    Internal(String),
}

/// What a running call yields next.
pub enum Next {
    /// More reply text.
    Delta(String),
    /// The provider restarts its reply (a fallback after a partial
    /// stream): drop what streamed so far.
    Reset,
    Done(Result<ChainReply, CallError>),
}

type Joined = Result<Result<ChainReply, ProviderError>, tokio::task::JoinError>;

/// One model call in flight.
pub struct ModelCall {
    deltas: mpsc::UnboundedReceiver<Option<String>>,
    deltas_open: bool,
    job: JoinHandle<Result<ChainReply, ProviderError>>,
    joined: bool,
    finished: Option<Joined>,
    stop: Arc<AtomicBool>,
}

impl Drop for ModelCall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ModelCall {
    /// Starts `chain` on the blocking pool. `session` keys the sticky
    /// credential choice.
    pub fn start(
        ctx: &AgentCtx,
        chain: &ModelChain,
        session: &str,
        system: String,
        transcript: Vec<Entry>,
        tools: Vec<ToolSpec>,
    ) -> ModelCall {
        let (tx, rx) = mpsc::unbounded_channel::<Option<String>>();
        let stop = Arc::new(AtomicBool::new(false));
        let (providers, chain, key, flag) = (
            ctx.providers.clone(),
            chain.clone(),
            session.to_string(),
            stop.clone(),
        );
        let job = tokio::task::spawn_blocking(move || {
            let req = ChatRequest {
                system: &system,
                transcript: &transcript,
                tools: &tools,
            };
            let tx2 = tx.clone();
            run_chain(
                &providers,
                &chain,
                &key,
                &req,
                &mut |d| {
                    let _ = tx.send(Some(d.to_string()));
                },
                &mut || {
                    let _ = tx2.send(None);
                },
                &flag,
            )
        });
        ModelCall {
            deltas: rx,
            deltas_open: true,
            job,
            joined: false,
            finished: None,
            stop,
        }
    }

    /// The next delta or the end; `Done(Err(Cancelled))` as soon as
    /// `cancel` fires. Deltas sent just before the end come first.
    pub async fn next(&mut self, cancel: &CancellationToken) -> Next {
        loop {
            if let Some(r) = self.finished.take() {
                match self.deltas.try_recv() {
                    Ok(d) => {
                        self.finished = Some(r);
                        return d.map_or(Next::Reset, Next::Delta);
                    }
                    Err(_) => return Next::Done(ended(r)),
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.stop.store(true, Ordering::Relaxed);
                    return Next::Done(Err(CallError::Cancelled));
                }
                d = self.deltas.recv(), if self.deltas_open => match d {
                    Some(d) => return d.map_or(Next::Reset, Next::Delta),
                    None => self.deltas_open = false,
                },
                r = &mut self.job, if !self.joined => {
                    self.joined = true;
                    self.finished = Some(r);
                }
                else => return Next::Done(Err(CallError::Internal("the call has ended".into()))),
            }
        }
    }

    /// Waits for the end, ignoring the streamed text.
    pub async fn finish(mut self, cancel: &CancellationToken) -> Result<ChainReply, CallError> {
        loop {
            if let Next::Done(r) = self.next(cancel).await {
                return r;
            }
        }
    }
}

fn ended(r: Joined) -> Result<ChainReply, CallError> {
    match r {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(ProviderError::Cancelled)) => Err(CallError::Cancelled),
        Ok(Err(e)) => Err(CallError::Provider(e)),
        Err(e) => Err(CallError::Internal(e.to_string())),
    }
}
