//! Stage two: the raw flags validated into a [`RunPlan`] that knows how to build the runtime
//! and the runner. Every error here is a usage or configuration error (exit 2).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kaos_agents::{Agent, KaosRuntime, Runner};

use crate::agent_file::{AgentFile, LoadedAgent};
use crate::cli::{
    CaptureContent, ChatArgs, CommonArgs, OtlpProtocol, ResumeArgs, RunArgs, StoreArgs,
};
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
    /// `TRACESTATE`, which travels with the traceparent.
    pub tracestate: Option<String>,
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
    /// Where sessions live and how long a turn waits for one.
    pub sessions: SessionSettings,
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
        if args.common.sessions.ephemeral {
            bail!(
                "--ephemeral: a paused run lives in the session store; resume it with the same --store or --state-dir"
            );
        }
        Self::build(None, args.session, false, args.json, args.common)
    }

    /// Whether sessions (and paused runs) outlive this process.
    pub fn persistent(&self) -> bool {
        self.sessions.persistent()
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
        let sessions = SessionSettings::resolve(&common.sessions, file.as_ref())?;
        let observability = Observability {
            otlp: common.otlp.filter(|s| !s.trim().is_empty()),
            otlp_protocol: common.otlp_protocol,
            traceparent: common
                .traceparent
                .or_else(|| std::env::var("TRACEPARENT").ok())
                .filter(|s| !s.trim().is_empty()),
            tracestate: std::env::var("TRACESTATE")
                .ok()
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
            sessions,
            agent,
            models,
            observability,
            trace,
        })
    }

    /// A runtime for this plan: its session store (opened, migrated) and every model client
    /// the agents name.
    pub async fn runtime(&self) -> anyhow::Result<KaosRuntime> {
        Ok(self.models.register_all(self.sessions.runtime().await?))
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

/// Where sessions live and how long a turn waits for its session, resolved from the flags
/// ([`StoreArgs`]), the agent file's `[runtime]` section and `KAOS_STORE`. `kaos run`,
/// `chat`, `resume`, `serve` and `mcp serve` all resolve it here, in one order.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// The store.
    pub store: StateStore,
    /// Where the store came from (`--store`, `KAOS_STORE`, `FILE:LINE [runtime] store`, ...),
    /// for errors.
    pub store_origin: String,
    /// How long a turn waits for a busy session; `None`: the runtime's default (30 s).
    pub session_wait: Option<Duration>,
}

impl SessionSettings {
    /// The settings by precedence: `--ephemeral`; else `--store URL`; else `--state-dir
    /// DIR`; else the agent file's `[runtime] store`; else `KAOS_STORE`; else SQLite in the
    /// default state dir. The wait: `--session-wait`, else `[runtime] session_wait_secs`,
    /// else the runtime's default. A bad value names the flag, or the file, line and field.
    pub fn resolve(flags: &StoreArgs, file: Option<&AgentFile>) -> anyhow::Result<Self> {
        let runtime = file.and_then(|f| f.runtime());
        // The file's values are checked even when a flag overrides them: the file is wrong.
        if let Some(r) = &runtime {
            if let Some((url, at)) = &r.store {
                check_store_url(url, &format!("{at}: field `runtime.store`"))?;
            }
            if let Some((secs, at)) = &r.session_wait {
                wait_secs(*secs, &format!("{at}: field `runtime.session_wait_secs`"))?;
            }
        }
        let env_store = std::env::var(kaos_store::STORE_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty());
        let flag_store = flags.store.clone().filter(|s| !s.trim().is_empty());
        let (store, store_origin) = if flags.ephemeral {
            (StateStore::Ephemeral, "--ephemeral".to_string())
        } else if let Some(url) = flag_store {
            check_store_url(&url, "--store")?;
            (StateStore::Url(url), "--store".to_string())
        } else if let Some(dir) = &flags.state_dir {
            (StateStore::Dir(dir.clone()), "--state-dir".to_string())
        } else if let Some((url, at)) = runtime.as_ref().and_then(|r| r.store.clone()) {
            (StateStore::Url(url), format!("{at}: field `runtime.store`"))
        } else if let Some(url) = env_store {
            check_store_url(&url, kaos_store::STORE_ENV)?;
            (StateStore::Url(url), kaos_store::STORE_ENV.to_string())
        } else {
            (
                StateStore::Dir(default_state_dir()?),
                "the default state dir".to_string(),
            )
        };
        let session_wait = match (flags.session_wait, runtime.and_then(|r| r.session_wait)) {
            (Some(secs), _) => Some(wait_secs(secs, "--session-wait")?),
            (None, Some((secs, at))) => Some(wait_secs(
                secs,
                &format!("{at}: field `runtime.session_wait_secs`"),
            )?),
            (None, None) => None,
        };
        Ok(Self {
            store,
            store_origin,
            session_wait,
        })
    }

