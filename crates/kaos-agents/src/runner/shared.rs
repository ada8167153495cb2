//! [`Shared`]: what every turn of one runner reads — the agent, the runtime, the hooks, the
//! permission policy and the agent's tools (selected once, when the runner is built).

use std::sync::Arc;

use kaos_llm::ToolDefinition;
use kaos_llm::structured::Signature;

use super::prompts::{self, RespondOutput};
use crate::agent::Agent;
use crate::hooks::HookSet;
use crate::permissions::PermissionPolicy;
use crate::runtime::KaosRuntime;
use crate::tools::{Tool, ToolHost};

/// A runner's configuration, shared by its clones and by every turn it runs.
#[derive(Clone)]
pub(crate) struct Shared {
    pub agent: Arc<Agent>,
    pub agent_name: Arc<str>,
    pub runtime: KaosRuntime,
    /// The runtime as tools see it.
    pub host: Arc<dyn ToolHost>,
    pub hooks: HookSet,
    pub policy: PermissionPolicy,
    pub config_error: Option<String>,
    pub tools: Vec<Arc<dyn Tool>>,
    pub tool_defs: Arc<[ToolDefinition]>,
    pub tool_catalog: String,
    /// The runtime's tool-source generation the tools were selected at.
    pub tools_generation: u64,
    pub respond: Signature<RespondOutput>,
}

impl Shared {
    /// The configuration of a runner for `agent` on `runtime`, with the agent's permission
    /// rules (a rule that does not parse is reported when a turn starts).
    pub(crate) fn new(agent: Agent, runtime: KaosRuntime) -> Self {
        let (policy, config_error) = match agent.permission_policy() {
            Ok(p) => (p, None),
            Err(e) => (PermissionPolicy::default(), Some(e.to_string())),
        };
        let tools_generation = runtime.tools_generation();
        let (tools, tool_defs, tool_catalog) = tool_set(&agent, &runtime);
        let respond = prompts::respond_signature(&agent.instructions);
        Self {
            agent_name: Arc::from(agent.name.as_str()),
            agent: Arc::new(agent),
            host: Arc::new(runtime.clone()),
            runtime,
            hooks: HookSet::default(),
            policy,
            config_error,
            tools,
            tool_defs,
            tool_catalog,
            tools_generation,
            respond,
        }
    }

    /// A copy with the tools selected again (a tool source changed).
    pub(crate) fn with_fresh_tools(&self) -> Self {
        let mut fresh = self.clone();
        let (tools, tool_defs, tool_catalog) = tool_set(&fresh.agent, &fresh.runtime);
        fresh.tools = tools;
        fresh.tool_defs = tool_defs;
        fresh.tool_catalog = tool_catalog;
        fresh.tools_generation = fresh.runtime.tools_generation();
        fresh
    }

    /// The agent's tool named `name`.
    pub(crate) fn tool(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// The lock that serializes turns on one session (shared by every runner on this
    /// runtime).
    pub(crate) fn session_lock(&self, session_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.runtime.session_lock(session_id)
    }
}

type ToolSet = (Vec<Arc<dyn Tool>>, Arc<[ToolDefinition]>, String);

/// The agent's tools on this runtime, their definitions for the model, and the catalog
/// text for prompts.
fn tool_set(agent: &Agent, runtime: &KaosRuntime) -> ToolSet {
    let tools = select_tools(agent, runtime);
    let tool_defs: Arc<[ToolDefinition]> = tools
        .iter()
        .map(|t| ToolDefinition {
            name: t.name().to_string(),
            description: t.description().to_string(),
            parameters: t.parameters().clone(),
        })
        .collect();
    let tool_catalog = tools
        .iter()
        .map(|t| format!("{}: {}", t.name(), t.description()))
        .collect::<Vec<_>>()
        .join("\n");
    (tools, tool_defs, tool_catalog)
}

/// The runtime's tools (registered, then tool sources') whose names match the agent's
/// globs (all of them when it has none).
fn select_tools(agent: &Agent, runtime: &KaosRuntime) -> Vec<Arc<dyn Tool>> {
    let all = runtime.all_tools();
    if agent.tools.is_empty() {
        return all;
    }
    let mut builder = globset::GlobSetBuilder::new();
    for glob in &agent.tools {
        if let Ok(g) = globset::Glob::new(glob) {
            builder.add(g);
        }
    }
    match builder.build() {
        Ok(set) => all
            .iter()
            .filter(|t| set.is_match(t.name()))
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}
