//! End-to-end tests of the `kaos` binary (the crate's one integration-test binary): offline,
//! in temp dirs, no network. `run`: turns, tools, resume, delegates, chat; `observability`:
//! OTLP, traceparent, audit, logs; `store`: the session store under many processes;
//! `serve`: `kaos serve` processes; `mcp`, `stream`, `redaction`; `mcp_interop`: MCP peers
//! we did not write (with KAOS_MCP_INTEROP=1, after .ci/ensure-mcp-peers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod mcp;
mod mcp_interop;
mod observability;
mod redaction;
mod run;
mod serve;
mod serve_wiring;
mod store;
mod stream;

const KAOS: &str = env!("CARGO_BIN_EXE_kaos");

/// A fresh temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kaos-cli-{tag}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn kaos(dir: &Path, args: &[&str]) -> Output {
    Command::new(KAOS)
        .args(args)
        .current_dir(dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn events(stdout: &[u8]) -> Vec<Value> {
    text(stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// Every span START has exactly one terminal phase.
fn assert_spans_closed(events: &[Value]) {
    let spans: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"]["type"] == "span")
        .map(|e| &e["kind"])
        .collect();
    for start in spans.iter().filter(|s| s["phase"] == "start") {
        let ends = spans
            .iter()
            .filter(|s| s["span_id"] == start["span_id"] && s["phase"] != "start")
            .count();
        assert_eq!(ends, 1, "span {} has {ends} terminal phases", start["name"]);
    }
}
