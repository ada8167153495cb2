//! [`Agent`]: the frozen configuration of an agent.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::permissions::{PermissionDecision, PermissionPolicy, PermissionRule};

/// How an agent works through a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentPattern {
    /// Classify, then respond or run a tool loop.
    #[default]
    Chat,
    /// Like chat, and `plan` intents run as live plan-execute.
    Plan,
}

impl AgentPattern {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentPattern::Chat => "chat",
            AgentPattern::Plan => "plan",
        }
    }
}

/// Spending and effort limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Most plan steps executed in one turn.
    pub max_steps: u32,
    /// Most replans after failed steps.
    pub max_replans: u32,
    /// Most tokens one turn may spend: plan turns always; chat turns when their cost is
    /// unknown (it stands in for `chat_max_cost_usd`).
    pub max_tokens: Option<u64>,
    /// Most USD one plan turn may spend. With a model whose price is unknown, `max_tokens`
    /// stands in; without it the turn refuses to start (never silently unlimited).
    pub max_cost_usd: Option<f64>,
    /// Most wall-clock seconds one plan turn may take.
    pub max_wall_clock_secs: Option<f64>,
    /// Most USD one chat turn may spend; checked between model calls. With a model whose
    /// price is unknown, `max_tokens` stands in; without it the turn refuses to start.
    pub chat_max_cost_usd: Option<f64>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps: 20,
            max_replans: 2,
            max_tokens: None,
            max_cost_usd: None,
            max_wall_clock_secs: None,
            chat_max_cost_usd: None,
        }
    }
}

/// A configuration error, naming the field (and, for files, the file and line).
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    /// `file:line`, or `agent` when built in code.
    pub location: String,
    /// The field, if one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            location: "agent".into(),
            field: Some(field.to_string()),
            message: format!("field `{field}`: {}", message.into()),
        }
    }
}

/// A permission rule as written in config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Glob over tool names.
    pub pattern: String,
    /// `allow`, `deny` or `ask`.
    pub action: PermissionDecision,
    /// Optional reason.
    #[serde(default)]
    pub reason: String,
}

/// The frozen configuration of an agent. Cheap to clone; holds no state.
///
/// ```
/// use kaos_agents::{Agent, AgentPattern};
/// let agent = Agent::builder().name("assistant").model("function-test").pattern(AgentPattern::Chat).build().unwrap();
/// assert_eq!(agent.model, "function-test");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agent {
    /// The agent's name (in events and spans).
    pub name: String,
    /// The system instructions.
    pub instructions: String,
    /// Model spec (`anthropic:claude-haiku-4-5`, or a name registered with
    /// `KaosRuntime::with_client`).
    pub model: String,
    /// The pattern.
    pub pattern: AgentPattern,
    /// Globs over runtime tool names; empty = every tool.
    pub tools: Vec<String>,
    /// Permission rules, first match wins.
    pub permissions: Vec<RuleConfig>,
    /// Most model rounds in one tool loop.
    pub max_react_iterations: u32,
    /// How long one tool call may run, in milliseconds.
    pub tool_timeout_ms: u64,
    /// Most characters of conversation history put into a prompt.
    pub history_budget_chars: usize,
    /// Budgets.
    pub budget: Budget,
    /// Most nested delegations.
    pub max_delegation_depth: u32,
    /// Most bytes of one tool result that go back into the prompt; the rest is cut and a
    /// marker says how much (the tool span carries `kaos.result_truncated`).
    pub max_tool_result_bytes: usize,
    /// MCP servers whose tools the agent uses (`[[mcp_servers]]`; connected by `kaos-mcp`).
    pub mcp_servers: Vec<crate::mcp_config::McpServerConfig>,
}

/// The default [`Agent::max_tool_result_bytes`]: 64 KiB (about 16k tokens).
pub const DEFAULT_MAX_TOOL_RESULT_BYTES: usize = 64 * 1024;

impl Default for Agent {
    fn default() -> Self {
        Self {
            name: "assistant".into(),
            instructions: "You are a helpful assistant.".into(),
            model: "anthropic:claude-haiku-4-5".into(),
            pattern: AgentPattern::Chat,
            tools: Vec::new(),
            permissions: Vec::new(),
            max_react_iterations: 10,
            tool_timeout_ms: 120_000,
            history_budget_chars: 24_000,
            budget: Budget::default(),
            max_delegation_depth: 3,
            max_tool_result_bytes: DEFAULT_MAX_TOOL_RESULT_BYTES,
            mcp_servers: Vec::new(),
        }
    }
}

