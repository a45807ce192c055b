//! `/upgrade …`: catalog stacks (`catalog:template:version`) and labelled services
//! (`image <ref>`).

use std::time::Duration;

use super::{Args, Family, ParseError};
use crate::text::{format_duration, sanitize};

pub(crate) const USAGE: &str = "*Usage:*\n\
• `/upgrade &lt;catalog&gt;:&lt;template&gt;:&lt;version&gt; [--env REGEX] [--dry-run] [--force]` — every stack created from that catalog template at a lower version, in every environment, e.g. `/upgrade library:web:12`\n\
• `/upgrade image &lt;image-ref&gt; [--env REGEX] [--no-confirm] [--start-first] [--timeout DURATION] [--dry-run] [--force]` — every service labelled for auto-update running that image at a lower tag, e.g. `/upgrade image myorg/api:2.4.1`\n\
• `/upgrade docker:&lt;image-ref&gt; …` — the same as `image`\n\
`--dry-run` shows the plan and changes nothing; `--env` narrows the environments (a regex on their names).";

/// The longest image reference Docker accepts (name 255 + tag 128 + digest).
const MAX_IMAGE_REF: usize = 512;

/// An upgrade command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeCmd {
    Catalog(CatalogUpgrade),
    Image(ImageUpgrade),
}

/// `/upgrade catalog:template:version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogUpgrade {
    pub catalog: String,
    pub template: String,
    pub version: String,
    pub env: Option<String>,
    pub dry_run: bool,
    pub force: bool,
}

/// `/upgrade image <ref>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUpgrade {
    /// The reference as typed, without a `docker:` prefix.
    pub image: String,
    pub env: Option<String>,
    /// Wait for `upgraded` and finish the upgrade (the default in chat).
    pub confirm: bool,
    pub start_first: bool,
    pub timeout: Option<Duration>,
    pub dry_run: bool,
    pub force: bool,
}

impl ImageUpgrade {
    /// An image upgrade with the chat defaults: confirm, no start-first, no timeout
    /// override, not a dry run, not forced.
    pub(crate) fn new(image: impl Into<String>) -> ImageUpgrade {
        ImageUpgrade {
            image: image.into(),
            env: None,
            confirm: true,
            start_first: false,
            timeout: None,
            dry_run: false,
            force: false,
        }
    }
}

impl UpgradeCmd {
    pub(crate) fn to_text(&self) -> String {
        match self {
            UpgradeCmd::Catalog(c) => {
                let mut s = format!("{}:{}:{}", c.catalog, c.template, c.version);
                if let Some(e) = &c.env {
                    s.push_str(&format!(" --env {}", super::quote(e)));
                }
                if c.dry_run {
                    s.push_str(" --dry-run");
                }
                if c.force {
                    s.push_str(" --force");
                }
                s
            }
            UpgradeCmd::Image(i) => {
                let mut s = format!("image {}", i.image);
                if let Some(e) = &i.env {
                    s.push_str(&format!(" --env {}", super::quote(e)));
                }
                if !i.confirm {
                    s.push_str(" --no-confirm");
                }
                if i.start_first {
                    s.push_str(" --start-first");
                }
                if let Some(t) = i.timeout {
                    s.push_str(&format!(" --timeout {}", format_duration(t)));
                }
                if i.dry_run {
                    s.push_str(" --dry-run");
                }
                if i.force {
                    s.push_str(" --force");
                }
                s
            }
        }
    }
}

