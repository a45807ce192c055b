//! The deploy log: every line is timestamped like stretcher's (`YYYY/MM/DD HH:MM:SS `),
//! optionally echoed to stderr, and kept in memory, because success and failure
//! commands read the whole log on stdin and the bot wants its tail.
//!
//! Every line is redacted before it is written anywhere: a URL's password becomes `***`
//! ([`crate::text::redact_credentials_in`]), and so does every value registered with
//! [`DeployLog::redact`] (the agent registers what `must_env` expands to).

use std::sync::{Arc, Mutex};

/// Past this size the oldest half of the log is dropped (a `rsync -v` of a huge tree
/// must not make the agent's memory grow without bound).
const MAX_BYTES: usize = 8 << 20;

/// A shared, append-only log.
#[derive(Debug, Clone, Default)]
pub struct DeployLog {
    inner: Arc<Mutex<String>>,
    secrets: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

/// Values shorter than this are not redacted: blanking every `1` or `on` of a log would
/// garble it, and such a value is no secret.
const MIN_SECRET: usize = 4;

impl DeployLog {
    /// A log; `echo` also writes each line to stderr (the agent).
    pub(crate) fn new(echo: bool) -> DeployLog {
        DeployLog {
            inner: Arc::default(),
            secrets: Arc::default(),
            echo,
        }
    }

    /// From now on, `value` is shown as `***` in every line (and by [`Self::redacted`]).
    pub(crate) fn redact(&self, value: &str) {
        if value.len() >= MIN_SECRET {
            let mut s = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            if !s.iter().any(|v| v == value) {
                s.push(value.to_string());
                // Longest first, so a secret containing another is replaced whole.
                s.sort_by_key(|v| std::cmp::Reverse(v.len()));
            }
        }
    }

    /// `text` as the log would write it.
    pub(crate) fn redacted(&self, text: &str) -> String {
        let mut out = crate::text::redact_credentials_in(text);
        for v in self
            .secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            out = out.replace(v.as_str(), "***");
        }
        out
    }

    /// Appends one entry (may span lines); a timestamp goes in front.
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        let ts = jiff::Zoned::now().strftime("%Y/%m/%d %H:%M:%S").to_string();
        let mut entry = format!("{ts} {}", self.redacted(text.as_ref()));
        if !entry.ends_with('\n') {
            entry.push('\n');
        }
        if self.echo {
            eprint!("{entry}");
        }
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        buf.push_str(&entry);
        if buf.len() > MAX_BYTES {
            let mut cut = buf.len() - MAX_BYTES / 2;
            while !buf.is_char_boundary(cut) {
                cut += 1;
            }
            buf.replace_range(..cut, "[… earlier log dropped …]\n");
        }
    }

    /// The whole log so far.
    pub(crate) fn snapshot(&self) -> String {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last `max_lines` lines, at most `max_bytes` bytes, through the tail's own
    /// redaction pass ([`super::scrub::report_tail`]).
    pub(crate) fn tail(&self, max_lines: usize, max_bytes: usize) -> String {
        super::scrub::report_tail(&self.snapshot(), max_lines, max_bytes)
    }
}

/// The end of a text: at most `max_lines` lines and `max_bytes` bytes.
pub(crate) fn tail(text: &str, max_lines: usize, max_bytes: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let joined = lines[lines.len().saturating_sub(max_lines)..].join("\n");
    let mut t = joined.as_str();
    if t.len() > max_bytes {
        let mut cut = t.len() - max_bytes;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t = &t[cut..];
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_and_bytes() {
        assert_eq!(tail("a\nb\nc\n", 2, 100), "b\nc");
        assert_eq!(tail("a\nb\nc", 5, 100), "a\nb\nc");
        assert_eq!(tail("abcdef", 5, 3), "def");
        assert_eq!(tail("", 5, 3), "");
        let log = DeployLog::new(false);
        log.line("one");
        log.line("two");
        assert!(log.snapshot().contains(" one\n"));
        assert!(log.tail(1, 100).ends_with(" two"));
        assert!(!log.tail(1, 100).contains("one"));
        log.redact("s3cret-value");
        log.redact("on");
        log.line("GET https://u:pw@h/x with s3cret-value, on");
        assert!(
            log.tail(1, 200)
                .ends_with("GET https://u:***@h/x with ***, on")
        );
    }
}
