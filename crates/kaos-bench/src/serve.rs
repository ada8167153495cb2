//! The `serve` workload: a local `kaos-server` driven over real HTTP (loopback, SSE) by
//! concurrent keep-alive clients, bounded in time.
//!
//! Figures: turns/s and per-turn latency (request sent → end of the SSE stream) at N
//! concurrent streams with a 20 ms model, the time to the first SSE event, RSS under that
//! load, the heap bytes one open stream holds, and the same loop at 0 ms (CPU-bound). Each
//! is paired with the same turns run in-process through `Runner` (no HTTP) in the same run.
//! The 20 ms and 0 ms phases run on the in-memory store, then on SQLite (a temp state dir)
//! and PostgreSQL (a fresh schema, dropped after; skipped with a note when unreachable).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kaos_agents::kaos_llm::{LlmRequest, Message, ProviderResponse};
use kaos_agents::{Agent, FunctionClient, KaosRuntime, Runner, SessionStore};
use kaos_server::{Limits, ServedAgent, Server, ServerConfig, TokenSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::BoxError;

const TOKEN: &str = "bench-token-0123456789";
const MODEL: &str = "bench-latency";
/// The end of a chunked response body.
const END: &[u8] = b"\r\n0\r\n\r\n";

/// Sizes of the serve workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeSizes {
    /// Concurrent SSE streams.
    pub streams: usize,
    /// How long each load phase runs.
    pub duration: Duration,
}

impl ServeSizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                streams: 50,
                duration: Duration::from_millis(300),
            }
        } else {
            Self {
                streams: 1000,
                duration: Duration::from_secs(5),
            }
        }
    }
}

/// One load phase's figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    pub turns_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub first_event_p50_ms: f64,
    pub first_event_p99_ms: f64,
    pub peak_rss_mb: f64,
    pub turns: usize,
    /// Turns whose stream carried a `run_error` (not counted in `turns` or the latencies).
    pub failed: usize,
}

/// The 20 ms and 0 ms phases on one persistent store, and the same turns in-process on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreLoad {
    pub latency_20ms: Load,
    pub inprocess_20ms_turns_per_s: f64,
    pub cpu_bound: Load,
    pub inprocess_cpu_turns_per_s: f64,
}

/// Everything the serve workload measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServeFigures {
    pub latency_20ms: Load,
    pub inprocess_20ms_turns_per_s: f64,
    pub cpu_bound: Load,
    pub inprocess_cpu_turns_per_s: f64,
    pub bytes_per_open_stream: f64,
    pub streams: usize,
    /// The phases on SQLite (a temp state dir).
    pub sqlite: StoreLoad,
    /// The phases on PostgreSQL (`None`: not measured, `postgres_note` says why).
    pub postgres: Option<StoreLoad>,
    /// Where the PostgreSQL figures come from, or why there are none.
    pub postgres_note: String,
}

fn is_classifier(messages: &[Message]) -> bool {
    messages
        .first()
        .is_some_and(|m| m.content.contains("intent") && m.content.contains("reasoning"))
}

