//! Replay of recorded events into spans.
/// Replay error.
#[derive(Debug)]
pub struct ReplayError;
/// x
pub fn export_recorded() {}
/// x
pub fn replay_spans() {}
