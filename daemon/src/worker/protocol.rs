//! What the daemon and a worker process say to each other over the worker's channel (its
//! stdin, a Unix socket): one JSON object per line each way.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest line the daemon accepts from a worker; a worker truncates log lines to fit.
pub const MAX_LINE: usize = 64 * 1024;

/// The one message a worker receives: what to load and what to do with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    /// The plugin library.
    pub plugin: Arc<Path>,
    /// Process settings applied before the library is loaded.
    pub setup: Setup,
    /// What to do once it is loaded.
    pub task: Task,
}

/// Applied by the worker to itself, after exec, so the daemon can spawn it without `fork`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// `RLIMIT_AS` in bytes.
    pub memory_limit: Option<u64>,
    /// Switch to this user (and its groups) first.
    pub user: Option<String>,
    /// In a cluster: the run's process group is killed when the node's lease has not been
    /// renewed (a byte on the channel) for this many ms. See `worker::guard`.
    pub lease_ms: Option<u64>,
}

/// The worker's job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Read the descriptor and report it.
    Inspect,
    /// Call `validate` on each params object, in order.
    Validate {
        /// The name the plugin must declare.
        expected_name: String,
        /// The params of each job to check.
        params: Vec<Arc<serde_json::Value>>,
    },
    /// Call `validate`, then `run`, once.
    Run {
        /// The name the plugin must declare.
        expected_name: String,
        /// The job's params.
        params: Arc<serde_json::Value>,
        /// Unix ms when the run will be killed.
        deadline_ms: Option<i64>,
        /// `PACER_*` variables for the run's environment.
        env: Vec<(String, String)>,
    },
}

/// What a worker reports, in order, as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// One line the plugin logged.
    Log {
        /// `PACER_LOG_*`.
        level: i32,
        /// The text.
        line: String,
    },
    /// The plugin's message (the last one wins).
    Message {
        /// The text.
        text: String,
    },
    /// What the library declares.
    Descriptor {
        /// `abi_version` as found.
        abi_version: u32,
        /// The declared name; `None` when it cannot be read for this ABI version.
        name: Option<String>,
        /// The declared version.
        version: Option<String>,
    },
    /// `validate`'s verdict on one params object of a `Validate` task, one report each in the
    /// assignment's order, so that no line outgrows [`MAX_LINE`] however many jobs a plugin
    /// validates (one line for all of them was dropped past about 20,000 jobs).
    Verdict {
        /// `None` for valid, else why not (cut to fit a line, see [`fit_line`]).
        error: Option<String>,
    },
    /// `run` returned this code (0 is success).
    Returned {
        /// The return code.
        code: i32,
    },
    /// The worker could not do its task (setup failed, the library did not load, or it is not a
    /// usable plugin); the plugin's `run` was not called.
    Refused {
        /// Why, in words for the operator.
        reason: String,
    },
}

/// `text` cut (at a character boundary) so that a report carrying it fits in [`MAX_LINE`].
pub fn fit_line(mut text: String) -> String {
    const ROOM: usize = MAX_LINE - 256;
    if text.len() > ROOM {
        text.truncate(text.floor_char_boundary(ROOM));
    }
    text
}

/// The text of a `PACER_LOG_*` level, as output lines show it.
pub fn level_name(level: i32) -> &'static str {
    match level {
        pacer_plugin_api::abi::LOG_ERROR => "error",
        pacer_plugin_api::abi::LOG_WARN => "warn",
        pacer_plugin_api::abi::LOG_INFO => "info",
        _ => "debug",
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; a longer line is dropped
/// whole, so a misbehaving worker cannot make the daemon buffer without bound.
#[derive(Debug, Default)]
pub struct LineFramer {
    pending: Vec<u8>,
    discarding: bool,
}

impl LineFramer {
    /// Feeds `bytes` and returns the complete lines they finish.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if !self.discarding {
                self.pending.extend_from_slice(&bytes[..end]);
                lines.push(std::mem::take(&mut self.pending));
            }
            self.discarding = false;
            self.pending.clear();
            bytes = &bytes[end + 1..];
        }
        if !self.discarding {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > MAX_LINE {
                self.pending = Vec::new();
                self.discarding = true;
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_framed_across_chunks() {
        let mut framer = LineFramer::default();
        assert!(framer.push(b"ab").is_empty());
        assert_eq!(
            framer.push(b"c\nde\nf"),
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert_eq!(framer.push(b"\n"), vec![b"f".to_vec()]);
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut framer = LineFramer::default();
        assert!(framer.push(&vec![b'x'; MAX_LINE + 1]).is_empty());
        assert!(framer.push(b"still the long line").is_empty());
        assert_eq!(framer.push(b"\nnext\n"), vec![b"next".to_vec()]);
    }

    #[test]
    fn a_long_verdict_still_fits_a_line() {
        let report = Report::Verdict {
            error: Some(fit_line("é".repeat(MAX_LINE))),
        };
        let line = serde_json::to_vec(&report).unwrap();
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        let mut framer = LineFramer::default();
        let mut bytes = line.clone();
        bytes.push(b'\n');
        assert_eq!(framer.push(&bytes), vec![line]);
    }

    #[test]
    fn reports_are_one_json_object_each() {
        let report = Report::Log {
            level: 3,
            line: "hi".into(),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(text, r#"{"kind":"log","level":3,"line":"hi"}"#);
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), report);
    }
}