impl Agent {
    /// A builder starting from the defaults.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            agent: Agent::default(),
        }
    }

    /// Loads an agent from agent-file TOML ([`crate::agent_file`]); `origin` names the file
    /// in errors. `tools` takes globs here: tool tables, delegates, fallback models and `[runtime]`
    /// need a host that builds them (the `kaos` CLI), and are an error naming the line.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Agent, ConfigError> {
        use crate::agent_file::AgentDocument;
        let doc = AgentDocument::parse(text, origin)?;
        let host_only = |span, field: &str, what: &str| {
            AgentDocument::error_at(
                text,
                origin,
                span,
                field,
                format!(
                    "{what} need a host that builds them (the `kaos` CLI); Agent::from_toml_str takes `tools` as globs over the runtime's tools"
                ),
            )
        };
        if let Some(t) = doc.tools.iter().find(|t| t.get_ref().is_table()) {
            return Err(host_only(t.span(), "tools", "tool tables"));
        }
        if let Some(d) = doc.delegates.first() {
            return Err(host_only(d.name.span(), "delegates", "delegates"));
        }
        if let Some(f) = &doc.fallback {
            return Err(host_only(f.models.span(), "fallback", "fallback models"));
        }
        if let Some(r) = &doc.runtime {
            return Err(host_only(
                r.span(),
                "runtime",
                "runtime settings (session store)",
            ));
        }
        if let Some(t) = doc.tools.iter().find(|t| !t.get_ref().is_str()) {
            return Err(AgentDocument::error_at(
                text,
                origin,
                t.span(),
                "tools",
                "expected glob strings",
            ));
        }
        doc.apply(Agent::default()).validate().map_err(|mut e| {
            e.location = match e.field.as_deref().and_then(|f| key_line(text, f)) {
                Some(line) => format!("{origin}:{line}"),
                None => origin.to_string(),
            };
            e
        })
    }

    /// Loads an agent from a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Agent, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            field: None,
            message: format!("cannot read the agent file: {e}"),
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<Agent, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::field("name", "must not be empty"));
        }
        if self.model.trim().is_empty() {
            return Err(ConfigError::field("model", "must not be empty"));
        }
        if self.max_react_iterations == 0 {
            return Err(ConfigError::field(
                "max_react_iterations",
                "must be at least 1",
            ));
        }
        if self.tool_timeout_ms == 0 {
            return Err(ConfigError::field("tool_timeout_ms", "must be at least 1"));
        }
        if self.max_tool_result_bytes < 256 {
            return Err(ConfigError::field(
                "max_tool_result_bytes",
                "must be at least 256",
            ));
        }
        for (i, glob) in self.tools.iter().enumerate() {
            globset::Glob::new(glob).map_err(|e| {
                ConfigError::field(
                    &format!("tools[{i}]"),
                    format!("invalid glob {glob:?}: {}", e.kind()),
                )
            })?;
        }
        for (i, server) in self.mcp_servers.iter().enumerate() {
            server.validate(&format!("mcp_servers[{i}]"))?;
            if self.mcp_servers[..i].iter().any(|s| s.name == server.name) {
                return Err(ConfigError::field(
                    &format!("mcp_servers[{i}].name"),
                    format!("another MCP server is already named {:?}", server.name),
                ));
            }
        }
        self.permission_policy()?;
        Ok(self.clone())
    }

    /// The permission policy from the agent's rules.
    pub fn permission_policy(&self) -> Result<PermissionPolicy, ConfigError> {
        let rules = self
            .permissions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PermissionRule::new(&r.pattern, r.action)
                    .map(|rule| rule.with_reason(r.reason.clone()))
                    .map_err(|e| {
                        ConfigError::field(&format!("permissions[{i}].pattern"), e.message)
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PermissionPolicy::new(rules))
    }

    /// The tool timeout.
    pub fn tool_timeout(&self) -> Duration {
        Duration::from_millis(self.tool_timeout_ms)
    }
}

/// The 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |prefix| prefix.matches('\n').count() + 1)
}

/// The line where `key = ...` (or `[key]`, `[[key]]`) first appears, for errors that carry
/// no span (`field` may be `tools[2]` or `budget.max_steps`: its first key is looked up).
pub fn key_line(text: &str, field: &str) -> Option<usize> {
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

pub(crate) fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start));
    let message = e.message().to_string();
    let field = message.split('`').nth(1).map(str::to_string);
    ConfigError {
        location: match line {
            Some(l) => format!("{origin}:{l}"),
            None => origin.to_string(),
        },
        field,
        message,
    }
}

/// Builds an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    agent: Agent,
}

