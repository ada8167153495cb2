//! Interoperability with MCP peers we did not write: the reference TypeScript server
//! `@modelcontextprotocol/server-everything` and the official Python SDK `mcp` (client and
//! `MCPServer`), pinned and installed by `.ci/ensure-mcp-peers` into `target/mcp-peers`.
//!
//! They run when `KAOS_MCP_INTEROP=1` (as `.ci/run` sets); then a missing peer fails the
//! test. Without the variable each test says, past the harness's output capture, that the
//! interop check did not run.

mod everything;
mod python;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaos_agents::{Agent, AgentResponse, KaosRuntime, Runner};
use kaos_mcp::McpToolset;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead};

use crate::support::{Harness, model};

/// Set to `1` to run the interop tests (after `.ci/ensure-mcp-peers`).
const INTEROP_ENV: &str = "KAOS_MCP_INTEROP";
/// Where `.ci/ensure-mcp-peers` installed the peers (default `<repo>/target/mcp-peers`).
const PEERS_DIR_ENV: &str = "KAOS_MCP_PEERS_DIR";
/// How long a peer may take to start or to answer before the test gives up (a hang guard,
/// not an assertion about speed).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The installed peers.
pub struct Peers {
    dir: PathBuf,
}

impl Peers {
    /// `node` and the pinned server-everything's entry point.
    pub fn everything(&self) -> [String; 2] {
        [
            "node".to_string(),
            self.dir
                .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
                .display()
                .to_string(),
        ]
    }

    /// The venv's Python (with the pinned `mcp`).
    pub fn python(&self) -> String {
        self.dir.join("venv/bin/python").display().to_string()
    }
}

/// A script under `tests/data`.
pub fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

/// The peers, when the interop tests are asked for; `None` (after saying so on stderr) when
/// they are not. Asked for but not installed is a failure naming the fix.
pub fn peers(test: &str) -> Option<Peers> {
    if std::env::var(INTEROP_ENV).as_deref() != Ok("1") {
        let line = format!(
            "kaos-mcp interop check `{test}` did NOT run ({INTEROP_ENV} is not 1): it talks to \
             @modelcontextprotocol/server-everything and the Python `mcp` SDK; run \
             .ci/ensure-mcp-peers, then {INTEROP_ENV}=1 cargo test -p kaos-mcp --test \
             integration interop (.ci/run does both).\n"
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return None;
    }
    let dir = std::env::var_os(PEERS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-peers"));
    let peers = Peers { dir };
    let [_, everything] = peers.everything();
    for needed in [everything, peers.python()] {
        assert!(
            Path::new(&needed).exists(),
            "{INTEROP_ENV}=1 asks for the MCP interop tests but {needed} is missing: run \
             .ci/ensure-mcp-peers (it installs the pinned peers into {}).",
            peers.dir.display()
        );
    }
    Some(peers)
}

/// Lines a child process writes to one of its pipes, collected as they come.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collects `pipe`'s lines in the background.
    pub fn collect(pipe: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    /// Everything so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a line `pick` maps to `Some`.
    pub async fn wait_for<T>(&self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.all().iter().find_map(|l| pick(l)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "no {what} after {PATIENCE:?}; output so far: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A loopback port free right now (for a peer that cannot be told to pick one itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One turn of an agent on the fake model (`call TOOL {args}`), whose tools come from
/// `toolset`, traced into `h`.
pub async fn traced_turn(h: &Harness, toolset: &McpToolset, message: &str) -> AgentResponse {
    let toolset = toolset.clone().with_otel_hook(h.hook.clone());
    let agent = Agent::builder()
        .name("interop")
        .model("fake")
        .build()
        .unwrap();
    let runtime = toolset.attach(KaosRuntime::test_mode().with_client("fake", model()));
    Runner::new(agent, runtime)
        .with_shared_hook(h.hook.clone())
        .turn(message, "interop")
        .await
        .unwrap()
}

/// Reads a JSON file a peer wrote.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the peer wrote no {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
