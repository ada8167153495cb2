//! Driving one turn: the event stream, Ctrl-C, the spinner, and what gets printed.

use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use kaos_agents::{
    AgentResponse, Approval, Event, EventKind, EventStream, Hook, Runner, SpanPhase, TurnError,
};

use crate::exit::{self, CliError};
use crate::plan::RunPlan;
use crate::wiring;
use kaos_agents::tree::{TreeOptions, render_tree};

/// Records every event the turn emits (cancelled spans included: the runtime ends them
/// through the hooks when the stream is dropped), and prints JSONL as they happen.
pub struct Recorder {
    events: Mutex<Vec<Event>>,
    json: bool,
    status: Mutex<String>,
    /// How the spinner names spans (`KAOS_SPAN_NAMING`, read once).
    naming: kaos_agents::otel::SpanNaming,
}

impl Recorder {
    /// A recorder; `json` prints each event on stdout as it happens.
    pub fn new(json: bool) -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            json,
            status: Mutex::new("thinking".into()),
            naming: kaos_agents::otel::SpanNaming::from_env(),
        })
    }

    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    fn status(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Hook for Recorder {
    fn name(&self) -> &str {
        "kaos-cli.recorder"
    }

    fn on_event(&self, event: &Event) -> kaos_agents::HookAction {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", crate::out::event_json(event));
            let _ = out.flush();
        }
        // The spinner names the running span as the tree and the trace do (`chat offline`,
        // not `llm_call.respond`).
        if let Some(span) = event.span()
            && span.phase == SpanPhase::Start
            && let Ok(mut s) = self.status.lock()
        {
            *s = kaos_agents::naming::span_name(
                span.subject,
                &span.name,
                &span.attributes,
                &event.agent,
                self.naming,
            )
            .into_owned();
        }
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
        kaos_agents::HookAction::Continue
    }
}

/// The tree's options: spans named as the exporter names them (`KAOS_SPAN_NAMING`).
pub fn tree_options() -> TreeOptions {
    TreeOptions {
        naming: kaos_agents::otel::SpanNaming::from_env(),
        ..TreeOptions::default()
    }
}

/// Waits for SIGINT. Created before the turn starts so a signal is never missed.
pub struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Installs the handler.
    pub fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| anyhow!("cannot install the Ctrl-C handler: {e}"))?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves at the next Ctrl-C.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What one turn produced.
pub struct TurnRun {
    /// Every event, cancelled spans included.
    pub events: Vec<Event>,
    /// Ctrl-C cut it short.
    pub interrupted: bool,
    /// The text printed on stdout while the turn streamed (since its last retraction), when
    /// the answer was streamed live.
    pub streamed: Option<String>,
}

/// Prints a turn's answer on stdout as it streams (its own run's text deltas only: a
/// sub-agent's text is its caller's tool result, not the answer).
struct LiveText {
    run_id: Arc<str>,
    /// The span whose text was printed last.
    span: Option<Arc<str>>,
    /// What was printed since the last retraction.
    printed: String,
}

impl LiveText {
    fn new(run_id: Arc<str>) -> Self {
        Self {
            run_id,
            span: None,
            printed: String::new(),
        }
    }

    /// Whether `event` is answer text this printer shows.
    fn prints(&self, event: &Event) -> bool {
        event.run_id == self.run_id
            && matches!(&event.kind, EventKind::TextDelta { content, .. } if !content.is_empty())
    }

    /// Prints what `event` adds; returns true when it printed something.
    fn on_event(&mut self, event: &Event) -> bool {
        if event.run_id != self.run_id {
            return false;
        }
        let mut out = std::io::stdout().lock();
        match &event.kind {
            EventKind::TextDelta { content, span_id } if !content.is_empty() => {
                if !self.printed.is_empty() && *span_id != self.span {
                    // Text of another model call (after a tool round): start a new line.
                    let _ = writeln!(out);
                    self.printed.push('\n');
                }
                self.span.clone_from(span_id);
                self.printed.push_str(content);
                let _ = write!(out, "{content}");
                let _ = out.flush();
                true
            }
            EventKind::TextRetracted {
                reason,
                retry_attempt,
                ..
            } => {
                if !self.printed.is_empty() {
                    let _ = writeln!(out);
                    let _ = out.flush();
                }
                match retry_attempt {
                    Some(n) => eprintln!("kaos: the text above is void ({reason}); retry #{n}:"),
                    None => eprintln!("kaos: the text above is void ({reason}); the answer:"),
                }
                self.printed.clear();
                self.span = None;
                false
            }
            _ => false,
        }
    }

