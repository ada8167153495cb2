//! The agent file (TOML): a superset of `kaos_agents::Agent` with command tools, permission
//! rules and delegates. Errors name the file, the line and the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use kaos_agents::agent::{RuleConfig, line_of};
use kaos_agents::{
    Agent, AgentPattern, Budget, KaosRuntime, Runner, Tool, ToolAnnotations, agent_as_tool,
};
use serde::Deserialize;
use toml::Spanned;

use crate::models::{ModelRegistry, OFFLINE};
use crate::tools::{CommandSpec, DEFAULT_MAX_OUTPUT_BYTES, TraceContext, command_tool};

/// How deep delegates may nest in files (guards against a file delegating to itself).
const MAX_FILE_DEPTH: usize = 8;

/// The TOML document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentToml {
    name: Option<Spanned<String>>,
    instructions: Option<String>,
    model: Option<Spanned<String>>,
    pattern: Option<AgentPattern>,
    max_react_iterations: Option<Spanned<u32>>,
    tool_timeout_ms: Option<Spanned<u64>>,
    history_budget_chars: Option<usize>,
    max_delegation_depth: Option<u32>,
    budget: Option<Budget>,
    #[serde(default)]
    tools: Vec<ToolToml>,
    #[serde(default)]
    permissions: Vec<Spanned<RuleConfig>>,
    #[serde(default)]
    delegates: Vec<DelegateToml>,
    fallback: Option<FallbackToml>,
}

/// `[fallback]`: models tried in order when the agent's model fails with a provider,
/// transport or exhausted-retry error (a `FallbackClient`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackToml {
    models: Spanned<Vec<Spanned<String>>>,
}

/// `[[tools]]`: a command run as a child process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolToml {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    parameters: Option<toml::Value>,
    command: Spanned<Vec<String>>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    destructive: bool,
    #[serde(default)]
    requires_confirmation: bool,
}

/// `[[delegates]]`: another agent file exposed as a tool taking `{"task": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateToml {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    agent: Spanned<String>,
}

/// An agent file read and parsed (not yet resolved).
#[derive(Debug)]
pub struct AgentFile {
    path: PathBuf,
    text: String,
    doc: AgentToml,
}

impl AgentFile {
    /// Reads and parses `path`; syntax and unknown-field errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{}: cannot read the agent file: {e}", path.display()))?;
        let doc: AgentToml = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            let location = match line {
                Some(l) => format!("{}:{l}", path.display()),
                None => path.display().to_string(),
            };
            anyhow!("{location}: {}", e.message().trim())
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            text,
            doc,
        })
    }

    fn at(&self, span: std::ops::Range<usize>) -> String {
        format!(
            "{}:{}",
            self.path.display(),
            line_of(&self.text, span.start)
        )
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// A resolved agent: its configuration, its tools and its delegates.
pub struct LoadedAgent {
    /// The agent.
    pub agent: Agent,
    /// Command tools.
    tools: Vec<Arc<dyn Tool>>,
    /// Delegates: (tool name, description, the delegate agent).
    delegates: Vec<(String, String, LoadedAgent)>,
}

impl std::fmt::Debug for LoadedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedAgent")
            .field("agent", &self.agent.name)
            .field("tools", &self.tools.len())
            .field("delegates", &self.delegates.len())
            .finish()
    }
}

