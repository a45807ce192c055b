//! A [`Message`]'s Block Kit as HTML, as Slack would show it: pure, and the only place
//! the playground turns corral's words into markup (the page's script only places the
//! fragments).
//!
//! It mirrors `slack::blocks`: the text as sections, then the message's own blocks
//! (section, fields, context, divider, buttons with their confirm dialogs), then the
//! context line, with Slack's limits. mrkdwn is read like Slack reads it: `&amp;` `&lt;`
//! `&gt;` are the only entities, `<…>` are control sequences (mentions `<@U…>`,
//! `<#C…|name>`, `<!channel>`, `<!subteam^S…|@team>`, dates `<!date^…|fallback>`, links
//! `<url|label>`), then `*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ``` ````
//! blocks and `>` quotes.
//!
//! **Escaping is strict**: every character that came from a message is written through
//! [`escape`] (text and attribute values alike); the only tags are this module's own. A
//! control sequence that is not one of the forms above is shown as the text it is. Only
//! `http`, `https` and `mailto` links become links.

use crate::chat::{Block, Button, Message};
use crate::text::truncate_chars as cut;

use crate::chat::limits::{
    BLOCKS_MAX, BUTTON_TEXT_MAX, BUTTONS_MAX, CONFIRM_BUTTON_MAX, CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX, FIELD_MAX, FIELDS_MAX, SECTION_MAX,
};

