//! The redaction pass on command and rsync output before it becomes a tail that is
//! reported, stored or shown (issue 9): whatever a host's commands printed is outside
//! input, and may be hostile (escape sequences that rewrite a terminal, bidirectional
//! controls that make a line read other than it is, a line of a megabyte) or carry a
//! secret a command echoed.
//!
//! [`report_tail`] takes the end of a log and, line by line:
//! - removes ANSI/VT escape sequences (CSI, OSC, two-byte escapes, their C1 forms);
//!   a lone carriage return becomes a line break, so nothing printed over is hidden;
//! - removes zero-width and bidirectional formatting characters (before secrets are
//!   looked for, so a zero-width space cannot split a token past the patterns) and
//!   shows other control characters as `\u{FFFD}`;
//! - replaces known secret shapes by `***`: a URL's password, Slack tokens and webhook
//!   paths, AWS access key ids, GitHub/GitLab tokens, Google API keys, JWTs, bearer and
//!   basic `Authorization` values, token headers, secret-looking query parameters,
//!   `NAME=value` where the name says password/secret/token/key, and PEM private keys
//!   (the whole block, or what is left of one a cut made partial);
//! - cuts the middle out of a line longer than [`MAX_LINE`] bytes, saying how much.
//!
//! Slack mentions (`<!channel>`, `<@U…>`) are left as text here: the tail is plain text
//! in the store and the API, and the Slack reporter escapes `<`, `>` and `&` on the way
//! out. The agent's own log already redacts URL passwords and expanded `must_env`
//! values ([`super::log::DeployLog`]); this pass runs again on the bot, on whatever a
//! host sends.

use std::sync::LazyLock;

use regex::Regex;

/// Longest line kept whole in a tail, in bytes.
pub(crate) const MAX_LINE: usize = 512;

/// What a secret is replaced with.
const HIDDEN: &str = "***";

/// The end of `text` (at most `max_lines` lines and `max_bytes` bytes), scrubbed. The
/// tail starts on a line boundary: a first line the byte bound cut is dropped (its
/// start, which is gone, might have been what made a secret recognisable).
pub(crate) fn report_tail(text: &str, max_lines: usize, max_bytes: usize) -> String {
    // Whole raw lines from the end, a margin more than will be kept (a secret is judged
    // with its whole line); an overlong line is scrubbed (and so cut) on its own first,
    // so a line of a megabyte neither hides the lines before it nor costs the margin.
    let margin = max_bytes.saturating_mul(4).saturating_add(64 << 10);
    let mut picked: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for line in text.trim_end().rsplit('\n') {
        if picked.len() > max_lines || bytes > margin {
            break;
        }
        let line = if line.len() > MAX_LINE + CUT_SLACK {
            scrub(line)
        } else {
            line.to_string()
        };
        bytes += line.len() + 1;
        picked.push(line);
    }
    picked.reverse();
    let clean = scrub(&picked.join("\n"));
    whole_lines_tail(&clean, max_lines, max_bytes)
}

/// A line is cut only past [`MAX_LINE`] and this much more, so a line already cut (its
/// two halves and the marker) is left as it is when scrubbed again.
const CUT_SLACK: usize = 64;

/// The last lines of `text` within the bounds, dropping a first line cut partway (unless
/// it is the only one).
fn whole_lines_tail(text: &str, max_lines: usize, max_bytes: usize) -> String {
    let text = text.trim_end();
    let mut start = text.len();
    let mut lines = 0;
    while lines < max_lines && start > 0 {
        let before = &text[..start];
        let line_start = before
            .trim_end_matches('\n')
            .rfind('\n')
            .map_or(0, |i| i + 1);
        if text.len() - line_start > max_bytes {
            if lines == 0 {
                // One line over the bound: its end, on a character boundary.
                let mut cut = text.len() - max_bytes;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                return text[cut..].to_string();
            }
            break;
        }
        start = line_start;
        lines += 1;
    }
    text[start..].to_string()
}

/// Every line of `text` scrubbed (see the module's comment).
pub(crate) fn scrub(text: &str) -> String {
    let plain = strip_escapes(text);
    let redacted = redact(&plain);
    let mut out = String::with_capacity(redacted.len());
    for (i, line) in redacted.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&cut_line(line));
    }
    out
}

