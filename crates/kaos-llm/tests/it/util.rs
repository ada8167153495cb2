//! A tiny scripted HTTP/1.1 server on 127.0.0.1:0 for provider tests, and test helpers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaos_llm::retry::RetryPolicy;
use kaos_llm::{LlmClient, LlmError, LlmRequest, StreamEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The body of a scripted reply.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    /// Sent at once with a `Content-Length`.
    Full(Vec<u8>),
    /// Sent piece by piece (flushed each time), then the connection closes.
    Chunks(Vec<Vec<u8>>),
    /// `head`, then `repeat` again and again until the client hangs up (no length).
    Endless { head: Vec<u8>, repeat: Vec<u8> },
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// Never answer (to provoke client timeouts without depending on how long anything takes).
    pub hang: bool,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::text(status, &body.to_string()).header("content-type", "application/json")
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Full(body.as_bytes().to_vec()),
            hang: false,
        }
    }

    /// An SSE body sent in these chunks.
    pub fn sse<S: AsRef<str>>(chunks: &[S]) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: ReplyBody::Chunks(
                chunks
                    .iter()
                    .map(|c| c.as_ref().as_bytes().to_vec())
                    .collect(),
            ),
            hang: false,
        }
    }

    /// A 200 answer that never ends: `head`, then `repeat` forever.
    pub fn endless(content_type: &str, head: &str, repeat: &[u8]) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: ReplyBody::Endless {
                head: head.as_bytes().to_vec(),
                repeat: repeat.to_vec(),
            },
            hang: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Never answers: a client timeout is the only way out.
    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// The server; the last scripted reply repeats once the others are used up.
pub struct TestServer {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "script at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let replies = Arc::clone(&replies);
                tokio::spawn(async move {
                    let _ = serve(socket, recorded, replies).await;
                });
            }
        });
        Self { url, requests }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The only request; fails if there were more or fewer.
    pub fn single_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request");
        requests.into_iter().next().unwrap()
    }
}

async fn serve(
    mut socket: TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    recorded.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let reply = {
        let mut replies = replies.lock().unwrap();
        if replies.len() > 1 {
            replies.pop_front().unwrap()
        } else {
            replies.front().cloned().unwrap()
        }
    };
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match reply.body {
        ReplyBody::Full(body) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(&body).await?;
        }
        ReplyBody::Chunks(chunks) => {
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await?;
            socket.flush().await?;
            for chunk in chunks {
                socket.write_all(&chunk).await?;
                socket.flush().await?;
                tokio::task::yield_now().await;
            }
        }
        ReplyBody::Endless {
            head: first,
            repeat,
        } => {
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(&first).await?;
            loop {
                // Ends when the client drops the connection (the write fails).
                socket.write_all(&repeat).await?;
            }
        }
    }
    socket.flush().await?;
    socket.shutdown().await
}

/// A fast policy whose waits are recorded instead of slept.
pub fn recording_policy(max_retries: u32) -> (RetryPolicy, Arc<Mutex<Vec<Duration>>>) {
    recording_policy_up_to(max_retries, Duration::from_millis(10))
}

/// A policy with this `max_backoff` whose waits are recorded instead of slept.
pub fn recording_policy_up_to(
    max_retries: u32,
    max_backoff: Duration,
) -> (RetryPolicy, Arc<Mutex<Vec<Duration>>>) {
    let delays = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&delays);
    let policy = RetryPolicy::new(max_retries, Duration::from_millis(1), max_backoff).with_sleeper(
        move |d| {
            sink.lock().unwrap().push(d);
            std::future::ready(())
        },
    );
    (policy, delays)
}

/// Collects a whole stream.
pub async fn collect_stream(
    client: &dyn LlmClient,
    request: &LlmRequest,
) -> Vec<Result<StreamEvent, LlmError>> {
    use futures::StreamExt;
    client.stream(request).collect().await
}

/// An SSE event block.
pub fn sse_event(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// An SSE data-only block.
pub fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// `default` cases per property, or `PROPTEST_CASES` when it is set (a longer hunt for
/// flaky inputs: `PROPTEST_CASES=2000 cargo test`). An explicit `with_cases` would ignore it.
pub fn proptest_config(default: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::prelude::ProptestConfig::with_cases(cases)
}
