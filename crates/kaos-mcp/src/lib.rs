//! MCP both ways for kaos, over the official Rust SDK (`rmcp`).
//!
//! * **MCP servers as tool sources.** [`McpToolset::connect`] starts stdio servers (or
//!   connects to streamable-HTTP ones) once, lists their tools and offers them to every
//!   runner on a runtime as `{server}.{tool}` ([`kaos_agents::ToolSource`]). MCP annotations
//!   feed the permission policy (`readOnlyHint` → allow, `destructiveHint` → ask, unless a
//!   rule says otherwise); `tools/list_changed` re-lists; a server that died is restarted on
//!   its next use, and the call that saw it die gets an error result naming it.
//! * **One trace across the boundary.** Each `tools/call` carries the W3C `traceparent` and
//!   `tracestate` of its `tool_call` span in `params._meta`, and that span (no second one)
//!   gets `mcp.method.name`, `mcp.protocol.version`, `mcp.session.id`, `jsonrpc.request.id`
//!   and `network.transport` (`pipe` | `tcp`).
//! * **Agents as MCP servers.** [`serve::AgentServer`] exposes agents as MCP tools taking
//!   `{message, session_id?}`, over stdio or streamable HTTP with bearer tokens
//!   ([`serve::serve_stdio`], [`serve::http_router`]); a `_meta.traceparent` on the request
//!   parents the agent's turn.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod http_client;
mod link;
pub mod serve;
pub mod tool;
mod toolset;
pub mod trace;

pub use tool::McpTool;
pub use toolset::McpToolset;

/// What went wrong with an MCP server.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A bad `[[mcp_servers]]` entry (or a `${VAR}` that is not set).
    #[error("MCP server {server}: bad configuration: {message}")]
    Config {
        /// The server's name.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not be started or reached, or did not initialize.
    #[error("MCP server {server}: {message}")]
    Connect {
        /// The server's name.
        server: String,
        /// What happened.
        message: String,
    },
    /// A request to a connected server failed.
    #[error("MCP server {server}: {message}")]
    Request {
        /// The server's name.
        server: String,
        /// What happened.
        message: String,
    },
}
