//! [`McpServerConfig`]: an MCP server an agent takes tools from (`[[mcp_servers]]` in the
//! agent TOML). Plain data; the `kaos-mcp` crate connects to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::ConfigError;

/// One MCP server: a command spoken to over stdio, or a streamable-HTTP URL.
///
/// ```toml
/// [[mcp_servers]]
/// name = "files"
/// command = ["npx", "-y", "some-mcp-server", "/data"]   # stdio, or:
/// # url = "http://127.0.0.1:8931/mcp"                     # streamable HTTP
/// # headers = { Authorization = "Bearer ${FILES_TOKEN}" } # values from the environment
/// tools = ["read_*", "list_*"]                            # optional allow-list (globs)
/// timeout_ms = 30000
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// The server's name; its tools are called `{name}.{tool}` unless `prefix` says otherwise.
    pub name: String,
    /// Program and arguments of a stdio server.
    pub command: Vec<String>,
    /// Environment variables for a stdio server (values may use `${VAR}`).
    pub env: BTreeMap<String, String>,
    /// URL of a streamable-HTTP server.
    pub url: Option<String>,
    /// HTTP headers for a streamable-HTTP server; `${VAR}` in a value is replaced by that
    /// environment variable (a missing variable is an error naming it).
    pub headers: BTreeMap<String, String>,
    /// Globs over the server's own tool names; empty = every tool.
    pub tools: Vec<String>,
    /// Prefix of the tool names the agent sees; `None` = `"{name}."`. Providers such as
    /// Anthropic and OpenAI accept only `[a-zA-Z0-9_-]` in tool names: use e.g. `"files_"`.
    pub prefix: Option<String>,
    /// How long one request to the server may take, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            url: None,
            headers: BTreeMap::new(),
            tools: Vec::new(),
            prefix: None,
            timeout_ms: 30_000,
        }
    }
}

impl McpServerConfig {
    /// A stdio server: `argv[0]` run with the rest as arguments.
    pub fn stdio<I, S>(name: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            command: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A streamable-HTTP server at `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Adds an HTTP header (`${VAR}` in the value is read from the environment).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Adds an allow-list glob over the server's tool names.
    pub fn allow(mut self, glob: impl Into<String>) -> Self {
        self.tools.push(glob.into());
        self
    }

    /// Sets the request timeout.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Sets the tool-name prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The name the agent sees for the server's tool `tool`.
    pub fn tool_name(&self, tool: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}{tool}"),
            None => format!("{}.{tool}", self.name),
        }
    }

    /// Checks the entry; `at` names it in errors (e.g. `mcp_servers[0]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let field = |f: &str, m: String| ConfigError {
            location: "agent".into(),
            field: Some(format!("{at}.{f}")),
            message: format!("field `{at}.{f}`: {m}"),
        };
        if self.name.trim().is_empty() {
            return Err(field("name", "must not be empty".into()));
        }
        match (self.command.is_empty(), &self.url) {
            (true, None) => {
                return Err(field(
                    "command",
                    "give `command` (a stdio server) or `url` (streamable HTTP)".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(field(
                    "url",
                    "give either `command` or `url`, not both".into(),
                ));
            }
            (true, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(field(
                    "url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            _ => {}
        }
        if self.timeout_ms == 0 {
            return Err(field("timeout_ms", "must be at least 1".into()));
        }
        for (i, glob) in self.tools.iter().enumerate() {
            globset::Glob::new(glob).map_err(|e| {
                field(
                    &format!("tools[{i}]"),
                    format!("invalid glob {glob:?}: {}", e.kind()),
                )
            })?;
        }
        Ok(())
    }
}

/// `text` with every `${VAR}` replaced by that environment variable; the error names the
/// first variable that is not set.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in {text:?}"));
        };
        let var = &after[..end];
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("environment variable {var} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_validate_and_name_their_field() {
        assert!(
            McpServerConfig::stdio("f", ["srv"])
                .validate("m[0]")
                .is_ok()
        );
        let err = McpServerConfig::default().validate("m[0]").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("m[0].name"));
        let both = McpServerConfig {
            url: Some("http://x".into()),
            ..McpServerConfig::stdio("f", ["srv"])
        };
        assert_eq!(
            both.validate("m[1]").unwrap_err().field.as_deref(),
            Some("m[1].url")
        );
        let bad = McpServerConfig::http("f", "ftp://x");
        assert!(bad.validate("m").unwrap_err().message.contains("ftp://x"));
        assert_eq!(McpServerConfig::http("f", "http://x").tool_name("t"), "f.t");
        assert_eq!(
            McpServerConfig::http("f", "http://x")
                .prefix("f_")
                .tool_name("t"),
            "f_t"
        );
    }

    #[test]
    fn env_values_expand_and_a_missing_one_is_named() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("a ${PATH} b").unwrap(), format!("a {path} b"));
        let err = expand_env("Bearer ${KAOS_SURELY_UNSET_VAR_42}").unwrap_err();
        assert!(err.contains("KAOS_SURELY_UNSET_VAR_42"), "{err}");
        assert_eq!(expand_env("plain").unwrap(), "plain");
    }
}
