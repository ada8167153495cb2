//! Redaction at every CLI sink: the eleven secrets of issue #12 through `kaos run --audit`,
//! `--json`, the stderr tree and warnings, `kaos audit show|html|export` of a trail that holds
//! them in the clear (as an older kaos wrote them), `--no-redact`, and the trail's file modes.

use std::io::{BufRead, BufReader, Read, Write};

use super::{TempDir, kaos, text};

/// The issue's eleven secrets (none real): (secret, the marker that must replace it).
const ELEVEN: [(&str, &str); 11] = [
    ("hunter2CanaryPw", "password"),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKEY", "aws_secret_key"),
    ("sk_live_51CanaryQ8vXo2LmN4pRtYw6Zb", "stripe_key"),
    ("AIzaSyCanary0123456789abcdefghijklmnopq", "google_api_key"),
    ("S3cretCanary", "url_password"),
    ("hf_CanaryAbCdEfGhIjKlMnOpQrStUvWxYzAb", "huggingface_token"),
    ("glpat-Canary1234567890abcd", "gitlab_token"),
    ("YWRtaW46Q2FuYXJ5UGFzc3dvcmQ=", "basic_auth"),
    (
        "sk-ant-api03-CanaryKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-AAAA",
        "anthropic_key",
    ),
    ("4111 1111 1111 1111", "card_number"),
    ("123-45-6789", "ssn"),
];

fn message() -> String {
    let s = |i: usize| ELEVEN[i].0;
    format!(
        "Please debug my deploy. Config:\nDB_PASSWORD={}\nAWS_SECRET_ACCESS_KEY={}\nSTRIPE={}\n\
         GOOGLE={}\nDATABASE_URL=postgres://admin:{}@db.internal:5432/app\nHF={}\nGITLAB={}\n\
         Authorization: Basic {}\nANTHROPIC={}\ncard {}, ssn {}",
        s(0),
        s(1),
        s(2),
        s(3),
        s(4),
        s(5),
        s(6),
        s(7),
        s(8),
        s(9),
        s(10)
    )
}

fn leaked(haystack: &str) -> Vec<&'static str> {
    ELEVEN
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| haystack.contains(s))
        .collect()
}

#[test]
fn the_eleven_secrets_never_reach_the_trail_the_json_or_stderr() {
    let dir = TempDir::new("eleven");
    let trail = dir.path().join("trail");
    let msg = message();
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--ephemeral",
            "--trace",
            "--session",
            "eleven",
            "--audit",
            trail.to_str().unwrap(),
            &msg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = trail.join("eleven.jsonl");
    let content = std::fs::read_to_string(&file).unwrap();
    assert_eq!(leaked(&content), Vec::<&str>::new(), "{content}");
    for (_, rule) in ELEVEN {
        assert!(
            content.contains(&format!("[REDACTED:{rule}]")),
            "{rule}: {content}"
        );
    }
    assert_eq!(
        leaked(&text(&out.stderr)),
        Vec::<&str>::new(),
        "{}",
        text(&out.stderr)
    );
    // The plain answer is the product: printed as it is (the offline model echoes the message).
    assert_eq!(
        leaked(&text(&out.stdout)).len(),
        11,
        "{}",
        text(&out.stdout)
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&trail), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    let json = kaos(dir.path(), &["run", "--ephemeral", "--json", &msg]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    assert_eq!(leaked(&text(&json.stdout)), Vec::<&str>::new());
    assert!(text(&json.stdout).contains("[REDACTED:anthropic_key]"));
    // --no-redact: the CLI's own output as it is (and so this test can fail).
    let raw = kaos(
        dir.path(),
        &["run", "--ephemeral", "--json", "--no-redact", &msg],
    );
    assert_eq!(
        leaked(&text(&raw.stdout)).len(),
        11,
        "{}",
        text(&raw.stdout)
    );
}

const LEAKY_TOOL_AGENT: &str = r#"
name = "toolbox"
model = "script:replies.json"

[[tools]]
name = "env"
description = "Prints the environment."
command = ["sh", "-c", "cat >/dev/null; echo GITHUB_TOKEN=ghp_Canary0123456789abcdefghijklmnopqrst"]
read_only = true
"#;

#[test]
fn the_stderr_tree_and_warnings_are_redacted() {
    let dir = TempDir::new("tree");
    dir.write("agent.toml", LEAKY_TOOL_AGENT);
    dir.write(
        "replies.json",
        r#"["{\"intent\":\"tool_use\",\"confidence\":0.9}",
            {"tool_calls":[{"name":"env","arguments":{}}]},
            "Done."]"#,
    );
    // A closed port: the export fails and the warning names the endpoint, password included.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://user:S3cretCanary@127.0.0.1:{port}");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--agent",
            "agent.toml",
            "--ephemeral",
            "--trace",
            "--otlp",
            &url,
        ];
        args.extend_from_slice(extra);
        args.push("What is set?");
        kaos(dir.path(), &args)
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("agent.tool_call.env") && stderr.contains("not exported"),
        "{stderr}"
    );
    assert!(stderr.contains("[REDACTED:github_pat]"), "{stderr}");
    assert!(stderr.contains("user:[REDACTED:url_password]@"), "{stderr}");
    assert!(!stderr.contains("Canary"), "{stderr}");
    let raw = text(&run(&["--no-redact"]).stderr);
    assert!(
        raw.contains("ghp_Canary") && raw.contains("S3cretCanary"),
        "{raw}"
    );
}

