//! Text shared by every layer: quoting user text safely back into Slack mrkdwn, durations
//! as people type them, people and times as Slack shows them, and cutting text to a size.
//!
//! One function each. Everything here is pure.

use std::time::Duration;

/// The longest duration accepted: a year is more than any wait corral has a use for, and
/// the cap keeps every `Instant + duration` far from overflow.
pub(crate) const MAX_DURATION_SECS: u64 = 366 * 86_400;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a duration (use 30s, 10m, 1h, 2h30m or a number of seconds, at most a year)", sanitize(.0))]
pub struct DurationError(pub String);

/// Parses a duration: a bare number of seconds (`45`, `0.25`) or number-unit pairs
/// (`30s`, `10m`, `1h`, `2h30m`, `1d`, `500ms`, `1.5h`), units `ns us µs ms s m h d`.
///
/// This is chat's grammar and stretcher's flags (Go's `time.ParseDuration` plus bare
/// seconds) in one; at most [`MAX_DURATION_SECS`].
pub fn parse_duration(raw: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(raw.to_string());
    let s = raw.trim();
    if s.is_empty() || s.len() > 64 {
        return Err(bad());
    }
    let secs = if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        number(s).ok_or_else(bad)?
    } else {
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let n_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let n = number(&rest[..n_end]).ok_or_else(bad)?;
            rest = &rest[n_end..];
            let u_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = match &rest[..u_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return Err(bad()),
            };
            total += n * unit;
            rest = &rest[u_end..];
        }
        total
    };
    if !secs.is_finite() || secs > MAX_DURATION_SECS as f64 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// A non-negative decimal number (`12`, `0.5`); `None` for `.`, `1.2.3`, empty.
fn number(s: &str) -> Option<f64> {
    if s.is_empty() || s.bytes().filter(|b| *b == b'.').count() > 1 || s == "." {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| *n >= 0.0)
}

/// Formats a duration the way it can be typed back (`90s` → `1m30s`); below a second,
/// in milliseconds.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return match d.as_millis() {
            0 => "0s".to_string(),
            ms => format!("{ms}ms"),
        };
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")] {
        if s >= unit {
            out.push_str(&format!("{}{name}", s / unit));
            s %= unit;
        }
    }
    out
}

/// Characters that reorder text on screen (bidirectional embeddings, overrides and
/// isolates): a name or reason holding them can make a message read other than it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Makes user text safe to quote back in Slack mrkdwn on one line: escapes `&`, `<`, `>`
/// (so no mention or link can be injected), turns backticks into quotes, control and
/// bidirectional characters into spaces, and shortens it to 200 characters.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(200));
    for (i, c) in s.chars().enumerate() {
        if i >= 200 {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\''),
            c if c.is_control() || is_bidi_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Like [`sanitize`], for many lines (log tails, Rancher's messages): newlines and tabs
/// are kept, nothing is shortened, backticks stay (the text goes inside a code block
/// only after [`fence`] made that safe).
pub(crate) fn sanitize_block(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
/// A block of text from outside (a log tail) as a Slack code block: escaped, and with
/// any triple backtick broken so the text cannot close the block early.
pub(crate) fn fence(s: &str) -> String {
    let body = sanitize_block(s).replace("```", "`\u{200B}``");
    format!("```\n{}\n```", body.trim_end_matches('\n'))
}

/// Shows a person: a Slack user id as a mention, anything else as escaped text.
pub(crate) fn person(who: &str) -> String {
    let looks_like_id = who.len() > 1
        && who.starts_with(['U', 'W'])
        && who
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if looks_like_id {
        format!("<@{who}>")
    } else {
        sanitize(who)
    }
}

/// A timestamp as people read it, in UTC, with Slack's localising date token.
pub(crate) fn when(unix: i64) -> String {
    format!(
        "<!date^{unix}^{{date_short_pretty}} {{time}}|{}>",
        utc(unix, "%Y-%m-%d %H:%M UTC")
    )
}

/// Plain-text timestamp (CLI, logs, JSON).
pub fn when_plain(unix: i64) -> String {
    utc(unix, "%Y-%m-%d %H:%M:%S UTC")
}

fn utc(unix: i64, format: &str) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// An error with every cause it carries, `outer: inner: …` (reqwest's own text says only
/// "error sending request"; the reason, such as an untrusted certificate, is a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let said = s.to_string();
        // Some layers repeat their cause in their own text.
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    text
}

/// A URL fit to show: any password replaced by `***` (and the user name kept, so the
/// reader knows which account). Text that does not parse as a URL but looks like it
/// carries credentials (`user:pass@…`) is not shown at all.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) if raw.contains('@') => "(a URL with credentials, not shown)".to_string(),
        Err(_) => raw.to_string(),
    }
}

