//! The conformance suite: what every `SessionStore` must do. Each backend module calls
//! [`run_all`] with a factory of fresh stores over one database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kaos_agents::session::{SessionMessage, ToolAction};
use kaos_store::{RunStatus, SessionStore, StoreErrorKind, TurnChanges};
use serde_json::json;

/// A long upper bound for waits that end on an event (a lease released), never reached.
const WAIT: Duration = Duration::from_secs(60);

pub type Store = Arc<dyn SessionStore>;

fn msg(role: &str, text: &str) -> SessionMessage {
    SessionMessage {
        role: role.into(),
        content: text.into(),
    }
}

/// One chat turn's changes: the user message and the answer.
fn turn(n: u64, text: &str) -> TurnChanges {
    TurnChanges {
        turn_count: Some(n),
        messages: vec![msg("user", text), msg("assistant", &format!("re: {text}"))],
        actions: vec![ToolAction {
            tool_name: "echo".into(),
            call_id: format!("c{n}"),
            arguments: json!({"n": n}),
            result_summary: text.into(),
            is_error: false,
        }],
        ..TurnChanges::default()
    }
}

fn paused(run_id: &str, n: u64) -> TurnChanges {
    TurnChanges {
        messages: vec![msg("user", "delete it")],
        paused: vec![(
            run_id.into(),
            n,
            json!({"run_id": run_id, "turn_number": n}),
        )],
        ..TurnChanges::default()
    }
}

/// Runs every check on `store` (sessions are named by `tag` so runs do not collide).
pub async fn run_all(store: Store, tag: &str) {
    turns_round_trip_in_order(&store, &format!("{tag}-order")).await;
    a_held_session_is_busy_then_free(&store, &format!("{tag}-busy")).await;
    concurrent_turns_all_land_once(&store, &format!("{tag}-concurrent")).await;
    many_sessions_at_once_commit_each_on_its_own(&store, &format!("{tag}-many")).await;
    a_paused_run_is_claimed_exactly_once(&store, &format!("{tag}-claim")).await;
    an_unfinished_claim_is_in_doubt_until_forced_or_abandoned(&store, &format!("{tag}-doubt"))
        .await;
    a_commit_cut_short_leaves_the_turn_before_or_after(&store, &format!("{tag}-cut")).await;
    deletion_removes_everything_and_voids_a_held_lease(&store, &format!("{tag}-delete")).await;
}

async fn turns_round_trip_in_order(store: &Store, id: &str) {
    assert!(store.load(id).await.unwrap().is_none());
    for n in 1..=3u64 {
        let (lease, s) = store.begin(id, WAIT).await.unwrap();
        assert_eq!(s.turn_count, n - 1);
        assert_eq!(s.messages.len() as u64, 2 * (n - 1));
        store
            .commit(lease, turn(n, &format!("m{n}")))
            .await
            .unwrap();
    }
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(s.turn_count, 3);
    let texts: Vec<&str> = s.messages.iter().map(|m| &*m.content).collect();
    assert_eq!(texts, ["m1", "re: m1", "m2", "re: m2", "m3", "re: m3"]);
    assert_eq!(s.messages[0].role, "user");
    let calls: Vec<&str> = s.actions.iter().map(|a| a.call_id.as_str()).collect();
    assert_eq!(calls, ["c1", "c2", "c3"]);
    assert_eq!(s.actions[2].arguments, json!({"n": 3}));
    let listed = store.list().await.unwrap();
    let me = listed.iter().find(|i| i.id == id).unwrap();
    assert_eq!(
        (me.turn_count, me.message_count, me.pending_runs),
        (3, 6, 0)
    );
}

async fn a_held_session_is_busy_then_free(store: &Store, id: &str) {
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    let e = store.begin(id, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Busy, "{e}");
    assert!(e.message.contains(id), "{e}");
    // Dropping the lease frees the session for the next turn.
    drop(lease);
    let (lease, s) = store.begin(id, WAIT).await.unwrap();
    assert_eq!(s.turn_count, 0);
    store.commit(lease, turn(1, "after")).await.unwrap();
    let (lease, s) = store.begin(id, WAIT).await.unwrap();
    assert_eq!(s.turn_count, 1);
    store.release(lease).await.unwrap();
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    store.commit(lease, TurnChanges::default()).await.unwrap();
}