    /// Ends the streamed text with a newline; returns what was printed.
    fn finish(self) -> String {
        if !self.printed.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out);
            let _ = out.flush();
        }
        self.printed
    }
}

/// Runs one turn of `runner`, cancelling it on Ctrl-C: the stream is dropped (every open
/// span ends as cancelled, running tool processes are killed) and the hooks flushed.
pub async fn drive_turn(
    plan: &RunPlan,
    runner: &Runner,
    recorder: &Arc<Recorder>,
    interrupt: &mut Interrupt,
    message: &str,
) -> TurnRun {
    let stream = runner.run_with(
        message.to_string(),
        plan.session.clone(),
        wiring::run_options(&plan.observability),
    );
    drive_stream(plan, runner, recorder, interrupt, stream).await
}

/// Drives an already started run (a turn or a resumed one) as [`drive_turn`] does.
pub async fn drive_stream(
    plan: &RunPlan,
    runner: &Runner,
    recorder: &Arc<Recorder>,
    interrupt: &mut Interrupt,
    mut stream: EventStream,
) -> TurnRun {
    let mut spinner = plan
        .display
        .spinner
        .then(|| Spinner::start(recorder.clone()));
    let mut live = plan
        .display
        .stream
        .then(|| LiveText::new(stream.run_id().clone()));
    let interrupted = loop {
        tokio::select! {
            event = stream.next() => match event {
                None => break false,
                Some(event) => {
                    if let Some(live) = live.as_mut() {
                        if live.prints(&event)
                            && let Some(s) = spinner.take()
                        {
                            // Clear the spinner's line before the answer goes there.
                            s.stop();
                        }
                        live.on_event(&event);
                    }
                }
            },
            () = interrupt.wait() => break true,
        }
    };
    drop(stream);
    let streamed = live.map(LiveText::finish);
    for e in runner.hooks().flush() {
        eprintln!("kaos: hook {} failed to flush: {}", e.hook, e.message);
    }
    if let Some(s) = spinner {
        s.stop();
    }
    TurnRun {
        events: recorder.take(),
        interrupted,
        streamed,
    }
}

/// What `kaos resume` was asked to do with the paused call.
#[derive(Debug, Clone, Default)]
pub struct ResumeChoice {
    /// `--deny REASON`.
    pub deny: Option<String>,
    /// `--force`: claim a run left in doubt again.
    pub force: bool,
    /// `--abandon`: drop the run without running its call.
    pub abandon: bool,
}

/// `kaos resume RUN_ID`: approves (or denies) the paused run's pending tool call and
/// continues it, or abandons it.
pub async fn resume(plan: RunPlan, run_id: String, choice: ResumeChoice) -> Result<u8, CliError> {
    let mut interrupt = Interrupt::install().map_err(CliError::usage)?;
    let recorder = Recorder::new(plan.json);
    let (runner, observers) = wiring::attach_hooks(
        plan.runner(plan.mcp_runtime().await.map_err(CliError::usage)?)
            .with_shared_hook(recorder.clone()),
        &plan.observability,
        &plan.trace,
    )
    .map_err(CliError::usage)?;
    if choice.abandon {
        let run = runner
            .abandon(&run_id, &plan.session)
            .await
            .map_err(|e| CliError::failed(anyhow!("{e}")))?;
        if plan.display.notes {
            eprintln!(
                "abandoned paused run {} of session {} (its call never runs; the session takes new turns)",
                run.run_id, run.session_id
            );
        }
        return Ok(exit::OK);
    }
    let approval = match choice.deny {
        Some(reason) => Approval::Deny { reason },
        None => Approval::Approve,
    };
    let stream = runner.resume_with_options(
        run_id,
        plan.session.clone(),
        approval,
        choice.force,
        wiring::run_options(&plan.observability),
    );
    let turn = drive_stream(&plan, &runner, &recorder, &mut interrupt, stream).await;
    observers.finish(plan.display.notes);
    report(&plan, &turn, true)
}

