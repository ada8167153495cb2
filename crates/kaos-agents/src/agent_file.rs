//! The agent file: ONE TOML schema for the library and every host.
//!
//! ```toml
//! name = "researcher"
//! model = "anthropic:claude-haiku-4-5"
//! tools = ["search*"]            # strings: globs over the runtime's tools
//! [[tools]]                       # tables: tools the host defines (kaos: command tools)
//! name = "wc"
//! command = ["sh", "-c", "wc -w"]
//! [[delegates]]                   # other agent files, as sub-agent tools (hosts that load files)
//! name = "helper"
//! agent = "helper.toml"
//! [fallback]                      # models tried in order when `model` fails (hosts that build clients)
//! models = ["openai:gpt-4o-mini"]
//! [runtime]                       # where sessions live (hosts that open session stores)
//! store = "postgres://kaos@db/kaos"
//! session_wait_secs = 30
//! ```
//!
//! (`[[tools]]` tables and `tools = [...]` cannot both appear in one file; an inline array may
//! mix globs and `{ name = ..., command = [...] }` tables.)
//! [`AgentDocument::parse`] reads the schema; [`Agent::from_toml_str`] uses it and accepts
//! globs only; a host such as the `kaos` CLI reads the tables with
//! [`AgentDocument::tool_tables`]. Every error names `file:line` and the field.

use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::agent::{Agent, AgentPattern, Budget, ConfigError, RuleConfig, line_of, toml_error};

/// An agent file as written (spans kept, for errors that name the line).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDocument {
    /// `name`.
    pub name: Option<Spanned<String>>,
    /// `instructions`.
    pub instructions: Option<String>,
    /// `model`.
    pub model: Option<Spanned<String>>,
    /// `pattern`.
    pub pattern: Option<AgentPattern>,
    /// `max_react_iterations`.
    pub max_react_iterations: Option<Spanned<u32>>,
    /// `tool_timeout_ms`.
    pub tool_timeout_ms: Option<Spanned<u64>>,
    /// `history_budget_chars`.
    pub history_budget_chars: Option<usize>,
    /// `max_delegation_depth`.
    pub max_delegation_depth: Option<u32>,
    /// `[budget]`.
    pub budget: Option<Budget>,
    /// `tools`: glob strings, or tables the host defines.
    #[serde(default)]
    pub tools: Vec<Spanned<toml::Value>>,
    /// `[[permissions]]`.
    #[serde(default)]
    pub permissions: Vec<Spanned<RuleConfig>>,
    /// `[[delegates]]`.
    #[serde(default)]
    pub delegates: Vec<DelegateEntry>,
    /// `[fallback]`.
    pub fallback: Option<FallbackEntry>,
    /// `[[mcp_servers]]`: MCP servers whose tools the agent uses (connected by `kaos-mcp`).
    #[serde(default)]
    pub mcp_servers: Vec<crate::mcp_config::McpServerConfig>,
    /// `[runtime]`: the session store and session wait of the host that runs the agent.
    pub runtime: Option<Spanned<RuntimeEntry>>,
}

/// `[runtime]`: settings of the runtime a host builds for the agent (its flags and
/// environment decide first; see the host's documentation for the order).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    /// `store`: the session store's URL (`postgres://…`, `sqlite:PATH`, `memory:`).
    pub store: Option<Spanned<String>>,
    /// `session_wait_secs`: how long a turn waits for its session while another turn (any
    /// process or replica) holds it, before failing with `session_busy`.
    pub session_wait_secs: Option<Spanned<f64>>,
}

/// `[[delegates]]`: another agent file exposed as a tool taking `{"task": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateEntry {
    /// The tool's name.
    pub name: Spanned<String>,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// The agent file, relative to this one.
    pub agent: Spanned<String>,
}

/// `[fallback]`: models tried in order when the agent's model fails with a provider,
/// transport or exhausted-retry error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackEntry {
    /// The model specs.
    pub models: Spanned<Vec<Spanned<String>>>,
}

/// A host-defined tool table of `tools`, decoded.
#[derive(Debug)]
pub struct ToolTable<T> {
    /// Its index in `tools`.
    pub index: usize,
    /// Where it is in the file (bytes).
    pub span: Range<usize>,
    /// The decoded table.
    pub table: T,
}

