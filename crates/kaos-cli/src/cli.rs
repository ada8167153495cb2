//! Stage one: the raw flags, exactly as clap parses them. Nothing here is validated beyond
//! syntax; [`crate::plan`] turns them into a plan.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const TOP_EXAMPLES: &str = "\
Examples:
  kaos run \"Summarize the lease.\"                   # offline demo model: answer + span tree
  kaos run \"Summarize the lease.\" --ephemeral --trace
  echo \"What is 2+2?\" | kaos run --json             # the turn's events as JSONL
  kaos run --agent agent.toml \"Count the words\"     # tools, permissions, delegates from TOML
  kaos run --model anthropic:claude-haiku-4-5 \"Hi\"  # live (needs ANTHROPIC_API_KEY)
  kaos resume <run_id> --session <id>               # approve a paused tool call and continue
  kaos chat --session demo                          # interactive; history kept across launches
  kaos mcp serve --agent a.toml                     # agents as MCP tools (stdio or --http)

Exit codes: 0 success, 1 the turn failed, 2 usage or config error, 130 interrupted.";

const RUN_EXAMPLES: &str = "\
Examples:
  kaos run \"Summarize the lease.\"
      Offline: the built-in deterministic model answers; the span tree goes to stderr.
  kaos run \"Summarize the lease.\" --ephemeral --trace
      Nothing written to disk; the tree is printed even when stderr is not a terminal.
  kaos run --json \"Hello\" | jq -c .kind.type
      Every event of the turn as one JSON object per line.
  kaos run --session s1 --state-dir ./state \"My name is Ada.\"
  kaos run --session s1 --state-dir ./state \"What is my name?\"
      The second turn sees the first (sessions persist in the state dir).
  kaos run --model script:replies.json --agent tools.toml \"Run the check\"
      Scripted offline model: replies.json is a JSON array consumed one reply per model
      call (the intent classifier counts), e.g.
        [\"{\\\"intent\\\":\\\"tool_use\\\",\\\"confidence\\\":0.9}\",
         {\"tool_calls\": [{\"name\": \"check\", \"arguments\": {}}]},
         \"All good.\"]
  kaos run --model openai-compatible:llama3@http://127.0.0.1:11434/v1 \"Hi\"
  kaos run --otlp http://127.0.0.1:4318 \"Hi\"
      Spans go to an OTLP/HTTP collector (Jaeger, Tempo, Phoenix, ...); so they do when the
      OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER variables are set.
  kaos run --audit ./trail \"Hi\" && kaos audit show ./trail/<session>.jsonl
      A redacted JSONL audit trail, then the recorded turn as a tree.

Model specs: offline (default), script:FILE.json, anthropic:<model>, openai:<model>,
openai-compatible:<model>@<base-url>, or a bare claude-*/gpt-*/o1/o3/o4 name.";

const CHAT_EXAMPLES: &str = "\
Examples:
  kaos chat
      Chat with the offline demo model on session `chat` (kept across launches).
  kaos chat --session lease-review --agent agent.toml
Commands inside the chat: /session (print the session id), /exit (or Ctrl-D).";

const RESUME_EXAMPLES: &str = "\
Examples:
  kaos run --agent ops.toml --session s1 \"Delete the old report\"
      The destructive tool needs approval: the turn pauses and prints the run id.
  kaos resume run_0123abcd --agent ops.toml --session s1
      Runs exactly that tool call, once, and continues the turn.
  kaos resume run_0123abcd --agent ops.toml --session s1 --deny \"not today\"
      The model is told the call was denied and goes on without it.";

const AUDIT_EXAMPLES: &str = "\
Examples:
  kaos audit show trail.jsonl
  kaos audit export trail.jsonl --otlp http://127.0.0.1:4318
  kaos audit html trail.jsonl -o trail.html";

/// kaos: run agents whose turns are typed event streams, shown as traces.
#[derive(Debug, Parser)]
#[command(name = "kaos", version, about, after_help = TOP_EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log line format on stderr: text, or json (one object per line, with trace_id/span_id).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `LEVEL target: message key=value ...`.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one turn of an agent and print its answer.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Chat with an agent interactively on one session.
    #[command(after_help = CHAT_EXAMPLES)]
    Chat(ChatArgs),
    /// Approve (or deny) a paused run's tool call and continue the run.
    #[command(after_help = RESUME_EXAMPLES)]
    Resume(ResumeArgs),
    /// Read an audit trail: a text tree, an HTML viewer, or an OTLP replay.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// Serve agents over HTTP (SSE or JSON turns, approvals, sessions, OpenAPI).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Model Context Protocol: serve agents as MCP tools (stdio or streamable HTTP).
    Mcp(crate::mcp::McpArgs),
}

const SERVE_EXAMPLES: &str = "\
Examples:
  KAOS_API_TOKENS=alice=s3cret-token-1 kaos serve --agent a.toml --agent b.toml
      Serves on 127.0.0.1:8080; the first agent is the default, a body's \"agent\" picks another.
  kaos serve --insecure-localhost --ephemeral
      No auth (loopback only), the built-in offline assistant, nothing on disk.
  kaos serve --agent a.toml --store postgres://kaos@db/kaos --bind 0.0.0.0:8080
      One of many replicas behind a load balancer: they share sessions and paused runs
      (or set `[runtime] store = \"postgres://…\"` in a.toml, or KAOS_STORE).
  curl -N -H 'Authorization: Bearer s3cret-token-1' -H 'Content-Type: application/json' \\
       -d '{\"message\": \"Summarize the lease.\"}' http://127.0.0.1:8080/v1/sessions/s1/messages
      The turn's events as SSE; add -H 'Accept: application/json' for one JSON object.
  OTEL_TRACES_EXPORTER=console kaos serve --insecure-localhost
      Each request's server span, with agent.turn under it, one line per span on stdout.

Tokens: KAOS_API_TOKENS (comma-separated `tenant=token` or `token`) and/or --tokens-file.
Signals: SIGTERM/SIGINT drain (new turns 503, /readyz 503, turns in flight finish up to
--drain-timeout, the rest are cancelled), then flush the exporter and audit trail; exit 0.";

/// `kaos serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Agent file (TOML); repeat for more agents. The first is the default. Default: the
    /// built-in assistant.
    #[arg(long, value_name = "FILE.toml")]
    pub agent: Vec<PathBuf>,
    /// Model spec for every agent; overrides the agent files'.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// A file of bearer tokens (one `tenant=token` or `token` per line), added to
    /// KAOS_API_TOKENS.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve without tokens (refused unless --bind is a loopback address).
    #[arg(long)]
    pub insecure_localhost: bool,
    /// Where sessions live (`--store postgres://…` for many replicas) and how long a turn
    /// waits for a busy session (then 409 `session_busy`).
    #[command(flatten)]
    pub sessions: StoreArgs,
    /// Turns in flight at once; beyond it, 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_concurrent_turns: usize,
    /// Wall-clock limit of one turn, in seconds (then it ends with outcome `timeout`).
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub turn_timeout: f64,
    /// Former name of --session-wait.
    #[arg(
        long,
        value_name = "SECS",
        hide = true,
        conflicts_with = "session_wait"
    )]
    pub busy_wait: Option<f64>,
    /// How long in-flight turns may run after SIGTERM/SIGINT, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Longest message in characters (422 beyond).
    #[arg(long, value_name = "CHARS", default_value_t = 100_000)]
    pub max_message_chars: usize,
    /// SSE keep-alive comment interval while a turn is idle, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub keep_alive: f64,
    /// The offline and `script:` models wait MS milliseconds per call.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub model_latency_ms: u64,
    /// Export spans over OTLP to this collector (default: the OTEL_* variables, if set).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http).
    #[arg(long, value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// How much message content goes into spans (default: KAOS_CAPTURE_CONTENT, else
    /// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT where true means redacted, else none).
    #[arg(long, value_enum)]
    pub capture_content: Option<CaptureContent>,
    /// Write a redacted audit trail (one JSONL file per session) into DIR.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// Print no access log lines (errors only).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `kaos resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The paused run's id (printed when the turn paused).
    pub run_id: String,
    /// The session the run belongs to.
    #[arg(long, value_name = "ID")]
    pub session: String,
    /// Deny the call instead of approving it; the model gets REASON as the call's result.
    #[arg(long, value_name = "REASON")]
    pub deny: Option<String>,
    /// Resume a run whose earlier resume never finished (in doubt: its tool call may
    /// already have run, and runs again).
    #[arg(long, conflicts_with = "abandon")]
    pub force: bool,
    /// Drop the paused run without running its call; the session can take new turns.
    #[arg(long, conflicts_with = "deny")]
    pub abandon: bool,
    /// Print the run's events as JSONL on stdout instead of the answer.
    #[arg(long)]
    pub json: bool,
    /// Common flags (use the same --agent, --model and --store/--state-dir as the paused run).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by `run` and `chat`.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Agent file (TOML). Default: a built-in assistant.
    #[arg(long, value_name = "FILE.toml")]
    pub agent: Option<PathBuf>,
    /// Model spec; overrides the agent file's. Default: `offline`.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Where sessions live and how long a turn waits for one.
    #[command(flatten)]
    pub sessions: StoreArgs,
    /// Print the span tree on stderr even when stderr is not a terminal.
    #[arg(long)]
    pub trace: bool,
    /// Print nothing on stderr but errors (no tree, no spinner, no session id).
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the answer on stdout as the model streams it even when stdout is not a
    /// terminal (on a terminal it always streams). Ignored with --json, which streams events.
    #[arg(long)]
    pub stream: bool,
    /// Export spans over OTLP to this collector (base URL such as http://127.0.0.1:4318;
    /// default: the OTEL_EXPORTER_OTLP_* variables, if set).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http).
    #[arg(long, value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// A W3C traceparent to continue (default: the TRACEPARENT variable).
    #[arg(long, value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// How much message content goes into spans (default: KAOS_CAPTURE_CONTENT, else
    /// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT where true means redacted, else none).
    #[arg(long, value_enum)]
    pub capture_content: Option<CaptureContent>,
    /// Write a redacted audit trail (one JSONL file per session) into DIR.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// The offline and `script:` models wait MS milliseconds per call (load tests, demos).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub model_latency_ms: u64,
    /// Print the CLI's own output (the --json events, the span tree, notes, warnings and
    /// errors on stderr) without redacting secrets in it. The audit trail and redacted
    /// content capture stay redacted; the plain answer is never redacted.
    #[arg(long)]
    pub no_redact: bool,
}