impl LoadedAgent {
    /// Resolves an agent file (or the built-in assistant when `None`); `model_override`
    /// replaces the file's model (not its delegates').
    pub fn build(
        file: Option<AgentFile>,
        model_override: Option<&str>,
        models: &ModelRegistry,
        depth: usize,
        trace: &TraceContext,
    ) -> anyhow::Result<Self> {
        let cwd = PathBuf::from(".");
        let Some(file) = file else {
            let spec = models.resolve(model_override.unwrap_or(OFFLINE), &cwd)?;
            let agent = Agent::builder()
                .name("assistant")
                .instructions("You are a helpful assistant. Answer clearly and briefly.")
                .model(spec)
                .build()
                .map_err(|e| anyhow!("built-in agent: {e}"))?;
            return Ok(Self {
                agent,
                tools: Vec::new(),
                delegates: Vec::new(),
            });
        };
        if depth > MAX_FILE_DEPTH {
            bail!(
                "{}: delegates nest more than {MAX_FILE_DEPTH} files deep (does a file delegate to itself?)",
                file.path.display()
            );
        }
        let doc = &file.doc;
        let mut agent = Agent {
            model: OFFLINE.to_string(),
            ..Agent::default()
        };
        if let Some(name) = &doc.name {
            agent.name = name.get_ref().clone();
        }
        if let Some(i) = &doc.instructions {
            agent.instructions = i.clone();
        }
        if let Some(p) = doc.pattern {
            agent.pattern = p;
        }
        if let Some(n) = &doc.max_react_iterations {
            agent.max_react_iterations = *n.get_ref();
        }
        if let Some(n) = &doc.tool_timeout_ms {
            agent.tool_timeout_ms = *n.get_ref();
        }
        if let Some(n) = doc.history_budget_chars {
            agent.history_budget_chars = n;
        }
        if let Some(n) = doc.max_delegation_depth {
            agent.max_delegation_depth = n;
        }
        if let Some(b) = &doc.budget {
            agent.budget = b.clone();
        }
        agent.permissions = doc
            .permissions
            .iter()
            .map(|r| r.get_ref().clone())
            .collect();

        // The model: the override, else the file's (script paths relative to the file).
        agent.model = match (model_override, &doc.model) {
            (Some(spec), _) => models.resolve(spec, &PathBuf::from("."))?,
            (None, Some(spec)) => models
                .resolve(spec.get_ref(), &file.dir())
                .map_err(|e| anyhow!("{}: field `model`: {e:#}", file.at(spec.span())))?,
            (None, None) => models.resolve(OFFLINE, &cwd)?,
        };
        if let Some(fallback) = &doc.fallback {
            let listed = fallback.models.get_ref();
            if listed.is_empty() {
                bail!(
                    "{}: field `fallback.models`: list at least one model to fall back to",
                    file.at(fallback.models.span())
                );
            }
            let mut chain = vec![agent.model.clone()];
            for (i, spec) in listed.iter().enumerate() {
                let key = models.resolve(spec.get_ref(), &file.dir()).map_err(|e| {
                    anyhow!(
                        "{}: field `fallback.models[{i}]`: {e:#}",
                        file.at(spec.span())
                    )
                })?;
                chain.push(key);
            }
            agent.model = models.fallback(&chain)?;
        }

        let mut names = std::collections::HashSet::new();
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        for (i, t) in doc.tools.iter().enumerate() {
            let name = t.name.get_ref();
            check_tool_name(name)
                .map_err(|m| anyhow!("{}: field `tools[{i}].name`: {m}", file.at(t.name.span())))?;
            if !names.insert(name.clone()) {
                bail!(
                    "{}: field `tools[{i}].name`: duplicate tool name {name:?}",
                    file.at(t.name.span())
                );
            }
            let argv = t.command.get_ref();
            if argv.is_empty() || argv[0].trim().is_empty() {
                bail!(
                    "{}: field `tools[{i}].command`: must be a non-empty argv array, e.g. [\"sh\", \"-c\", \"wc -w\"]",
                    file.at(t.command.span())
                );
            }
            let parameters = match &t.parameters {
                Some(v) => serde_json::to_value(v).map_err(|e| {
                    anyhow!(
                        "{}: field `tools[{i}].parameters`: {e}",
                        file.at(t.name.span())
                    )
                })?,
                None => serde_json::json!({"type": "object", "properties": {}}),
            };
            if !parameters.is_object() {
                bail!(
                    "{}: field `tools[{i}].parameters`: must be a JSON Schema table",
                    file.at(t.name.span())
                );
            }
            let max_output_bytes = match &t.max_output_bytes {
                Some(n) if *n.get_ref() == 0 => bail!(
                    "{}: field `tools[{i}].max_output_bytes`: must be at least 1",
                    file.at(n.span())
                ),
                Some(n) => *n.get_ref(),
                None => DEFAULT_MAX_OUTPUT_BYTES,
            };
            let annotations = ToolAnnotations {
                read_only: t.read_only,
                idempotent: t.read_only,
                destructive: t.destructive,
                requires_confirmation: t.requires_confirmation,
                ..ToolAnnotations::default()
            };
            tools.push(Arc::new(command_tool(CommandSpec {
                name: name.clone(),
                description: t.description.clone(),
                parameters,
                argv: argv.clone(),
                timeout_ms: t.timeout_ms,
                annotations,
                max_output_bytes,
                trace: Some(Arc::clone(trace)),
            })));
        }

        let mut delegates = Vec::new();
        for (i, d) in doc.delegates.iter().enumerate() {
            let name = d.name.get_ref();
            check_tool_name(name).map_err(|m| {
                anyhow!(
                    "{}: field `delegates[{i}].name`: {m}",
                    file.at(d.name.span())
                )
            })?;
            if !names.insert(name.clone()) {
                bail!(
                    "{}: field `delegates[{i}].name`: duplicate tool name {name:?}",
                    file.at(d.name.span())
                );
            }
            let path = file.dir().join(d.agent.get_ref());
            let child_file = AgentFile::load(&path).map_err(|e| {
                anyhow!(
                    "{}: field `delegates[{i}].agent`: {e:#}",
                    file.at(d.agent.span())
                )
            })?;
            let child = LoadedAgent::build(Some(child_file), None, models, depth + 1, trace)?;
            delegates.push((name.clone(), d.description.clone(), child));
        }

        // Each agent sees exactly its own tools (the runtime is shared between agents).
        agent.tools = names.iter().cloned().collect();
        agent.tools.sort();
        let agent = agent.validate().map_err(|e| {
            let line = e
                .field
                .as_deref()
                .and_then(|f| key_line(&file.text, f))
                .map_or(String::new(), |l| format!(":{l}"));
            anyhow!("{}{line}: {}", file.path.display(), e.message)
        })?;
        Ok(Self {
            agent,
            tools,
            delegates,
        })
    }