fn reply(messages: &[Message]) -> ProviderResponse {
    if is_classifier(messages) {
        ProviderResponse::from_text(r#"{"intent":"respond","confidence":0.9,"reasoning":"bench"}"#)
            .with_usage(100, 10)
    } else {
        ProviderResponse::from_text(r#"{"response":"Served."}"#).with_usage(200, 20)
    }
}

/// A model whose every call waits `latency` on a timer (0: answers at once).
fn model(latency: Duration) -> FunctionClient {
    FunctionClient::new_async(move |request: LlmRequest| async move {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        reply(&request.messages)
    })
    .without_recording()
}

/// A model whose calls wait until `gate` gets permits (to hold streams open).
fn gated_model(gate: Arc<Semaphore>) -> FunctionClient {
    FunctionClient::new_async(move |request: LlmRequest| {
        let gate = gate.clone();
        async move {
            if let Ok(p) = gate.acquire().await {
                p.forget();
            }
            reply(&request.messages)
        }
    })
    .without_recording()
}

fn runtime(client: FunctionClient, store: Arc<dyn SessionStore>) -> KaosRuntime {
    KaosRuntime::new(store).with_client(MODEL, client)
}

fn agent() -> Result<Agent, BoxError> {
    Ok(Agent::builder().name("bench-serve").model(MODEL).build()?)
}

/// Starts a server on an ephemeral loopback port; returns its address and a stopper.
async fn start(
    runtime: KaosRuntime,
    streams: usize,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), BoxError> {
    let tokens = TokenSet::from_list(TOKEN)?;
    let server = Server::new(ServerConfig {
        agents: vec![ServedAgent {
            agent: agent()?,
            runtime,
        }],
        tokens,
        limits: Limits {
            max_concurrent_turns: streams * 2 + 16,
            ..Limits::default()
        },
        tracer: None,
        hooks: Vec::new(),
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve(
                listener,
                async move {
                    let _ = stopped.await;
                },
                Duration::from_secs(5),
            )
            .await;
    });
    Ok((addr, stop))
}

fn request_bytes(addr: &str, session: &str) -> Vec<u8> {
    let body = r#"{"message":"Hello there!"}"#;
    format!(
        "POST /v1/sessions/{session}/messages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one SSE response off a keep-alive connection; returns when the first event
/// arrived (relative to `sent`) and whether the turn failed (a `run_error` event).
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    sent: Instant,
    mut on_first: impl FnMut(),
) -> Result<(Duration, bool), BoxError> {
    buf.clear();
    let mut first = None;
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the server closed the connection mid-response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if first.is_none() && buf.windows(7).any(|w| w == b"event: ") {
            first = Some(sent.elapsed());
            on_first();
        }
        if buf.ends_with(END) {
            if !buf.starts_with(b"HTTP/1.1 200") {
                let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).to_string();
                return Err(format!("unexpected response: {head}").into());
            }
            let failed = buf.windows(16).any(|w| w == b"event: run_error");
            return first
                .map(|f| (f, failed))
                .ok_or_else(|| "a response without events".into());
        }
    }
}

fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    if samples.is_empty() {
        return 0.0;
    }
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `streams` keep-alive clients, each running turns back to back on its own session for
/// `duration`.
async fn load(addr: &str, streams: usize, duration: Duration, tag: &str) -> Result<Load, BoxError> {
    let deadline = Instant::now() + duration;
    let peak = Arc::new(std::sync::Mutex::new(rss_mb()));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(rss_mb());
                }
            }
        })
    };
    let started = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|i| {
            let addr = addr.to_string();
            let session = format!("{tag}-{i}");
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let request = request_bytes(&addr, &session);
                let mut buf = Vec::with_capacity(4096);
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    stream.write_all(&request).await?;
                    let (first, failed) = read_response(&mut stream, &mut buf, sent, || {}).await?;
                    samples.push((sent.elapsed(), first, failed));
                }
                Ok::<_, BoxError>(samples)
            })
        })
        .collect();
    let mut totals = Vec::new();
    let mut firsts = Vec::new();
    let mut failed = 0;
    for h in handles {
        for (total, first, f) in h.await.map_err(|e| format!("client task: {e}"))?? {
            if f {
                failed += 1;
                continue;
            }
            totals.push(total);
            firsts.push(first);
        }
    }
    let wall = started.elapsed();
    sampler.abort();
    let peak_rss_mb = peak.lock().map(|p| *p).unwrap_or(0.0).max(rss_mb());
    Ok(Load {
        turns_per_s: totals.len() as f64 / wall.as_secs_f64().max(1e-9),
        turns: totals.len(),
        p50_ms: percentile(&mut totals, 0.50),
        p99_ms: percentile(&mut totals, 0.99),
        first_event_p50_ms: percentile(&mut firsts, 0.50),
        first_event_p99_ms: percentile(&mut firsts, 0.99),
        peak_rss_mb,
        failed,
    })
}

