//! The OTel hook's state, split by run: [`SHARDS`] independent [`State`]s, each behind its
//! own mutex, a run's spans all in the shard its run id hashes to. Concurrent runs contend
//! only when their ids land in the same shard, and then only for the few hundred
//! nanoseconds one event takes; the hot path never touches a lock shared by every run.
//!
//! A run nested in another (a sub-agent or handoff turn) may live in another shard than its
//! parent span. The two things that cross runs never hold two shard locks at once: finding
//! the parent of a nested run's first span ([`Shards::find_foreign_parent`]) locks one shard
//! at a time, and ending a span with open descendants in other runs records them
//! ([`Shared::foreign`]) for [`Shards::cascade`], after the first lock is gone.

use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry::Context;

#[cfg(doc)]
use super::state::Shared;
use super::state::{Foreign, Key, Search, State, end_cancelled, hash_id};

/// How many shards (a power of two): enough that 64 concurrent runs rarely share one.
pub(super) const SHARDS: usize = 64;

/// One shard, alone on its cache lines (no false sharing between neighbours' locks).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<State>);

/// The shards.
pub(super) struct Shards {
    shards: Box<[Shard]>,
}

impl Default for Shards {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl Shards {
    /// The shard of run `run`.
    pub(super) fn index(run: &str) -> usize {
        Self::index_of(hash_id(run))
    }

    /// The shard of the run whose [`hash_id`] is `hash`.
    pub(super) fn index_of(hash: u64) -> usize {
        // The multiplicative hash mixes into the high bits.
        (hash >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// Locks the shard of run `run`.
    pub(super) fn lock(&self, run: &str) -> MutexGuard<'_, State> {
        self.lock_at(Self::index(run))
    }

    /// Locks shard `i`.
    pub(super) fn lock_at(&self, i: usize) -> MutexGuard<'_, State> {
        self.shards[i % SHARDS]
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sums `f` over every shard (each locked in turn).
    pub(super) fn sum(&self, f: impl Fn(&State) -> usize) -> usize {
        (0..SHARDS).map(|i| f(&self.lock_at(i))).sum()
    }

    /// Finds the open span `span_id` of another run (the parent of a nested run's first
    /// span), records `child` as nested under it (so ending it ends the child's subtree) and
    /// returns its context: first in the index of every shard but `skip` (whose index was
    /// searched already), then by a scan of every shard. Locks one shard at a time.
    pub(super) fn find_foreign_parent(
        &self,
        span_id: &Arc<str>,
        skip: usize,
        child: &Key,
    ) -> Option<Context> {
        (0..SHARDS)
            .filter(|&i| i != skip)
            .find_map(|i| {
                self.lock_at(i)
                    .find_nest_parent(span_id, child, Search::Index)
            })
            .or_else(|| {
                (0..SHARDS).find_map(|i| {
                    self.lock_at(i)
                        .find_nest_parent(span_id, child, Search::Scan)
                })
            })
    }

    /// Ends the spans in `work` (and whatever they in turn hand over) as cancelled, each
    /// under its own shard's lock only. Returns how many spans ended.
    pub(super) fn cascade(&self, mut work: Vec<Foreign>) -> usize {
        let mut ended = 0;
        while let Some(Foreign { key, at, reason }) = work.pop() {
            let hash = hash_id(&key.run);
            let mut state = self.lock_at(Self::index_of(hash));
            let State { runs, shared } = &mut *state;
            if let Some(run) = runs.get_mut(&key.run, hash) {
                let before = run.spans.len();
                end_cancelled(run, shared, &key.span, at, &reason);
                ended += before - run.spans.len();
            }
            state.drop_if_done(&key.run, hash);
            work.append(&mut state.shared.foreign);
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventKind, SpanEvent, SpanPhase, SpanSubject};
    use crate::hooks::Hook;
    use crate::otel::{MemoryExporter, OTelHook};
    use opentelemetry::trace::{SpanId, TracerProvider as _};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};

    #[test]
    fn runs_spread_over_the_shards() {
        let mut used = [0usize; SHARDS];
        for _ in 0..4096 {
            used[Shards::index(&crate::scope::new_run_id())] += 1;
        }
        // 64 per shard on average; a poor hash would leave some empty and others full.
        assert!(used.iter().all(|&n| n > 16), "{used:?}");
        assert!(used.iter().all(|&n| n < 160), "{used:?}");
    }

    struct Feed {
        hook: OTelHook,
        provider: SdkTracerProvider,
        exporter: MemoryExporter,
        at: u64,
    }

    impl Feed {
        fn new() -> Self {
            let exporter = MemoryExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let hook = OTelHook::new(provider.tracer("shards"));
            Self {
                hook,
                provider,
                exporter,
                at: 1_700_000_000_000_000_000,
            }
        }

        fn span(
            &mut self,
            run: &str,
            subject: SpanSubject,
            phase: SpanPhase,
            id: &str,
            parent: Option<&str>,
        ) {
            self.at += 1_000;
            let event = Event {
                timestamp: self.at,
                sequence: 0,
                session_id: "s".into(),
                run_id: run.into(),
                agent: "a".into(),
                kind: EventKind::Span(SpanEvent {
                    subject,
                    phase,
                    span_id: id.into(),
                    parent_span_id: parent.map(Arc::from),
                    name: match subject {
                        SpanSubject::Subagent => "subagent.helper".into(),
                        _ => id.to_string(),
                    },
                    duration_ms: None,
                    attributes: serde_json::Map::new(),
                    error: None,
                }),
            };
            self.hook.on_event(&event);
        }

        fn spans(&self) -> Vec<SpanData> {
            self.provider.force_flush().unwrap();
            self.exporter.spans()
        }
    }

    fn by_id(spans: &[SpanData], id: SpanId) -> &SpanData {
        spans
            .iter()
            .find(|s| s.span_context.span_id() == id)
            .unwrap()
    }

    /// A nested run in another shard than its parent span: found as the parent, and ended
    /// (as `parent_ended`) when the parent ends first, with no lock held on two shards.
    #[test]
    fn a_nested_run_in_another_shard_nests_and_is_cancelled_with_its_parent() {
        let lead = "run-lead";
        let nested = (0..)
            .map(|i| format!("run-nested-{i}"))
            .find(|r| Shards::index(r) != Shards::index(lead))
            .unwrap();
        let mut feed = Feed::new();
        use SpanPhase::{Complete, Start};
        use SpanSubject::{LlmCall, Subagent, Turn};
        feed.span(lead, Turn, Start, "t1", None);
        feed.span(lead, Subagent, Start, "sub", Some("t1"));
        feed.span(&nested, Turn, Start, "t2", Some("sub"));
        feed.span(&nested, LlmCall, Start, "llm", None);
        // The parent ends while the nested run is still open.
        feed.span(lead, Subagent, Complete, "sub", Some("t1"));
        assert_eq!(feed.hook.open_span_count(), 1, "only the lead turn is open");
        feed.span(lead, Turn, Complete, "t1", None);
        feed.hook.close_all("end of test");
        assert_eq!(feed.hook.open_span_count(), 0);
        assert_eq!(feed.hook.tracked_runs(), 0);

        let spans = feed.spans();
        let name = |s: &SpanData| s.name.to_string();
        let [turn2] = spans
            .iter()
            .filter(|s| s.parent_span_id != SpanId::INVALID && name(s) == "agent.turn")
            .collect::<Vec<_>>()[..]
        else {
            panic!("one nested turn in {spans:?}")
        };
        let sub = by_id(&spans, turn2.parent_span_id);
        assert_eq!(name(sub), "agent.subagent.helper");
        assert_eq!(turn2.span_context.trace_id(), sub.span_context.trace_id());
        for s in spans.iter().filter(|s| {
            s.span_context.span_id() == turn2.span_context.span_id()
                || s.parent_span_id == turn2.span_context.span_id()
        }) {
            let reason = s
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "kaos.cancel_reason")
                .map(|kv| kv.value.to_string());
            assert_eq!(reason.as_deref(), Some("parent_ended"), "{}", s.name);
            assert!(
                s.end_time <= sub.end_time,
                "{} ends with its parent",
                s.name
            );
        }
    }