/// `text` with every occurrence of `url` replaced by its [`redact_url`] form (for
/// messages that quote a URL they were given).
pub(crate) fn redact_secrets_in(text: &str, url: &str) -> String {
    if url.is_empty() {
        return text.to_string();
    }
    let shown = redact_url(url);
    text.replace(&format!("{url:?}"), &format!("{shown:?}"))
        .replace(url, &shown)
}

/// `text` with the password of every `scheme://user:password@` in it replaced by `***`
/// (log lines and errors that quote URLs they were given, whole or not).
pub(crate) fn redact_credentials_in(text: &str) -> String {
    static CREDENTIALS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^@\s/]*@")
            .expect("static regex")
    });
    CREDENTIALS.replace_all(text, "$1:***@").into_owned()
}

/// Shortens text to at most `max` bytes on a character boundary, marking the cut with `…`
/// (counted in the `max`).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Shortens text to at most `max` characters (how Slack counts its plain_text limits),
/// marking the cut with `…` (counted in the `max`).
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack mrkdwn → plain text for doors that are not Slack (API JSON, the terminal):
/// date tokens become their fallback text and the three escapes are undone.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!date^") {
        out.push_str(&rest[..start]);
        let token = &rest[start..];
        match (token.find('|'), token.find('>')) {
            (Some(bar), Some(end)) if bar < end => {
                out.push_str(&token[bar + 1..end]);
                rest = &token[end + 1..];
            }
            _ => {
                out.push_str(token);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        // stretcher's flag forms
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in [
            "",
            "s",
            "10x",
            "-5",
            "10m5",
            "1..5s",
            ".",
            "99999999999999999999h",
            "400d",
            "1e9",
            "inf",
            "NaN",
            "1h 30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn formatted_durations_parse_back() {
        for s in [1, 59, 61, 3599, 3601, 86_399, 90_061, MAX_DURATION_SECS] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn sanitize_escapes_and_neutralises() {
        assert_eq!(sanitize("<!channel> & `x`"), "&lt;!channel&gt; &amp; 'x'");
        assert_eq!(sanitize("a\u{0}b\nc"), "a b c");
        // Bidirectional overrides cannot reorder what people read.
        assert_eq!(sanitize("evil\u{202E}txt.exe"), "evil txt.exe");
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{2066}', '\u{2067}', '\u{2068}',
            '\u{2069}',
        ] {
            assert!(!sanitize(&format!("a{c}b")).contains(c), "{c:?}");
            assert!(!sanitize_block(&format!("a{c}b")).contains(c), "{c:?}");
        }
        let long = "x".repeat(500);
        assert_eq!(sanitize(&long).chars().count(), 201);
        assert_eq!(sanitize_block("a<b>\n\tc"), "a&lt;b&gt;\n\tc");
    }

    #[test]
    fn fences_cannot_be_closed_from_inside() {
        let f = fence("line\n```\n<!here>");
        assert!(f.starts_with("```\n") && f.ends_with("\n```"));
        assert_eq!(f.matches("```").count(), 2, "{f}");
        assert!(f.contains("&lt;!here&gt;"));
    }

    #[test]
    fn people_and_times() {
        assert_eq!(person("U0ALICE"), "<@U0ALICE>");
        assert_eq!(person("api:ci-bot"), "api:ci-bot");
        assert_eq!(person("<!here>"), "&lt;!here&gt;");
        assert_eq!(
            when(0),
            "<!date^0^{date_short_pretty} {time}|1970-01-01 00:00 UTC>"
        );
        assert_eq!(when_plain(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://corral:hunter2@db:5432/corral"),
            "postgres://corral:***@db:5432/corral"
        );
        assert_eq!(redact_url("https://a.example/x"), "https://a.example/x");
        assert!(!redact_url("not a url user:hunter2@host").contains("hunter2"));
        let msg = "\"postgres://u:hunter2@h/db\": only sqlite:// is supported";
        let shown = redact_secrets_in(msg, "postgres://u:hunter2@h/db");
        assert!(
            !shown.contains("hunter2") && shown.contains("postgres://u:***@h/db"),
            "{shown}"
        );
    }

    #[test]
    fn truncation_is_bounded_and_whole() {
        assert_eq!(truncate("héllo", 4), "h…");
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(
            redact_credentials_in("GET http://deployer:hunter2@h:1/m and s3://a:b@c/k, ftp://x@y"),
            "GET http://deployer:***@h:1/m and s3://a:***@c/k, ftp://x@y"
        );
        let t = truncate(&"é".repeat(1000), 101);
        assert!(t.len() <= 101 && t.ends_with('…'));
    }

    #[test]
    fn plain_undoes_mrkdwn() {
        assert_eq!(
            plain(
                "since <!date^1^{date_short_pretty} {time}|2026-11-22 02:19 UTC> by &lt;x&gt; &amp; y"
            ),
            "since 2026-11-22 02:19 UTC by <x> & y"
        );
        assert_eq!(plain("<!date^broken"), "<!date^broken");
        assert_eq!(plain("plain"), "plain");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn durations_never_panic(text in "[0-9smhdµnu.]{0,16}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn sanitized_text_has_no_markup(text in "\\PC{0,300}") {
            let s = sanitize(&text);
            prop_assert!(!s.contains('<') && !s.contains('>') && !s.contains('`'));
        }

        #[test]
        fn truncate_respects_the_limit(text in "\\PC{0,100}", max in 3usize..80) {
            prop_assert!(truncate(&text, max).len() <= max);
        }
    }
}

/// A `since` as people write it (`corral audit --since`, `GET /api/v1/audit?since=`): Unix
/// seconds, an RFC 3339 time (`2026-12-01T09:00:00Z`), or a duration meaning that long
/// before `now` (`2h`, `30m`). Answers Unix seconds.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    match parse_duration(t) {
        Ok(d) => Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        Err(_) => Err(format!(
            "since {:?} is neither Unix seconds, an RFC 3339 time (2026-12-01T09:00:00Z) nor a duration (2h)",
            truncate(t, 40)
        )),
    }
}

#[cfg(test)]
mod since_tests {
    use super::parse_since;

    #[test]
    fn since_takes_seconds_times_and_durations() {
        assert_eq!(parse_since("100", 5000), Ok(100));
        assert_eq!(parse_since("1970-01-01T00:01:40Z", 5000), Ok(100));
        assert_eq!(parse_since("1h", 5000), Ok(1400));
        assert!(parse_since("yesterday", 5000).is_err());
        assert!(parse_since("", 5000).is_err());
    }
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[test]
    fn error_chain_names_every_cause_once() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = std::io::Error::other(io);
        // A wrapper that shows its cause's text: said once.
        assert_eq!(
            error_chain(&outer),
            "invalid peer certificate: UnknownIssuer"
        );
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let w = Wrap(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&w), "error sending request: connection refused");
    }
}
