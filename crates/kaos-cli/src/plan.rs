//! Stage two: the raw flags validated into a [`RunPlan`] that knows how to build the runtime
//! and the runner. Every error here is a usage or configuration error (exit 2).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use kaos_agents::{Agent, KaosRuntime, Runner};

use crate::agent_file::{AgentFile, LoadedAgent};
use crate::cli::{CaptureContent, ChatArgs, CommonArgs, OtlpProtocol, ResumeArgs, RunArgs};
use crate::models::ModelRegistry;
use crate::wiring;

/// Where sessions live.
#[derive(Debug, Clone, PartialEq)]
pub enum StateStore {
    /// In memory (`--ephemeral`).
    Ephemeral,
    /// SQLite in this state directory (`DIR/sessions/kaos.db`).
    Dir(PathBuf),
    /// A store URL (`--store`, `KAOS_STORE`, the agent file's `[runtime] store`).
    Url(String),
}

/// The observability flags; [`crate::wiring`] turns them into hooks.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// `--otlp URL` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp: Option<String>,
    /// `--otlp-protocol`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `--traceparent` / `TRACEPARENT`.
    pub traceparent: Option<String>,
    /// `--capture-content`.
    pub capture_content: Option<CaptureContent>,
    /// `--audit DIR`.
    pub audit: Option<PathBuf>,
}

/// What stderr shows.
#[derive(Debug, Clone, Copy)]
pub struct Display {
    /// Print the span tree.
    pub tree: bool,
    /// Show a spinner while waiting.
    pub spinner: bool,
    /// Print notes such as the new session id.
    pub notes: bool,
    /// Print the answer on stdout as it streams (a terminal, or `--stream`; never with
    /// `--json`).
    pub stream: bool,
}

/// A validated `run` or `chat` invocation.
#[derive(Debug)]
pub struct RunPlan {
    /// The message (`run` only; `None` = read stdin).
    pub message: Option<String>,
    /// The session id.
    pub session: String,
    /// Whether the session id was generated (then it is printed).
    pub session_generated: bool,
    /// JSONL events on stdout instead of the answer.
    pub json: bool,
    /// What stderr shows.
    pub display: Display,
    /// Where sessions live.
    pub store: StateStore,
    /// How long a turn waits for a busy session.
    pub session_wait: Option<std::time::Duration>,
    /// The agent, with its tools.
    pub agent: LoadedAgent,
    /// The model clients every agent of this process uses.
    pub models: Arc<ModelRegistry>,
    /// OTLP, traceparent, content capture, audit.
    pub observability: Observability,
    /// Where the command tools find the OTel hook once it is attached.
    pub trace: wiring::TraceSlot,
}

impl RunPlan {
    /// Validates `kaos run` flags.
    pub fn from_args(args: RunArgs) -> anyhow::Result<Self> {
        let (session, generated) = match args.session {
            Some(s) if s.trim().is_empty() => bail!("--session must not be empty"),
            Some(s) => (s, false),
            None => (format!("s-{}", uuid::Uuid::new_v4().simple()), true),
        };
        Self::build(args.message, session, generated, args.json, args.common)
    }

    /// Validates `kaos resume` flags.
    pub fn from_resume_args(args: ResumeArgs) -> anyhow::Result<Self> {
        if args.session.trim().is_empty() {
            bail!("--session must not be empty");
        }
        if args.common.ephemeral {
            bail!(
                "--ephemeral: a paused run lives in the session store; resume it with the same --store or --state-dir"
            );
        }
        Self::build(None, args.session, false, args.json, args.common)
    }

    /// Whether sessions (and paused runs) outlive this process.
    pub fn persistent(&self) -> bool {
        match &self.store {
            StateStore::Ephemeral => false,
            StateStore::Dir(_) => true,
            StateStore::Url(url) => !url.trim().starts_with("memory"),
        }
    }

    /// Validates the flags of one agent of `kaos mcp serve` (`common.agent` is its file).
    pub fn for_serving(common: CommonArgs) -> anyhow::Result<Self> {
        Self::build(None, "mcp".into(), false, false, common)
    }

    /// Validates `kaos chat` flags.
    pub fn from_chat_args(args: ChatArgs) -> anyhow::Result<Self> {
        if args.session.trim().is_empty() {
            bail!("--session must not be empty");
        }
        Self::build(None, args.session, false, false, args.common)
    }

