//! A [`Message`]'s Block Kit form.
//!
//! corral's messages are mrkdwn text; the blocks are sections of at most 3000 characters
//! (Slack's limit), then the message's own blocks, then its context line, at most 50 in
//! all. Text that does not fit is cut with a note saying how much, never dropped silently.
//! The notification fallback (`text`) is the same text, cut to 3,900 characters (Slack
//! advises under 4,000).

use slack_morphism::prelude::*;

use crate::chat::{Block, Message};
use crate::text::truncate;

/// The notification fallback's length.
const FALLBACK_MAX: usize = 3900;

/// The top-level `text` of a message.
pub fn fallback(msg: &Message) -> String {
    if msg.text.len() <= FALLBACK_MAX {
        return msg.text.clone();
    }
    truncate(&msg.text, FALLBACK_MAX)
}

fn extra(block: &Block) -> SlackBlock {
    match block {
        Block::Section { text } => SlackSectionBlock::new()
            .with_text(md!("{}", truncate(text, SECTION_MAX)))
            .into(),
        Block::Fields { fields } => SlackSectionBlock::new()
            .with_fields(
                fields
                    .iter()
                    .take(10)
                    .map(|f| md!("{}", truncate(f, 2000)))
                    .collect(),
            )
            .into(),
        Block::Context { text } => {
            let t: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate(text, 2000));
            SlackContextBlock::new(vec![t.into()]).into()
        }
        Block::Divider => SlackDividerBlock::new().into(),
        Block::Buttons { buttons } => SlackActionsBlock::new(
            buttons
                .iter()
                .take(25)
                .map(|b| {
                    let mut e = SlackBlockButtonElement::new(pt!("{}", truncate(&b.text, 75)))
                        .with_action_id(truncate(&b.action_id, 255).into())
                        .with_value(truncate(&b.value, 2000));
                    if b.danger {
                        e = e.with_style(SlackBlockButtonStyle::Danger);
                    }
                    e.into()
                })
                .collect(),
        )
        .into(),
    }
}

/// Slack's limit on one section's text.
const SECTION_MAX: usize = 3000;
/// Slack's limit on blocks in a message.
const BLOCKS_MAX: usize = 50;

/// The Block Kit blocks for a message.
pub fn blocks(msg: &Message) -> Vec<SlackBlock> {
    let own = msg.blocks.len().min(BLOCKS_MAX - 2);
    let room = BLOCKS_MAX - 1 - own;
    let mut parts = chunks(&msg.text, SECTION_MAX);
    if parts.len() > room {
        let cut: usize = parts[room - 1..].iter().map(String::len).sum();
        parts.truncate(room - 1);
        parts.push(format!(
            "… _(cut: {cut} more characters did not fit in one Slack message)_"
        ));
    }
    let mut blocks: Vec<SlackBlock> = parts
        .into_iter()
        .map(|c| SlackSectionBlock::new().with_text(md!("{}", c)).into())
        .collect();
    blocks.extend(msg.blocks.iter().take(own).map(extra));
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
    fn block_count_is_capped_and_the_cut_is_said() {
        let m = Message::text("x\n".repeat(100_000)).with_context("ctx");
        let b = blocks(&m);
        assert!(b.len() <= BLOCKS_MAX);
        let json = serde_json::to_string(&b).unwrap();
        assert!(
            json.contains("more characters did not fit"),
            "the cut is said"
        );
        assert!(fallback(&m).len() <= FALLBACK_MAX + 4);
    }
}