    /// A nested run whose parent is a span of a kind the index leaves out (here a model call),
    /// in another shard and in the same one: found by the scan, and nested under it.
    #[test]
    fn a_nested_run_under_an_unindexed_span_is_found_by_the_scan() {
        let lead = "run-lead";
        let other = (0..)
            .map(|i| format!("run-other-{i}"))
            .find(|r| Shards::index(r) != Shards::index(lead))
            .unwrap();
        let same = (0..)
            .map(|i| format!("run-same-{i}"))
            .find(|r| Shards::index(r) == Shards::index(lead))
            .unwrap();
        let mut feed = Feed::new();
        use SpanPhase::{Complete, Start};
        use SpanSubject::{LlmCall, Turn};
        feed.span(lead, Turn, Start, "t1", None);
        feed.span(lead, LlmCall, Start, "llm", Some("t1"));
        feed.span(&other, Turn, Start, "t-other", Some("llm"));
        feed.span(&same, Turn, Start, "t-same", Some("llm"));
        for (run, id) in [(other.as_str(), "t-other"), (same.as_str(), "t-same")] {
            feed.span(run, Turn, Complete, id, None);
        }
        feed.span(lead, LlmCall, Complete, "llm", Some("t1"));
        feed.span(lead, Turn, Complete, "t1", None);
        feed.hook.close_all("end of test");
        assert_eq!(feed.hook.open_span_count(), 0);
        assert_eq!(feed.hook.tracked_runs(), 0);

        let spans = feed.spans();
        let llm = spans
            .iter()
            .find(|s| s.name.starts_with("chat"))
            .expect("the model call's span");
        let nested: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "agent.turn" && s.parent_span_id == llm.span_context.span_id())
            .collect();
        assert_eq!(
            nested.len(),
            2,
            "both nested turns under the model call: {spans:?}"
        );
        assert!(
            nested
                .iter()
                .all(|s| s.span_context.trace_id() == llm.span_context.trace_id())
        );
    }
}
