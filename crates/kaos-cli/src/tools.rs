//! Command tools built from the agent file: a child process per call. (Delegates are
//! `kaos_agents::agent_as_tool` sub-agents; see `agent_file`.)

use std::process::Stdio;
use std::time::Duration;

use kaos_agents::{FnTool, ToolAnnotations, ToolContext, ToolOutput};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// What `[[tools]]` says about one command tool.
#[derive(Debug, Clone)]
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
}

/// A tool that runs `argv` with the JSON arguments on stdin; stdout is the result, a
/// non-zero exit is an error result carrying stderr. The child is killed when the call is
/// dropped (timeout, Ctrl-C, cancelled turn).
pub fn command_tool(spec: CommandSpec) -> FnTool {
    let CommandSpec {
        name,
        description,
        parameters,
        argv,
        timeout_ms,
        annotations,
    } = spec;
    FnTool::from_json(name, description, parameters, move |args, ctx| {
        let argv = argv.clone();
        async move {
            let run = run_command(argv.clone(), args, ctx);
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

async fn run_command(argv: Vec<String>, args: Value, ctx: ToolContext) -> ToolOutput {
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
    if let Some(traceparent) = crate::wiring::traceparent_for(&ctx.run_id, &ctx.span_id) {
        cmd.env("TRACEPARENT", traceparent);
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
    let output = child.wait_with_output().await;
    group.disarm();
    match output {
        Ok(out) if out.status.success() => {
            ToolOutput::text(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        }
        Ok(out) => ToolOutput::error(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
        Err(e) => ToolOutput::error(format!("`{program}` could not be awaited: {e}")),
    }
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
