//! The audit writer: one thread (`kaos-audit-writer`) that owns the open session files and
//! does every `open`, `write` and `fsync` of an [`super::AuditHook`], fed through a bounded
//! queue.
//!
//! The hook redacts and serializes an event on the thread that delivers it, then sends the
//! finished line. The writer appends it (with the file's header when the file is new, and the
//! turn's trailer after its last line) in one `write_all`, syncs as the [`FsyncPolicy`] says,
//! closes a session's file at its turn's end, and acknowledges when the hook asked for it.
//! Failures are counted in [`Shared`] (and, fail-closed, become the hook's halt reason)
//! **before** the acknowledgement, so a hook that waited for it sees them.
//!
//! A full queue makes the sender wait (bounded memory, nothing dropped), up to the hook's
//! write timeout; a record that still finds no room is counted as a failure, never lost
//! silently.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{AuditHeader, AuditTrailer, FsyncPolicy, TrailerLine, TurnEnd, session_file_name};
use crate::redact::RedactionStats;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the hook and its writer thread share: counters, the last error, the halt reason.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) fail_closed: AtomicBool,
    pub(super) written: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) open_files: AtomicUsize,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) halt: OnceLock<String>,
    /// A wait for the writer ran out of time and it has not finished a message since.
    pub(super) stalled: AtomicBool,
}

impl Shared {
    /// Counts a failure (of `session_id`'s file, or of every file with `None`), logs it and,
    /// fail-closed, sets the halt reason (the first one stays).
    pub(super) fn fail(&self, what: &str, session_id: Option<&str>, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let message = match session_id {
            Some(id) => format!("{what} for session {id:?}: {error}"),
            None => format!("{what}: {error}"),
        };
        tracing::error!(target: "kaos::audit", "{message}");
        if self.fail_closed.load(Ordering::Relaxed) {
            let _ = self
                .halt
                .set(format!("audit trail cannot be written ({message})"));
        }
        *lock(&self.last_error) = Some(message);
    }
}

/// One serialized event line for a session's file.
pub(super) struct Line {
    pub(super) session_id: Arc<str>,
    pub(super) run_id: Arc<str>,
    /// The event's JSON and its `\n`.
    pub(super) bytes: Vec<u8>,
    /// What redaction replaced in it (summed into the turn's trailer).
    pub(super) redactions: RedactionStats,
    pub(super) end: TurnEnd,
}

/// The writer's acknowledgement: sent once what came before it is written (and synced as
/// asked).
type Ack = SyncSender<()>;

enum Message {
    /// Append a line; acknowledge after it when `Some`.
    Line(Line, Option<Ack>),
    /// Sync every open file (and close them with `close`), then acknowledge.
    Sync { close: bool, ack: Ack },
    /// Sync and close every file, then end the thread.
    Stop,
}

/// Why the hook could not hand a line to the writer, or not confirm it was written.
#[derive(Debug)]
pub(super) enum WriterError {
    /// The queue stayed full for the whole timeout.
    Full(Duration),
    /// The writer did not confirm within the timeout (an `fsync` on a stalled disk).
    Timeout(Duration),
    /// An earlier wait ran out of time and the writer has not finished a message since: the
    /// hook does not wait again (one stall costs one timeout, not one per event).
    Stalled,
    /// The writer thread is gone.
    Gone,
}

impl std::fmt::Display for WriterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterError::Full(t) => write!(
                f,
                "the audit writer's queue stayed full for {} ms (the disk is not keeping up)",
                t.as_millis()
            ),
            WriterError::Timeout(t) => write!(
                f,
                "the audit writer did not confirm the write within {} ms",
                t.as_millis()
            ),
            WriterError::Stalled => f.write_str(
                "the audit writer is stalled (an earlier write did not finish in time); not waiting again",
            ),
            WriterError::Gone => f.write_str("the audit writer thread is gone"),
        }
    }
}

/// A running writer thread: its queue and handle.
pub(super) struct Writer {
    sender: Sender,
    /// Disconnected once the thread has returned (it holds the only sender).
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// What a writer thread needs to know.
pub(super) struct WriterConfig {
    pub(super) dir: PathBuf,
    pub(super) fsync: FsyncPolicy,
    pub(super) capacity: usize,
}

impl Writer {
    /// Starts a writer thread.
    pub(super) fn spawn(config: WriterConfig, shared: Arc<Shared>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.capacity.max(1));
        let (exit_tx, exited) = mpsc::sync_channel::<()>(0);
        // The writer logs (a failed write, a repaired file) to the subscriber of the thread
        // that started it, as the hook would have on that thread.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let sender = Sender {
            tx,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("kaos-audit-writer".into())
            .spawn(move || {
                let _exit = exit_tx;
                let mut files = Files {
                    dir: config.dir,
                    fsync: config.fsync,
                    shared,
                    sessions: HashMap::new(),
                };
                tracing::dispatcher::with_default(&dispatch, || files.run(&rx));
            })?;
        Ok(Self {
            sender,
            exited,
            thread: Some(thread),
        })
    }