/// The same turns in-process (no HTTP): `streams` tasks running turns for `duration`.
async fn inprocess(
    runner: Runner,
    streams: usize,
    duration: Duration,
    tag: &str,
) -> Result<f64, BoxError> {
    use futures::StreamExt;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|i| {
            let runner = runner.clone();
            let session = format!("{tag}-{i}");
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let failed = runner
                        .run("Hello there!", session.clone())
                        .any(|e| async move {
                            matches!(e.kind, kaos_agents::EventKind::RunError { .. })
                        })
                        .await;
                    if !failed {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut turns = 0;
    for h in handles {
        turns += h.await.map_err(|e| format!("in-process task: {e}"))?;
    }
    Ok(turns as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Heap bytes per open stream: N streams held mid-turn (the model waits on a gate) minus
/// the same N client connections held open against a plain TCP listener (the client's own
/// share: task, socket, buffer), divided by N.
async fn open_stream_bytes(streams: usize) -> Result<f64, BoxError> {
    // Control: client-side cost of N held connections.
    let control = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
                let _ = held_tx.send(());
            }
        });
        let window = crate::alloc::Window::open();
        let mut clients = Vec::with_capacity(streams);
        for i in 0..streams {
            let mut s = TcpStream::connect(&addr).await?;
            s.write_all(&request_bytes(&addr, &format!("ctl-{i}")))
                .await?;
            clients.push((s, Vec::<u8>::with_capacity(4096)));
        }
        for _ in 0..streams {
            held_rx.recv().await;
        }
        let delta = window.grown();
        drop(window);
        drop(clients);
        accept.abort();
        delta
    };
    let gate = Arc::new(Semaphore::new(0));
    let store: Arc<dyn SessionStore> = Arc::new(kaos_agents::InMemoryStore::new());
    let (addr, stop) = start(runtime(gated_model(gate.clone()), store), streams).await?;
    // Warm the server (first-use allocations are not per stream).
    {
        let mut s = TcpStream::connect(&addr).await?;
        gate.add_permits(2);
        s.write_all(&request_bytes(&addr, "warm")).await?;
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, Instant::now(), || {}).await?;
    }
    let window = crate::alloc::Window::open();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::unbounded_channel();
    let handles: Vec<_> = (0..streams)
        .map(|i| {
            let addr = addr.clone();
            let open_tx = open_tx.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(&addr).await?;
                s.write_all(&request_bytes(&addr, &format!("open-{i}")))
                    .await?;
                let mut buf = Vec::with_capacity(4096);
                read_response(&mut s, &mut buf, Instant::now(), || {
                    let _ = open_tx.send(());
                })
                .await?;
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for _ in 0..streams {
        open_rx.recv().await;
    }
    let served = window.grown();
    drop(window);
    gate.add_permits(streams * 2 + 16);
    for h in handles {
        h.await.map_err(|e| format!("client task: {e}"))??;
    }
    let _ = stop.send(());
    Ok((served - control) as f64 / streams as f64)
}

/// The 20 ms and 0 ms phases over `store` (served, then in-process), sessions named by `tag`.
async fn store_phases(
    store: Arc<dyn SessionStore>,
    sizes: ServeSizes,
    tag: &str,
) -> Result<StoreLoad, BoxError> {
    let n = sizes.streams;
    let mut out = StoreLoad::default();
    for latency_ms in [20, 0] {
        let latency = Duration::from_millis(latency_ms);
        let (addr, stop) = start(runtime(model(latency), store.clone()), n).await?;
        let warm = format!("{tag}-warm{latency_ms}");
        load(&addr, n.min(50), sizes.duration / 5, &warm).await?;
        let served = load(&addr, n, sizes.duration, &format!("{tag}-l{latency_ms}")).await?;
        let _ = stop.send(());
        let runner = Runner::new(agent()?, runtime(model(latency), store.clone()));
        let p = format!("{tag}-p{latency_ms}");
        let inprocess = inprocess(runner, n, sizes.duration, &p).await?;
        if latency_ms == 20 {
            (out.latency_20ms, out.inprocess_20ms_turns_per_s) = (served, inprocess);
        } else {
            (out.cpu_bound, out.inprocess_cpu_turns_per_s) = (served, inprocess);
        }
    }
    Ok(out)
}

/// The phases on SQLite in a temp state dir (removed after).
async fn sqlite_phases(sizes: ServeSizes) -> Result<StoreLoad, BoxError> {
    let dir = std::env::temp_dir().join(format!("kaos-bench-serve-{}", std::process::id()));
    let store = kaos_store::open_state_dir(&dir, kaos_store::StoreOptions::default()).await?;
    let figures = store_phases(store, sizes, "sqlite").await;
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

/// The phases on PostgreSQL in a fresh schema (dropped after); `Err` says why they were
/// not measured.
async fn postgres_phases(sizes: ServeSizes, url: &str) -> Result<StoreLoad, String> {
    let schema = format!("kaos_bench_serve_{}", std::process::id());
    let options = kaos_store::StoreOptions {
        schema: Some(schema.clone()),
        ..kaos_store::StoreOptions::default()
    };
    let pg = kaos_store::PostgresStore::connect(url, options)
        .await
        .map_err(|e| format!("PostgreSQL not measured (unreachable): {e}"))?;
    let figures = store_phases(Arc::new(pg.clone()), sizes, "pg").await;
    let dropped = pg.drop_schema(&schema).await;
    let figures = figures.map_err(|e| format!("PostgreSQL phases failed: {e}"))?;
    dropped.map_err(|e| format!("dropping schema {schema}: {e}"))?;
    Ok(figures)
}

/// Runs the serve workload (its own multi-threaded runtime).
pub(crate) fn serve(quick: bool) -> Result<ServeFigures, BoxError> {
    let sizes = ServeSizes::new(quick);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let n = sizes.streams;
        let mut figures = ServeFigures {
            streams: n,
            ..ServeFigures::default()
        };

        let memory = || -> Arc<dyn SessionStore> { Arc::new(kaos_agents::InMemoryStore::new()) };
        let latency = Duration::from_millis(20);
        let (addr, stop) = start(runtime(model(latency), memory()), n).await?;
        load(&addr, n.min(50), sizes.duration / 5, "warm").await?;
        figures.latency_20ms = load(&addr, n, sizes.duration, "l20").await?;
        let _ = stop.send(());
        let runner = Runner::new(agent()?, runtime(model(latency), memory()));
        figures.inprocess_20ms_turns_per_s = inprocess(runner, n, sizes.duration, "p20").await?;

        let (addr, stop) = start(runtime(model(Duration::ZERO), memory()), n).await?;
        load(&addr, n.min(50), sizes.duration / 5, "warm").await?;
        figures.cpu_bound = load(&addr, n, sizes.duration, "l0").await?;
        let _ = stop.send(());
        let runner = Runner::new(agent()?, runtime(model(Duration::ZERO), memory()));
        figures.inprocess_cpu_turns_per_s = inprocess(runner, n, sizes.duration, "p0").await?;

        figures.bytes_per_open_stream = open_stream_bytes(n).await?;

        figures.sqlite = sqlite_phases(sizes).await?;
        let url = crate::store::database_url();
        match postgres_phases(sizes, &url).await {
            Ok(pg) => {
                figures.postgres = Some(pg);
                figures.postgres_note = format!(
                    "PostgreSQL at {} (pool {}, fresh schema dropped after)",
                    kaos_store::redact_url(&url),
                    kaos_store::StoreOptions::default().pool_size
                );
            }
            Err(why) => figures.postgres_note = why,
        }
        Ok::<_, BoxError>(figures)
    })
}