/// A local OTLP/HTTP collector that hands each request body over.
fn body_receiver() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            // Handed over before the answer, so every body is in when the exporter exits.
            let _ = tx.send(body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, rx)
}

#[test]
fn audit_show_html_and_export_redact_a_trail_written_in_the_clear() {
    let dir = TempDir::new("oldtrail");
    let trail = dir.path().join("trail");
    // Secrets in the intent's reasoning (exported as a span attribute) and in the answer.
    dir.write(
        "replies.json",
        &serde_json::to_string(&serde_json::json!([
            format!(
                "{{\"intent\":\"respond\",\"confidence\":0.9,\"reasoning\":\"uses {}\"}}",
                ELEVEN[8].0
            ),
            format!("{{\"response\":\"{}\"}}", message().replace('\n', " ")),
        ]))
        .unwrap(),
    );
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--model",
            "script:replies.json",
            "--ephemeral",
            "--session",
            "old",
            "--audit",
            trail.to_str().unwrap(),
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The trail as a kaos without these rules wrote it: every marker back to its secret.
    let mut clear = std::fs::read_to_string(trail.join("old.jsonl")).unwrap();
    for (secret, rule) in ELEVEN {
        clear = clear.replace(&format!("[REDACTED:{rule}]"), secret);
    }
    assert_eq!(leaked(&clear).len(), 11, "{clear}");
    let old = dir.write("old.jsonl", &clear);
    let old = old.to_str().unwrap();

    let show = kaos(dir.path(), &["audit", "show", old]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert_eq!(
        leaked(&text(&show.stdout)),
        Vec::<&str>::new(),
        "{}",
        text(&show.stdout)
    );

    let page = dir.path().join("page.html");
    let html = kaos(
        dir.path(),
        &["audit", "html", old, "-o", page.to_str().unwrap()],
    );
    assert_eq!(html.status.code(), Some(0), "{}", text(&html.stderr));
    let body = std::fs::read_to_string(&page).unwrap();
    assert!(body.contains("<html"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the page is owner-only, like the trail it renders"
        );
    }
    assert_eq!(leaked(&body), Vec::<&str>::new());
    assert!(body.contains("[REDACTED:stripe_key]"));
    let raw = kaos(dir.path(), &["audit", "html", old, "--no-redact"]);
    assert!(
        leaked(&text(&raw.stdout)).len() >= 10,
        "the page carries the trail's content"
    );

    let (url, bodies) = body_receiver();
    let export = kaos(dir.path(), &["audit", "export", old, "--otlp", &url]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    let sent: Vec<u8> = bodies.try_iter().flatten().collect();
    assert!(!sent.is_empty());
    let sent = String::from_utf8_lossy(&sent);
    assert!(
        sent.contains("[REDACTED:anthropic_key]"),
        "the reasoning attribute was exported"
    );
    assert_eq!(leaked(&sent), Vec::<&str>::new());
}

#[cfg(unix)]
#[test]
fn state_on_disk_is_owner_only_and_exact() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("modes");
    let state = dir.path().join("state");
    let msg = message();
    let out = kaos(
        dir.path(),
        &[
            "run",
            "--session",
            "s1",
            "--state-dir",
            state.to_str().unwrap(),
            "-q",
            &msg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut stack = vec![state.clone()];
    let mut files = 0;
    let mut content = String::new();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
            files += 1;
            content.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    assert!(files > 0);
    // The session keeps the conversation exactly (the model needs it on the next turn).
    assert!(
        content.contains(ELEVEN[8].0),
        "the session holds the message as it was"
    );
}
