//! A local fake provider for tests and benchmarks (feature `fake-provider`): an HTTP/1.1
//! server on `127.0.0.1:0` that answers each request with the next scripted reply — a JSON
//! body, or a server-sent-event stream sent chunk by chunk — and reports what it saw
//! (request bodies, when it sent the last chunk, client disconnects).
//!
//! Point an [`AnthropicClient`](crate::AnthropicClient) or
//! [`OpenAiClient`](crate::OpenAiClient) at [`FakeProvider::base_url`]. Replies are served
//! in order whatever the request; when the script is empty the server answers 500.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

/// How a streamed reply ends after its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Close the connection.
    Close,
    /// Keep it open until the client goes away (then count a disconnect).
    Hold,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// `200` with this JSON body.
    Json(serde_json::Value),
    /// `200 text/event-stream`: each chunk written and flushed, `gap` apart.
    Sse {
        /// The raw SSE text of each chunk (`event: …\ndata: …\n\n`).
        chunks: Vec<String>,
        /// The pause between chunks.
        gap: Duration,
        /// Wait for [`FakeProvider::release_last_chunk`] before the last chunk.
        gate_last: bool,
        /// What happens after the last chunk.
        end: StreamEnd,
    },
}

impl FakeReply {
    /// A stream of `chunks` sent back to back, then closed.
    pub fn sse(chunks: Vec<String>) -> Self {
        FakeReply::Sse {
            chunks,
            gap: Duration::ZERO,
            gate_last: false,
            end: StreamEnd::Close,
        }
    }
}

struct Shared {
    replies: Mutex<VecDeque<FakeReply>>,
    bodies: Mutex<Vec<String>>,
    disconnects: Mutex<u64>,
    last_chunk_sent: Mutex<u64>,
    sent_at: Mutex<Vec<Instant>>,
    changed: Notify,
    gate: Semaphore,
}