async fn concurrent_turns_all_land_once(store: &Store, id: &str) {
    const TASKS: usize = 8;
    const TURNS: usize = 25;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let id = id.to_string();
        handles.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for i in 0..TURNS {
                let (lease, s) = store.begin(&id, WAIT).await.unwrap();
                let n = s.turn_count + 1;
                numbers.push(n);
                store
                    .commit(lease, turn(n, &format!("task {t} turn {i}")))
                    .await
                    .unwrap();
            }
            numbers
        }));
    }
    let mut numbers = BTreeSet::new();
    for h in handles {
        for n in h.await.unwrap() {
            assert!(numbers.insert(n), "turn number {n} taken twice");
        }
    }
    assert_eq!(numbers, (1..=(TASKS * TURNS) as u64).collect());
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(s.turn_count, (TASKS * TURNS) as u64);
    assert_eq!(s.messages.len(), 2 * TASKS * TURNS);
    for t in 0..TASKS {
        // Each task's turns are kept, in its order, each followed by its answer.
        let mine: Vec<usize> = s
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == "user" && m.content.starts_with(&format!("task {t} ")))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(mine.len(), TURNS);
        for (k, i) in mine.iter().enumerate() {
            assert_eq!(&*s.messages[*i].content, format!("task {t} turn {k}"));
            assert_eq!(
                &*s.messages[i + 1].content,
                format!("re: task {t} turn {k}")
            );
        }
    }
}

/// Many sessions take their leases and commit at the same instant (a store may group them
/// into one transaction): each turn lands whole, and a session whose lease was voided fails
/// alone while the others commit.
async fn many_sessions_at_once_commit_each_on_its_own(store: &Store, prefix: &str) {
    const SESSIONS: usize = 40;
    const VOIDED: usize = 7;
    let ids: Vec<String> = (0..SESSIONS).map(|i| format!("{prefix}-{i}")).collect();
    for round in 1..=2u64 {
        let begun = futures::future::join_all(ids.iter().map(|id| store.begin(id, WAIT))).await;
        let mut leases = Vec::new();
        for (i, b) in begun.into_iter().enumerate() {
            let (lease, s) = b.unwrap();
            let want = if i == VOIDED { 0 } else { round - 1 };
            assert_eq!(s.turn_count, want, "session {i} in round {round}");
            assert_eq!(s.messages.len() as u64, 2 * want, "session {i}");
            leases.push(lease);
        }
        store.delete(&ids[VOIDED]).await.unwrap();
        let commits = leases.into_iter().enumerate().map(|(i, lease)| {
            let store = store.clone();
            async move {
                let n = if i == VOIDED { 1 } else { round };
                store
                    .commit(lease, turn(n, &format!("s{i} r{round}")))
                    .await
            }
        });
        for (i, r) in futures::future::join_all(commits)
            .await
            .into_iter()
            .enumerate()
        {
            if i == VOIDED {
                assert_eq!(r.unwrap_err().kind, StoreErrorKind::LeaseLost);
            } else {
                r.unwrap();
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let s = store.load(id).await.unwrap();
            if i == VOIDED {
                assert!(s.is_none(), "the voided session saved nothing");
                continue;
            }
            let s = s.unwrap();
            assert_eq!(s.turn_count, round);
            let texts: Vec<&str> = s.messages.iter().map(|m| &*m.content).collect();
            let last = format!("s{i} r{round}");
            assert_eq!(texts.len() as u64, 2 * round);
            assert_eq!(texts[texts.len() - 2], last);
            assert_eq!(s.actions.len() as u64, round);
        }
    }
}

async fn a_paused_run_is_claimed_exactly_once(store: &Store, id: &str) {
    let run = format!("{id}-run");
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    store.commit(lease, paused(&run, 1)).await.unwrap();
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(s.pending_runs.len(), 1);
    assert_eq!(s.pending_runs[&run]["turn_number"], 1);
    assert_eq!(
        store
            .list()
            .await
            .unwrap()
            .iter()
            .find(|i| i.id == id)
            .unwrap()
            .pending_runs,
        1
    );

    let mut racers = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let (id, run) = (id.to_string(), run.clone());
        racers.push(tokio::spawn(async move {
            store
                .claim_run(&id, &run, &format!("racer {i}"), false)
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(claimed) => {
                won += 1;
                assert_eq!(claimed.status, RunStatus::Claimed);
                assert!(claimed.claimed_by.unwrap().starts_with("racer"));
            }
            Err(e) => assert!(
                matches!(
                    e.kind,
                    StoreErrorKind::InProgress | StoreErrorKind::AlreadyResumed
                ),
                "{e}"
            ),
        }
    }
    assert_eq!(won, 1, "exactly one resume wins the claim");
    let s = store.load(id).await.unwrap().unwrap();
    assert!(s.pending_runs.is_empty());
    assert_eq!(s.runs_in_doubt, std::slice::from_ref(&run));

    // The resumed turn commits and finishes the run in one transaction.
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    let mut done = turn(1, "resumed");
    done.messages.remove(0);
    done.finished = vec![run.clone()];
    store.commit(lease, done).await.unwrap();
    let runs = store.runs(id).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Done);
    let e = store.claim_run(id, &run, "late", false).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::AlreadyResumed, "{e}");
    let e = store.claim_run(id, &run, "late", true).await.unwrap_err();
    assert_eq!(
        e.kind,
        StoreErrorKind::AlreadyResumed,
        "force never re-runs a finished run"
    );
    let e = store
        .claim_run(id, "no-such-run", "x", false)
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::NotFound, "{e}");
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(s.turn_count, 1);
    let texts: Vec<&str> = s.messages.iter().map(|m| &*m.content).collect();
    assert_eq!(texts, ["delete it", "re: resumed"]);
}