/// Escape sequences removed, a lone `\r` turned into `\n`, formatting characters removed
/// and other controls shown as U+FFFD (`\n` and `\t` kept).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // A two-byte escape (ESC 7, ESC c, ESC ( B …): the intermediates too.
                Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                    while chars
                        .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                        .is_some()
                    {}
                    chars.next();
                }
                Some(_) | None => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            c if is_invisible(c) => {}
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            // Not a CSI after all (a newline, text): stop, dropping just that.
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' | '\n' => return,
            '\u{1b}' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

/// Zero-width and bidirectional formatting characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{061C}'
        | '\u{FEFF}'
        | '\u{00AD}')
}

/// (pattern, replacement) pairs, applied in order.
static SECRETS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // PEM private keys: the whole block; a block the tail cut at either end.
        (
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
            "[private key hidden]",
        ),
        (
            r"\A(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
            "[private key hidden]",
        ),
        // URL credentials: user:password@ (the user name is kept).
        (
            r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^@\s/]*@",
            "${1}:***@",
        ),
        // Slack tokens and webhook URLs.
        (r"\bxox[abposre]-[A-Za-z0-9-]{6,}", HIDDEN),
        (r"\bxapp-[0-9]+-[A-Za-z0-9-]{6,}", HIDDEN),
        (
            r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+",
            "${1}***",
        ),
        // AWS access key ids.
        (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", HIDDEN),
        // GitHub and GitLab tokens, Google API keys.
        (r"\bgh[pousr]_[A-Za-z0-9]{30,}", HIDDEN),
        (r"\bgithub_pat_[A-Za-z0-9_]{20,}", HIDDEN),
        (r"\bglpat-[A-Za-z0-9_-]{20,}", HIDDEN),
        (r"\bAIza[0-9A-Za-z_-]{35}", HIDDEN),
        // JWTs (three base64url parts, the first two JSON objects).
        (
            r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            HIDDEN,
        ),
        // Authorization values and token headers.
        (
            r"(?i)(authorization\s*[:=]\s*(?:bearer|basic|token|digest)?\s*)[^\s,;]+",
            "${1}***",
        ),
        (
            r"(?i)\b((?:x-consul-token|x-vault-token|x-api-key|x-auth-token|private-token|x-corral-signature)\s*:\s*)\S+",
            "${1}***",
        ),
        // Query parameters that carry credentials (pre-signed URLs included).
        (
            r"(?i)([?&](?:access_token|refresh_token|id_token|token|api_key|apikey|key|secret|client_secret|password|passwd|pwd|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&\s#]+",
            "${1}***",
        ),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("static regex"), r))
    .collect()
});

/// `NAME=value` / `NAME: value` where the name says what it is.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([A-Z0-9_.\-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key|credentials?|auth_?key)[A-Z0-9_\-]*["']?\s*[=:]\s*)("[^"\n]*"|'[^'\n]*'|[^\s"',;]+)"#,
    )
    .expect("static regex")
});

/// Values an assignment may show: they say a secret is absent, and hide none.
const NOT_SECRET: [&str; 12] = [
    "unset",
    "none",
    "null",
    "nil",
    "empty",
    "undefined",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
];

fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in SECRETS.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *with).into_owned();
        }
    }
    if ASSIGNMENT.is_match(&out) {
        out = ASSIGNMENT
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let value = c[2].trim_matches(['"', '\'']).to_ascii_lowercase();
                if value == HIDDEN || value.is_empty() || NOT_SECRET.contains(&value.as_str()) {
                    c[0].to_string()
                } else {
                    format!("{}{HIDDEN}", &c[1])
                }
            })
            .into_owned();
    }
    out
}

