//! `kaos serve` wired like `kaos run`: the session store from `--store`, `--state-dir`, the
//! agent file's `[runtime]` or `KAOS_STORE`; the circuit breaker and `[fallback]` models; and
//! two `kaos serve` processes on one PostgreSQL schema, a session alternating between them
//! and a run paused on one approved on the other.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kaos_store::SessionStore;
use serde_json::{Value, json};

use super::{KAOS, TempDir, text};

/// A generous bound only so a broken build fails instead of hanging CI.
const BOUND: Duration = Duration::from_secs(300);
const TOKEN: &str = "alice=alice-token-0123456789";
const BEARER: &str = "alice-token-0123456789";

/// A `kaos serve` process on an ephemeral loopback port, its stderr collected.
struct Served {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    /// Starts `kaos serve ARGS --bind 127.0.0.1:0` in `dir` and waits for its address.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(KAOS);
        command
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .current_dir(dir)
            .env("KAOS_API_TOKENS", TOKEN)
            .env("XDG_DATA_HOME", dir.join("xdg"))
            .env_remove("KAOS_STORE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_TRACES_EXPORTER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let (tx, lines) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let Ok(line) = lines.recv_timeout(BOUND) else {
                let _ = child.kill();
                panic!("kaos serve did not start:\n{}", seen.join("\n"));
            };
            seen.push(line.clone());
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        Self {
            child,
            addr,
            lines,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The line that said where it listens (it names the session store).
    fn banner(&self) -> &str {
        self.seen
            .iter()
            .find(|l| l.contains("listening on"))
            .map_or("", String::as_str)
    }

    /// SIGTERM, then its stderr; it must exit 0.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.lines.try_iter());
        let all = seen.join("\n");
        assert_eq!(status.code(), Some(0), "{all}");
        all
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request with the token, `Accept: application/json`: the status and the body.
fn http(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client
            .request(method.parse().unwrap(), url)
            .bearer_auth(BEARER)
            .header("accept", "application/json")
            .timeout(BOUND);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    })
}