    /// A second handle on the queue, to send without holding the hook's writer slot.
    pub(super) fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Asks the thread to sync, close every file and end, and waits for it up to `timeout`.
    /// `Err` when it did not end in time (it is then left to finish on its own).
    pub(super) fn stop(mut self, timeout: Duration) -> Result<(), WriterError> {
        let deadline = Instant::now() + timeout;
        let sent = self.sender.send(Message::Stop, deadline);
        let waited = match self
            .exited
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(WriterError::Timeout(timeout)),
        };
        match (&waited, self.thread.take()) {
            // The thread has returned: joining does not block.
            (Ok(()), Some(thread)) => {
                let _ = thread.join();
            }
            (Err(_), Some(_)) => tracing::warn!(
                target: "kaos::audit",
                "the audit writer thread did not stop within {} ms; detached",
                timeout.as_millis()
            ),
            _ => {}
        }
        match sent {
            Err(WriterError::Gone) => waited,
            other => other.and(waited),
        }
    }
}

/// A handle on a writer's queue.
#[derive(Clone)]
pub(super) struct Sender {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `message`, waiting while the queue is full, until `deadline` (not at all while
    /// the writer is stalled).
    fn send(&self, message: Message, deadline: Instant) -> Result<(), WriterError> {
        let started = Instant::now();
        let stalled = self.shared.stalled.load(Ordering::Relaxed);
        let mut message = message;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.tx.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(WriterError::Gone),
                Err(TrySendError::Full(_)) if stalled => return Err(WriterError::Stalled),
                Err(TrySendError::Full(back)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.shared.stalled.store(true, Ordering::Relaxed);
                        return Err(WriterError::Full(now - started));
                    }
                    // Backpressure: the writer frees a slot per line it writes.
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(5));
                    message = back;
                }
            }
        }
    }

    /// Queues a line; with `wait`, blocks until the writer has written it (and synced it if
    /// the policy says so) or `timeout` passed.
    pub(super) fn line(
        &self,
        line: Line,
        wait: bool,
        timeout: Duration,
    ) -> Result<(), WriterError> {
        let deadline = Instant::now() + timeout;
        if !wait {
            return self.send(Message::Line(line, None), deadline);
        }
        let (ack, acked) = mpsc::sync_channel(1);
        self.send(Message::Line(line, Some(ack)), deadline)?;
        self.wait_ack(&acked, deadline, timeout)
    }

    /// Syncs every open file (closing them with `close`) after what is queued; waits for it.
    pub(super) fn sync(&self, close: bool, timeout: Duration) -> Result<(), WriterError> {
        let deadline = Instant::now() + timeout;
        let (ack, acked) = mpsc::sync_channel(1);
        self.send(Message::Sync { close, ack }, deadline)?;
        self.wait_ack(&acked, deadline, timeout)
    }

    fn wait_ack(
        &self,
        acked: &Receiver<()>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), WriterError> {
        if self.shared.stalled.load(Ordering::Relaxed) {
            return match acked.try_recv() {
                Ok(()) => Ok(()),
                Err(mpsc::TryRecvError::Empty) => Err(WriterError::Stalled),
                Err(mpsc::TryRecvError::Disconnected) => Err(WriterError::Gone),
            };
        }
        match acked.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                self.shared.stalled.store(true, Ordering::Relaxed);
                Err(WriterError::Timeout(timeout))
            }
            Err(RecvTimeoutError::Disconnected) => Err(WriterError::Gone),
        }
    }
}

/// One session's file, open for the length of a turn.
#[derive(Default)]
struct SessionFile {
    file: Option<File>,
    /// A turn span ended and the `TurnSummary` that owes its sync was not written yet.
    sync_owed: bool,
    /// Event lines written since the last trailer.
    turn_events: u64,
    /// Replacements in those lines.
    turn_redactions: RedactionStats,
}

/// The writer thread's state: every session file it has open.
struct Files {
    dir: PathBuf,
    fsync: FsyncPolicy,
    shared: Arc<Shared>,
    sessions: HashMap<Arc<str>, SessionFile>,
}

