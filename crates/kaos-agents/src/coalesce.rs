//! Fewer delta events for consumers that do not need every chunk.
//!
//! A streamed answer arrives as one [`EventKind::TextDelta`] per model chunk, often a few
//! characters each. A [`DeltaCoalescer`] merges consecutive deltas of one model call (same
//! run, same kind, same span) into one event, by size or by time (see [`Coalesce`]). The
//! audit trail uses it so a long answer is a few lines, not thousands
//! ([`crate::audit::AuditHook::with_coalescing`]).
//!
//! A merged event keeps the envelope (timestamp, sequence) of its first delta and the
//! concatenated text, so the concatenation of a call's deltas is unchanged. Buffered text
//! is released, in order, before any other event of its run, so nothing is lost or
//! reordered: every stream ends with its `llm_call` span's end, which releases it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::{Event, EventKind};

/// When merged deltas are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// Release once this many bytes are buffered (0: never merge).
    pub max_bytes: usize,
    /// Release when a delta arrives this long after the first buffered one.
    pub max_age: Duration,
}

impl Default for Coalesce {
    /// 4 KiB or 250 ms, whichever comes first.
    fn default() -> Self {
        Self {
            max_bytes: 4096,
            max_age: Duration::from_millis(250),
        }
    }
}

/// The merge key of a delta: its kind and span.
fn delta_key(kind: &EventKind) -> Option<(u8, Option<&Arc<str>>)> {
    match kind {
        EventKind::TextDelta { span_id, .. } => Some((0, span_id.as_ref())),
        EventKind::ThinkingDelta { span_id, .. } => Some((1, span_id.as_ref())),
        _ => None,
    }
}

fn content_mut(kind: &mut EventKind) -> Option<&mut String> {
    match kind {
        EventKind::TextDelta { content, .. } | EventKind::ThinkingDelta { content, .. } => {
            Some(content)
        }
        _ => None,
    }
}

struct Pending {
    event: Event,
    since: Instant,
}

/// Merges consecutive deltas per run (thread-safe; one coalescer can serve every run of a
/// hook).
///
/// ```
/// use kaos_agents::coalesce::{Coalesce, DeltaCoalescer};
/// # use kaos_agents::{Event, EventKind};
/// # fn delta(seq: u64, text: &str) -> Event {
/// #     Event { timestamp: seq, sequence: seq, session_id: "s".into(), run_id: "r".into(),
/// #             agent: "a".into(), kind: EventKind::TextDelta { content: text.into(), span_id: None } }
/// # }
/// let coalescer = DeltaCoalescer::new(Coalesce { max_bytes: 6, ..Coalesce::default() });
/// let mut out = Vec::new();
/// for (i, piece) in ["ab", "cd", "ef", "g"].iter().enumerate() {
///     coalescer.push(&delta(i as u64, piece), &mut |e| out.push(e.clone()));
/// }
/// coalescer.flush(&mut |e| out.push(e.clone()));
/// let texts: Vec<_> = out.iter().map(|e| match &e.kind {
///     EventKind::TextDelta { content, .. } => content.clone(),
///     _ => unreachable!(),
/// }).collect();
/// assert_eq!(texts, ["abcdef", "g"]);
/// ```
pub struct DeltaCoalescer {
    options: Coalesce,
    pending: Mutex<HashMap<Arc<str>, Pending>>,
}

impl std::fmt::Debug for DeltaCoalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaCoalescer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl DeltaCoalescer {
    /// A coalescer with these release rules.
    pub fn new(options: Coalesce) -> Self {
        Self {
            options,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The release rules.
    pub fn options(&self) -> Coalesce {
        self.options
    }

    /// Feeds one event; `emit` receives the events to pass on, in order (possibly none
    /// when the event was buffered, possibly two when a buffer is released before it).
    pub fn push(&self, event: &Event, emit: &mut dyn FnMut(&Event)) {
        let Some(key) = delta_key(&event.kind) else {
            let released = self.lock().remove(&event.run_id);
            if let Some(p) = released {
                emit(&p.event);
            }
            return emit(event);
        };
        if self.options.max_bytes == 0 {
            return emit(event);
        }
        let mut pending = self.lock();
        let same = pending
            .get(&event.run_id)
            .is_some_and(|p| delta_key(&p.event.kind) == Some(key));
        if !same && let Some(p) = pending.remove(&event.run_id) {
            emit(&p.event);
        }
        let entry = pending
            .entry(event.run_id.clone())
            .or_insert_with(|| Pending {
                event: Event {
                    kind: match &event.kind {
                        EventKind::TextDelta { span_id, .. } => EventKind::TextDelta {
                            content: String::new(),
                            span_id: span_id.clone(),
                        },
                        EventKind::ThinkingDelta { span_id, .. } => EventKind::ThinkingDelta {
                            content: String::new(),
                            span_id: span_id.clone(),
                        },
                        other => other.clone(),
                    },
                    ..event.clone()
                },
                since: Instant::now(),
            });
        let full = match (content_mut(&mut entry.event.kind), &event.kind) {
            (
                Some(buffer),
                EventKind::TextDelta { content, .. } | EventKind::ThinkingDelta { content, .. },
            ) => {
                buffer.push_str(content);
                buffer.len() >= self.options.max_bytes
            }
            _ => true,
        };
        if (full || entry.since.elapsed() >= self.options.max_age)
            && let Some(p) = pending.remove(&event.run_id)
        {
            emit(&p.event);
        }
    }

    /// Releases every buffered delta (at a flush or shutdown).
    pub fn flush(&self, emit: &mut dyn FnMut(&Event)) {
        let drained: Vec<Pending> = self.lock().drain().map(|(_, p)| p).collect();
        for p in drained {
            emit(&p.event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