async fn an_unfinished_claim_is_in_doubt_until_forced_or_abandoned(store: &Store, id: &str) {
    let (a, b) = (format!("{id}-a"), format!("{id}-b"));
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    let mut both = paused(&a, 1);
    both.paused.push((b.clone(), 1, json!({"run_id": b})));
    store.commit(lease, both).await.unwrap();
    store
        .claim_run(id, &a, "crashed process", false)
        .await
        .unwrap();
    // Nobody finishes the claim (the process died): a second resume is told it is in doubt.
    let e = store.claim_run(id, &a, "second", false).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::InProgress);
    assert!(
        e.message.contains("in doubt") && e.message.contains("--force"),
        "{e}"
    );
    assert!(e.message.contains("crashed process"), "{e}");
    let forced = store.claim_run(id, &a, "operator", true).await.unwrap();
    assert_eq!(forced.claimed_by.as_deref(), Some("operator"));
    let settled = store
        .settle_run(id, &a, RunStatus::Abandoned)
        .await
        .unwrap();
    assert_eq!(settled.status, RunStatus::Abandoned);
    let e = store.claim_run(id, &a, "again", true).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::AlreadyResumed);
    assert!(e.message.contains("abandoned"), "{e}");
    // A pending run can be abandoned directly; runs list oldest first with their status.
    store
        .settle_run(id, &b, RunStatus::Abandoned)
        .await
        .unwrap();
    let runs = store.runs(id).await.unwrap();
    let seen: Vec<(&str, RunStatus)> = runs.iter().map(|r| (r.run_id.as_str(), r.status)).collect();
    assert_eq!(
        seen,
        [
            (a.as_str(), RunStatus::Abandoned),
            (b.as_str(), RunStatus::Abandoned)
        ]
    );
    assert!(store.settle_run(id, &b, RunStatus::Done).await.is_err());
}

