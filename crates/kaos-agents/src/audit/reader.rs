//! Reading audit files back: strict on every complete line, tolerant of a torn last line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{AuditHeader, AuditTrailer, FORMAT_VERSION, TrailerLine, session_file_stem};
use crate::events::Event;
use crate::tree::{RunTree, build_runs};

/// Why an audit file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditReadError {
    /// The file (or directory) could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The first line is missing or is not an audit header.
    #[error("{}:1: not a kaos audit file: {message}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with the first line.
        message: String,
    },
    /// The header names a format version this reader does not know.
    #[error(
        "{}:1: unsupported audit format_version {version} (this kaos reads version {FORMAT_VERSION}; upgrade kaos to read it)",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: Value,
    },
    /// A complete line is not a valid event (an unknown field, a bad value, broken JSON).
    #[error("{}:{line}: invalid event: {source}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
}

/// Another file merged into an [`AuditLog`] (a sub-agent's session).
#[derive(Debug, Clone, PartialEq)]
pub struct IncludedFile {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: AuditHeader,
    /// Its torn last line, if any.
    pub torn_tail: Option<usize>,
}

/// A decoded audit file.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLog {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: AuditHeader,
    /// Every complete event, in file order (then those of merged files).
    pub events: Vec<Event>,
    /// The 1-based line number of a torn (incomplete, undecodable) last line, if there was
    /// one; it was skipped.
    pub torn_tail: Option<usize>,
    /// Files merged in with [`AuditLog::merge`] or [`AuditLog::include_subagents`].
    pub included: Vec<IncludedFile>,
    /// Each turn's trailer (what redaction replaced), in file order (then merged files').
    pub trailers: Vec<AuditTrailer>,
}

impl AuditLog {
    /// Each run's span tree (sub-agent runs linked under their parent span when their
    /// events are in this log too).
    pub fn runs(&self) -> Vec<RunTree> {
        build_runs(&self.events)
    }

    /// [`AuditLog::runs`] with spans named under `naming`.
    pub fn runs_named(&self, naming: crate::naming::SpanNaming) -> Vec<RunTree> {
        crate::tree::build_runs_named(&self.events, naming)
    }

    /// Appends `other`'s events (and its own included files).
    pub fn merge(&mut self, other: AuditLog) {
        self.included.push(IncludedFile {
            path: other.path,
            header: other.header,
            torn_tail: other.torn_tail,
        });
        self.included.extend(other.included);
        self.events.extend(other.events);
        self.trailers.extend(other.trailers);
    }

    /// Merges the files of this log's sub-agent sessions (`{session}/…`) found next to it.
    /// Returns how many files were merged.
    pub fn include_subagents(&mut self) -> Result<usize, AuditReadError> {
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut sessions: Vec<String> = Vec::new();
        for event in &self.events {
            if !sessions.iter().any(|s| **s == *event.session_id) {
                sessions.push(event.session_id.to_string());
            }
        }
        let prefixes: Vec<(String, String)> = sessions
            .iter()
            .map(|s| (format!("{}_", session_file_stem(s)), format!("{s}/")))
            .collect();
        let mut merged = 0;
        for path in jsonl_files(&dir)? {
            if path == self.path || self.included.iter().any(|f| f.path == path) {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !prefixes
                .iter()
                .any(|(file, _)| name.starts_with(file.as_str()))
            {
                continue;
            }
            let log = read_file(&path)?;
            let is_child = log.events.iter().any(|e| {
                prefixes
                    .iter()
                    .any(|(_, session)| e.session_id.starts_with(session.as_str()))
            });
            if is_child {
                self.merge(log);
                merged += 1;
            }
        }
        Ok(merged)
    }
}

fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>, AuditReadError> {
    let io = |source| AuditReadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "jsonl") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every `*.jsonl` audit file of a directory, sorted by file name.
pub fn read_dir(dir: impl AsRef<Path>) -> Result<Vec<AuditLog>, AuditReadError> {
    jsonl_files(dir.as_ref())?.iter().map(read_file).collect()
}

/// Reads one audit file. Every complete line must decode (events are decoded strictly:
/// an unknown field is an error naming the file and line); an undecodable last line
/// without its `\n` is a torn tail, reported in [`AuditLog::torn_tail`] and skipped.
pub fn read_file(path: impl AsRef<Path>) -> Result<AuditLog, AuditReadError> {
    let path = path.as_ref().to_path_buf();
    let bytes = std::fs::read(&path).map_err(|source| AuditReadError::Io {
        path: path.clone(),
        source,
    })?;
    let complete = bytes.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if complete {
        lines.pop(); // the empty piece after the final newline
    }
    let count = lines.len();
    let mut lines = lines.into_iter().enumerate();

    let header_err = |message: String| AuditReadError::Header {
        path: path.clone(),
        message,
    };
    let Some((_, first)) = lines.next().filter(|(_, l)| !l.is_empty()) else {
        return Err(header_err("the file is empty".into()));
    };
    let value: Value = serde_json::from_slice(first)
        .map_err(|e| header_err(format!("the first line is not JSON ({e})")))?;
    let version = value
        .get("format_version")
        .cloned()
        .ok_or_else(|| header_err("the first line has no format_version".into()))?;
    if version.as_u64() != Some(u64::from(FORMAT_VERSION)) {
        return Err(AuditReadError::UnsupportedVersion {
            path: path.clone(),
            version,
        });
    }
    let header: AuditHeader =
        serde_json::from_value(value).map_err(|e| header_err(format!("invalid header ({e})")))?;

    let mut events = Vec::with_capacity(count.saturating_sub(1));
    let mut torn_tail = None;
    let mut trailers = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.starts_with(b"{\"trailer\":") {
            match serde_json::from_slice::<TrailerLine>(line) {
                Ok(t) => trailers.push(t.trailer),
                Err(_) if line_no == count && !complete => torn_tail = Some(line_no),
                Err(source) => {
                    return Err(AuditReadError::Line {
                        path: path.clone(),
                        line: line_no,
                        source,
                    });
                }
            }
            continue;
        }
        match serde_json::from_slice::<Event>(line) {
            Ok(event) => events.push(event),
            Err(_) if line_no == count && !complete => torn_tail = Some(line_no),
            Err(source) => {
                return Err(AuditReadError::Line {
                    path: path.clone(),
                    line: line_no,
                    source,
                });
            }
        }
    }
    Ok(AuditLog {
        path,
        header,
        events,
        torn_tail,
        included: Vec::new(),
        trailers,
    })
}
