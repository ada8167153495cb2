//! `kaos mcp serve`: agents as MCP tools, over stdio (desktop and IDE clients) or
//! streamable HTTP (`--http ADDR`, bearer tokens from `KAOS_API_TOKENS`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use kaos_mcp::serve::{
    AgentServer, ServedAgent, TokenSet, serve_http, serve_stdio, tokens_from_env,
};

use crate::agent_file::AgentFile;
use crate::cli::{CommonArgs, StoreArgs};
use crate::exit::CliError;
use crate::plan::{RunPlan, SessionSettings, StateStore};
use crate::wiring;

const SERVE_EXAMPLES: &str = "\
Examples:
  kaos mcp serve --agent helper.toml
      Serve over stdio: add it to a desktop or IDE client as
      {\"command\": \"kaos\", \"args\": [\"mcp\", \"serve\", \"--agent\", \"/path/helper.toml\"]}.
  KAOS_API_TOKENS=$(openssl rand -hex 24) kaos mcp serve --agent a.toml --agent b.toml --http 0.0.0.0:8931
      Streamable HTTP at http://HOST:8931/mcp; clients send Authorization: Bearer <token>.
  kaos mcp serve --agent a.toml --http 127.0.0.1:8931 --insecure-localhost
      No token, loopback only (for local development).

Tokens follow `kaos serve`: KAOS_API_TOKENS (comma-separated `tenant=token` or `token`) and/or
--tokens-file; each tenant's session ids are its own.
Each agent is a tool named after it, taking {\"message\", \"session_id\"?}. The result's text is
the answer; its structured content holds run_id, session_id, intent, tool_calls and usage.
A request's _meta.traceparent makes the agent's turn a child of the caller's span.";

/// `kaos mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: McpAction,
}

/// `kaos mcp serve`.
#[derive(Debug, Subcommand)]
pub enum McpAction {
    /// Serve agents as MCP tools over stdio (default) or streamable HTTP.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
}

/// `kaos mcp serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// An agent file to serve (repeat for several agents).
    #[arg(long = "agent", value_name = "FILE.toml", required = true)]
    pub agents: Vec<PathBuf>,
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// A file of bearer tokens (one `tenant=token` or `token` per line), added to
    /// KAOS_API_TOKENS.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub tokens_file: Option<PathBuf>,
    /// Allow --http without a token, on a loopback address only.
    #[arg(long, requires = "http")]
    pub insecure_localhost: bool,
    /// Model spec for every agent; overrides the agent files'.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Where sessions live (paused runs are resumed from there with `kaos resume`).
    #[command(flatten)]
    pub sessions: StoreArgs,
    /// Export spans over OTLP to this collector (default: the OTEL_EXPORTER_OTLP_* variables).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// Write a redacted audit trail (one JSONL file per session) into DIR.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
}

/// Runs `kaos mcp ...`.
pub async fn command(args: McpArgs) -> Result<u8, CliError> {
    match args.action {
        McpAction::Serve(a) => serve(a).await,
    }
}

