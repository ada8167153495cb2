//! The server's configuration and shared state.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaos_agents::{Agent, Hook, KaosRuntime, Runner, SessionStore};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::{Semaphore, watch};

use crate::auth::TokenSet;

/// The server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (bigger → 413 `body_too_large`).
    pub max_body_bytes: usize,
    /// Longest message, in characters (longer → 422 `message_too_long`).
    pub max_message_chars: usize,
    /// Turns in flight at once (beyond → 503 `too_many_turns` with `Retry-After`).
    pub max_concurrent_turns: usize,
    /// Wall-clock limit of one turn (then it ends with outcome `timeout`).
    pub turn_timeout: Duration,
    /// How long a turn waits for a busy session (then 409 `session_busy`).
    pub busy_wait: Duration,
    /// SSE keep-alive comment interval while a turn is idle.
    pub keep_alive: Duration,
    /// The `Retry-After` seconds of 503 answers.
    pub retry_after_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_message_chars: 100_000,
            max_concurrent_turns: 2048,
            turn_timeout: Duration::from_secs(300),
            busy_wait: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            retry_after_secs: 1,
        }
    }
}

/// One agent the server serves, on the runtime that holds its tools and model clients.
/// Every agent of one server must share one session store (the first agent's is used for
/// the session routes).
#[derive(Debug, Clone)]
pub struct ServedAgent {
    /// The agent (its `name` is what requests pick it by).
    pub agent: Agent,
    /// Its runtime: tools, model clients, the session store.
    pub runtime: KaosRuntime,
}

/// Everything a [`crate::Server`] needs.
#[derive(Clone, Default)]
pub struct ServerConfig {
    /// The agents; the first is the default.
    pub agents: Vec<ServedAgent>,
    /// The bearer tokens (empty: no authentication; see [`crate::check_bind`]).
    pub tokens: TokenSet,
    /// The limits.
    pub limits: Limits,
    /// The tracer for HTTP server spans (pass the one the `OTelHook` uses, so `agent.turn`
    /// nests under the server span). `None`: no server spans.
    pub tracer: Option<SdkTracer>,
    /// Hooks attached to every runner (the `OTelHook`, an audit hook, ...).
    pub hooks: Vec<Arc<dyn Hook>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field(
                "agents",
                &self
                    .agents
                    .iter()
                    .map(|a| &a.agent.name)
                    .collect::<Vec<_>>(),
            )
            .field("tokens", &self.tokens)
            .field("limits", &self.limits)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

/// A served agent with its ready runner.
pub(crate) struct AgentSlot {
    pub agent: Agent,
    pub runtime: KaosRuntime,
    pub runner: Runner,
}

pub(crate) struct Inner {
    pub agents: Vec<AgentSlot>,
    pub allowed_models: HashSet<String>,
    pub tokens: TokenSet,
    pub limits: Limits,
    pub tracer: Option<SdkTracer>,
    pub hooks: Vec<Arc<dyn Hook>>,
    pub turns: Arc<Semaphore>,
    pub draining: AtomicBool,
    pub cancel: watch::Sender<bool>,
    session_locks: Mutex<SessionLocks>,
}

#[derive(Default)]
struct SessionLocks {
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    sweep_at: usize,
}

/// The state every handler shares. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A configuration the server cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No agent was given.
    #[error("no agent to serve (give at least one)")]
    NoAgents,
    /// Two agents share a name.
    #[error("two agents are named {0:?}; requests pick agents by name")]
    DuplicateAgent(String),
    /// A limit is zero.
    #[error("limit `{0}` must be greater than zero")]
    ZeroLimit(&'static str),
}

impl AppState {
    pub(crate) fn new(config: ServerConfig) -> Result<Self, ServerError> {
        if config.agents.is_empty() {
            return Err(ServerError::NoAgents);
        }
        let l = &config.limits;
        for (name, zero) in [
            ("max_body_bytes", l.max_body_bytes == 0),
            ("max_message_chars", l.max_message_chars == 0),
            ("max_concurrent_turns", l.max_concurrent_turns == 0),
            ("turn_timeout", l.turn_timeout.is_zero()),
            ("keep_alive", l.keep_alive.is_zero()),
        ] {
            if zero {
                return Err(ServerError::ZeroLimit(name));
            }
        }
        let mut names = HashSet::new();
        let mut agents = Vec::new();
        let mut allowed_models = HashSet::new();
        for served in config.agents {
            if !names.insert(served.agent.name.clone()) {
                return Err(ServerError::DuplicateAgent(served.agent.name));
            }
            allowed_models.insert(served.agent.model.clone());
            let runner = build_runner(&config.hooks, served.agent.clone(), served.runtime.clone());
            agents.push(AgentSlot {
                agent: served.agent,
                runtime: served.runtime,
                runner,
            });
        }
        let (cancel, _) = watch::channel(false);
        Ok(Self(Arc::new(Inner {
            agents,
            allowed_models,
            tokens: config.tokens,
            turns: Arc::new(Semaphore::new(config.limits.max_concurrent_turns)),
            limits: config.limits,
            tracer: config.tracer,
            hooks: config.hooks,
            draining: AtomicBool::new(false),
            cancel,
            session_locks: Mutex::default(),
        })))
    }
}

impl Inner {
    /// The agent named `name` (default: the first).
    pub(crate) fn agent(&self, name: Option<&str>) -> Option<&AgentSlot> {
        match name {
            None => self.agents.first(),
            Some(n) => self.agents.iter().find(|a| a.agent.name == n),
        }
    }

    /// The session store (the first agent's).
    pub(crate) fn store(&self) -> Option<&Arc<dyn SessionStore>> {
        self.agents.first().map(|a| a.runtime.store())
    }

    /// A runner for `agent` on `runtime` with the server's hooks.
    pub(crate) fn runner_for(&self, agent: Agent, runtime: KaosRuntime) -> Runner {
        build_runner(&self.hooks, agent, runtime)
    }

    /// Whether the server is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The in-process lock of a (scoped) session: one turn at a time per session here;
    /// across replicas the session store serializes.
    pub(crate) fn session_lock(&self, scoped_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut table = self
            .session_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.locks.len() >= table.sweep_at.max(1024) {
            table.locks.retain(|_, l| Arc::strong_count(l) > 1);
            table.sweep_at = table.locks.len() * 2;
        }
        table
            .locks
            .entry(scoped_id.to_string())
            .or_default()
            .clone()
    }

    /// Turns in flight.
    pub(crate) fn turns_in_flight(&self) -> usize {
        self.limits
            .max_concurrent_turns
            .saturating_sub(self.turns.available_permits())
    }
}

fn build_runner(hooks: &[Arc<dyn Hook>], agent: Agent, runtime: KaosRuntime) -> Runner {
    let mut runner = Runner::new(agent, runtime);
    for h in hooks {
        runner = runner.with_shared_hook(h.clone());
    }
    runner
}
