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
    /// Print the run's events as JSONL on stdout instead of the answer.
    #[arg(long)]
    pub json: bool,
    /// Common flags (use the same --agent, --model and --state-dir as the paused run).
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
    /// Where sessions are kept. Default: $XDG_DATA_HOME/kaos or ~/.local/share/kaos.
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    pub state_dir: Option<PathBuf>,
    /// Keep sessions in memory only; nothing is written to disk.
    #[arg(long)]
    pub ephemeral: bool,
    /// Print the span tree on stderr even when stderr is not a terminal.
    #[arg(long)]
    pub trace: bool,
    /// Print nothing on stderr but errors (no tree, no spinner, no session id).
    #[arg(long, short)]
    pub quiet: bool,
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
    /// How much message content goes into spans (default: KAOS_CAPTURE_CONTENT, else none).
    #[arg(long, value_enum)]
    pub capture_content: Option<CaptureContent>,
    /// Write a redacted audit trail (one JSONL file per session) into DIR.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
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
    /// Render a trail as a standalone HTML page.
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