async fn serve(args: ServeArgs) -> Result<u8, CliError> {
    let mut tokens = tokens_from_env().map_err(|e| CliError::usage(anyhow!("{e}")))?;
    if let Some(file) = &args.tokens_file {
        tokens.extend(TokenSet::from_file(file).map_err(|e| CliError::usage(anyhow!("{e}")))?);
    }
    // One store for every agent: conflicting [runtime] sections are an error.
    let files = args
        .agents
        .iter()
        .map(|path| AgentFile::load(path))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(CliError::usage)?;
    SessionSettings::resolve_shared(&args.sessions, &files).map_err(CliError::usage)?;
    let mut plans = Vec::with_capacity(args.agents.len());
    for path in &args.agents {
        let common = CommonArgs {
            agent: Some(path.clone()),
            model: args.model.clone(),
            sessions: args.sessions.clone(),
            trace: false,
            quiet: true,
            otlp: args.otlp.clone(),
            otlp_protocol: None,
            traceparent: None,
            capture_content: None,
            audit: args.audit.clone(),
            model_latency_ms: 0,
            stream: false,
            no_redact: false,
        };
        plans.push(RunPlan::for_serving(common).map_err(CliError::usage)?);
    }
    let Some(first) = plans.first() else {
        return Err(CliError::usage(anyhow!(
            "give at least one --agent FILE.toml"
        )));
    };
    // One runtime (sessions, models) for every served agent.
    let base = first.mcp_runtime().await.map_err(CliError::usage)?;
    let mut runners = Vec::with_capacity(plans.len());
    for plan in &plans {
        let runtime = match plan.agent.mcp_servers().is_empty() {
            true => plan.models.register_all(base.clone()),
            false if std::ptr::eq(plan, first) => base.clone(),
            false => {
                let toolset = kaos_mcp::McpToolset::connect(plan.agent.mcp_servers())
                    .await
                    .context("starting the agent's MCP servers")
                    .map_err(CliError::usage)?
                    .with_trace_resolver({
                        let trace = first.trace.clone();
                        Arc::new(move |ctx: &kaos_agents::ToolContext| {
                            trace.otel_context(&ctx.run_id, &ctx.span_id)
                        })
                    });
                toolset.attach(plan.models.register_all(base.clone()))
            }
        };
        runners.push(plan.runner(runtime));
    }
    let (hooks, observers) =
        wiring::shared_hooks(&first.observability, &first.trace).map_err(CliError::usage)?;
    let runners: Vec<_> = runners
        .into_iter()
        .map(|mut r| {
            for h in &hooks {
                r = r.with_shared_hook(h.clone());
            }
            r
        })
        .collect();
    let mut served = Vec::with_capacity(runners.len());
    for (runner, (plan, path)) in runners.into_iter().zip(plans.iter().zip(&args.agents)) {
        let hint = resume_hint(path, &plan.sessions.store);
        served.push(ServedAgent::new(runner).with_approval_hint(hint));
    }
    let server = AgentServer::new(served);
    let names = server.tool_names().join(", ");
    let result = match args.http {
        None => {
            eprintln!("kaos: serving MCP over stdio: {names}");
            serve_stdio(server)
                .await
                .map_err(|e| CliError::failed(anyhow!(e)))
        }
        Some(addr) => {
            // SIGTERM or SIGINT, handlers installed before the "serving" line.
            let shutdown = crate::serve::shutdown_signal();
            serve_http(
                server,
                addr,
                tokens,
                args.insecure_localhost,
                |bound| eprintln!("kaos: serving MCP over HTTP at http://{bound}/mcp: {names}"),
                shutdown,
            )
            .await
            .map_err(|e| match e {
                kaos_mcp::serve::HttpServeError::NoToken { .. } => CliError::usage(anyhow!(e)),
                other => CliError::failed(anyhow!(other)),
            })
        }
    };
    observers.finish(false);
    result.map(|()| 0)
}

/// How a caller approves a paused run of the agent in `path`.
fn resume_hint(path: &std::path::Path, store: &StateStore) -> kaos_mcp::serve::ApprovalHint {
    let agent = path.display().to_string();
    let state = match store {
        StateStore::Dir(dir) => format!(" --state-dir {}", dir.display()),
        StateStore::Url(url) => format!(" --store {}", kaos_store::redact_url(url)),
        StateStore::Ephemeral => String::new(),
    };
    let ephemeral = matches!(store, StateStore::Ephemeral);
    Arc::new(move |run_id: &str, session_id: &str| {
        if ephemeral {
            format!(
                "This server keeps sessions in memory (--ephemeral), so the run cannot be resumed from the command line; restart it with --state-dir DIR and run `kaos resume {run_id} --agent {agent} --session {session_id} --state-dir DIR`."
            )
        } else {
            format!(
                "Approve it with `kaos resume {run_id} --agent {agent} --session {session_id}{state}` (add `--deny REASON` to refuse)."
            )
        }
    })
}