/// `kaos run`.
pub async fn run(plan: RunPlan) -> Result<u8, CliError> {
    let message = match &plan.message {
        Some(m) => m.clone(),
        None => read_stdin().map_err(CliError::usage)?,
    };
    if message.trim().is_empty() {
        return Err(CliError::usage(anyhow!(
            "no message: pass one (`kaos run \"Summarize the lease.\"`) or pipe it on stdin"
        )));
    }
    let mut interrupt = Interrupt::install().map_err(CliError::usage)?;
    let recorder = Recorder::new(plan.json);
    let (runner, observers) = wiring::attach_hooks(
        plan.runner(plan.mcp_runtime().await.map_err(CliError::usage)?)
            .with_shared_hook(recorder.clone()),
        &plan.observability,
        &plan.trace,
    )
    .map_err(CliError::usage)?;
    if plan.session_generated && plan.display.notes {
        eprintln!("session: {}", plan.session);
    }
    let turn = drive_turn(&plan, &runner, &recorder, &mut interrupt, &message).await;
    observers.finish(plan.display.notes);
    report(&plan, &turn, true)
}

/// Prints a turn's answer and tree; returns the exit code.
pub fn report(plan: &RunPlan, turn: &TurnRun, print_answer: bool) -> Result<u8, CliError> {
    if plan.display.tree && !turn.events.is_empty() {
        eprint!("{}", render_tree(&turn.events, &tree_options()));
    }
    if turn.interrupted {
        eprintln!("kaos: interrupted; the turn was cancelled and the session left unchanged");
        return Ok(exit::INTERRUPTED);
    }
    match AgentResponse::from_events(&turn.events, &plan.session) {
        Ok(response) => {
            if let Some(p) = &response.pending_approval {
                let how = if plan.persistent() {
                    format!(
                        "approve it with `kaos resume {run} --session {session}` (or deny it with \
                         `kaos resume {run} --session {session} --deny REASON`), with the same \
                         --agent/--model/--store (or --state-dir)",
                        run = response.run_id,
                        session = plan.session
                    )
                } else {
                    "it cannot be resumed: --ephemeral keeps nothing; run without it to resume \
                     later with `kaos resume`"
                        .to_string()
                };
                return Err(CliError::failed(anyhow!(
                    "the turn paused: tool `{}` needs approval ({}); {how}",
                    p.tool_name,
                    p.reason
                )));
            }
            // A streamed answer is on stdout already (unless the turn's final text is not
            // what streamed, such as a budget notice): print only what is missing.
            let shown = turn
                .streamed
                .as_deref()
                .is_some_and(|s| !response.text.is_empty() && s.ends_with(response.text.trim()));
            if print_answer && !plan.json && !shown {
                println!("{}", response.text);
            }
            if plan.display.tree {
                eprintln!(
                    "tokens: {} (in {}, out {})",
                    response.tokens_used, response.input_tokens, response.output_tokens
                );
            }
            Ok(exit::OK)
        }
        Err(TurnError::Failed { failure, .. }) => Err(CliError::failed(anyhow!(
            "the turn failed ({}): {}\nhint: {}",
            failure.error_type,
            failure.message,
            failure.recovery_hint
        ))),
        Err(TurnError::Incomplete) => {
            let why = turn.events.iter().rev().find_map(|e| match &e.kind {
                EventKind::RunError { message, .. } => Some(message.clone()),
                _ => None,
            });
            Err(CliError::failed(anyhow!(
                "the turn ended without a summary{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )))
        }
    }
}

fn read_stdin() -> anyhow::Result<String> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("(reading the message from stdin; end it with Ctrl-D)");
    }
    let mut text = String::new();
    if let Err(e) = stdin.read_to_string(&mut text) {
        bail!("cannot read the message from stdin: {e}");
    }
    Ok(text.trim().to_string())
}

/// A progress line on stderr (only when stderr is a terminal).
struct Spinner {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Spinner {
    fn start(recorder: Arc<Recorder>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let started = std::time::Instant::now();
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                eprint!(
                    "\r\x1b[2K{} {} ({:.1}s)",
                    FRAMES[i % FRAMES.len()],
                    recorder.status(),
                    started.elapsed().as_secs_f64()
                );
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, task }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        eprint!("\r\x1b[2K");
    }
}
