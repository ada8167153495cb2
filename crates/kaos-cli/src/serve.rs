//! `kaos serve`: the agent files, the tokens and the limits turned into a
//! [`kaos_server::Server`], run until SIGTERM/SIGINT, drained, flushed; exit 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kaos_server::{Limits, ServedAgent, Server, ServerConfig, TokenSet, check_bind};

use crate::agent_file::{AgentFile, LoadedAgent};
use crate::cli::ServeArgs;
use crate::exit::{self, CliError};
use crate::models::ModelRegistry;
use crate::plan::{Observability, SessionSettings};
use crate::wiring;

/// How long the exporter may take to flush on the way out.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

fn secs(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("--{flag} must be a non-negative number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// The tokens from `KAOS_API_TOKENS` and `--tokens-file`.
fn tokens(args: &ServeArgs) -> anyhow::Result<TokenSet> {
    let mut set = match std::env::var("KAOS_API_TOKENS") {
        Ok(list) if !list.trim().is_empty() => TokenSet::from_list(&list)?,
        _ => TokenSet::empty(),
    };
    if let Some(file) = &args.tokens_file {
        set.extend(TokenSet::from_file(file)?);
    }
    Ok(set)
}

/// The server's limits from the flags; a turn waits for a busy session as long as the
/// runtime does (`--session-wait`, else `[runtime] session_wait_secs`, else 30 s).
fn limits(args: &ServeArgs, session_wait: Duration) -> anyhow::Result<Limits> {
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_message_chars: args.max_message_chars,
        max_concurrent_turns: args.max_concurrent_turns,
        turn_timeout: secs("turn-timeout", args.turn_timeout)?,
        busy_wait: session_wait,
        keep_alive: secs("keep-alive", args.keep_alive)?,
        ..Limits::default()
    };
    Ok(limits)
}

/// The served agents (each on its own runtime: its tools and delegates, over one session
/// store and one set of model clients) and the session settings they share.
async fn agents(
    args: &ServeArgs,
    trace: &wiring::TraceSlot,
) -> anyhow::Result<(Vec<ServedAgent>, SessionSettings)> {
    let mut flags = args.sessions.clone();
    if let Some(wait) = args.busy_wait {
        flags.session_wait = Some(wait);
    }
    let files = args
        .agent
        .iter()
        .map(|path| AgentFile::load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sessions = SessionSettings::resolve_shared(&flags, &files)?;
    let models = ModelRegistry::with_latency(Duration::from_millis(args.model_latency_ms));
    let mut loaded = Vec::new();
    if files.is_empty() {
        loaded.push(LoadedAgent::build(
            None,
            args.model.as_deref(),
            &models,
            0,
            &trace.context(),
        )?);
    }
    for file in files {
        loaded.push(LoadedAgent::build(
            Some(file),
            args.model.as_deref(),
            &models,
            0,
            &trace.context(),
        )?);
    }
    let base = models.register_all(sessions.runtime().await?);
    let agents = loaded
        .iter()
        .map(|l| {
            let (agent, runtime) = l.agent_and_runtime(base.clone());
            ServedAgent { agent, runtime }
        })
        .collect();
    Ok((agents, sessions))
}

/// A future that resolves at the first SIGTERM or SIGINT. The handlers are installed when
/// this is called, not when the future is first polled: the "listening" line is printed
/// after it, so a supervisor that signals as soon as it reads that line gets a drain, not
/// the default disposition (an instant kill, seen when the machine is loaded enough that
/// the serving loop is first polled only after a turn has started).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            let (Ok(mut term), Ok(mut int)) = handlers else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `kaos serve`.
pub async fn serve(args: ServeArgs) -> Result<u8, CliError> {
    let addr: SocketAddr = args
        .bind
        .parse()
        .map_err(|e| CliError::usage(anyhow!("--bind {:?}: {e} (use IP:PORT)", args.bind)))?;
    let tokens = tokens(&args).map_err(CliError::usage)?;
    check_bind(&addr, &tokens, args.insecure_localhost).map_err(|e| CliError::usage(e.into()))?;
    let trace = wiring::TraceSlot::default();
    let (agents, sessions) = agents(&args, &trace).await.map_err(CliError::usage)?;
    let session_wait = agents
        .first()
        .map_or(Duration::ZERO, |a| a.runtime.session_wait());
    let limits = limits(&args, session_wait).map_err(CliError::usage)?;
    let observability = Observability {
        otlp: args.otlp.clone().filter(|s| !s.trim().is_empty()),
        otlp_protocol: args.otlp_protocol,
        traceparent: None,
        tracestate: None,
        capture_content: args.capture_content,
        audit: args.audit.clone(),
    };
    wiring::check_observability(&observability).map_err(CliError::usage)?;
    let (hooks, observers) =
        wiring::shared_hooks(&observability, &trace).map_err(CliError::usage)?;
    // The access log goes through the subscriber `main` installed (crate::logging).

    let names: Vec<String> = agents.iter().map(|a| a.agent.name.clone()).collect();
    let tenants = tokens.len();
    let server = Server::new(ServerConfig {
        agents,
        tokens,
        limits,
        tracer: observers.telemetry().map(|t| t.tracer()),
        hooks,
    })
    .map_err(|e| CliError::usage(e.into()))?;
    let drain_timeout = secs("drain-timeout", args.drain_timeout).map_err(CliError::usage)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
        .map_err(CliError::usage)?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))
        .map_err(CliError::usage)?;
    let signalled = shutdown_signal();
    eprintln!(
        "kaos serve: listening on http://{local} (agents: {}; {}; sessions: {}) — OpenAPI at /openapi.json",
        names.join(", "),
        if tenants == 0 {
            "no auth, loopback only".to_string()
        } else {
            format!("{tenants} token(s)")
        },
        sessions.describe()
    );
    let report = server
        .serve(listener, signalled, drain_timeout)
        .await
        .context("serving")
        .map_err(CliError::failed)?;
    for failure in server.flush_hooks() {
        eprintln!("kaos serve: {failure}");
    }
    if let Some(t) = observers.telemetry() {
        let stats = t.shutdown_with_deadline(FLUSH_DEADLINE);
        let lost = stats.failed + stats.pending_or_dropped;
        if lost > 0 {
            eprintln!(
                "kaos serve: warning: {lost} of {} span(s) were not exported",
                stats.ended
            );
        }
    }
    // After the spans, so the last export of metrics counts what happened to them.
    if let Some(m) = observers.metrics()
        && let Err(e) = m.shutdown_with_deadline(FLUSH_DEADLINE)
    {
        eprintln!(
            "kaos serve: warning: metrics were not exported to {}: {e}{}",
            m.endpoint().unwrap_or("the console"),
            crate::wiring::METRICS_OFF_HINT
        );
    }
    eprintln!(
        "kaos serve: stopped ({} turn(s) in flight at the signal, {} cancelled at the drain timeout)",
        report.turns_at_signal, report.cancelled_turns
    );
    Ok(exit::OK)
}
