//! The agent file (TOML): a superset of `kaos_agents::Agent` with command tools, permission
//! rules and delegates. Errors name the file, the line and the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use kaos_agents::agent::{key_line, line_of};
use kaos_agents::agent_file::{AgentDocument, line_of_key_in};
use kaos_agents::{Agent, KaosRuntime, Runner, Tool, ToolAnnotations, agent_as_tool};
use serde::Deserialize;

use crate::models::{ModelRegistry, OFFLINE};
use crate::tools::{CommandSpec, DEFAULT_MAX_OUTPUT_BYTES, TraceContext, command_tool};

/// How deep delegates may nest in files (guards against a file delegating to itself).
const MAX_FILE_DEPTH: usize = 8;

/// A `[[tools]]` table: a command run as a child process (the CLI's extension of the
/// library's agent-file schema, [`AgentDocument`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolToml {
    name: String,
    #[serde(default)]
    description: String,
    parameters: Option<toml::Value>,
    command: Vec<String>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<usize>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    destructive: bool,
    #[serde(default)]
    requires_confirmation: bool,
}

/// An agent file read and parsed (not yet resolved).
#[derive(Debug)]
pub struct AgentFile {
    path: PathBuf,
    text: String,
    doc: AgentDocument,
}

impl AgentFile {
    /// Reads and parses `path`; syntax and unknown-field errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{}: cannot read the agent file: {e}", path.display()))?;
        let doc = AgentDocument::parse(&text, &path.display().to_string())
            .map_err(|e| anyhow!("{}: {}", e.location, e.message.trim()))?;
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

    /// The file's `[runtime]` section, each value with the `file:line` it came from; a
    /// relative `sqlite:PATH` is taken relative to the file.
    pub fn runtime(&self) -> Option<RuntimeSection> {
        let runtime = self.doc.runtime.as_ref()?.get_ref();
        let store = runtime.store.as_ref().map(|url| {
            let text = url.get_ref().trim();
            let resolved = match kaos_store::parse_url(text) {
                Ok(kaos_store::StoreUrl::Sqlite(path)) if path.is_relative() => {
                    format!("sqlite:{}", self.dir().join(path).display())
                }
                _ => text.to_string(),
            };
            (resolved, self.at(url.span()))
        });
        let session_wait = runtime
            .session_wait_secs
            .as_ref()
            .map(|secs| (*secs.get_ref(), self.at(secs.span())));
        Some(RuntimeSection {
            store,
            session_wait,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// An agent file's `[runtime]` section: each value and the `file:line` it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSection {
    /// `store`: the session store's URL.
    pub store: Option<(String, String)>,
    /// `session_wait_secs`.
    pub session_wait: Option<(f64, String)>,
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
        let origin = file.path.display().to_string();
        let located = |e: kaos_agents::ConfigError| anyhow!("{}: {}", e.location, e.message);
        let mut agent = doc.apply(Agent {
            model: OFFLINE.to_string(),
            ..Agent::default()
        });

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
        let tables = doc
            .tool_tables::<ToolToml>(&file.text, &origin)
            .map_err(located)?;
        for table in &tables {
            let (i, t) = (table.index, &table.table);
            let field_at = |key: &str| {
                let line = line_of_key_in(&file.text, table.span.clone(), key);
                format!("{}:{line}", file.path.display())
            };
            let at = field_at("name");
            let name = &t.name;
            check_tool_name(name).map_err(|m| anyhow!("{at}: field `tools[{i}].name`: {m}"))?;
            if !names.insert(name.clone()) {
                bail!("{at}: field `tools[{i}].name`: duplicate tool name {name:?}");
            }
            let argv = &t.command;
            if argv.is_empty() || argv[0].trim().is_empty() {
                bail!(
                    "{}: field `tools[{i}].command`: must be a non-empty argv array, e.g. [\"sh\", \"-c\", \"wc -w\"]",
                    field_at("command")
                );
            }
            let parameters = match &t.parameters {
                Some(v) => serde_json::to_value(v).map_err(|e| {
                    anyhow!(
                        "{}: field `tools[{i}].parameters`: {e}",
                        field_at("parameters")
                    )
                })?,
                None => serde_json::json!({"type": "object", "properties": {}}),
            };
            if !parameters.is_object() {
                bail!(
                    "{}: field `tools[{i}].parameters`: must be a JSON Schema table",
                    field_at("parameters")
                );
            }
            let max_output_bytes = match t.max_output_bytes {
                Some(0) => bail!(
                    "{}: field `tools[{i}].max_output_bytes`: must be at least 1",
                    field_at("max_output_bytes")
                ),
                Some(n) => n,
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

        // Each agent sees its own tools and the runtime tools its globs name (the runtime is
        // shared between agents).
        let mut own: Vec<String> = names.iter().cloned().collect();
        own.sort();
        agent.tools.extend(own);
        // MCP servers' tools, by their prefix.
        agent.mcp_servers = doc.mcp_servers.clone();
        for server in &agent.mcp_servers {
            agent.tools.push(server.tool_name("*"));
        }
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

    /// The MCP servers of this agent and its delegates (first of each name).
    pub fn mcp_servers(&self) -> Vec<kaos_agents::McpServerConfig> {
        let mut all = self.agent.mcp_servers.clone();
        for (_, _, child) in &self.delegates {
            for s in child.mcp_servers() {
                if all.iter().all(|a| a.name != s.name) {
                    all.push(s);
                }
            }
        }
        all
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