    /// [`SessionSettings::resolve`] for a process that serves several agent files over one
    /// store (`kaos serve`, `kaos mcp serve`): the first file's `[runtime]` counts, and
    /// another file whose `[runtime]` would pick a different store or wait is an error
    /// naming both files.
    pub fn resolve_shared(flags: &StoreArgs, files: &[AgentFile]) -> anyhow::Result<Self> {
        let first = Self::resolve(flags, files.first())?;
        for file in files.iter().skip(1) {
            let Some(section) = file.runtime() else {
                continue;
            };
            let other = Self::resolve(flags, Some(file))?;
            let differs = |what: &str, at: &str| {
                anyhow!(
                    "{at}: field `runtime.{what}` differs from the first agent's ({}): the agents of one server share one session store and wait; set [runtime] in {} only, or the same in every file",
                    files
                        .first()
                        .and_then(AgentFile::runtime)
                        .and_then(|r| match what {
                            "store" => r.store.map(|(_, at)| at),
                            _ => r.session_wait.map(|(_, at)| at),
                        })
                        .unwrap_or_else(|| first.store_origin.clone()),
                    files
                        .first()
                        .map_or(String::new(), |f| f.path().display().to_string())
                )
            };
            if let Some((_, at)) = &section.store
                && other.store != first.store
            {
                return Err(differs("store", at));
            }
            if let Some((_, at)) = &section.session_wait
                && other.session_wait != first.session_wait
            {
                return Err(differs("session_wait_secs", at));
            }
        }
        Ok(first)
    }

    /// The store in a few words, without a password (`SQLite in DIR/...`, a URL, `memory`).
    pub fn describe(&self) -> String {
        match &self.store {
            StateStore::Ephemeral => "in memory (--ephemeral)".to_string(),
            StateStore::Dir(dir) => {
                format!("SQLite in {}", kaos_store::state_dir_db(dir).display())
            }
            StateStore::Url(url) => kaos_store::redact_url(url),
        }
    }

    /// Whether sessions (and paused runs) outlive this process.
    pub fn persistent(&self) -> bool {
        match &self.store {
            StateStore::Ephemeral => false,
            StateStore::Dir(_) => true,
            StateStore::Url(url) => {
                !matches!(kaos_store::parse_url(url), Ok(kaos_store::StoreUrl::Memory))
            }
        }
    }

    /// A runtime over the store (opened, migrated) with the session wait; no model clients.
    pub async fn runtime(&self) -> anyhow::Result<KaosRuntime> {
        let options = kaos_store::StoreOptions::default();
        let store = match &self.store {
            StateStore::Ephemeral => None,
            StateStore::Dir(dir) => Some(
                kaos_store::open_state_dir(dir, options)
                    .await
                    .map_err(|e| anyhow!("--state-dir {}: {e}", dir.display()))?,
            ),
            StateStore::Url(url) => Some(
                kaos_store::open(url, options)
                    .await
                    .map_err(|e| anyhow!("{}: {e}", self.store_origin))?,
            ),
        };
        let mut runtime = match store {
            None => KaosRuntime::test_mode(),
            Some(store) => KaosRuntime::new(store),
        };
        if let Some(wait) = self.session_wait {
            runtime = runtime.with_session_wait(wait);
        }
        Ok(runtime)
    }
}

fn check_store_url(url: &str, origin: &str) -> anyhow::Result<()> {
    kaos_store::parse_url(url)
        .map(|_| ())
        .map_err(|e| anyhow!("{origin}: {e}"))
}

fn wait_secs(secs: f64, origin: &str) -> anyhow::Result<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        bail!("{origin}: {secs} must be a number of seconds >= 0");
    }
    Ok(Duration::from_secs_f64(secs))
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