fn r(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// One store's keys (`serve_<name>_*`): throughput, latency, first event, RSS and failed
/// turns of both phases, and the ratios to the in-process baseline of the same run (memory
/// store) and to the same turns in-process on that store.
fn store_report(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    s: Option<&StoreLoad>,
    baseline: &ServeFigures,
) {
    let mut put = |key: &str, value: Option<f64>| {
        out.insert(format!("serve_{name}_{key}"), serde_json::json!(value));
    };
    let ratio = |a: f64, b: f64| r(a / b.max(1e-9), 3);
    let (l, c) = (s.map(|s| s.latency_20ms), s.map(|s| s.cpu_bound));
    put("turns_per_s", l.map(|l| r(l.turns_per_s, 0)));
    put("p50_ms", l.map(|l| r(l.p50_ms, 2)));
    put("p99_ms", l.map(|l| r(l.p99_ms, 2)));
    put("first_event_ms", l.map(|l| r(l.first_event_p50_ms, 2)));
    put("rss_mb", l.map(|l| r(l.peak_rss_mb, 1)));
    put(
        "over_inprocess_memory_20ms",
        l.map(|l| ratio(l.turns_per_s, baseline.inprocess_20ms_turns_per_s)),
    );
    put(
        "inprocess_20ms_turns_per_s",
        s.map(|s| r(s.inprocess_20ms_turns_per_s, 0)),
    );
    put(
        "over_inprocess_same_store_20ms",
        s.map(|s| ratio(s.latency_20ms.turns_per_s, s.inprocess_20ms_turns_per_s)),
    );
    put("cpu_turns_per_s", c.map(|c| r(c.turns_per_s, 0)));
    put("cpu_p50_ms", c.map(|c| r(c.p50_ms, 2)));
    put("cpu_p99_ms", c.map(|c| r(c.p99_ms, 2)));
    put(
        "cpu_over_inprocess_memory",
        c.map(|c| ratio(c.turns_per_s, baseline.inprocess_cpu_turns_per_s)),
    );
    put(
        "inprocess_cpu_turns_per_s",
        s.map(|s| r(s.inprocess_cpu_turns_per_s, 0)),
    );
    put(
        "cpu_over_inprocess_same_store",
        s.map(|s| ratio(s.cpu_bound.turns_per_s, s.inprocess_cpu_turns_per_s)),
    );
    out.insert(
        format!("serve_{name}_failed_turns"),
        serde_json::json!(l.map(|l| l.failed + c.map_or(0, |c| c.failed))),
    );
}

/// The figures as the report's `serve` object.
pub(crate) fn report(f: &ServeFigures) -> serde_json::Value {
    let mut value = memory_report(f);
    if let serde_json::Value::Object(map) = &mut value {
        store_report(map, "sqlite", Some(&f.sqlite), f);
        store_report(map, "postgres", f.postgres.as_ref(), f);
        map.insert("serve_postgres_note".into(), f.postgres_note.clone().into());
    }
    value
}

/// The in-memory store's keys (the first figures this workload reported).
fn memory_report(f: &ServeFigures) -> serde_json::Value {
    let l = &f.latency_20ms;
    let c = &f.cpu_bound;
    serde_json::json!({
        "streams": f.streams,
        "serve_turns": l.turns,
        "serve_turns_per_s": r(l.turns_per_s, 0),
        "serve_p50_ms": r(l.p50_ms, 2),
        "serve_p99_ms": r(l.p99_ms, 2),
        "serve_first_event_ms": r(l.first_event_p50_ms, 2),
        "serve_first_event_p99_ms": r(l.first_event_p99_ms, 2),
        "serve_rss_mb": r(l.peak_rss_mb, 1),
        "serve_bytes_per_open_stream": r(f.bytes_per_open_stream, 0),
        "inprocess_20ms_turns_per_s": r(f.inprocess_20ms_turns_per_s, 0),
        "serve_over_inprocess_20ms": r(l.turns_per_s / f.inprocess_20ms_turns_per_s.max(1e-9), 3),
        "serve_cpu_turns_per_s": r(c.turns_per_s, 0),
        "serve_cpu_p50_ms": r(c.p50_ms, 2),
        "serve_cpu_p99_ms": r(c.p99_ms, 2),
        "serve_cpu_first_event_ms": r(c.first_event_p50_ms, 2),
        "inprocess_cpu_turns_per_s": r(f.inprocess_cpu_turns_per_s, 0),
        "serve_over_inprocess_cpu": r(c.turns_per_s / f.inprocess_cpu_turns_per_s.max(1e-9), 3),
        "serve_failed_turns": l.failed + c.failed,
        "store": "memory",
    })
}

/// What the serve figures mean.
pub(crate) fn notes(notes: &mut serde_json::Map<String, serde_json::Value>, f: &ServeFigures) {
    notes.insert(
        "serve".into(),
        format!(
            "kaos-server on 127.0.0.1 (same process, one multi-threaded runtime shared with the load generator), {} keep-alive HTTP/1.1 clients each running SSE turns back to back on its own session for the phase's duration; a respond turn = 2 model calls (classifier + respond), each waiting 20 ms on a timer (serve_*) or 0 ms (serve_cpu_*); latency = request written → end of the chunked SSE body; first_event = request written → first `event:` line; in-memory session store, no OTel/audit hooks; inprocess_* = the same turns through Runner::run without HTTP, same concurrency and duration; serve_sqlite_* / serve_postgres_*: both phases again on SQLite (a temp state dir, WAL) and on PostgreSQL ({}), each also run in-process on the same store (…_over_inprocess_same_store) and compared with the in-memory in-process baseline of this run (…_over_inprocess_memory); failed_turns = streams that carried a run_error (left out of the figures); serve_rss_mb = peak VmRSS sampled every 50 ms during the 20 ms phase (whole process: server + clients); serve_bytes_per_open_stream = live heap with N streams held mid-turn minus N plain held client connections, / N",
            f.streams,
            f.postgres_note
        )
        .into(),
    );
}
