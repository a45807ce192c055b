//! What a Slack message holds, and its Block Kit form.
//!
//! corral's messages are mrkdwn text; the blocks are sections of at most 3000 characters
//! (Slack's limit), at most 50 of them, with the same text as the notification fallback.

use slack_morphism::prelude::*;

/// Slack's limit on one section's text.
const SECTION_MAX: usize = 3000;
/// Slack's limit on blocks in a message.
const BLOCKS_MAX: usize = 50;

/// One message: mrkdwn text, optionally with a small context line under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub context: Option<String>,
}

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Message {
            text: text.into(),
            context: None,
        }
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// The Block Kit blocks for this message.
    pub fn blocks(&self) -> Vec<SlackBlock> {
        let mut blocks: Vec<SlackBlock> = chunks(&self.text, SECTION_MAX)
            .into_iter()
            .take(BLOCKS_MAX - 1)
            .map(|c| SlackSectionBlock::new().with_text(md!("{}", c)).into())
            .collect();
        if let Some(ctx) = &self.context {
            let text: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate(ctx, 2000));
            blocks.push(SlackContextBlock::new(vec![text.into()]).into());
        }
        blocks
    }
}

/// Splits text into pieces of at most `max` bytes, at line ends where possible, never
/// inside a character.
pub fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if cur.len() + line.len() > max && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        let mut line = line;
        while line.len() > max {
            let mut cut = max;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(line[..cut].to_string());
            line = &line[cut..];
        }
        cur.push_str(line);
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

/// Shortens text to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_respects_limits_and_characters() {
        let text = "é".repeat(4000);
        let parts = chunks(&text, SECTION_MAX);
        assert!(parts.iter().all(|p| p.len() <= SECTION_MAX));
        assert_eq!(parts.concat(), text);
        assert_eq!(chunks("", 10), vec![""]);
        let lines = "a\nb\nc\n";
        assert_eq!(chunks(lines, 4), vec!["a\nb\n", "c\n"]);
    }

    #[test]
    fn block_count_is_capped() {
        let m = Message::text("x\n".repeat(100_000)).with_context("ctx");
        assert!(m.blocks().len() <= BLOCKS_MAX);
        assert_eq!(truncate("héllo", 4), "h…");
    }
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
mod plain_tests {
    use super::plain;

    #[test]
    fn dates_and_escapes() {
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