    fn build(
        message: Option<String>,
        session: String,
        session_generated: bool,
        json: bool,
        common: CommonArgs,
    ) -> anyhow::Result<Self> {
        let file = match &common.agent {
            Some(path) => Some(AgentFile::load(path)?),
            None => None,
        };
        let env_store = std::env::var(kaos_store::STORE_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty());
        let store = if common.ephemeral {
            StateStore::Ephemeral
        } else if let Some(url) = common.store.filter(|s| !s.trim().is_empty()) {
            StateStore::Url(url)
        } else if let Some(dir) = common.state_dir {
            StateStore::Dir(dir)
        } else if let Some(url) = env_store {
            StateStore::Url(url)
        } else {
            StateStore::Dir(default_state_dir()?)
        };
        let session_wait = match common.session_wait {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                Some(std::time::Duration::from_secs_f64(secs))
            }
            Some(secs) => bail!("--session-wait {secs}: must be a number of seconds >= 0"),
            None => None,
        };
        let observability = Observability {
            otlp: common.otlp.filter(|s| !s.trim().is_empty()),
            otlp_protocol: common.otlp_protocol,
            traceparent: common
                .traceparent
                .or_else(|| std::env::var("TRACEPARENT").ok())
                .filter(|s| !s.trim().is_empty()),
            capture_content: common.capture_content,
            audit: common.audit,
        };
        wiring::check_observability(&observability)?;

        let models = Arc::new(ModelRegistry::with_latency(
            std::time::Duration::from_millis(common.model_latency_ms),
        ));
        let trace = wiring::TraceSlot::default();
        let agent =
            LoadedAgent::build(file, common.model.as_deref(), &models, 0, &trace.context())?;

        let stderr_tty = std::io::stderr().is_terminal();
        let display = Display {
            tree: !common.quiet && (common.trace || stderr_tty),
            spinner: !common.quiet && stderr_tty,
            notes: !common.quiet,
            stream: !json && (common.stream || std::io::stdout().is_terminal()),
        };
        Ok(Self {
            message,
            session,
            session_generated,
            json,
            display,
            store,
            session_wait,
            agent,
            models,
            observability,
            trace,
        })
    }

    /// A runtime for this plan: its session store (opened, migrated) and every model client
    /// the agents name.
    pub async fn runtime(&self) -> anyhow::Result<KaosRuntime> {
        let options = kaos_store::StoreOptions::default();
        let mut runtime = match &self.store {
            StateStore::Ephemeral => KaosRuntime::test_mode(),
            StateStore::Dir(dir) => KaosRuntime::new(
                kaos_store::open_state_dir(dir, options)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            StateStore::Url(url) => KaosRuntime::new(
                kaos_store::open(url, options)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        if let Some(wait) = self.session_wait {
            runtime = runtime.with_session_wait(wait);
        }
        Ok(self.models.register_all(runtime))
    }

    /// [`RunPlan::runtime`] with the MCP servers of the agent (and its delegates) started:
    /// their tools join the runtime, and each call carries its tool span's traceparent.
    pub async fn mcp_runtime(&self) -> anyhow::Result<KaosRuntime> {
        let runtime = self.runtime().await?;
        let servers = self.agent.mcp_servers();
        if servers.is_empty() {
            return Ok(runtime);
        }
        let toolset = kaos_mcp::McpToolset::connect(servers)
            .await
            .context("starting the agent's MCP servers")?
            .with_trace_resolver({
                let trace = self.trace.clone();
                Arc::new(move |ctx: &kaos_agents::ToolContext| {
                    trace.otel_context(&ctx.run_id, &ctx.span_id)
                })
            });
        Ok(toolset.attach(runtime))
    }

    /// The runner for the plan's agent, its tools registered on `runtime`.
    pub fn runner(&self, runtime: KaosRuntime) -> Runner {
        self.agent.runner(runtime)
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent.agent
    }
}

/// `$XDG_DATA_HOME/kaos`, else `~/.local/share/kaos`.
pub fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("kaos"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("cannot find a state dir: neither XDG_DATA_HOME nor HOME is set (use --state-dir DIR or --ephemeral)")?;
    Ok(PathBuf::from(home).join(".local/share/kaos"))
}
