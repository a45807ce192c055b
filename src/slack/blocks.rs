//! A [`Message`]'s Block Kit form.
//!
//! corral's messages are mrkdwn text; the blocks are sections of at most 3000 characters
//! (Slack's limit), at most 50 of them, with the same text as the notification fallback.

use slack_morphism::prelude::*;

use crate::chat::Message;
use crate::text::truncate;

/// Slack's limit on one section's text.
const SECTION_MAX: usize = 3000;
/// Slack's limit on blocks in a message.
const BLOCKS_MAX: usize = 50;

/// The Block Kit blocks for a message.
pub fn blocks(msg: &Message) -> Vec<SlackBlock> {
    let mut blocks: Vec<SlackBlock> = chunks(&msg.text, SECTION_MAX)
        .into_iter()
        .take(BLOCKS_MAX - 1)
        .map(|c| SlackSectionBlock::new().with_text(md!("{}", c)).into())
        .collect();
    if let Some(ctx) = &msg.context {
        let text: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate(ctx, 2000));
        blocks.push(SlackContextBlock::new(vec![text.into()]).into());
    }
    blocks
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
        assert!(blocks(&m).len() <= BLOCKS_MAX);
    }
}
