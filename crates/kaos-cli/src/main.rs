//! The `kaos` command line: run and chat with agents offline or live, and see each turn's
//! span tree.
//!
//! Flags are parsed in two stages: [`cli`] holds the raw clap flags, [`plan`] validates them
//! into a plan that builds the runtime. Exit codes: 0 success, 1 the turn failed, 2 usage or
//! config error, 130 interrupted.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// First: its `eprintln!`/`eprint!` (redacting) shadow the standard ones in every module below.
#[macro_use]
mod out;
mod agent_file;
mod audit_cmd;
mod chat;
mod cli;
mod exit;
mod latency;
mod logging;
mod mcp;
mod models;
mod plan;
mod run;
mod serve;
mod tools;
mod wiring;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::CliError;

/// The process allocator (feature `mimalloc`, on by default): the OpenTelemetry SDK builds
/// spans on the runner's threads and frees them on its exporter's thread, a pattern the C
/// library's malloc handles slowly (kaos-bench measures both).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    // `kaos serve` logs its access lines (INFO) unless --quiet.
    let floor = u8::from(matches!(&cli.command, cli::Command::Serve(a) if !a.quiet));
    logging::install(cli.verbose.max(floor), cli.log_format);
    out::set_json_lines(cli.log_format == cli::LogFormat::Json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kaos: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for stray blocking tasks (e.g. a stdin read) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CliError { code, error }) => {
            if let Some(e) = error {
                eprintln!("kaos: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: cli::Cli) -> Result<u8, CliError> {
    out::set_enabled(!match &cli.command {
        cli::Command::Run(a) => a.common.no_redact,
        cli::Command::Chat(a) => a.common.no_redact,
        cli::Command::Resume(a) => a.common.no_redact,
        cli::Command::Audit(a) => a.no_redact,
        cli::Command::Serve(_) | cli::Command::Mcp(_) => false,
    });
    match cli.command {
        cli::Command::Run(args) => {
            let plan = plan::RunPlan::from_args(args).map_err(CliError::usage)?;
            run::run(plan).await
        }
        cli::Command::Chat(args) => {
            let plan = plan::RunPlan::from_chat_args(args).map_err(CliError::usage)?;
            chat::chat(plan).await
        }
        cli::Command::Resume(args) => {
            let run_id = args.run_id.clone();
            let choice = run::ResumeChoice {
                deny: args.deny.clone(),
                force: args.force,
                abandon: args.abandon,
            };
            let plan = plan::RunPlan::from_resume_args(args).map_err(CliError::usage)?;
            run::resume(plan, run_id, choice).await
        }
        cli::Command::Audit(args) => audit_cmd::audit_command(&args),
        cli::Command::Serve(args) => serve::serve(args).await,
        cli::Command::Mcp(args) => mcp::command(args).await,
    }
}