impl AgentBuilder {
    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.agent.name = name.into();
        self
    }
    /// Sets the instructions.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.agent.instructions = instructions.into();
        self
    }
    /// Sets the model spec.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.agent.model = model.into();
        self
    }
    /// Sets the pattern.
    pub fn pattern(mut self, pattern: AgentPattern) -> Self {
        self.agent.pattern = pattern;
        self
    }
    /// Adds a tool glob.
    pub fn tool(mut self, glob: impl Into<String>) -> Self {
        self.agent.tools.push(glob.into());
        self
    }
    /// Adds a permission rule.
    pub fn permission(mut self, pattern: impl Into<String>, action: PermissionDecision) -> Self {
        self.agent.permissions.push(RuleConfig {
            pattern: pattern.into(),
            action,
            reason: String::new(),
        });
        self
    }
    /// Sets the most model rounds in a tool loop.
    pub fn max_react_iterations(mut self, n: u32) -> Self {
        self.agent.max_react_iterations = n;
        self
    }
    /// Sets the tool timeout.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.agent.tool_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }
    /// Sets the most bytes of one tool result that go back into the prompt.
    pub fn max_tool_result_bytes(mut self, bytes: usize) -> Self {
        self.agent.max_tool_result_bytes = bytes;
        self
    }
    /// Sets the history budget in characters.
    pub fn history_budget_chars(mut self, chars: usize) -> Self {
        self.agent.history_budget_chars = chars;
        self
    }
    /// Sets the budgets.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.agent.budget = budget;
        self
    }
    /// Sets the delegation depth limit.
    pub fn max_delegation_depth(mut self, depth: u32) -> Self {
        self.agent.max_delegation_depth = depth;
        self
    }
    /// Adds an MCP server whose tools the agent uses.
    pub fn mcp_server(mut self, server: crate::mcp_config::McpServerConfig) -> Self {
        self.agent.mcp_servers.push(server);
        self
    }
    /// Validates and returns the agent.
    pub fn build(self) -> Result<Agent, ConfigError> {
        self.agent.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_loads_and_errors_name_line_and_field() {
        let agent = Agent::from_toml_str(
            "name = \"a\"\nmodel = \"function-test\"\npattern = \"plan\"\n[[permissions]]\npattern = \"*-delete\"\naction = \"deny\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(agent.pattern, AgentPattern::Plan);
        let err = Agent::from_toml_str("name = \"a\"\nmodle = \"x\"\n", "bad.toml").unwrap_err();
        assert!(err.to_string().starts_with("bad.toml:2"), "{err}");
        assert!(err.to_string().contains("modle"), "{err}");
        let err = Agent::from_toml_str("max_react_iterations = 0\n", "z.toml").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("max_react_iterations"));
        assert!(err.to_string().starts_with("z.toml:1: "), "{err}");
    }

    #[test]
    fn one_schema_globs_here_tool_tables_for_hosts() {
        let agent =
            Agent::from_toml_str("name = \"a\"\ntools = [\"search*\", \"fetch\"]\n", "a.toml")
                .unwrap();
        assert_eq!(agent.tools, vec!["search*", "fetch"]);
        let text = "name = \"a\"\n\n[[tools]]\nname = \"wc\"\ncommand = [\"wc\"]\n";
        let err = Agent::from_toml_str(text, "cli.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cli.toml:3: field `tools`: tool tables need a host"),
            "{err}"
        );
        let doc = crate::agent_file::AgentDocument::parse(text, "cli.toml").unwrap();
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Command {
            name: String,
            command: Vec<String>,
        }
        let tables = doc.tool_tables::<Command>(text, "cli.toml").unwrap();
        assert_eq!(tables[0].table.name, "wc");
        let bad = "[[tools]]\nname = \"wc\"\ncomand = []\n";
        let doc = crate::agent_file::AgentDocument::parse(bad, "cli.toml").unwrap();
        let err = doc.tool_tables::<Command>(bad, "cli.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cli.toml:1: field `tools[0]`: "),
            "{err}"
        );
        let err = Agent::from_toml_str("[fallback]\nmodels = [\"x\"]\n", "f.toml").unwrap_err();
        assert!(
            err.to_string().starts_with("f.toml:2: field `fallback`"),
            "{err}"
        );
    }

    #[test]
    fn the_runtime_section_is_parsed_for_hosts_and_unknown_keys_name_the_line() {
        let text = "name = \"a\"\n[runtime]\nstore = \"memory:\"\nsession_wait_secs = 5\n";
        let doc = crate::agent_file::AgentDocument::parse(text, "r.toml").unwrap();
        let runtime = doc.runtime.as_ref().unwrap().get_ref();
        assert_eq!(runtime.store.as_ref().unwrap().get_ref(), "memory:");
        assert_eq!(*runtime.session_wait_secs.as_ref().unwrap().get_ref(), 5.0);
        let err = Agent::from_toml_str(text, "r.toml").unwrap_err();
        assert!(
            err.to_string().starts_with("r.toml:2: field `runtime`"),
            "{err}"
        );
        let bad = "name = \"a\"\n\n[runtime]\nstore = \"memory:\"\nsesion_wait_secs = 5\n";
        let err = crate::agent_file::AgentDocument::parse(bad, "r.toml").unwrap_err();
        assert!(err.to_string().starts_with("r.toml:5"), "{err}");
        assert!(err.to_string().contains("sesion_wait_secs"), "{err}");
    }
}
