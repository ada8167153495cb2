//! Exit codes and the error that carries one.

/// The turn ran and completed.
pub const OK: u8 = 0;
/// The turn failed (model error, script exhausted) or paused for approval.
pub const FAILED: u8 = 1;
/// Bad flags, a bad agent file, an unknown model spec, a missing key.
pub const USAGE: u8 = 2;
/// Interrupted with Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// An error with the exit code it maps to. `error: None` means the message was already
/// printed.
#[derive(Debug)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// What to print on stderr, if anything.
    pub error: Option<anyhow::Error>,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub fn usage(error: anyhow::Error) -> Self {
        Self {
            code: USAGE,
            error: Some(error),
        }
    }

    /// The turn failed (exit 1).
    pub fn failed(error: anyhow::Error) -> Self {
        Self {
            code: FAILED,
            error: Some(error),
        }
    }
}
