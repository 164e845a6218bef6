//! The log ring: the last 1000 lines, ids counting up from the ring's creation time in
//! Unix nanoseconds, and an optional rotated file next to it.

use crate::api::{Hex, LogRecord, Time, MAX_LOG_RECORDS};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

/// Longest line kept (bytes); longer ones are cut with a `…` mark.
pub const MAX_LINE: usize = 4096;
/// A log file is rotated (to `<file>.1`) when it grows past this size.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct LogRing {
    records: VecDeque<LogRecord>,
    last_id: u64,
}

impl LogRing {
    pub fn new() -> LogRing {
        LogRing {
            records: VecDeque::new(),
            last_id: Time::now().nanos(),
        }
    }

    /// The id of the newest record (the ETag of the ring).
    pub fn current(&self) -> u64 {
        self.last_id
    }

    /// Adds one record per line of `text`.
    pub fn push(&mut self, text: &str, time: Time) {
        for line in text.trim_matches('\n').split('\n') {
            self.last_id = self.last_id.wrapping_add(1);
            if self.records.len() >= MAX_LOG_RECORDS {
                self.records.pop_front();
            }
            self.records.push_back(LogRecord {
                id: Hex(self.last_id),
                time,
                text: cap(line),
            });
        }
    }

    /// The records newer than `since` (all of them with `None`), oldest first.
    pub fn records(&self, since: Option<u64>) -> Vec<LogRecord> {
        match since {
            None => self.records.iter().cloned().collect(),
            Some(s) => self
                .records
                .iter()
                .filter(|r| r.id.0 > s)
                .cloned()
                .collect(),
        }
    }

    /// The time of the newest record, or now when empty.
    pub fn modified(&self) -> Time {
        self.records
            .back()
            .map(|r| r.time)
            .unwrap_or_else(Time::now)
    }
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing::new()
    }
}

/// Cuts a line at [`MAX_LINE`] bytes (on a character boundary).
pub fn cap(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// An append-only log file, rotated once to `<file>.1` past [`ROTATE_BYTES`].
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path,
            file: None,
            size: 0,
        }
    }

    pub fn write(&mut self, time: Time, text: &str) {
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), "cannot open log file: {e}");
                    return;
                }
            }
        }
        let line = format!(
            "{} {}\n",
            time.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            text
        );
        if let Some(f) = self.file.as_mut() {
            if f.write_all(line.as_bytes()).is_ok() {
                self.size += line.len() as u64;
            }
        }
        if self.size > ROTATE_BYTES {
            self.file = None;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            if let Err(e) = std::fs::rename(&self.path, PathBuf::from(rotated)) {
                tracing::warn!(file = %self.path.display(), "cannot rotate log file: {e}");
            }
            self.size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_1000_and_since_returns_new_lines() {
        let mut r = LogRing::new();
        let start = r.current();
        r.push("a\nb\n", Time::now());
        assert_eq!(r.current(), start + 2);
        let all = r.records(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].text, "a");
        let mid = r.current();
        r.push("c", Time::now());
        let new = r.records(Some(mid));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].text, "c");
        for i in 0..1500 {
            r.push(&format!("l{i}"), Time::now());
        }
        let all = r.records(None);
        assert_eq!(all.len(), MAX_LOG_RECORDS);
        assert_eq!(all[MAX_LOG_RECORDS - 1].text, "l1499");
    }

    #[test]
    fn long_lines_are_capped() {
        let s = "x".repeat(MAX_LINE + 10);
        assert!(cap(&s).len() < s.len());
    }
}
