//! Warnings about settings, said once: a setting is read by every hook, tree and view a
//! process builds, and saying what is wrong with it once is enough.

use std::sync::Mutex;

/// Logs `message` as a warning once per process (settings are read by every hook a process
/// builds; saying it once is enough).
pub(crate) fn warn_once(message: &str) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.iter().any(|m| m == message) {
        return;
    }
    warned.push(message.to_string());
    drop(warned);
    tracing::warn!("{message}");
}
