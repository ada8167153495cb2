//! The agent runtime of kaos.
//!
//! An [`Agent`] (frozen configuration) is driven by a [`Runner`] against a [`KaosRuntime`].
//! A turn is a typed event stream ([`events`]): `Span(subject, phase)` boundaries and value
//! events. [`hooks`] observe the stream; the `otel` feature maps it onto OpenTelemetry spans.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod agent;
pub mod agent_file;
pub mod audit;
pub mod coalesce;
pub mod events;
pub mod hooks;
pub mod mcp_config;
pub mod message_parts;
mod model_stream;
pub mod naming;
#[cfg(feature = "otel")]
pub mod otel;
pub mod permissions;
pub mod redact;
pub mod runner;
pub mod runtime;
pub mod scope;
pub mod session;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tools;
pub mod tree;
mod warn_once;

#[cfg(not(feature = "test-support"))]
pub(crate) use scope::attrs;

pub use agent::{Agent, AgentBuilder, AgentPattern, Budget, ConfigError};
pub use events::{
    Event, EventKind, Intent, SpanError, SpanEvent, SpanPhase, SpanSubject, ToolCallSummary,
    TurnOutcome, TurnSummary,
};
pub use hooks::{CircuitBreaker, FnGate, FnHook, Hook, HookAction, HookSet};
pub use mcp_config::McpServerConfig;
pub use permissions::{PermissionDecision, PermissionPolicy, PermissionRule};
pub use runner::{
    AgentResponse, AgentTool, Approval, EventStream, IntentResult, PendingApproval, RunFailure,
    RunOptions, RunState, Runner, TurnError, agent_as_tool, handoff_tool,
};
pub use runtime::KaosRuntime;
pub use scope::TurnScope;
pub use session::{
    InMemoryStore, PausedRun, RunStatus, Session, SessionLease, SessionStore, StoreError,
    StoreErrorKind, TurnChanges,
};
pub use tools::{
    FnTool, NestedUsage, Tool, ToolAnnotations, ToolContext, ToolHost, ToolOutput, ToolRegistry,
    ToolSource,
};

pub use kaos_llm;
pub use kaos_llm::{FunctionClient, LlmClient, LlmError, LlmRequest, Message, ProviderResponse};