/// A line over [`MAX_LINE`] bytes: its start and its end (an error's reason is often
/// last), and how much was cut between them.
fn cut_line(line: &str) -> String {
    if line.len() <= MAX_LINE + CUT_SLACK {
        return line.to_string();
    }
    let mut head = MAX_LINE / 2;
    while !line.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = line.len() - MAX_LINE / 2;
    while !line.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … [{} bytes cut] … {}",
        &line[..head],
        tail - head,
        &line[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        let s = scrub(
            "\x1b[31mred\x1b[0m \x1b]0;title\x07ok \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ \x1b(Bx\x1b7",
        );
        assert_eq!(s, "red ok link x");
        // C1 CSI, a lone CR, bidi and zero-width characters, NUL and BEL.
        assert_eq!(
            scrub("a\u{9b}2Jb\rc\r\nd\u{202E}gnp.exe\u{2066}\u{200B}e\0f\x07"),
            "ab\nc\ndgnp.exee\u{FFFD}f\u{FFFD}"
        );
        // An escape at the very end, an unfinished OSC.
        assert_eq!(scrub("x\x1b"), "x");
        assert_eq!(scrub("x\x1b]0;never ends"), "x");
        // Tabs and newlines stay; Slack markup stays text (the reporter escapes it).
        assert_eq!(
            scrub("a\tb\n<!channel> <@U123>"),
            "a\tb\n<!channel> <@U123>"
        );
    }

    #[test]
    fn secret_shapes_are_hidden() {
        let cases = [
            (
                "git clone https://bob:hunter2@git.example.com/x",
                "git clone https://bob:***@git.example.com/x",
            ),
            ("token xoxb-1234567890-abcdefABCDEF", "token ***"),
            ("xapp-1-A0123-456-abcdef", "***"),
            (
                "post https://hooks.slack.com/services/T0/B0/XXXXsecret",
                "post https://hooks.slack.com/services/***",
            ),
            ("AWS_KEY AKIAIOSFODNN7EXAMPLE used", "AWS_KEY *** used"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ0123456789", "***"),
            ("glpat-abcdefghijklmnopqrstu", "***"),
            ("key AIzaSyA-0123456789abcdefghijklmnopqrstu", "key ***"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_part-1",
                "jwt ***",
            ),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            (
                "authorization=Basic dXNlcjpwYXNz",
                "authorization=Basic ***",
            ),
            ("X-Consul-Token: 5b1c-aa", "X-Consul-Token: ***"),
            (
                "GET /f?X-Amz-Signature=abcd&x=1",
                "GET /f?X-Amz-Signature=***&x=1",
            ),
            ("https://h/p?token=abc#frag", "https://h/p?token=***"),
            ("DB_PASSWORD=s3cr3t ok", "DB_PASSWORD=*** ok"),
            ("export API_KEY='a b c'", "export API_KEY=***"),
            ("client_secret: \"x y\"", "client_secret: ***"),
            ("\"secretToken\": \"v\"", "\"secretToken\": ***"),
            (
                "SLACK_BOT_TOKEN=unset PASSWORD=\"\" SECRET=none",
                "SLACK_BOT_TOKEN=unset PASSWORD=\"\" SECRET=none",
            ),
        ];
        let wrong: Vec<_> = cases
            .iter()
            .map(|(input, want)| (input, scrub(input), want))
            .filter(|(_, got, want)| got != *want)
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        // A zero-width space cannot split a token past the patterns.
        assert_eq!(scrub("xoxb-1234\u{200B}567890-abcdef"), "***");
        // Ordinary output is left alone.
        let plain = "sending incremental file list\nfoo/bar\nsent 1,234 bytes  received 56 bytes\nkeys: 3 files";
        assert_eq!(scrub(plain), plain);
    }

    #[test]
    fn private_keys_whole_or_cut() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabcd\n-----END RSA PRIVATE KEY-----";
        let s = scrub(&format!("before\n{key}\nafter"));
        assert_eq!(s, "before\n[private key hidden]\nafter");
        assert!(!scrub("x\n-----BEGIN PRIVATE KEY-----\nMIIEow").contains("MIIE"));
        assert!(!scrub("MIIEow\nabcd\n-----END PRIVATE KEY-----\nok").contains("MIIE"));
    }

    #[test]
    fn long_lines_are_cut_and_tails_start_whole() {
        let long = "y".repeat(5000);
        let s = scrub(&format!("{long}end"));
        assert_eq!(
            s,
            format!(
                "{} … [{} bytes cut] … {}end",
                "y".repeat(MAX_LINE / 2),
                5003 - MAX_LINE,
                "y".repeat(MAX_LINE / 2 - 3)
            )
        );
        // A multi-byte character at the cut.
        let s = scrub(&format!("a{}", "é".repeat(400)));
        assert!(s.len() < 600 && s.contains("bytes cut"), "{s}");
        // The tail: whole lines, the bounds kept, the cut-off first line dropped.
        let text = "secret-start-of-line\nsecond line\nthird line\n";
        assert_eq!(report_tail(text, 2, 100), "second line\nthird line");
        assert_eq!(report_tail(text, 5, 25), "second line\nthird line");
        assert_eq!(report_tail("only one very long line", 5, 4), "line");
        assert_eq!(report_tail("", 5, 100), "");
        // A megabyte with no newline costs one cut line.
        let t = report_tail(&"z".repeat(1 << 20), 40, 4096);
        assert!(t.len() <= 4096, "{}", t.len());
    }
}
