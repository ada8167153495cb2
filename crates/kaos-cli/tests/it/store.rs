//! The session store under real processes: many `kaos run` at once on one session, a
//! process killed mid-commit, racing resumes, a turn on a paused session, a resume with a
//! changed agent file, `--store postgres://`, and the agent file's `[runtime]` section.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kaos_agents::SessionStore;

use super::{TempDir, events, kaos, text};

/// The turn number of a `kaos run --json` output.
fn turn_number(stdout: &[u8]) -> u64 {
    events(stdout)
        .iter()
        .find(|e| e["kind"]["subject"] == "turn" && e["kind"]["phase"] == "start")
        .and_then(|e| e["kind"]["attributes"]["turn_number"].as_u64())
        .unwrap()
}

async fn open_state(state: &Path) -> std::sync::Arc<dyn SessionStore> {
    kaos_store::open_state_dir(state, kaos_store::StoreOptions::default())
        .await
        .unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn twenty_processes_times_25_turns_on_one_session_keep_every_turn_once() {
    const PROCS: usize = 20;
    const TURNS: usize = 25;
    let dir = TempDir::new("twenty");
    let state = dir.path().join("state");
    let threads: Vec<_> = (0..PROCS)
        .map(|p| {
            let (cwd, state) = (dir.path().to_path_buf(), state.clone());
            std::thread::spawn(move || {
                let mut numbers = Vec::new();
                for t in 0..TURNS {
                    let message = format!("process {p} turn {t}");
                    let out = kaos(
                        &cwd,
                        &[
                            "run",
                            "--session",
                            "shared",
                            "--state-dir",
                            state.to_str().unwrap(),
                            "--session-wait",
                            "600",
                            "--json",
                            &message,
                        ],
                    );
                    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
                    numbers.push(turn_number(&out.stdout));
                }
                numbers
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for t in threads {
        for n in t.join().unwrap() {
            assert!(numbers.insert(n), "turn number {n} given twice");
        }
    }
    assert_eq!(numbers, (1..=(PROCS * TURNS) as u64).collect());
    let session = block_on(async {
        open_state(&state)
            .await
            .load("shared")
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(session.turn_count, (PROCS * TURNS) as u64);
    let users: Vec<&str> = session
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| &*m.content)
        .collect();
    assert_eq!(users.len(), PROCS * TURNS, "every user message kept");
    for p in 0..PROCS {
        let mine: Vec<&&str> = users
            .iter()
            .filter(|u| u.starts_with(&format!("process {p} ")))
            .collect();
        let want: Vec<String> = (0..TURNS)
            .map(|t| format!("process {p} turn {t}"))
            .collect();
        assert_eq!(
            mine,
            want.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
    }
    eprintln!(
        "{PROCS} processes x {TURNS} turns: {} turns, {} user messages, turn numbers 1..={} each once",
        session.turn_count,
        users.len(),
        numbers.last().unwrap()
    );
}

#[cfg(unix)]
#[test]
fn kill_9_mid_commit_leaves_the_turn_before_and_the_session_usable() {
    let dir = TempDir::new("kill9");
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let run = |msg: &str| {
        kaos(
            dir.path(),
            &[
                "run",
                "--session",
                "k",
                "--state-dir",
                &state_s,
                "--session-wait",
                "0",
                "--json",
                msg,
            ],
        )
    };
    let out = run("first");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let gate = dir.path().join("gate.fifo");
    let made = Command::new("mkfifo").arg(&gate).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaos"))
        .args([
            "run",
            "--session",
            "k",
            "--state-dir",
            &state_s,
            "-q",
            "second",
        ])
        .current_dir(dir.path())
        .env(kaos_store::COMMIT_GATE_ENV, &gate)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The commit writes to the gate between its statements and blocks until it is read:
    // once read, the process is inside its transaction. Kill it there.
    let mut signal = String::new();
    std::fs::File::open(&gate)
        .unwrap()
        .read_to_string(&mut signal)
        .unwrap();
    assert_eq!(signal.trim(), "in-commit");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let session = block_on(async { open_state(&state).await.load("k").await.unwrap().unwrap() });
    assert_eq!(session.turn_count, 1, "the turn before, not between");
    assert_eq!(session.messages.len(), 2);
    // The dead process's lease does not block the next turn (no wait at all).
    let out = run("third");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(turn_number(&out.stdout), 2);
}

/// An agent file with one destructive command tool that appends a line to `marker`.
pub(super) fn ops_agent(dir: &TempDir, marker: &Path, extra: &str) {
    dir.write(
        "ops.toml",
        &format!(
            r#"name = "ops"
model = "script:pause.json"
{extra}
[[tools]]
name = "delete_report"
description = "Deletes the old report."
command = ["sh", "-c", "cat >/dev/null; echo once >> {}; echo deleted"]
destructive = true
parameters = {{ type = "object", properties = {{}} }}
"#,
            marker.display()
        ),
    );
    dir.write(
        "pause.json",
        r#"["{\"intent\":\"tool_use\",\"confidence\":0.9}",
            {"tool_calls":[{"id":"tc_1","name":"delete_report","arguments":{}}]}]"#,
    );
    dir.write("after.json", r#"["The report is gone."]"#);
}

pub(super) fn pause(dir: &TempDir, state: &str, session: &str) -> String {
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--agent",
            "ops.toml",
            "--state-dir",
            state,
            "--session",
            session,
            "-q",
            "Delete it",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("needs approval") && stderr.contains("kaos resume"),
        "{stderr}"
    );
    stderr
        .split_whitespace()
        .find(|w| w.starts_with("run_"))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .to_string()
        })
        .unwrap()
}

fn resume_cmd(dir: &TempDir, state: &str, run: &str, session: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaos"));
    c.args([
        "resume",
        run,
        "--agent",
        "ops.toml",
        "--model",
        "script:after.json",
    ])
    .args([
        "--state-dir",
        state,
        "--session",
        session,
        "--session-wait",
        "600",
        "-q",
    ])
    .args(extra)
    .current_dir(dir.path())
    .env("XDG_DATA_HOME", dir.path().join("xdg"))
    .stdin(Stdio::null());
    c
}

#[test]
fn two_resumes_racing_on_one_paused_run_run_the_call_once() {
    let dir = TempDir::new("race");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let run = pause(&dir, state, "race");
    let children: Vec<_> = (0..2)
        .map(|_| {
            resume_cmd(&dir, state, &run, "race", &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.code() == Some(0)).count();
    assert_eq!(
        ok,
        1,
        "one resume wins: {:?}",
        outs.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>()
    );
    let loser = outs.iter().find(|o| o.status.code() != Some(0)).unwrap();
    let why = text(&loser.stderr);
    assert!(
        why.contains("run_already_resumed") || why.contains("run_in_doubt"),
        "{why}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "once\n",
        "the command ran once"
    );
}

#[test]
fn a_paused_session_refuses_new_turns_until_the_run_is_settled() {
    let dir = TempDir::new("paused");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let run = pause(&dir, state, "p");
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--state-dir",
            state,
            "--session",
            "p",
            "-q",
            "hello?",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let why = text(&out.stderr);
    assert!(
        why.contains("session_paused") && why.contains(&run),
        "{why}"
    );
    assert!(
        why.contains(&format!("kaos resume {run} --session p")),
        "{why}"
    );
    // Deny it first; then the session takes the turn, numbered after the paused one.
    let out = resume_cmd(&dir, state, &run, "p", &["--deny", "not today"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!marker.exists());
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--state-dir",
            state,
            "--session",
            "p",
            "--json",
            "hello?",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(turn_number(&out.stdout), 2);

    // Abandoning is the other way out.
    let run = pause(&dir, state, "q");
    let out = resume_cmd(&dir, state, &run, "q", &["--abandon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = resume_cmd(&dir, state, &run, "q", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("abandoned"),
        "{}",
        text(&out.stderr)
    );
    assert!(!marker.exists(), "an abandoned call never runs");
}

#[test]
fn a_resume_with_a_changed_agent_file_is_refused_and_names_the_difference() {
    let dir = TempDir::new("changed");
    let marker = dir.path().join("ran.txt");
    ops_agent(&dir, &marker, "");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let run = pause(&dir, state, "c");
    ops_agent(
        &dir,
        &marker,
        "[[permissions]]\npattern = \"delete_report\"\naction = \"ask\"\nreason = \"two-person rule\"",
    );
    let out = resume_cmd(&dir, state, &run, "c", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let why = text(&out.stderr);
    assert!(
        why.contains("agent_changed") && why.contains("permissions"),
        "{why}"
    );
    assert!(!marker.exists(), "the call did not run");
}

#[cfg(feature = "postgres")]
#[test]
fn store_postgres_url_keeps_sessions_in_postgresql() {
    let url = std::env::var("KAOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kaos_cli_{}", std::process::id());
    let store = block_on(kaos_store::PostgresStore::connect(
        &url,
        kaos_store::StoreOptions {
            schema: Some(schema.clone()),
            ..kaos_store::StoreOptions::default()
        },
    ))
    .unwrap_or_else(|e| {
        panic!("needs PostgreSQL at {url} (start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): {e}")
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let dir = TempDir::new("pg");
    for (i, msg) in ["one", "two"].iter().enumerate() {
        let out = Command::new(env!("CARGO_BIN_EXE_kaos"))
            .args(["run", "--session", "pg", "--json", msg])
            .current_dir(dir.path())
            .env(kaos_store::STORE_ENV, &store_url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(turn_number(&out.stdout), i as u64 + 1);
    }
    let session = block_on(async { store.load("pg").await.unwrap().unwrap() });
    assert_eq!(session.turn_count, 2);
    assert!(
        !dir.path().join("xdg").exists(),
        "nothing went to the state dir"
    );
    block_on(store.drop_schema(&schema)).unwrap();
    let _ = Duration::ZERO;
}

/// `kaos run --json` in `dir` with `KAOS_STORE` set (or not): the output.
fn run_with_store_env(dir: &Path, kaos_store_env: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaos"));
    command
        .arg("run")
        .args(args)
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env_remove("KAOS_STORE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null());
    if let Some(url) = kaos_store_env {
        command.env(kaos_store::STORE_ENV, url);
    }
    command.output().unwrap()
}

/// The turns of `session` in the SQLite file `db` (0 when it has none, or no file).
fn turns_in(db: &Path, session: &str) -> u64 {
    if !db.exists() {
        return 0;
    }
    block_on(async {
        let store = kaos_store::open(
            &format!("sqlite:{}", db.display()),
            kaos_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        store
            .load(session)
            .await
            .unwrap()
            .map_or(0, |s| s.turn_count)
    })
}

/// The order `kaos run` (and `kaos serve`) pick the store in: `--store`, `--state-dir`, the
/// agent file's `[runtime] store` (a relative `sqlite:` path is relative to the file),
/// `KAOS_STORE`, the default state dir.
#[test]
fn the_agent_files_runtime_store_sits_between_the_flags_and_kaos_store() {
    let dir = TempDir::new("runtime-store");
    std::fs::create_dir_all(dir.path().join("agents")).unwrap();
    dir.write(
        "agents/agent.toml",
        "name = \"a\"\n[runtime]\nstore = \"sqlite:file.db\"\n",
    );
    let env_db = dir.path().join("env.db");
    let env_url = format!("sqlite:{}", env_db.display());
    let file_db = dir.path().join("agents/file.db");
    let run = |extra: &[&str]| {
        let mut args = vec!["--agent", "agents/agent.toml", "--session", "s", "--json"];
        args.extend_from_slice(extra);
        args.push("Hello");
        let out = run_with_store_env(dir.path(), Some(&env_url), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        turn_number(&out.stdout)
    };
    assert_eq!(run(&[]), 1);
    assert_eq!(run(&[]), 2);
    assert_eq!(
        turns_in(&file_db, "s"),
        2,
        "the file's store, not KAOS_STORE"
    );
    assert_eq!(turns_in(&env_db, "s"), 0);
    assert_eq!(
        run(&["--state-dir", "state"]),
        1,
        "--state-dir beats the file"
    );
    let state_db = kaos_store::state_dir_db(&dir.path().join("state"));
    assert_eq!(turns_in(&state_db, "s"), 1);
    assert_eq!(run(&["--store", "sqlite:flag.db"]), 1, "--store beats all");
    assert_eq!(turns_in(&dir.path().join("flag.db"), "s"), 1);
    assert_eq!(turns_in(&file_db, "s"), 2);

    dir.write("agents/agent.toml", "name = \"a\"\n");
    assert_eq!(run(&[]), 1, "without [runtime]: KAOS_STORE");
    assert_eq!(turns_in(&env_db, "s"), 1);
    let out = run_with_store_env(
        dir.path(),
        None,
        &[
            "--agent",
            "agents/agent.toml",
            "--session",
            "s",
            "--json",
            "Hi",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let default_db = kaos_store::state_dir_db(&dir.path().join("xdg/kaos"));
    assert_eq!(turns_in(&default_db, "s"), 1, "then the default state dir");
}

/// Bad `[runtime]` values and unknown keys are usage errors naming the file, line and field.
#[test]
fn runtime_section_errors_name_file_line_and_field() {
    let dir = TempDir::new("runtime-errors");
    let cases = [
        (
            "name = \"a\"\n\n[runtime]\nstore = \"memory:\"\nsession_wiat_secs = 3\n",
            "agent.toml:5",
            "session_wiat_secs",
        ),
        (
            "name = \"a\"\n[runtime]\nstore = \"mysql://db/kaos\"\n",
            "agent.toml:3: field `runtime.store`: unknown store URL",
            "sqlite:PATH",
        ),
        (
            "name = \"a\"\n[runtime]\n\nsession_wait_secs = -1\n",
            "agent.toml:4: field `runtime.session_wait_secs`",
            ">= 0",
        ),
        (
            "name = \"a\"\n[runtime]\nstore = 5\n",
            "agent.toml:3",
            "string",
        ),
    ];
    for (toml, location, detail) in cases {
        dir.write("agent.toml", toml);
        let out = kaos(
            dir.path(),
            &["run", "--agent", "agent.toml", "--ephemeral", "hi"],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(
            err.contains(location) && err.contains(detail),
            "{toml}: {err}"
        );
    }
    // --store on the command line is checked the same way.
    let out = kaos(dir.path(), &["run", "--store", "redis://x", "hi"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--store: unknown store URL"), "{err}");
}

/// `[runtime] session_wait_secs` is how long a turn waits for a session another process
/// holds; `--session-wait` overrides it.
#[test]
fn the_runtime_session_wait_applies_and_the_flag_wins() {
    let dir = TempDir::new("runtime-wait");
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    for fifo in [&started, &release] {
        assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
    }
    dir.write(
        "holder.toml",
        &format!(
            r#"name = "holder"
model = "script:replies.json"
[[tools]]
name = "long"
read_only = true
command = ["sh", "-c", "echo started > '{}'; cat '{}' > /dev/null; echo finished"]
"#,
            started.display(),
            release.display()
        ),
    );
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\"}", {"tool_calls":[{"name":"long","arguments":{}}]}, "all done"]"#,
    );
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let holder = Command::new(env!("CARGO_BIN_EXE_kaos"))
        .args([
            "run",
            "--agent",
            "holder.toml",
            "--state-dir",
            state,
            "--session",
            "held",
            "-q",
            "run the long job",
        ])
        .current_dir(dir.path())
        .env_remove("KAOS_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The holder's tool is running: it holds the session's lease.
    assert_eq!(std::fs::read_to_string(&started).unwrap().trim(), "started");

    let waiter = |file_wait: &str, extra: &[&str]| {
        dir.write(
            "waiter.toml",
            &format!("name = \"waiter\"\n[runtime]\nsession_wait_secs = {file_wait}\n"),
        );
        let mut args = vec![
            "run",
            "--agent",
            "waiter.toml",
            "--state-dir",
            state,
            "--session",
            "held",
        ];
        args.extend_from_slice(extra);
        args.push("Hello");
        kaos(dir.path(), &args)
    };
    let out = waiter("0", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("session_busy"), "the file's wait (0 s): {err}");
    let out = waiter("600", &["--session-wait", "0"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("session_busy"), "the flag's wait (0 s): {err}");

    std::fs::write(&release, "go\n").unwrap();
    let out = holder.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