async fn a_commit_cut_short_leaves_the_turn_before_or_after(store: &Store, id: &str) {
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    store.commit(lease, turn(1, "first")).await.unwrap();
    // Drop the commit future after 0, 1, 2, ... polls: wherever it stops, the session is
    // whole at the turn before or the turn after.
    for polls in 0..12 {
        let (lease, s) = store.begin(id, WAIT).await.unwrap();
        let n = s.turn_count + 1;
        let mut fut = store
            .commit(lease, turn(n, &format!("cut {polls}")))
            .boxed();
        for _ in 0..polls {
            if (&mut fut).now_or_never().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(fut);
        // The next turn gets the session (the cut commit released or finished it).
        let (lease, s) = store.begin(id, WAIT).await.unwrap();
        assert!(
            s.turn_count == n - 1 || s.turn_count == n,
            "turn {} after cutting {n}",
            s.turn_count
        );
        assert_eq!(s.messages.len() as u64, 2 * s.turn_count, "no half turn");
        assert_eq!(s.actions.len() as u64, s.turn_count);
        store.release(lease).await.unwrap();
    }
    // A fresh read from the database agrees with what the turns saw.
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(s.messages.len() as u64, 2 * s.turn_count);
}

async fn deletion_removes_everything_and_voids_a_held_lease(store: &Store, id: &str) {
    let (lease, _) = store.begin(id, WAIT).await.unwrap();
    let mut changes = turn(1, "to delete");
    changes.paused = vec![(format!("{id}-run"), 2, json!({}))];
    store.commit(lease, changes).await.unwrap();
    assert!(store.delete(id).await.unwrap());
    assert!(store.load(id).await.unwrap().is_none());
    assert!(store.runs(id).await.unwrap().is_empty());
    assert!(!store.list().await.unwrap().iter().any(|i| i.id == id));
    assert!(!store.delete(id).await.unwrap());

    let (lease, s) = store.begin(id, WAIT).await.unwrap();
    assert_eq!(s.turn_count, 0, "a recreated session starts empty");
    assert!(s.messages.is_empty());
    store.delete(id).await.unwrap();
    let e = store.commit(lease, turn(1, "late")).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::LeaseLost, "{e}");
    assert!(store.load(id).await.unwrap().is_none());
}

/// SQL stores: a lease whose holder stopped renewing it (a dead process) expires, and the
/// old holder's commit is refused.
pub async fn an_expired_lease_is_taken_over_and_its_commit_refused(store: &Store, id: &str) {
    let (stale, _) = store.begin(id, WAIT).await.unwrap();
    let (fresh, _) = store.begin(id, WAIT).await.unwrap();
    let e = store.commit(stale, turn(1, "stale")).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::LeaseLost, "{e}");
    store.commit(fresh, turn(1, "fresh")).await.unwrap();
    let s = store.load(id).await.unwrap().unwrap();
    assert_eq!(&*s.messages[0].content, "fresh");
    assert_eq!(s.turn_count, 1);
}

/// Sessions `ids` leased at once, then committed at once with one chat turn each, after
/// `spoil` put a row where session `ids[bad]`'s first message goes (its insert violates the
/// key): that commit fails with a backend error and saves nothing, the others commit, and
/// the failed session can be leased again.
pub async fn a_failing_commit_fails_alone<F, Fut>(
    store: &Store,
    ids: &[String],
    bad: usize,
    spoil: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let begun = futures::future::join_all(ids.iter().map(|id| store.begin(id, WAIT))).await;
    let leases: Vec<_> = begun.into_iter().map(|b| b.unwrap().0).collect();
    spoil().await;
    let commits = leases.into_iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        async move { store.commit(lease, turn(1, &format!("s{i}"))).await }
    });
    for (i, r) in futures::future::join_all(commits)
        .await
        .into_iter()
        .enumerate()
    {
        if i == bad {
            assert_eq!(r.unwrap_err().kind, StoreErrorKind::Backend);
        } else {
            r.unwrap();
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let s = store.load(id).await.unwrap();
        if i == bad {
            assert!(s.is_none(), "the failed commit saved nothing");
        } else {
            assert_eq!(s.unwrap().turn_count, 1);
        }
    }
    let (lease, s) = store.begin(&ids[bad], WAIT).await.unwrap();
    assert_eq!(s.turn_count, 0);
    store.release(lease).await.unwrap();
}