/// HTML-escapes text for element content and quoted attribute values alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack's three entities back to characters (what the reader sees).
fn unentity(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The whole message: text sections, its blocks, its context line.
pub fn message(msg: &Message) -> String {
    let mut out = String::new();
    let text = cut(&msg.text, SECTION_MAX * (BLOCKS_MAX - 2));
    if !text.is_empty() {
        out.push_str("<div class=\"b-section\">");
        out.push_str(&mrkdwn(&text));
        out.push_str("</div>");
    }
    for b in msg.blocks.iter().take(BLOCKS_MAX - 2) {
        out.push_str(&block(b));
    }
    if let Some(ctx) = &msg.context {
        out.push_str("<div class=\"b-context\">");
        out.push_str(&mrkdwn(&cut(ctx, FIELD_MAX)));
        out.push_str("</div>");
    }
    out
}

/// One block.
pub fn block(b: &Block) -> String {
    match b {
        Block::Section { text } => format!(
            "<div class=\"b-section\">{}</div>",
            mrkdwn(&cut(text, SECTION_MAX))
        ),
        Block::Fields { fields } => {
            let mut out = String::from("<div class=\"b-fields\">");
            for f in fields.iter().take(FIELDS_MAX) {
                out.push_str("<div class=\"b-field\">");
                out.push_str(&mrkdwn(&cut(f, FIELD_MAX)));
                out.push_str("</div>");
            }
            out.push_str("</div>");
            out
        }
        Block::Context { text } => format!(
            "<div class=\"b-context\">{}</div>",
            mrkdwn(&cut(text, FIELD_MAX))
        ),
        Block::Divider => "<hr class=\"b-divider\">".to_string(),
        Block::Buttons { block_id, buttons } => {
            let mut out = format!(
                "<div class=\"b-actions\" data-block-id=\"{}\">",
                escape(block_id.as_deref().unwrap_or(""))
            );
            for btn in buttons.iter().take(BUTTONS_MAX) {
                out.push_str(&button(btn));
            }
            out.push_str("</div>");
            out
        }
    }
}

/// A button: its click's fields and its confirm dialog's texts as data attributes (the
/// page's script reads them as text, never as markup).
fn button(b: &Button) -> String {
    let style = if b.danger {
        " danger"
    } else if b.primary {
        " primary"
    } else {
        ""
    };
    let mut attrs = format!(
        "class=\"b-button{style}\" type=\"button\" data-action-id=\"{}\" data-value=\"{}\"",
        escape(&b.action_id),
        escape(&b.value)
    );
    if let Some(c) = &b.confirm {
        attrs.push_str(&format!(
            " data-confirm-title=\"{}\" data-confirm-text=\"{}\" data-confirm-yes=\"{}\" data-confirm-no=\"{}\"",
            escape(&cut(&c.title, CONFIRM_TITLE_MAX)),
            escape(&cut(&c.text, CONFIRM_TEXT_MAX)),
            escape(&cut(&c.confirm, CONFIRM_BUTTON_MAX)),
            escape(&cut(&c.deny, CONFIRM_BUTTON_MAX)),
        ));
    }
    format!(
        "<button {attrs}>{}</button>",
        escape(&cut(&b.text, BUTTON_TEXT_MAX))
    )
}

/// mrkdwn text as HTML: code blocks first (nothing inside them is formatted), then
/// line by line (quotes), then inline.
pub fn mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("```") else {
            break;
        };
        out.push_str(&lines(&rest[..start]));
        let code = after[..end].trim_matches('\n');
        out.push_str("<pre class=\"b-pre\">");
        out.push_str(&escape(&unentity(code)));
        out.push_str("</pre>");
        rest = &after[end + 3..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    out.push_str(&lines(rest));
    out
}

/// Lines: `>` quotes become blockquotes, the rest are inline text with `<br>`s.
fn lines(text: &str) -> String {
    let mut out = String::new();
    let all: Vec<&str> = text.split('\n').collect();
    for (i, line) in all.iter().enumerate() {
        let quote = line
            .strip_prefix("&gt; ")
            .or_else(|| line.strip_prefix("> "))
            .or_else(|| (*line == "&gt;" || *line == ">").then_some(""));
        match quote {
            Some(q) => {
                out.push_str("<blockquote>");
                out.push_str(&inline(q));
                out.push_str("</blockquote>");
            }
            None => {
                out.push_str(&inline(line));
                if i + 1 < all.len() {
                    out.push_str("<br>");
                }
            }
        }
    }
    out
}

/// One line: control sequences, code spans, then emphasis on the escaped rest.
fn inline(line: &str) -> String {
    let mut out = String::new();
    let mut plain = String::new();
    let mut rest = line;
    while !rest.is_empty() {
        let next = rest.find(['<', '`']);
        let Some(at) = next else {
            plain.push_str(rest);
            break;
        };
        plain.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(body) = tail.strip_prefix('`') {
            if let Some(end) = body.find('`').filter(|e| *e > 0) {
                out.push_str(&emphasis(&plain));
                plain.clear();
                out.push_str("<code>");
                out.push_str(&escape(&unentity(&body[..end])));
                out.push_str("</code>");
                rest = &body[end + 1..];
                continue;
            }
            plain.push('`');
            rest = body;
            continue;
        }
        // `<`: a control sequence up to the next `>` on this line.
        match tail[1..].find('>') {
            Some(end) => {
                let inner = &tail[1..1 + end];
                out.push_str(&emphasis(&plain));
                plain.clear();
                out.push_str(&control(inner));
                rest = &tail[end + 2..];
            }
            None => {
                plain.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(&emphasis(&plain));
    out
}

/// A control sequence's HTML; anything not recognised is shown as its text.
fn control(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    let mention = |text: String| format!("<span class=\"mention\">{}</span>", escape(&text));
    if let Some(id) = target.strip_prefix('@') {
        return mention(format!("@{}", unentity(label.unwrap_or(id))));
    }
    if let Some(id) = target.strip_prefix('#') {
        return mention(format!("#{}", unentity(label.unwrap_or(id))));
    }
    if let Some(special) = target.strip_prefix('!') {
        if let Some(date) = special.strip_prefix("date^") {
            return date_token(date, label);
        }
        if let Some(team) = special.strip_prefix("subteam^") {
            return mention(unentity(label.unwrap_or(team)));
        }
        if matches!(special, "channel" | "here" | "everyone") {
            return mention(format!("@{special}"));
        }
        return escape(&format!("<{}>", unentity(inner)));
    }
    let url = unentity(target);
    let scheme_ok = ["http://", "https://", "mailto:"]
        .iter()
        .any(|s| url.len() > s.len() && url[..s.len()].eq_ignore_ascii_case(s));
    if scheme_ok && !url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let shown = unentity(label.unwrap_or(target));
        return format!(
            "<a href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">{}</a>",
            escape(&url),
            escape(&shown)
        );
    }
    escape(&format!("<{}>", unentity(inner)))
}

/// `<!date^UNIX^FORMAT|fallback>`: a `<time>` the page may localise; the fallback is
/// shown as it is.
fn date_token(date: &str, label: Option<&str>) -> String {
    let unix = date.split('^').next().and_then(|u| u.parse::<i64>().ok());
    let fallback = unentity(label.unwrap_or(""));
    match unix.and_then(|u| jiff::Timestamp::from_second(u).ok()) {
        Some(t) => format!(
            "<time datetime=\"{}\" data-unix=\"{}\">{}</time>",
            escape(&t.to_string()),
            t.as_second(),
            escape(&fallback)
        ),
        None => escape(&fallback),
    }
}

/// `*bold*`, `_italic_`, `~strike~` on plain mrkdwn text (entities decoded, escaped).
fn emphasis(text: &str) -> String {
    let text = unentity(text);
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let tag = match c {
            '*' => Some("strong"),
            '_' => Some("em"),
            '~' => Some("s"),
            _ => None,
        };
        let opens = i == 0 || !chars[i - 1].is_alphanumeric();
        if let (Some(tag), true) = (tag, opens) {
            // The closing mark: same character, not after a space, followed by a
            // non-alphanumeric character or the end.
            let close = (i + 2..chars.len()).find(|&j| {
                chars[j] == c
                    && !chars[j - 1].is_whitespace()
                    && chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric())
            });
            if let Some(j) = close.filter(|_| !chars[i + 1].is_whitespace()) {
                let inner: String = chars[i + 1..j].iter().collect();
                out.push_str(&format!("<{tag}>{}</{tag}>", emphasis_inner(&inner)));
                i = j + 1;
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        i += 1;
    }
    out
}

/// Emphasis inside emphasis (`*_both_*`), on already decoded text.
fn emphasis_inner(text: &str) -> String {
    // Re-encode Slack's entities so `emphasis` decodes them exactly once.
    emphasis(
        &text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Confirm;

    const HOSTILE: &str =
        "<script>alert(1)</script> \"' <@U123> <!channel> & <img src=x onerror=alert(1)>";

    /// No tag but this module's own.
    fn only_own_tags(html: &str) {
        let allowed = [
            "div",
            "/div",
            "span",
            "/span",
            "strong",
            "/strong",
            "em",
            "/em",
            "s",
            "/s",
            "code",
            "/code",
            "pre",
            "/pre",
            "blockquote",
            "/blockquote",
            "br",
            "hr",
            "a",
            "/a",
            "time",
            "/time",
            "button",
            "/button",
        ];
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            let tag: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
                .collect();
            assert!(allowed.contains(&tag.as_str()), "tag <{tag}> in {html}");
            rest = &rest[at + 1..];
        }
        assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
        // Inside our tags only our attributes: every `="` follows a known name.
        for (at, _) in html.match_indices("=\"") {
            let name: String = html[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            assert!(
                ["class", "type", "href", "target", "rel", "datetime"].contains(&name.as_str())
                    || name.starts_with("data-"),
                "attribute {name} in {html}"
            );
        }
    }

    #[test]
    fn escaping_is_strict_in_every_field() {
        let b = Button {
            action_id: HOSTILE.into(),
            text: HOSTILE.into(),
            value: HOSTILE.into(),
            danger: true,
            primary: false,
            confirm: Some(Confirm {
                title: HOSTILE.into(),
                text: HOSTILE.into(),
                confirm: HOSTILE.into(),
                deny: HOSTILE.into(),
            }),
        };
        let m = Message::text(HOSTILE)
            .with_context(HOSTILE)
            .with_block(Block::Section {
                text: HOSTILE.into(),
            })
            .with_block(Block::Fields {
                fields: vec![HOSTILE.into(), HOSTILE.into()],
            })
            .with_block(Block::Context {
                text: HOSTILE.into(),
            })
            .with_block(Block::Buttons {
                block_id: Some(HOSTILE.into()),
                buttons: vec![b],
            });
        let html = message(&m);
        only_own_tags(&html);
        // Every attribute value is quoted and none is broken out of.
        assert!(!html.contains("\"'"), "{html}");
        assert!(html.contains("&quot;&#39;"), "{html}");
        // Raw `<script>` in text is control-sequence-like: shown as text.
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn sanitized_user_text_shows_as_typed() {
        // What `text::sanitize` makes of a hostile reason: shown as typed, inert.
        let t = crate::text::sanitize("<script>x</script> <@U123> <!channel>");
        let html = mrkdwn(&t);
        assert_eq!(
            html,
            "&lt;script&gt;x&lt;/script&gt; &lt;@U123&gt; &lt;!channel&gt;"
        );
    }

    #[test]
    fn control_sequences() {
        assert_eq!(
            mrkdwn("<@U0ALICE> and <@U1|bob>"),
            "<span class=\"mention\">@U0ALICE</span> and <span class=\"mention\">@bob</span>"
        );
        assert_eq!(
            mrkdwn("<!channel> <!here>"),
            "<span class=\"mention\">@channel</span> <span class=\"mention\">@here</span>"
        );
        assert_eq!(
            mrkdwn("<#C1|releases> <!subteam^S1|@ops>"),
            "<span class=\"mention\">#releases</span> <span class=\"mention\">@ops</span>"
        );
        assert_eq!(
            mrkdwn("<https://x.example/a?b=1&amp;c=2|the card>"),
            "<a href=\"https://x.example/a?b=1&amp;c=2\" target=\"_blank\" rel=\"noopener noreferrer\">the card</a>"
        );
        assert_eq!(
            mrkdwn("<javascript:alert(1)|click>"),
            "&lt;javascript:alert(1)|click&gt;"
        );
        assert_eq!(mrkdwn("<!bogus> <x"), "&lt;!bogus&gt; &lt;x");
        assert_eq!(
            mrkdwn("<!date^0^{date_short_pretty} {time}|1970-01-01 00:00 UTC>"),
            "<time datetime=\"1970-01-01T00:00:00Z\" data-unix=\"0\">1970-01-01 00:00 UTC</time>"
        );
        assert_eq!(mrkdwn("<!date^nope|later>"), "later");
        assert_eq!(
            mrkdwn("<https://x|a \"quoted\" <b>>"),
            "<a href=\"https://x\" target=\"_blank\" rel=\"noopener noreferrer\">a &quot;quoted&quot; &lt;b</a>&gt;"
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(
            mrkdwn("*Job #12* _queued_ ~old~"),
            "<strong>Job #12</strong> <em>queued</em> <s>old</s>"
        );
        assert_eq!(mrkdwn("snake_case_name 2*3*4"), "snake_case_name 2*3*4");
        assert_eq!(
            mrkdwn("`a <b> &amp; *c*`"),
            "<code>a &lt;b&gt; &amp; *c*</code>"
        );
        assert_eq!(
            mrkdwn("x\n```\nline <1>\n*2*\n```\ny"),
            "x<br><pre class=\"b-pre\">line &lt;1&gt;\n*2*</pre>y"
        );
        assert_eq!(
            mrkdwn("&gt; quoted *b*\nplain"),
            "<blockquote>quoted <strong>b</strong></blockquote>plain"
        );
        assert_eq!(mrkdwn("a\nb"), "a<br>b");
        assert_eq!(mrkdwn("*_both_*"), "<strong><em>both</em></strong>");
        assert_eq!(mrkdwn("✅ done"), "✅ done");
    }

    #[test]
    fn every_block_type_and_the_limits() {
        let m = Message::text("root")
            .with_block(Block::Divider)
            .with_block(Block::Fields {
                fields: (0..12).map(|i| format!("f{i}")).collect(),
            })
            .with_block(Block::Buttons {
                block_id: Some("appr:12:r1".into()),
                buttons: vec![
                    Button {
                        action_id: "approval.approve".into(),
                        text: "A".repeat(100),
                        value: "12:1".into(),
                        primary: true,
                        confirm: Some(Confirm {
                            title: "Approve?".into(),
                            text: "It runs.".into(),
                            confirm: "Approve".into(),
                            deny: "Cancel".into(),
                        }),
                        ..Button::default()
                    },
                    Button {
                        action_id: "approval.deny".into(),
                        text: "Deny".into(),
                        value: "12:1".into(),
                        danger: true,
                        ..Button::default()
                    },
                ],
            })
            .with_context("ctx _x_");
        let html = message(&m);
        only_own_tags(&html);
        assert!(html.starts_with("<div class=\"b-section\">root</div><hr class=\"b-divider\">"));
        assert_eq!(html.matches("class=\"b-field\"").count(), FIELDS_MAX);
        assert!(html.contains("data-block-id=\"appr:12:r1\""));
        assert!(html.contains(
            "class=\"b-button primary\" type=\"button\" data-action-id=\"approval.approve\" data-value=\"12:1\" data-confirm-title=\"Approve?\""
        ));
        assert!(html.contains("class=\"b-button danger\""));
        assert!(html.contains(&format!("{}…</button>", "A".repeat(74))));
        assert!(html.ends_with("<div class=\"b-context\">ctx <em>x</em></div>"));
    }
}
