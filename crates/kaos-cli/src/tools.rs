//! Command tools built from the agent file: a child process per call. (Delegates are
//! `kaos_agents::agent_as_tool` sub-agents; see `agent_file`.)

use std::process::Stdio;
use std::time::Duration;

use kaos_agents::{FnTool, ToolAnnotations, ToolContext, ToolOutput};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most bytes of a command's stdout (and, apart, of its stderr) kept for the result, unless
/// the tool sets `max_output_bytes`. The rest is read and discarded, so the child never
/// blocks on a full pipe and memory stays bounded whatever it prints.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// What `[[tools]]` says about one command tool.
#[derive(Clone)]
pub struct CommandSpec {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
    /// The argv to run.
    pub argv: Vec<String>,
    /// Its own timeout (the agent's `tool_timeout_ms` applies too).
    pub timeout_ms: Option<u64>,
    /// Permission hints.
    pub annotations: ToolAnnotations,
    /// Most bytes of stdout (and of stderr) kept ([`DEFAULT_MAX_OUTPUT_BYTES`] by default).
    pub max_output_bytes: usize,
    /// Hands the child the trace context of its tool-call span, when tracing is on.
    pub trace: Option<TraceContext>,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .field("argv", &self.argv)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("traced", &self.trace.is_some())
            .finish_non_exhaustive()
    }
}

/// The W3C trace headers of a tool call's span (from its run and span ids), when tracing is
/// on: given to command tools explicitly, so they need no process-global hook.
pub type TraceContext = std::sync::Arc<dyn Fn(&str, &str) -> Option<TraceHeaders> + Send + Sync>;

/// A span's W3C trace headers, for a child process's `TRACEPARENT` and `TRACESTATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate`, when the trace has one.
    pub tracestate: Option<String>,
}

/// A tool that runs `argv` with the JSON arguments on stdin; stdout is the result, a
/// non-zero exit is an error result carrying stderr. Output past `max_output_bytes` is
/// discarded and the result [marked truncated](ToolOutput::mark_truncated). The child is
/// killed when the call is dropped (timeout, Ctrl-C, cancelled turn).
pub fn command_tool(spec: CommandSpec) -> FnTool {
    let CommandSpec {
        name,
        description,
        parameters,
        argv,
        timeout_ms,
        annotations,
        max_output_bytes,
        trace,
    } = spec;
    FnTool::from_json(name, description, parameters, move |args, ctx| {
        let argv = argv.clone();
        let trace = trace.clone();
        async move {
            let run = run_command(argv.clone(), args, ctx, max_output_bytes, trace);
            match timeout_ms {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), run).await {
                    Ok(out) => out,
                    Err(_) => ToolOutput::error(format!(
                        "`{}` timed out after {ms} ms and was killed",
                        argv.join(" ")
                    )),
                },
                None => run.await,
            }
        }
    })
    .with_annotations(annotations)
}

async fn run_command(
    argv: Vec<String>,
    args: Value,
    ctx: ToolContext,
    max_output_bytes: usize,
    trace: Option<TraceContext>,
) -> ToolOutput {
    let Some((program, rest)) = argv.split_first() else {
        return ToolOutput::error("the tool has an empty command");
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("KAOS_SESSION_ID", &*ctx.session_id)
        .env("KAOS_RUN_ID", &*ctx.run_id)
        .env("KAOS_CALL_ID", &ctx.call_id)
        .env("KAOS_SPAN_ID", &*ctx.span_id);
    // With tracing on, the child continues the trace under this tool call's span; otherwise
    // a TRACEPARENT in our own environment is inherited as is.
    if let Some(headers) = trace.and_then(|t| t(&ctx.run_id, &ctx.span_id)) {
        cmd.env("TRACEPARENT", headers.traceparent);
        // Ours or none: an inherited TRACESTATE belongs to another trace.
        match headers.tracestate {
            Some(state) => cmd.env("TRACESTATE", state),
            None => cmd.env_remove("TRACESTATE"),
        };
    }
    // Its own process group, so a cancelled call can kill the command's children too
    // (`kill_on_drop` alone only reaches the direct child, e.g. `sh`, not its `sleep`).
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ToolOutput::error(format!("cannot start `{program}`: {e}")),
    };
    let mut group = GroupKill(child.id());
    if let Some(mut stdin) = child.stdin.take() {
        let input = args.to_string();
        // A command that never reads stdin must not block the call: write in the background
        // and ignore a broken pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (stdout, stderr) = tokio::join!(
        capture(child.stdout.take(), max_output_bytes),
        capture(child.stderr.take(), max_output_bytes)
    );
    let status = child.wait().await;
    group.disarm();
    let status = match status {
        Ok(status) => status,
        Err(e) => return ToolOutput::error(format!("`{program}` could not be awaited: {e}")),
    };
    if status.success() {
        let text = String::from_utf8_lossy(&stdout.kept).trim_end().to_string();
        if stdout.truncated() {
            return ToolOutput::text(format!("{}\n{text}", stdout.notice("stdout")))
                .mark_truncated();
        }
        return ToolOutput::text(text);
    }
    let notice = if stderr.truncated() {
        format!("{}\n", stderr.notice("stderr"))
    } else {
        String::new()
    };
    let output = ToolOutput::error(format!(
        "`{}` failed ({status}): {notice}{}",
        argv.join(" "),
        String::from_utf8_lossy(&stderr.kept).trim_end()
    ));
    if stderr.truncated() {
        output.mark_truncated()
    } else {
        output
    }
}

/// What was read from one of a child's pipes.
struct Captured {
    /// The first bytes, up to the cap.
    kept: Vec<u8>,
    /// Every byte read (kept or discarded).
    total: u64,
}

impl Captured {
    fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// The first line of a truncated result, saying how much was kept.
    fn notice(&self, stream: &str) -> String {
        format!(
            "[output truncated by kaos: the first {} of {} bytes of {stream} are shown]",
            self.kept.len(),
            self.total
        )
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes and discarding the rest (still
/// reading, so the child never blocks on a full pipe). A read error ends the capture.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Captured {
    let mut captured = Captured {
        kept: Vec::new(),
        total: 0,
    };
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        captured.total = captured.total.saturating_add(n as u64);
        let room = cap.saturating_sub(captured.kept.len());
        captured.kept.extend_from_slice(&buf[..n.min(room)]);
    }
    captured
}

/// Kills a command's whole process group when a call is dropped before the command ended.
struct GroupKill(Option<u32>);

impl GroupKill {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            // No libc (and no unsafe) here: `kill -KILL -- -PGID` signals the group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
