//! [`CircuitBreaker`]: stops calling a tool that keeps failing.
//!
//! Per tool: after `failure_threshold` consecutive failed calls the circuit **opens** and
//! every `tool_call` START of that tool is answered with [`HookAction::Skip`] (the tool does
//! not run; the model is told why). After `reset_timeout` the circuit is **half-open**: one
//! probe call is let through; success closes it, failure opens it again. Skipped, denied
//! and approval-pending calls do not count as failures.
//!
//! Time comes from a [`Clock`] (monotonic [`Duration`] since an arbitrary origin) so tests
//! can move it with [`ManualClock`] instead of sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Hook, HookAction};
use crate::events::{Event, SpanEvent, SpanPhase};

/// A monotonic time source.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to (for tests). Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let n = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(n, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// The state of one tool's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls run; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls are skipped until the reset timeout passes.
    Open {
        /// When it opened (clock time).
        since: Duration,
    },
    /// One probe call is running; others are skipped.
    HalfOpen,
}

/// A per-tool circuit breaker hook.
pub struct CircuitBreaker {
    failure_threshold: u32,
    reset_timeout: Duration,
    clock: Arc<dyn Clock>,
    states: Mutex<HashMap<String, CircuitState>>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("failure_threshold", &self.failure_threshold)
            .field("reset_timeout", &self.reset_timeout)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// Opens a tool's circuit after `failure_threshold` (at least 1) consecutive failures;
    /// probes again after `reset_timeout`.
    pub fn new(failure_threshold: u32, reset_timeout: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            reset_timeout,
            clock: Arc::new(SystemClock::default()),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `clock` for time (e.g. a [`ManualClock`] in tests).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The state of `tool`'s circuit (closed with 0 failures if never seen).
    pub fn state(&self, tool: &str) -> CircuitState {
        self.lock()
            .get(tool)
            .copied()
            .unwrap_or(CircuitState::Closed { failures: 0 })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CircuitState>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Hook for CircuitBreaker {
    fn name(&self) -> &str {
        "circuit-breaker"
    }

    fn on_tool_call_start(&self, _event: &Event, span: &SpanEvent) -> HookAction {
        let Some(tool) = span.attr_str("tool_name") else {
            return HookAction::Continue;
        };
        let now = self.clock.now();
        let mut states = self.lock();
        let state = states
            .entry(tool.to_string())
            .or_insert(CircuitState::Closed { failures: 0 });
        match *state {
            CircuitState::Closed { .. } => HookAction::Continue,
            CircuitState::Open { since } if now.saturating_sub(since) >= self.reset_timeout => {
                *state = CircuitState::HalfOpen;
                HookAction::Continue
            }
            CircuitState::Open { .. } | CircuitState::HalfOpen => HookAction::Skip,
        }
    }

    fn on_tool_call_end(&self, _event: &Event, span: &SpanEvent) {
        let Some(tool) = span.attr_str("tool_name") else {
            return;
        };
        let error_type = span.error.as_ref().map(|e| e.error_type.as_str());
        if span.phase == SpanPhase::Cancelled {
            // A probe that never finished (paused, cancelled) must not leave the circuit
            // half-open forever: the next call probes again.
            let now = self.clock.now();
            let mut states = self.lock();
            if let Some(state @ CircuitState::HalfOpen) = states.get_mut(tool) {
                *state = CircuitState::Open {
                    since: now.saturating_sub(self.reset_timeout),
                };
            }
            return;
        }
        let counted = match span.phase {
            SpanPhase::Complete => true,
            SpanPhase::Error => !matches!(
                error_type,
                Some("skipped_by_hook" | "permission_denied" | "approval_denied" | "unknown_tool")
            ),
            _ => false,
        };
        if !counted {
            return;
        }
        let failed = span
            .attributes
            .get("is_error")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(span.phase == SpanPhase::Error);
        let now = self.clock.now();
        let mut states = self.lock();
        let state = states
            .entry(tool.to_string())
            .or_insert(CircuitState::Closed { failures: 0 });
        *state = match (*state, failed) {
            (_, false) => CircuitState::Closed { failures: 0 },
            (CircuitState::Closed { failures }, true) if failures + 1 < self.failure_threshold => {
                CircuitState::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => CircuitState::Open { since: now },
        };
    }
}