/// One turn as JSON; it must answer 200.
fn turn(served: &Served, session: &str, message: &str) -> Value {
    let (status, body) = http(
        "POST",
        &served.url(&format!("/v1/sessions/{session}/messages")),
        Some(json!({ "message": message })),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// An agent on the offline model with a destructive tool (a call pauses for approval) that
/// appends a line to `marker` each time it runs.
fn ops_agent(dir: &TempDir, marker: &Path, extra: &str) {
    dir.write(
        "ops.toml",
        &format!(
            r#"name = "ops"
model = "offline"
[[tools]]
name = "delete_report"
description = "Deletes the old report."
command = ["sh", "-c", "cat >/dev/null; echo once >> '{}'; echo deleted"]
destructive = true
parameters = {{ type = "object", properties = {{}} }}
{extra}"#,
            marker.display()
        ),
    );
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The sessions in a SQLite store file: (id, turns).
fn sqlite_sessions(path: &Path) -> Vec<(String, u64)> {
    block_on(async {
        let store = kaos_store::open(
            &format!("sqlite:{}", path.display()),
            kaos_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        let mut all: Vec<(String, u64)> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.turn_count))
            .collect();
        all.sort();
        all
    })
}

#[test]
fn serve_takes_the_store_from_flags_the_runtime_section_and_kaos_store_like_run() {
    let dir = TempDir::new("serve-store");
    let marker = dir.path().join("ran.txt");
    ops_agent(
        &dir,
        &marker,
        "[runtime]\nstore = \"sqlite:from-file.db\"\nsession_wait_secs = 5\n",
    );
    let env_db = dir.path().join("from-env.db");
    let env_store = format!("sqlite:{}", env_db.display());
    let env = [("KAOS_STORE", env_store.as_str())];

    // The file's [runtime] store (relative to the file) beats KAOS_STORE.
    let served = Served::start(dir.path(), &["--agent", "ops.toml"], &env);
    assert!(
        served.banner().contains("from-file.db"),
        "{}",
        served.banner()
    );
    turn(&served, "s1", "Hello");
    served.stop();
    assert_eq!(
        sqlite_sessions(&dir.path().join("from-file.db")),
        [("alice.s1".to_string(), 1)]
    );
    assert!(!env_db.exists(), "KAOS_STORE lost to the agent file");

    // --state-dir beats the file; --store beats everything.
    let served = Served::start(
        dir.path(),
        &["--agent", "ops.toml", "--state-dir", "state"],
        &env,
    );
    turn(&served, "s2", "Hello");
    served.stop();
    let state_db = kaos_store::state_dir_db(&dir.path().join("state"));
    assert_eq!(sqlite_sessions(&state_db), [("alice.s2".to_string(), 1)]);
    let served = Served::start(
        dir.path(),
        &["--agent", "ops.toml", "--store", "sqlite:from-flag.db"],
        &env,
    );
    turn(&served, "s3", "Hello");
    served.stop();
    assert_eq!(
        sqlite_sessions(&dir.path().join("from-flag.db")),
        [("alice.s3".to_string(), 1)]
    );

    // Without [runtime], KAOS_STORE.
    ops_agent(&dir, &marker, "");
    let served = Served::start(dir.path(), &["--agent", "ops.toml"], &env);
    turn(&served, "s4", "Hello");
    served.stop();
    assert_eq!(sqlite_sessions(&env_db), [("alice.s4".to_string(), 1)]);
    assert_eq!(
        sqlite_sessions(&dir.path().join("from-file.db")).len(),
        1,
        "the file's store got nothing new"
    );
}

#[test]
fn serve_refuses_agents_whose_runtime_sections_disagree_and_bad_runtime_keys() {
    let dir = TempDir::new("serve-runtime-conflict");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "[runtime]\nstore = \"sqlite:a.db\"\n");
    dir.write(
        "other.toml",
        "name = \"other\"\nmodel = \"offline\"\n\n[runtime]\nstore = \"sqlite:b.db\"\n",
    );
    let serve = |args: &[&str]| {
        Command::new(KAOS)
            .arg("serve")
            .args(args)
            .args(["--insecure-localhost", "--bind", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("KAOS_API_TOKENS")
            .env_remove("KAOS_STORE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = serve(&["--agent", "ops.toml", "--agent", "other.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other.toml:5: field `runtime.store` differs") && err.contains("ops.toml:"),
        "{err}"
    );
    assert!(!dir.path().join("a.db").exists() && !dir.path().join("b.db").exists());

    dir.write(
        "other.toml",
        "name = \"other\"\nmodel = \"offline\"\n\n[runtime]\nstore = \"sqlite:a.db\"\nsesion_wait_secs = 3\n",
    );
    let out = serve(&["--agent", "other.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other.toml:6") && err.contains("sesion_wait_secs"),
        "{err}"
    );
    dir.write(
        "other.toml",
        "name = \"other\"\nmodel = \"offline\"\n[runtime]\nstore = \"mysql://db/kaos\"\n",
    );
    let out = serve(&["--agent", "other.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other.toml:4: field `runtime.store`: unknown store URL"),
        "{err}"
    );
}

/// One circuit breaker for the server: a tool that failed five times in a row (over five
/// requests) is skipped on the sixth; and a `[fallback]` model answers when the first fails.
#[test]
fn serve_has_the_circuit_breaker_and_fallback_models_of_run() {
    let dir = TempDir::new("serve-breaker");
    dir.write(
        "broken.toml",
        r#"name = "broken"
model = "offline"
[[tools]]
name = "flaky"
description = "Always fails."
command = ["sh", "-c", "cat >/dev/null; echo run >> runs.txt; echo down >&2; exit 1"]
read_only = true
"#,
    );
    let url = super::run::unauthorized_provider();
    dir.write(
        "fallback.toml",
        &format!(
            "name = \"fallback\"\nmodel = \"openai-compatible:broken@{url}\"\n[fallback]\nmodels = [\"script:backup.json\"]\n"
        ),
    );
    dir.write(
        "backup.json",
        r#"["{\"intent\":\"respond\"}", "{\"response\":\"answered by the backup\"}"]"#,
    );
    let served = Served::start(
        dir.path(),
        &[
            "--agent",
            "broken.toml",
            "--agent",
            "fallback.toml",
            "--ephemeral",
        ],
        &[],
    );
    let mut answers = Vec::new();
    for i in 0..6 {
        let body = turn(&served, &format!("b{i}"), "Call the flaky tool");
        answers.push(body["text"].as_str().unwrap_or_default().to_string());
    }
    let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 5, "the sixth call did not run");
    assert!(
        !answers[4].contains("skipped") && answers[5].contains("skipped"),
        "{answers:#?}"
    );
    let (status, body) = http(
        "POST",
        &served.url("/v1/sessions/f1/messages"),
        Some(json!({ "message": "hello", "agent": "fallback" })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], "answered by the backup", "{body}");
    served.stop();
}

/// Two `kaos serve` processes with `--store postgres://…` on one fresh schema: a session's
/// turns alternate between them and each sees the whole history; a run paused on one is
/// approved on the other, its call runs once, and a second approval is refused.
#[cfg(feature = "postgres")]
#[test]
fn two_serve_processes_share_sessions_and_paused_runs_on_postgresql() {
    let url = std::env::var("KAOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kaos_cli_serve_{}", uuid_hex());
    let store = block_on(kaos_store::PostgresStore::connect(
        &url,
        kaos_store::StoreOptions {
            schema: Some(schema.clone()),
            ..kaos_store::StoreOptions::default()
        },
    ))
    .unwrap_or_else(|e| {
        panic!("needs PostgreSQL at {url} (set KAOS_TEST_DATABASE_URL, or start the local one: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): {e}")
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let dir = TempDir::new("serve-pg");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "");
    let args = ["--agent", "ops.toml", "--store", store_url.as_str()];
    let a = Served::start(dir.path(), &args, &[]);
    let b = Served::start(dir.path(), &args, &[]);
    eprintln!("replica a: {}\nreplica b: {}", a.banner(), b.banner());

    for (i, replica) in [&a, &b, &a, &b].into_iter().enumerate() {
        let body = turn(replica, "shared", &format!("Hello number {i}"));
        let answer = body["text"].as_str().unwrap_or_default();
        eprintln!(
            "turn {} on replica {}: {}",
            body["turn_number"],
            ["a", "b"][i % 2],
            answer
                .find("(This session")
                .map_or("(no earlier message)", |at| &answer[at..])
        );
        assert_eq!(body["turn_number"], i as u64 + 1, "{body}");
        if i > 0 {
            let earlier = format!("holds {i} earlier user message(s)");
            assert!(
                body["text"].as_str().unwrap().contains(&earlier),
                "each replica sees the whole history: {body}"
            );
        }
    }
    let paused = turn(&a, "shared", "Please delete the old report");
    eprintln!(
        "turn {} on replica a: paused_for_approval={} run_id={} pending_tool_name={}",
        paused["turn_number"],
        paused["paused_for_approval"],
        paused["run_id"],
        paused["pending_tool_name"]
    );
    assert_eq!(paused["paused_for_approval"], true, "{paused}");
    assert_eq!(paused["pending_tool_name"], "delete_report", "{paused}");
    assert!(!marker.exists(), "nothing ran before the approval");
    let run_id = paused["run_id"].as_str().unwrap().to_string();
    let approve = json!({"approved": true, "session_id": "shared"});
    let (status, resumed) = http(
        "POST",
        &b.url(&format!("/v1/runs/{run_id}/approve")),
        Some(approve.clone()),
    );
    eprintln!(
        "approve {run_id} on replica b: {status} {}",
        resumed["text"]
    );
    assert_eq!(status, 200, "{resumed}");
    assert!(
        resumed["text"].as_str().unwrap().contains("deleted"),
        "{resumed}"
    );
    let (status, again) = http(
        "POST",
        &a.url(&format!("/v1/runs/{run_id}/approve")),
        Some(approve),
    );
    eprintln!("approve {run_id} again on replica a: {status} {again}");
    assert_eq!(status, 404, "approved once, on either replica: {again}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "once\n",
        "the call ran once"
    );
    for (name, replica) in [("a", &a), ("b", &b)] {
        let (status, info) = http("GET", &replica.url("/v1/sessions/shared"), None);
        eprintln!("GET /v1/sessions/shared on replica {name}: {status} {info}");
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["turn_count"], 5, "{info}");
        assert_eq!(info["pending_runs"], json!([]), "{info}");
    }
    a.stop();
    b.stop();
    let session = block_on(store.load("alice.shared")).unwrap().unwrap();
    assert_eq!(session.turn_count, 5);
    block_on(store.drop_schema(&schema)).unwrap();
}

fn uuid_hex() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
