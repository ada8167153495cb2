//! Session-store workloads: chat turns through the runner on the in-memory store (the
//! baseline, same run), SQLite (a temp dir) and PostgreSQL (a fresh schema, dropped after).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaos_agents::{FunctionClient, KaosRuntime, LlmRequest, Runner, SessionStore};
use kaos_store::{PostgresStore, StoreOptions};
use serde_json::{Value, json};

use crate::workloads::{MODEL, agent, chat_model, drain};
use crate::{BoxError, Sizes, Stats, round};

/// The PostgreSQL server the bench uses (a fresh schema in it).
pub(crate) fn database_url() -> String {
    std::env::var("KAOS_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("KAOS_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn runner(store: Arc<dyn SessionStore>, client: FunctionClient) -> Result<Runner, BoxError> {
    let runtime = KaosRuntime::new(store)
        .with_client(MODEL, client)
        .with_session_wait(Duration::from_secs(600));
    Ok(Runner::new(
        agent("bench-store", kaos_agents::AgentPattern::Chat)?,
        runtime,
    ))
}

/// Per-turn latencies of `n` turns on one session (zero model latency).
async fn one_session(
    store: Arc<dyn SessionStore>,
    n: usize,
    tag: &str,
) -> Result<Vec<f64>, BoxError> {
    let runner = runner(
        store.clone(),
        FunctionClient::new(chat_model).without_recording(),
    )?;
    for w in 0..20 {
        drain(&runner, "Hello there!", format!("{tag}-warm-{w}")).await;
    }
    let session = format!("{tag}-one");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        drain(&runner, "Hello there, how are you today?", session.clone()).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let s = store
        .load(&session)
        .await?
        .ok_or("the session was not stored")?;
    if s.turn_count != n as u64 || s.messages.len() != 2 * n {
        return Err(format!(
            "{tag}: {n} turns left {} turns, {} messages",
            s.turn_count,
            s.messages.len()
        )
        .into());
    }
    Ok(out)
}

fn p50(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `sessions` chat turns at once, one per session, the model taking 20 ms; turns/s.
async fn concurrent(
    store: Arc<dyn SessionStore>,
    sessions: usize,
    tag: &str,
) -> Result<f64, BoxError> {
    let client = FunctionClient::new_async(|request: LlmRequest| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        chat_model(&request.messages, &request)
    })
    .without_recording();
    let runner = runner(store, client)?;
    let mut samples = Vec::new();
    let mut wall = Duration::ZERO;
    for round in 0..2 {
        let t = Instant::now();
        let handles: Vec<_> = (0..sessions)
            .map(|i| {
                let runner = runner.clone();
                let session = format!("{tag}-c{round}-{i}");
                tokio::spawn(async move {
                    let t = Instant::now();
                    let n = drain(&runner, "Hello there!", session).await;
                    (t.elapsed(), n)
                })
            })
            .collect();
        let mut round_samples = Vec::with_capacity(sessions);
        for h in handles {
            let (elapsed, events) = h.await?;
            if events == 0 {
                return Err("a concurrent turn produced no events".into());
            }
            round_samples.push(elapsed);
        }
        if round > 0 {
            wall += t.elapsed();
            samples.extend(round_samples);
        }
    }
    Ok(Stats::from_samples(samples, wall).per_s)
}

/// `tasks` tasks × `turns` turns on one session; checks every turn was kept; turns/s.
async fn contended(
    store: Arc<dyn SessionStore>,
    tasks: usize,
    turns: usize,
) -> Result<f64, BoxError> {
    let runner = runner(
        store.clone(),
        FunctionClient::new(chat_model).without_recording(),
    )?;
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|k| {
            let runner = runner.clone();
            tokio::spawn(async move {
                for i in 0..turns {
                    drain(&runner, &format!("task {k} turn {i}"), "contended".into()).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await?;
    }
    let wall = t.elapsed();
    let s = store
        .load("contended")
        .await?
        .ok_or("no contended session")?;
    let want = (tasks * turns) as u64;
    if s.turn_count != want || s.messages.len() as u64 != 2 * want {
        return Err(format!(
            "contended: {want} turns left {} turns and {} messages",
            s.turn_count,
            s.messages.len()
        )
        .into());
    }
    Ok(want as f64 / wall.as_secs_f64().max(1e-12))
}

/// Report keys and their values.
pub(crate) type Keys = Vec<(&'static str, Value)>;

/// Runs every store workload; returns the report's keys and a note.
pub(crate) fn run(sizes: Sizes) -> Result<(Keys, String), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let turns = sizes.same_session_turns;
        let window = 50.min(turns / 2).max(1);
        let sessions = sizes.concurrent_sessions;
        let contended_turns = if turns >= 500 { 50 } else { 5 };
        let dir = std::env::temp_dir().join(format!("kaos-bench-store-{}", std::process::id()));
        let sqlite = kaos_store::open_state_dir(&dir, StoreOptions::default()).await?;
        let memory: Arc<dyn SessionStore> = Arc::new(kaos_agents::InMemoryStore::new());

        let mem_turns = one_session(memory.clone(), turns, "mem").await?;
        let sql_turns = one_session(sqlite.clone(), turns, "sqlite").await?;
        let first = sql_turns.iter().take(window).sum::<f64>() / window as f64;
        let last = sql_turns.iter().rev().take(window).sum::<f64>() / window as f64;
        let mem_conc = concurrent(memory.clone(), sessions, "mem").await?;
        let sql_conc = concurrent(sqlite.clone(), sessions, "sqlite").await?;
        let sql_contended = contended(sqlite.clone(), 8, contended_turns).await?;

        let schema = format!("kaos_bench_{}", std::process::id());
        let url = database_url();
        let pg = PostgresStore::connect(
            &url,
            StoreOptions {
                schema: Some(schema.clone()),
                pool_size: 16,
                ..StoreOptions::default()
            },
        )
        .await;
        let (pg_turn, pg_conc, pg_note) = match pg {
            Ok(pg) => {
                let store: Arc<dyn SessionStore> = Arc::new(pg.clone());
                let t = one_session(store.clone(), turns, "pg").await?;
                let c = concurrent(store, sessions, "pg").await?;
                pg.drop_schema(&schema).await?;
                (Some(p50(&t)), Some(c), format!("PostgreSQL at {} (pool 16, fresh schema dropped after)", kaos_store::redact_url(&url)))
            }
            Err(e) => (None, None, format!("PostgreSQL not measured: {e}")),
        };
        drop(sqlite);
        let _ = std::fs::remove_dir_all(&dir);

        let mem_p50 = p50(&mem_turns);
        let sql_p50 = p50(&sql_turns);
        let keys = vec![
            ("store_memory_turn_us_p50", json!(round(mem_p50, 2))),
            ("store_sqlite_turn_us_p50", json!(round(sql_p50, 2))),
            ("store_postgres_turn_us_p50", json!(pg_turn.map(|v| round(v, 2)))),
            ("store_sqlite_turn_over_memory", json!(round(sql_p50 / mem_p50.max(1e-9), 1))),
            ("store_postgres_turn_over_memory", json!(pg_turn.map(|v| round(v / mem_p50.max(1e-9), 1)))),
            ("store_sqlite_turn500_over_turn1", json!(round(last / first.max(1e-9), 2))),
            ("store_memory_concurrent_turns_per_s", json!(round(mem_conc, 0))),
            ("store_sqlite_concurrent_turns_per_s", json!(round(sql_conc, 0))),
            ("store_postgres_concurrent_turns_per_s", json!(pg_conc.map(|v| round(v, 0)))),
            ("store_sqlite_concurrent_over_memory", json!(round(sql_conc / mem_conc.max(1e-9), 3))),
            ("store_postgres_concurrent_over_memory", json!(pg_conc.map(|v| round(v / mem_conc.max(1e-9), 3)))),
            ("store_contended_turns_per_s", json!(round(sql_contended, 0))),
        ];
        let note = format!(
            "chat turns through the runner (zero model latency) on one session: p50 over {turns} turns; turn500/turn1 = mean of the last {window} ÷ first {window} SQLite turns; concurrent = {sessions} sessions at once, model 20 ms, second round timed; contended = 8 tasks × {contended_turns} turns on one SQLite session, all kept (checked). SQLite: WAL, synchronous=FULL, in {} ({}). {pg_note}",
            std::env::temp_dir().display(),
            crate::workloads::fs_type(&std::env::temp_dir()).unwrap_or_else(|| "unknown".into())
        );
        Ok((keys, note))
    })
}
