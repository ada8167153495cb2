//! `kaos chat`: an interactive loop on one session.

use std::io::Write;

use kaos_agents::Session;

use crate::exit::{self, CliError};
use crate::plan::RunPlan;
use crate::run::{Interrupt, Recorder, drive_turn, report};
use crate::wiring;

/// Runs the chat loop until `/exit`, end of input, or Ctrl-C at the prompt.
pub async fn chat(plan: RunPlan) -> Result<u8, CliError> {
    let mut interrupt = Interrupt::install().map_err(CliError::usage)?;
    let recorder = Recorder::new(false);
    let (runner, observers) = wiring::attach_hooks(
        plan.runner(plan.mcp_runtime().await.map_err(CliError::usage)?)
            .with_shared_hook(recorder.clone()),
        &plan.observability,
        &plan.trace,
    )
    .map_err(CliError::usage)?;
    let previous: Option<Session> = runner
        .runtime()
        .store()
        .load(&plan.session)
        .await
        .map_err(|e| CliError::usage(anyhow::anyhow!("{}", e.message)))?;
    if plan.display.notes {
        match &previous {
            Some(s) => eprintln!(
                "resuming session {} ({} earlier turns). /session shows it, /exit leaves.",
                plan.session, s.turn_count
            ),
            None => eprintln!(
                "new session {} (model {}). /session shows it, /exit leaves.",
                plan.session,
                plan.agent().model
            ),
        }
    }
    // Lines arrive from a blocking reader thread so Ctrl-C stays responsive at the prompt.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.blocking_send(line.trim_end().to_string()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let result = loop {
        eprint!("you> ");
        let _ = std::io::stderr().flush();
        let line = tokio::select! {
            line = rx.recv() => line,
            () = interrupt.wait() => { eprintln!(); break Ok(exit::INTERRUPTED); }
        };
        let Some(line) = line else {
            eprintln!();
            break Ok(exit::OK);
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break Ok(exit::OK),
            "/session" => {
                println!("{}", plan.session);
                continue;
            }
            other if other.starts_with('/') => {
                eprintln!("unknown command {other}; try /session or /exit");
                continue;
            }
            _ => {}
        }
        let turn = drive_turn(&plan, &runner, &recorder, &mut interrupt, &line).await;
        match report(&plan, &turn, true) {
            Ok(code) if code == exit::INTERRUPTED => eprintln!("(turn cancelled)"),
            Ok(_) => {}
            Err(CliError { error, .. }) => {
                if let Some(e) = error {
                    eprintln!("kaos: {e:#}");
                }
            }
        }
    };
    observers.finish(plan.display.notes);
    result
}