/// The running fake provider (stops when dropped).
pub struct FakeProvider {
    base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    /// Starts a server with these replies (on the current tokio runtime).
    pub async fn start(replies: Vec<FakeReply>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            bodies: Mutex::new(Vec::new()),
            disconnects: Mutex::new(0),
            last_chunk_sent: Mutex::new(0),
            sent_at: Mutex::new(Vec::new()),
            changed: Notify::new(),
            gate: Semaphore::new(0),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, serving.clone()));
            }
        });
        Ok(Self {
            base_url,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (OpenAI clients want `/v1` appended).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Appends replies to the script.
    pub fn push(&self, reply: FakeReply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// The request bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        lock(&self.shared.bodies).clone()
    }

    /// Lets one gated stream send its last chunk.
    pub fn release_last_chunk(&self) {
        self.shared.gate.add_permits(1);
    }

    /// When each SSE chunk was written and flushed (every stream's, in order), for
    /// measuring how long a chunk takes to reach a consumer.
    pub fn chunk_times(&self) -> Vec<Instant> {
        lock(&self.shared.sent_at).clone()
    }

    /// How many streams sent their last chunk so far.
    pub fn last_chunks_sent(&self) -> u64 {
        *lock(&self.shared.last_chunk_sent)
    }

    /// Waits until `n` held streams saw their client disconnect.
    pub async fn disconnects(&self, n: u64) {
        loop {
            let changed = self.shared.changed.notified();
            if *lock(&self.shared.disconnects) >= n {
                return;
            }
            changed.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one request (headers, then `content-length` bytes); returns its body.
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[header_end..]).into_owned())
}

async fn serve(mut socket: TcpStream, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    let Some(body) = read_request(&mut socket).await else {
        return;
    };
    lock(&shared.bodies).push(body);
    let reply = lock(&shared.replies).pop_front();
    match reply {
        None => {
            let text = r#"{"error":{"message":"the fake provider has no reply left"}}"#;
            let _ = socket
                .write_all(
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
        Some(FakeReply::Json(value)) => {
            let text = value.to_string();
            let _ = socket
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
        Some(FakeReply::Sse {
            chunks,
            gap,
            gate_last,
            end,
        }) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.iter().enumerate() {
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                if i == last && gate_last {
                    // Liveness guard only: a test releases the gate on an event.
                    if let Ok(Ok(permit)) =
                        tokio::time::timeout(Duration::from_secs(60), shared.gate.acquire()).await
                    {
                        permit.forget();
                    }
                }
                if socket.write_all(chunk.as_bytes()).await.is_err()
                    || socket.flush().await.is_err()
                {
                    return note_disconnect(&shared);
                }
                lock(&shared.sent_at).push(Instant::now());
                if i == last {
                    *lock(&shared.last_chunk_sent) += 1;
                    shared.changed.notify_waiters();
                }
            }
            if end == StreamEnd::Hold {
                // The client closing its side ends this read.
                let mut sink = [0u8; 1024];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                note_disconnect(&shared);
            }
        }
    }
}

fn note_disconnect(shared: &Shared) {
    *lock(&shared.disconnects) += 1;
    shared.changed.notify_waiters();
}

/// The SSE chunks of an Anthropic Messages stream: `message_start`, then for each part a
/// content block (text in `pieces`, or a tool call whose input JSON arrives in pieces),
/// then `message_delta` (stop reason, usage) and `message_stop`.
pub fn anthropic_stream(parts: &[StreamPart], stop_reason: &str) -> Vec<String> {
    let event = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![event(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {"id": "msg_fake", "model": "fake-model", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    )];
    for (index, part) in parts.iter().enumerate() {
        match part {
            StreamPart::Text(pieces) => {
                out.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                for piece in pieces {
                    out.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
                }
            }
            StreamPart::Thinking(pieces) => {
                out.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}})));
                for piece in pieces {
                    out.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}})));
                }
            }
            StreamPart::Tool { id, name, pieces } => {
                out.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
                for piece in pieces {
                    out.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
                }
            }
        }
        out.push(event(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 34}})));
    out.push(event(
        "message_stop",
        serde_json::json!({"type": "message_stop"}),
    ));
    out
}

/// The SSE chunks of an OpenAI Chat Completions stream (text and tool-call pieces as
/// `choices[0].delta`, then the finish reason, a usage chunk and `[DONE]`).
pub fn openai_stream(parts: &[StreamPart], finish_reason: &str) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "chatcmpl-fake", "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut out = vec![chunk(serde_json::json!({"role": "assistant"}), None)];
    let mut tool_index = 0;
    for part in parts {
        match part {
            StreamPart::Text(pieces) => {
                for piece in pieces {
                    out.push(chunk(serde_json::json!({"content": piece}), None));
                }
            }
            StreamPart::Thinking(pieces) => {
                for piece in pieces {
                    out.push(chunk(serde_json::json!({"reasoning_content": piece}), None));
                }
            }
            StreamPart::Tool { id, name, pieces } => {
                out.push(chunk(serde_json::json!({"tool_calls": [{"index": tool_index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), None));
                for piece in pieces {
                    out.push(chunk(serde_json::json!({"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}), None));
                }
                tool_index += 1;
            }
        }
    }
    out.push(chunk(serde_json::json!({}), Some(finish_reason)));
    out.push(format!(
        "data: {}\n\n",
        serde_json::json!({"id": "chatcmpl-fake", "model": "fake-model", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}})
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out
}

/// One part of a fake streamed answer.
#[derive(Debug, Clone)]
pub enum StreamPart {
    /// Text, in these pieces.
    Text(Vec<String>),
    /// Reasoning text, in these pieces.
    Thinking(Vec<String>),
    /// A tool call whose arguments' JSON arrives in these pieces.
    Tool {
        /// The call id.
        id: String,
        /// The tool.
        name: String,
        /// Pieces of the arguments' JSON text.
        pieces: Vec<String>,
    },
}
