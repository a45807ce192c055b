//! A [`Message`]'s Block Kit form.
//!
//! corral's messages are mrkdwn text; the blocks are sections of at most 3000 characters
//! (Slack's limit), then the message's own blocks, then its context line, at most 50 in
//! all. Text that does not fit is cut with a note saying how much, never dropped silently.
//! The notification fallback (`text`) is the same text, cut to 3,900 characters (Slack
//! advises under 4,000).

use slack_morphism::prelude::*;

use crate::chat::limits::{
    BLOCKS_MAX, BUTTON_TEXT_MAX, BUTTONS_MAX, CONFIRM_BUTTON_MAX, CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX, FIELD_MAX, FIELDS_MAX, ID_MAX, SECTION_MAX, VALUE_MAX,
};
use crate::chat::{Block, Button, Message};
use crate::text::{truncate, truncate_chars as cut};

/// The notification fallback's length.
const FALLBACK_MAX: usize = 3900;

/// The top-level `text` of a message.
pub(crate) fn fallback(msg: &Message) -> String {
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
                    .take(FIELDS_MAX)
                    .map(|f| md!("{}", truncate(f, FIELD_MAX)))
                    .collect(),
            )
            .into(),
        Block::Context { text } => {
            let t: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate(text, FIELD_MAX));
            SlackContextBlock::new(vec![t.into()]).into()
        }
        Block::Divider => SlackDividerBlock::new().into(),
        Block::Buttons { block_id, buttons } => SlackActionsBlock {
            block_id: block_id.as_ref().map(|b| SlackBlockId(cut(b, ID_MAX))),
            elements: buttons.iter().take(BUTTONS_MAX).map(button).collect(),
        }
        .into(),
    }
}

fn plain(text: &str, max: usize) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(cut(text, max)).into()
}

fn button(b: &Button) -> SlackActionBlockElement {
    let style = if b.danger {
        Some(SlackBlockButtonStyle::Danger)
    } else if b.primary {
        Some(SlackBlockButtonStyle::Primary)
    } else {
        None
    };
    SlackActionBlockElement::Button(SlackBlockButtonElement {
        action_id: Some(cut(&b.action_id, ID_MAX).into()),
        text: plain(&b.text, BUTTON_TEXT_MAX),
        url: None,
        // A value is an id, never cut into something else: one too long is dropped.
        value: (b.value.len() <= VALUE_MAX).then(|| b.value.clone()),
        style,
        confirm: b.confirm.as_ref().map(|c| SlackBlockConfirmItem {
            title: plain(&c.title, CONFIRM_TITLE_MAX),
            text: SlackBlockText::Plain(SlackBlockPlainText::new(cut(&c.text, CONFIRM_TEXT_MAX))),
            confirm: plain(&c.confirm, CONFIRM_BUTTON_MAX),
            deny: plain(&c.deny, CONFIRM_BUTTON_MAX),
            style: Some(if b.danger { "danger" } else { "primary" }.to_string()),
        }),
        accessibility_label: None,
    })
}

/// The Block Kit blocks for a message.
pub(crate) fn blocks(msg: &Message) -> Vec<SlackBlock> {
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
        let text: SlackBlockMarkDownText = SlackBlockMarkDownText::new(truncate(ctx, FIELD_MAX));
        blocks.push(SlackContextBlock::new(vec![text.into()]).into());
    }
    blocks
}

/// Splits text into pieces of at most `max` bytes, at line ends where possible, never
/// inside a character.
pub(crate) fn chunks(text: &str, max: usize) -> Vec<String> {
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

    #[test]
    fn buttons_respect_slacks_limits() {
        let b = Button {
            action_id: "approval.approve".into(),
            text: "A".repeat(200),
            value: "12:1".into(),
            primary: true,
            confirm: Some(crate::chat::Confirm {
                title: "T".repeat(300),
                text: "x".repeat(1000),
                confirm: "Approve".into(),
                deny: "Cancel".into(),
            }),
            ..Button::default()
        };
        let m = Message::text("card").with_block(Block::Buttons {
            block_id: Some("appr:12:r3".into()),
            buttons: vec![b],
        });
        let json = serde_json::to_value(blocks(&m)).unwrap();
        let actions = &json[1];
        assert_eq!(actions["type"], "actions");
        assert_eq!(actions["block_id"], "appr:12:r3");
        let el = &actions["elements"][0];
        assert_eq!(el["type"], "button");
        assert_eq!(el["style"], "primary");
        assert_eq!(el["value"], "12:1");
        assert_eq!(el["text"]["type"], "plain_text");
        assert_eq!(el["text"]["text"].as_str().unwrap().chars().count(), 75);
        assert_eq!(
            el["confirm"]["title"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            100
        );
        assert_eq!(
            el["confirm"]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            300
        );
    }
}