    /// A runner for this agent: its tools (and its delegates as sub-agent tools) on a clone
    /// of `runtime` that shares the session store and model clients.
    pub fn runner(&self, runtime: KaosRuntime) -> Runner {
        let (agent, own) = self.agent_and_runtime(runtime);
        Runner::new(agent, own)
    }

    /// The agent and its own runtime (its tools and delegates registered).
    pub fn agent_and_runtime(&self, runtime: KaosRuntime) -> (Agent, KaosRuntime) {
        let mut own = runtime.clone();
        for tool in &self.tools {
            own = own.with_shared_tool(tool.clone());
        }
        for (name, description, child) in &self.delegates {
            let (child_agent, child_runtime) = child.agent_and_runtime(runtime.clone());
            own = own.with_tool(agent_as_tool(
                child_agent,
                Some(child_runtime),
                name.clone(),
                description.clone(),
            ));
        }
        let mut agent = self.agent.clone();
        if agent.tools.is_empty() {
            // `tools = []` means "every tool"; an agent without tools must see none.
            agent.tools = vec!["\u{0}no-tools".into()];
        }
        (agent, own)
    }
}

/// Tool names are matched as globs by the runner: keep them plain.
fn check_tool_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "{name:?} is not a valid tool name (use letters, digits, `_`, `-`, `.`)"
        ));
    }
    Ok(())
}

/// The line where `key = ...` first appears (for validation errors that carry no span).
fn key_line(text: &str, field: &str) -> Option<usize> {
    let key = field.split(['[', '.']).next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.starts_with(&format!("[[{key}]]"))
                || l.starts_with(&format!("[{key}]"))
        })
        .map(|i| i + 1)
}
