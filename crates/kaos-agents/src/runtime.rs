//! [`KaosRuntime`]: what a runner runs against — tools, sessions and model clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaos_llm::{LlmClient, LlmError};

use crate::session::{InMemoryStore, SessionStore};
use crate::tools::{Tool, ToolHost, ToolRegistry, ToolSource};

/// How long a turn waits for a session another turn holds, unless configured.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(30);

/// Tools, a session store and a model-client registry.
///
/// `with_client(spec, client)` is the offline seam: a model spec registered here is served
/// by that client; any other spec is built by `kaos_llm::create_client` (from the
/// environment) on first use and cached.
#[derive(Clone)]
pub struct KaosRuntime {
    tools: ToolRegistry,
    sources: Vec<Arc<dyn ToolSource>>,
    store: Arc<dyn SessionStore>,
    clients: HashMap<String, Arc<dyn LlmClient>>,
    created: Arc<Mutex<HashMap<String, Arc<dyn LlmClient>>>>,
    session_locks: Arc<Mutex<SessionLocks>>,
    session_wait: Duration,
}

/// One async lock per session with a turn in flight; unused entries are swept when the
/// table doubles, so it stays proportional to the sessions in use.
#[derive(Default)]
struct SessionLocks {
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    sweep_at: usize,
}

impl std::fmt::Debug for KaosRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KaosRuntime")
            .field("tools", &self.tools)
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for KaosRuntime {
    fn default() -> Self {
        Self::test_mode()
    }
}

impl KaosRuntime {
    /// A runtime with this session store and nothing else.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            tools: ToolRegistry::default(),
            sources: Vec::new(),
            store,
            clients: HashMap::new(),
            created: Arc::new(Mutex::new(HashMap::new())),
            session_locks: Arc::default(),
            session_wait: DEFAULT_SESSION_WAIT,
        }
    }

    /// A runtime whose sessions live in memory: nothing touches disk.
    pub fn test_mode() -> Self {
        Self::new(Arc::new(InMemoryStore::new()))
    }

    /// Serves model spec `spec` with `client`.
    pub fn with_client(
        mut self,
        spec: impl Into<String>,
        client: impl LlmClient + 'static,
    ) -> Self {
        self.clients.insert(spec.into(), Arc::new(client));
        self
    }

    /// Serves model spec `spec` with a shared client.
    pub fn with_shared_client(
        mut self,
        spec: impl Into<String>,
        client: Arc<dyn LlmClient>,
    ) -> Self {
        self.clients.insert(spec.into(), client);
        self
    }

    /// Registers a tool.
    pub fn with_tool(mut self, tool: impl Tool + 'static) -> Self {
        self.tools.register(Arc::new(tool));
        self
    }

    /// Registers a shared tool.
    pub fn with_shared_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.register(tool);
        self
    }

    /// Adds a source of tools that can change while the runtime lives (e.g. MCP servers);
    /// its tools come after the registered ones, and a registered tool of the same name wins.
    pub fn with_tool_source(mut self, source: Arc<dyn ToolSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// The dynamic tool sources.
    pub fn tool_sources(&self) -> &[Arc<dyn ToolSource>] {
        &self.sources
    }

    /// A number that moves whenever a tool source's set changes.
    pub fn tools_generation(&self) -> u64 {
        self.sources.iter().fold(0u64, |acc, s| {
            acc.wrapping_mul(31).wrapping_add(s.generation())
        })
    }

    /// Every tool: the registered ones, then the sources' (skipping names already taken).
    pub fn all_tools(&self) -> Vec<Arc<dyn Tool>> {
        let mut all = self.tools.all().to_vec();
        for source in &self.sources {
            for tool in source.tools() {
                if all.iter().all(|t| t.name() != tool.name()) {
                    all.push(tool);
                }
            }
        }
        all
    }

    /// Replaces the session store.
    pub fn with_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = store;
        self
    }

    /// How long a turn waits for its session while another turn (in this or another
    /// process) holds it, before failing with `session_busy`. Default 30 s.
    pub fn with_session_wait(mut self, wait: Duration) -> Self {
        self.session_wait = wait;
        self
    }

    /// How long a turn waits for its session (see [`with_session_wait`](Self::with_session_wait)).
    pub fn session_wait(&self) -> Duration {
        self.session_wait
    }

    /// The tools.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The lock that serializes turns on one session, shared by every runner on this runtime
    /// (and its clones), so two turns on a session never interleave their read-modify-write.
    pub(crate) fn session_lock(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
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
            .entry(session_id.to_string())
            .or_default()
            .clone()
    }

    /// The client for a model spec: a registered one, or one built from the environment.
    pub fn client(&self, spec: &str) -> Result<Arc<dyn LlmClient>, LlmError> {
        if let Some(c) = self.clients.get(spec) {
            return Ok(c.clone());
        }
        let mut created = self
            .created
            .lock()
            .map_err(|_| LlmError::Config("client cache lock poisoned".into()))?;
        if let Some(c) = created.get(spec) {
            return Ok(c.clone());
        }
        let client = kaos_llm::create_client(spec).map_err(|e| match e {
            LlmError::InvalidModelSpec { spec, message } => LlmError::InvalidModelSpec {
                message: format!(
                    "{message} (register offline models with KaosRuntime::with_client; registered: {:?})",
                    self.clients.keys().collect::<Vec<_>>()
                ),
                spec,
            },
            other => other,
        })?;
        created.insert(spec.to_string(), client.clone());
        Ok(client)
    }
}

impl ToolHost for KaosRuntime {
    fn client(&self, spec: &str) -> Result<Arc<dyn LlmClient>, LlmError> {
        KaosRuntime::client(self, spec)
    }

    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }
}
