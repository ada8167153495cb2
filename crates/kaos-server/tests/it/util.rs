//! A real server on an ephemeral port, a fake model, test tools, and an event tap.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use kaos_agents::kaos_llm::{LlmRequest, Message, ProviderResponse, Role};
use kaos_agents::otel::OTelHook;
use kaos_agents::{
    Agent, Event, FnHook, FnTool, FunctionClient, KaosRuntime, SessionStore, ToolOutput,
};
use kaos_server::{Limits, ServedAgent, Server, ServerConfig, TokenSet};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Tells the test about every span as it ends.
#[derive(Debug)]
struct EndedSpans(mpsc::UnboundedSender<SpanData>);

impl opentelemetry_sdk::trace::SpanProcessor for EndedSpans {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        let _ = self.0.send(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(
        &self,
        _timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

pub const TOKEN_A: &str = "alice-token-0123456789";
pub const TOKEN_B: &str = "bob-token-0123456789";

fn message_value(messages: &[Message]) -> String {
    let text = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let first = text.lines().next().unwrap_or_default().to_string();
    match first.strip_prefix("**message**") {
        Some(rest) => rest
            .split_once("): ")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        None => text,
    }
}

/// The fake model: a message naming a tool (`wordcount`, `gate`, `slowproc`, `deleter`)
/// is `tool_use` and calls that tool once; anything else is answered with an echo.
pub fn model(messages: &[Message], request: &LlmRequest) -> ProviderResponse {
    let all: String = messages.iter().map(|m| m.content.to_lowercase()).collect();
    let tools = ["wordcount", "gate", "slowproc", "deleter"];
    if all.contains("intent") && all.contains("reasoning") {
        let msg = message_value(messages);
        let intent = if tools.iter().any(|t| msg.contains(t)) {
            "tool_use"
        } else {
            "respond"
        };
        return ProviderResponse::from_text(format!(
            r#"{{"intent":"{intent}","confidence":0.9,"reasoning":"routing"}}"#
        ))
        .with_usage(100, 10);
    }
    if !request.tools.is_empty() {
        if let Some(result) = messages.iter().rev().find(|m| m.role == Role::Tool) {
            return ProviderResponse::from_text(format!("result was: {}", result.content))
                .with_usage(60, 6);
        }
        let user: String = messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .collect();
        let Some(tool) = request.tools.iter().find(|t| user.contains(&t.name)) else {
            return ProviderResponse::from_text("no tool fits").with_usage(60, 6);
        };
        return ProviderResponse::from_tool_call("tc_1", tool.name.clone(), json!({}))
            .with_usage(50, 5);
    }
    let echoed = message_value(messages);
    ProviderResponse::from_text(json!({ "response": format!("echo: {echoed}") }).to_string())
        .with_usage(200, 20)
}

/// Controls of the test tools.
#[derive(Clone)]
pub struct Controls {
    /// `gate` sends here when it starts, then waits for a permit of `gate_open`.
    pub gate_entered: Arc<Mutex<Option<mpsc::UnboundedSender<()>>>>,
    /// Permits released by the test let `gate` calls finish.
    pub gate_open: Arc<Semaphore>,
    /// `slowproc` sends its child's stdout here (the child prints `started`, then sleeps).
    pub proc_out: Arc<Mutex<Option<mpsc::UnboundedSender<tokio::process::ChildStdout>>>>,
}

pub fn tools(c: &Controls) -> Vec<FnTool> {
    let wordcount = FnTool::from_json(
        "wordcount",
        "Counts words.",
        json!({"type": "object", "properties": {}}),
        |_args, _ctx| async { ToolOutput::text("3 words") },
    )
    .read_only();
    let (entered, open) = (c.gate_entered.clone(), c.gate_open.clone());
    let gate = FnTool::from_json(
        "gate",
        "Waits until the test opens the gate.",
        json!({"type": "object", "properties": {}}),
        move |_args, _ctx| {
            let (entered, open) = (entered.clone(), open.clone());
            async move {
                if let Some(tx) = entered.lock().unwrap().as_ref() {
                    let _ = tx.send(());
                }
                let permit = open.acquire().await.unwrap();
                permit.forget();
                ToolOutput::text("gate passed")
            }
        },
    )
    .read_only();
    let out = c.proc_out.clone();
    let slowproc = FnTool::from_json(
        "slowproc",
        "Runs a long child process.",
        json!({"type": "object", "properties": {}}),
        move |_args, _ctx| {
            let out = out.clone();
            async move {
                let mut child = tokio::process::Command::new("sh")
                    .args(["-c", "echo started; exec sleep 1000"])
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                let stdout = child.stdout.take().unwrap();
                if let Some(tx) = out.lock().unwrap().as_ref() {
                    let _ = tx.send(stdout);
                }
                let status = child.wait().await.unwrap();
                ToolOutput::text(format!("exited {status}"))
            }
        },
    );
    let deleter = FnTool::from_json(
        "deleter",
        "Deletes a report (destructive).",
        json!({"type": "object", "properties": {}}),
        |_args, _ctx| async { ToolOutput::text("deleted") },
    )
    .destructive();
    vec![wordcount, gate, slowproc, deleter]
}

/// A running server and what the test needs to observe it.
pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub exporter: InMemorySpanExporter,
    pub provider: SdkTracerProvider,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub ended: mpsc::UnboundedReceiver<SpanData>,
    pub controls: Controls,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<kaos_server::DrainReport>>>,
}

/// Options for [`start`].
pub struct Options {
    pub limits: Limits,
    pub tokens: TokenSet,
    pub store: Option<Arc<dyn SessionStore>>,
    pub drain_timeout: std::time::Duration,
    /// How long a turn waits for the store's lease on its session (the runtime's default
    /// when `None`).
    pub session_wait: Option<std::time::Duration>,
}

impl Default for Options {
    fn default() -> Self {
        let mut tokens = TokenSet::empty();
        tokens.add(Some("alice"), TOKEN_A, "test").unwrap();
        tokens.add(Some("bob"), TOKEN_B, "test").unwrap();
        Self {
            limits: Limits::default(),
            tokens,
            store: None,
            drain_timeout: std::time::Duration::from_secs(30),
            session_wait: None,
        }
    }
}

pub async fn start(options: Options) -> TestServer {
    let exporter = InMemorySpanExporter::default();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_span_processor(EndedSpans(ended_tx))
        .build();
    let controls = Controls {
        gate_entered: Arc::default(),
        gate_open: Arc::new(Semaphore::new(0)),
        proc_out: Arc::default(),
    };
    let store: Arc<dyn SessionStore> = options
        .store
        .unwrap_or_else(|| Arc::new(kaos_agents::InMemoryStore::new()));
    let mut runtime = KaosRuntime::new(store.clone())
        .with_client("fake", FunctionClient::new(model).without_recording())
        .with_client("fake-2", FunctionClient::new(model).without_recording());
    for t in tools(&controls) {
        runtime = runtime.with_tool(t);
    }
    if let Some(wait) = options.session_wait {
        runtime = runtime.with_session_wait(wait);
    }
    let assistant = Agent::builder()
        .name("assistant")
        .model("fake")
        .build()
        .unwrap();
    let other = Agent::builder()
        .name("other")
        .model("fake-2")
        .tool("wordcount")
        .build()
        .unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let tap = FnHook::new(move |e: &Event| {
        let _ = tx.send(e.clone());
    });
    let config = ServerConfig {
        agents: vec![
            ServedAgent {
                agent: assistant,
                runtime: runtime.clone(),
            },
            ServedAgent {
                agent: other,
                runtime,
            },
        ],
        tokens: options.tokens,
        limits: options.limits,
        tracer: Some(provider.tracer("kaos.server")),
        hooks: vec![
            Arc::new(OTelHook::new(provider.tracer("kaos.agents"))),
            Arc::new(tap),
        ],
    };
    let server = Server::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let s = server.clone();
    let drain = options.drain_timeout;
    let done = tokio::spawn(async move {
        s.serve(
            listener,
            async move {
                let _ = stopped.await;
            },
            drain,
        )
        .await
    });
    TestServer {
        base: format!("http://{addr}"),
        addr,
        exporter,
        provider,
        events,
        ended,
        controls,
        stop: Some(stop),
        done: Some(done),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts the drain (as a signal would).
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap()
    }

    /// Waits for the first event matching `pred` on the tap.
    pub async fn wait_event(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            let e = self.events.recv().await.expect("the tap closed");
            if pred(&e) {
                return e;
            }
        }
    }

    /// Waits until a span named `name` has ended.
    pub async fn wait_span(&mut self, name: &str) -> SpanData {
        self.wait_span_where(|s| s.name == name).await
    }

    /// Waits until a span matching `pred` has ended.
    pub async fn wait_span_where(&mut self, pred: impl Fn(&SpanData) -> bool) -> SpanData {
        loop {
            let s = self.ended.recv().await.expect("the provider closed");
            if pred(&s) {
                return s;
            }
        }
    }

    /// A receiver of `gate` entries.
    pub fn gate_entries(&self) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.controls.gate_entered.lock().unwrap() = Some(tx);
        rx
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// POST a message as JSON (Accept: application/json) with a token.
pub async fn post_json(
    base: &str,
    token: &str,
    session: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/sessions/{session}/messages"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// POST a message as SSE.
pub async fn post_sse(base: &str, token: &str, session: &str, message: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/sessions/{session}/messages"))
        .bearer_auth(token)
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap()
}