/// Where sessions live and how long a turn waits for its session: the same flags, and the
/// same order, for `run`, `chat`, `resume`, `serve` and `mcp serve`
/// ([`crate::plan::SessionSettings::resolve`]): `--ephemeral`, else `--store`, else
/// `--state-dir`, else the agent file's `[runtime] store`, else `KAOS_STORE`, else SQLite in
/// the default state dir.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// Where sessions are kept (SQLite in DIR/sessions/kaos.db). Default: the agent file's
    /// [runtime] store, else KAOS_STORE, else $XDG_DATA_HOME/kaos or ~/.local/share/kaos.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ephemeral", "store"])]
    pub state_dir: Option<PathBuf>,
    /// The session store by URL: `postgres://USER@HOST/DB` (many processes or replicas),
    /// `sqlite:PATH`, or `memory:`. Default: the agent file's [runtime] store, else
    /// KAOS_STORE, else the state directory.
    #[arg(long, value_name = "URL", conflicts_with = "ephemeral")]
    pub store: Option<String>,
    /// How long a turn waits for its session while another turn (any process or replica)
    /// holds it, before failing with session_busy. Default: the agent file's [runtime]
    /// session_wait_secs, else 30.
    #[arg(long, value_name = "SECS")]
    pub session_wait: Option<f64>,
    /// Keep sessions in memory only; nothing is written to disk.
    #[arg(long)]
    pub ephemeral: bool,
}