pub(super) fn parse(words: &[String]) -> Result<UpgradeCmd, ParseError> {
    let mut args = Args::new(words, Family::Upgrade);
    let Some(first) = args.next() else {
        return Err(args.err("`/upgrade` needs a catalog template or an image."));
    };
    if first.eq_ignore_ascii_case("image") {
        let Some(image) = args.next().filter(|w| !w.starts_with("--")) else {
            return Err(
                args.err("`/upgrade image` needs an image reference, e.g. `myorg/api:2.4.1`.")
            );
        };
        return image_upgrade(&mut args, image);
    }
    if let Some(image) = first.strip_prefix("docker:") {
        return image_upgrade(&mut args, image);
    }
    if first.starts_with("--") {
        return Err(args.err("`/upgrade` needs a catalog template or an image before any option."));
    }
    let parts: Vec<&str> = first.split(':').collect();
    let [catalog, template, version] = parts.as_slice() else {
        return Err(args.err(format!(
            "`{}` is not `&lt;catalog&gt;:&lt;template&gt;:&lt;version&gt;`.",
            sanitize(first)
        )));
    };
    for (what, v) in [
        ("catalog", catalog),
        ("template", template),
        ("version", version),
    ] {
        if v.is_empty() {
            return Err(args.err(format!("The {what} in `{}` is empty.", sanitize(first))));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        {
            return Err(args.err(format!(
                "The {what} `{}` may only hold letters, digits, `-`, `_`, `.` and `+`.",
                sanitize(v)
            )));
        }
    }
    let mut up = CatalogUpgrade {
        catalog: catalog.to_string(),
        template: template.to_string(),
        version: version.to_string(),
        env: None,
        dry_run: false,
        force: false,
    };
    while let Some(w) = args.next() {
        match w {
            "--env" => up.env = Some(args.env_regex()?),
            "--dry-run" => up.dry_run = true,
            "--force" => up.force = true,
            w => return Err(args.unknown(w)),
        }
    }
    Ok(UpgradeCmd::Catalog(up))
}

fn image_upgrade(args: &mut Args, image: &str) -> Result<UpgradeCmd, ParseError> {
    let image = image.strip_prefix("docker:").unwrap_or(image);
    check_image_ref(args, image)?;
    let mut up = ImageUpgrade::new(image);
    while let Some(w) = args.next() {
        match w {
            "--env" => up.env = Some(args.env_regex()?),
            "--no-confirm" => up.confirm = false,
            "--start-first" => up.start_first = true,
            "--timeout" => up.timeout = Some(args.timeout()?),
            "--dry-run" => up.dry_run = true,
            "--force" => up.force = true,
            w => return Err(args.unknown(w)),
        }
    }
    Ok(UpgradeCmd::Image(up))
}

/// A first, syntactic check of an image reference; the Rancher image module
/// normalises it fully.
fn check_image_ref(args: &Args, image: &str) -> Result<(), ParseError> {
    if image.is_empty() {
        return Err(args.err("The image reference is empty."));
    }
    if image.len() > MAX_IMAGE_REF {
        return Err(args.err(format!(
            "The image reference is {} characters long (at most {MAX_IMAGE_REF}).",
            image.len()
        )));
    }
    let ok_chars = image
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@'));
    if !ok_chars || image.starts_with(['/', ':', '@', '.', '-']) || image.ends_with(['/', ':', '@'])
    {
        return Err(args.err(format!(
            "`{}` is not an image reference like `registry:5000/team/app:1.2.3`.",
            sanitize(image)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse_slash};
    use super::*;

    fn p(text: &str) -> Result<UpgradeCmd, ParseError> {
        match parse_slash("/upgrade", text)? {
            Command::Upgrade(u) => Ok(u),
            other => panic!("not an upgrade: {other:?}"),
        }
    }

    #[test]
    fn catalog() {
        let UpgradeCmd::Catalog(c) = p("library:web:12 --env ^prod --dry-run").unwrap() else {
            panic!("catalog expected")
        };
        assert_eq!(
            (c.catalog.as_str(), c.template.as_str(), c.version.as_str()),
            ("library", "web", "12")
        );
        assert_eq!(c.env.as_deref(), Some("^prod"));
        assert!(c.dry_run && !c.force);
        assert_eq!(
            UpgradeCmd::Catalog(c).to_text(),
            "library:web:12 --env ^prod --dry-run"
        );
    }

    #[test]
    fn image_forms() {
        for text in [
            "image myorg/api:2.4.1",
            "docker:myorg/api:2.4.1",
            "image docker:myorg/api:2.4.1",
        ] {
            let UpgradeCmd::Image(i) = p(text).unwrap() else {
                panic!("image expected")
            };
            assert_eq!(i.image, "myorg/api:2.4.1");
            assert!(i.confirm);
        }
        let UpgradeCmd::Image(i) =
            p("image registry:5000/a/b@sha256:abc --no-confirm --start-first --timeout 2m --force")
                .unwrap()
        else {
            panic!()
        };
        assert!(!i.confirm && i.start_first && i.force);
        assert_eq!(i.timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn malformed() {
        for (text, needle) in [
            ("", "needs a catalog template or an image"),
            (
                "library:web",
                "is not `&lt;catalog&gt;:&lt;template&gt;:&lt;version&gt;`",
            ),
            ("library:web:1:2", "is not `&lt;catalog&gt;"),
            ("library::1", "template in"),
            ("lib rary:web:1", "is not `&lt;catalog&gt;"),
            ("library:we$b:1", "may only hold"),
            ("library:web:1 --env (", "not a valid regex"),
            ("library:web:1 --env", "needs a value"),
            ("library:web:1 --no-confirm", "Unknown option"),
            ("--dry-run library:web:1", "before any option"),
            ("image", "needs an image reference"),
            ("image --dry-run", "needs an image reference"),
            ("image my<org>/api:1", "is not an image reference"),
            ("image api: ", "is not an image reference"),
            ("image api:1 --timeout 0s", "more than zero"),
            ("image api:1 extra", "Unexpected word"),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.problem.contains(needle), "{text:?}: {}", e.problem);
            assert!(e.to_string().contains("/upgrade image"));
        }
        let long = format!("image {}", "a".repeat(600));
        assert!(p(&long).unwrap_err().problem.contains("at most"));
    }
}