impl AgentDocument {
    /// Parses agent-file text; `origin` (the file) names errors, with the line.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| toml_error(text, origin, &e))
    }

    /// The glob strings of `tools`.
    pub fn globs(&self) -> Vec<String> {
        self.tools
            .iter()
            .filter_map(|t| t.get_ref().as_str().map(str::to_owned))
            .collect()
    }

    /// The tables of `tools`, decoded as the host's `T`; a bad table is an error naming
    /// `origin:line` (of the table) and the field `tools[i]`.
    pub fn tool_tables<T: DeserializeOwned>(
        &self,
        text: &str,
        origin: &str,
    ) -> Result<Vec<ToolTable<T>>, ConfigError> {
        let mut tables = Vec::new();
        for (index, entry) in self.tools.iter().enumerate() {
            let value = entry.get_ref();
            let at = || format!("{origin}:{}", line_of(text, entry.span().start));
            match value {
                toml::Value::String(_) => {}
                toml::Value::Table(_) => {
                    let table = T::deserialize(value.clone()).map_err(|e| ConfigError {
                        location: at(),
                        field: Some(format!("tools[{index}]")),
                        message: format!("field `tools[{index}]`: {}", e.to_string().trim()),
                    })?;
                    tables.push(ToolTable {
                        index,
                        span: entry.span(),
                        table,
                    });
                }
                other => {
                    return Err(ConfigError {
                        location: at(),
                        field: Some(format!("tools[{index}]")),
                        message: format!(
                            "field `tools[{index}]`: expected a glob string or a tool table, found a {}",
                            other.type_str()
                        ),
                    });
                }
            }
        }
        Ok(tables)
    }

    /// The agent these fields describe, over `base` (fields the file leaves out keep
    /// `base`'s values; `tools` becomes the file's globs; `model` is left to the host when
    /// it resolves specs).
    pub fn apply(&self, base: Agent) -> Agent {
        let mut agent = base;
        if let Some(name) = &self.name {
            agent.name = name.get_ref().clone();
        }
        if let Some(i) = &self.instructions {
            agent.instructions = i.clone();
        }
        if let Some(model) = &self.model {
            agent.model = model.get_ref().clone();
        }
        if let Some(p) = self.pattern {
            agent.pattern = p;
        }
        if let Some(n) = &self.max_react_iterations {
            agent.max_react_iterations = *n.get_ref();
        }
        if let Some(n) = &self.tool_timeout_ms {
            agent.tool_timeout_ms = *n.get_ref();
        }
        if let Some(n) = self.history_budget_chars {
            agent.history_budget_chars = n;
        }
        if let Some(n) = self.max_delegation_depth {
            agent.max_delegation_depth = n;
        }
        if let Some(b) = &self.budget {
            agent.budget = b.clone();
        }
        agent.permissions = self
            .permissions
            .iter()
            .map(|r| r.get_ref().clone())
            .collect();
        agent.tools = self.globs();
        agent
    }

    /// An error naming `origin:line` of `span` and `field`.
    pub fn error_at(
        text: &str,
        origin: &str,
        span: Range<usize>,
        field: &str,
        message: impl std::fmt::Display,
    ) -> ConfigError {
        ConfigError {
            location: format!("{origin}:{}", line_of(text, span.start)),
            field: Some(field.to_owned()),
            message: format!("field `{field}`: {message}"),
        }
    }
}

/// The 1-based line of `key = ...` inside the table that starts at `span` (a host table's
/// own field): searched from the table's start to the next table header; else the table's
/// first line.
pub fn line_of_key_in(text: &str, span: Range<usize>, key: &str) -> usize {
    let start = span.start.min(text.len());
    let first = line_of(text, start);
    let Some(rest) = text.get(start..) else {
        return first;
    };
    for (offset, line) in rest.lines().enumerate() {
        let line = line.trim_start();
        if offset > 0 && line.starts_with('[') {
            break;
        }
        let after_key = line.strip_prefix(key).or_else(|| {
            line.strip_prefix('{')
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix(key))
        });
        if after_key.is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return first + offset;
        }
    }
    first
}