impl Files {
    fn run(&mut self, rx: &Receiver<Message>) {
        while let Ok(message) = rx.recv() {
            match message {
                Message::Line(line, ack) => {
                    let session_id = line.session_id.clone();
                    if let Err((what, error)) = self.append(line) {
                        self.shared.fail(what, Some(&session_id), &error);
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Message::Sync { close, ack } => {
                    self.sync_all(close);
                    let _ = ack.send(());
                }
                Message::Stop => break,
            }
            self.shared.stalled.store(false, Ordering::Relaxed);
        }
        // Stopped, or the hook is gone: nothing written stays unsynced or open.
        self.sync_all(true);
    }

    fn close(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.remove(session_id)
            && session.file.is_some()
        {
            self.shared.open_files.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Appends one line (with a new file's header and, at the turn's end, its trailer) in a
    /// single `write_all`, then syncs as the policy says.
    fn append(&mut self, line: Line) -> Result<(), (&'static str, std::io::Error)> {
        let Line {
            session_id,
            run_id,
            mut bytes,
            redactions,
            end,
        } = line;
        let session = self.sessions.entry(session_id.clone()).or_default();
        let mut header = None;
        if session.file.is_none() {
            let path = self.dir.join(session_file_name(&session_id));
            let (file, empty) = open_session_file(&path).map_err(|e| ("open audit file", e))?;
            session.file = Some(file);
            self.shared.open_files.fetch_add(1, Ordering::Relaxed);
            if empty {
                header = Some(header_line().map_err(|e| ("serialize header", e))?);
            }
        }
        session.turn_events += 1;
        if !redactions.is_empty() {
            session.turn_redactions.merge(&redactions);
        }
        // The turn's last line carries its trailer in the same `write_all`.
        if end == TurnEnd::Final {
            let trailer = TrailerLine {
                trailer: AuditTrailer {
                    run_id: run_id.to_string(),
                    events: std::mem::take(&mut session.turn_events),
                    redactions: std::mem::take(&mut session.turn_redactions),
                },
            };
            serde_json::to_writer(&mut bytes, &trailer)
                .map_err(|e| ("serialize trailer", std::io::Error::other(e)))?;
            bytes.push(b'\n');
        }
        let Some(file) = session.file.as_mut() else {
            return Err(("open audit file", std::io::Error::other("no file")));
        };
        // A new file's header and first line go out in one `write_all`: a crash can still
        // only tear the last line (and an empty file gets its header on the next open).
        let bytes: &[u8] = match &mut header {
            Some(header) => {
                header.extend_from_slice(&bytes);
                header
            }
            None => &bytes,
        };
        let result = file
            .write_all(bytes)
            .and_then(|()| file.flush())
            .map_err(|e| ("write audit line", e));
        if result.is_ok() {
            self.shared.written.fetch_add(1, Ordering::Relaxed);
        }
        // `EveryTurn` syncs once per turn, at its true end: the `TurnSummary` that follows a
        // completed/failed turn span, or the turn span itself when it ends `cancelled` (no
        // summary follows). Should any other event come after a turn span before a summary,
        // it syncs the owed turn end with itself.
        let sync = match self.fsync {
            FsyncPolicy::EveryEvent => true,
            FsyncPolicy::EveryTurn => match end {
                TurnEnd::SpanAwaitingSummary => {
                    session.sync_owed = true;
                    false
                }
                TurnEnd::Final => true,
                TurnEnd::No => session.sync_owed,
            },
            FsyncPolicy::Never => false,
        };
        let synced = if sync {
            session.sync_owed = false;
            file.sync_data().map_err(|e| ("sync audit file", e))
        } else {
            Ok(())
        };
        // A turn's true end closes its session's file, so idle sessions hold no handles;
        // closing after a failure makes the next event reopen (and repair) the file.
        if end == TurnEnd::Final || result.is_err() {
            self.close(&session_id);
        }
        result.and(synced)
    }

    fn sync_all(&mut self, close: bool) {
        for (session_id, session) in &mut self.sessions {
            if let Some(file) = &session.file
                && self.fsync != FsyncPolicy::Never
                && let Err(e) = file.sync_data()
            {
                self.shared.fail("sync audit file", Some(session_id), &e);
            }
            session.sync_owed = false;
        }
        if close {
            let open = self.sessions.values().filter(|s| s.file.is_some()).count();
            self.shared.open_files.fetch_sub(open, Ordering::Relaxed);
            self.sessions.clear();
        }
    }
}

/// Opens a session file for append: creates it (`0600`), or cuts a torn last line off an
/// existing one. `true` when the file is empty, so the header is still to be written (it
/// goes out with the first event's line, in the same `write_all`).
fn open_session_file(path: &Path) -> std::io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut file = OpenOptions::new().read(true).append(true).open(path)?;
            let len = repair_torn_tail(&mut file)?;
            Ok((file, len == 0))
        }
        Err(e) => Err(e),
    }
}

/// The header line (with its `\n`) of a file created now.
fn header_line() -> std::io::Result<Vec<u8>> {
    let mut header = serde_json::to_vec(&AuditHeader::now()).map_err(std::io::Error::other)?;
    header.push(b'\n');
    Ok(header)
}

/// Truncates a file that does not end in `\n` back to its last `\n` (a line torn by a crash);
/// returns the length kept.
fn repair_torn_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Scan backwards in chunks for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(buf.len());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(pos) = buf[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + pos as u64 + 1;
            tracing::warn!(target: "kaos::audit", cut = len - keep, "cut a torn last line off an audit file");
            file.set_len(keep)?;
            return Ok(keep);
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(0)
}