/// `kaos run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The message. Read from stdin when absent.
    pub message: Option<String>,
    /// The session id. Default: a new id (printed on stderr).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Print the turn's events as JSONL on stdout instead of the answer.
    #[arg(long)]
    pub json: bool,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `kaos chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The session id. Default: `chat`.
    #[arg(long, value_name = "ID", default_value = "chat")]
    pub session: String,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `kaos audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do with the trail.
    #[command(subcommand)]
    pub action: AuditAction,
    /// Show the trail as it is in the file, without redacting it again on the way out.
    #[arg(long, global = true)]
    pub no_redact: bool,
}

/// `kaos audit show|export|html FILE`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Print a trail as a readable timeline.
    Show {
        /// The trail file.
        file: PathBuf,
    },
    /// Re-export a trail as OTLP spans, with their recorded times and ids.
    Export {
        /// The trail file.
        file: PathBuf,
        /// The collector (base URL; default: the OTEL_EXPORTER_OTLP_* variables, else
        /// http://localhost:4318).
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
    },
    /// Render a trail as a standalone HTML page (a file given with `-o` is created owner-only).
    Html {
        /// The trail file.
        file: PathBuf,
        /// Where to write the page (default: stdout).
        #[arg(short = 'o', long = "output", value_name = "OUT.html")]
        output: Option<PathBuf>,
    },
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/HTTP (protobuf).
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// How much content the trace carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureContent {
    /// No message content in spans.
    None,
    /// Content with secrets and personal data redacted.
    Redacted,
    /// Full content.
    Full,
}
