//! How the bot reads a manifest: with every template action that reads the environment
//! (`{{ env … }}`, `{{ must_env … }}`, and pipes of them) kept as an opaque placeholder,
//! never expanded. The bot's environment holds its own secrets (Slack, Rancher, the API
//! token); a manifest is text from whoever can write under `CORRAL_DEPLOY_ALLOW`, and what
//! the bot computes from it is posted to the channel and stored in the job. Templates are
//! expanded only where the manifest runs: in `corral agent` on a host, or in the child
//! `corral agent` the bot starts for `--target local`, whose environment carries none of
//! the bot's secrets.
//!
//! The fields the bot checks (`src` against the allow-list, `checksum`, `dest`) must be
//! written literally; a templated one is refused with the reason. The other fields keep
//! their placeholders, which the bot never shows.

use super::manifest::{self, Manifest, ManifestError};

/// What an environment-reading action becomes: private-use characters, so it survives
/// `json_escape` unchanged and cannot be mistaken for text a manifest means.
pub(crate) const PLACEHOLDER: &str = "\u{E000}template\u{E001}";

/// What [`PLACEHOLDER`] is shown as in a refusal.
const SHOWN: &str = "{{ … }}";

/// Fields that must be literal for the bot to check them, with why.
const CHECKED: [(&str, &str); 6] = [
    ("src", "the bot checks it against CORRAL_DEPLOY_ALLOW"),
    ("checksum", "the bot checks it pins the archive"),
    ("dest", "the bot checks it is not a system directory"),
    ("dest_mode", "the bot checks it is a valid mode"),
    ("sync_strategy", "the bot checks it names a strategy"),
    ("keep_releases", "the bot checks it is a number"),
];

fn opaque_env(_: &str) -> Option<String> {
    Some(PLACEHOLDER.to_string())
}

/// Parses `text` the bot's way: templates validated but not expanded (see the module); a
/// relative `src` resolved against `manifest_url` when given ([`manifest::parse_at`]).
pub(crate) fn parse_opaque(
    text: &str,
    manifest_url: Option<&str>,
) -> Result<Manifest, ManifestError> {
    let expanded = manifest::expand_template(text, &opaque_env)?;
    let parsed = match manifest_url {
        Some(url) => manifest::parse_at(text, &opaque_env, url),
        None => manifest::parse(text, &opaque_env),
    };
    let m = match parsed {
        Ok(m) => m,
        Err(e) => {
            // A field refused because it held a placeholder: say so, not why the
            // placeholder is not a URL, a digest or a path.
            if let Some((field, why)) = CHECKED.iter().find(|(f, _)| *f == e.field)
                && field_is_templated(&expanded, field)
            {
                return Err(templated(field, why));
            }
            return Err(without_placeholders(e));
        }
    };
    let literal = |field: &str, v: Option<&str>| match v {
        Some(v) if v.contains(PLACEHOLDER) => {
            let why = CHECKED
                .iter()
                .find(|(f, _)| *f == field)
                .map_or("", |(_, w)| w);
            Err(templated(field, why))
        }
        _ => Ok(()),
    };
    literal("src", m.src.as_deref())?;
    literal("checksum", m.checksum.as_ref().map(|c| c.hex.as_str()))?;
    literal("dest", m.dest.as_ref().and_then(|d| d.to_str()))?;
    Ok(m)
}

/// The names `{{ must_env "NAME" }}` actions of `text` read: their values are secrets by
/// the manifest's own account, redacted from the agent's log and report.
pub(crate) fn must_env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let action = after[..end].trim_matches('-').trim();
        if let Some(arg) = action.strip_prefix("must_env") {
            let arg = arg.split('|').next().unwrap_or("").trim();
            let name = arg.trim_matches(|c| c == '"' || c == '`');
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        rest = &after[end + 2..];
    }
    names
}

fn templated(field: &str, why: &str) -> ManifestError {
    ManifestError {
        field: field.to_string(),
        reason: format!(
            "is templated ({SHOWN}); write it literally: {why} before any host runs the manifest, and never expands templates with its own environment"
        ),
    }
}

/// Whether a top-level `field:` line of the expanded text holds a placeholder.
fn field_is_templated(expanded: &str, field: &str) -> bool {
    expanded.lines().any(|line| {
        let key = line.trim_start_matches(['"', '\'']);
        key.strip_prefix(field)
            .map(|rest| rest.trim_start_matches(['"', '\'']).trim_start())
            .is_some_and(|rest| rest.starts_with(':'))
            && line.contains(PLACEHOLDER)
    })
}

fn without_placeholders(e: ManifestError) -> ManifestError {
    ManifestError {
        field: e.field,
        reason: e.reason.replace(PLACEHOLDER, SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "e0840daaa97cd2cf2175f9e5d133ffb3324a2b93";

    #[test]
    fn commands_keep_placeholders_and_nothing_is_read() {
        let m = parse_opaque(
            "commands:\n  pre:\n    - echo {{ env \"PATH\" \"x\" }} {{ must_env \"HOME\" }} {{ env \"A\" | json_escape }} {{ \"lit\" }}\n",
            None,
        )
        .unwrap();
        let line = &m.commands.pre[0];
        assert_eq!(line.matches(PLACEHOLDER).count(), 3, "{line:?}");
        assert!(line.ends_with(" lit"), "{line:?}");
        assert!(!line.contains('/'), "PATH was expanded: {line:?}");
    }

    #[test]
    fn must_env_names_are_found() {
        assert_eq!(
            must_env_names(
                "a {{ must_env \"A\" }} {{ env \"B\" }} {{- must_env `C` | json_escape -}} {{ must_env \"A\" }}"
            ),
            ["A", "C"]
        );
    }

    #[test]
    fn checked_fields_must_be_literal() {
        for (text, field) in [
            (
                format!("src: '{{{{ env \"S\" }}}}'\nchecksum: {SUM}\ndest: /srv/a\n"),
                "src",
            ),
            (
                format!("src: 's3://b/{{{{ env \"V\" }}}}.tgz'\nchecksum: {SUM}\ndest: /srv/a\n"),
                "src",
            ),
            (
                "src: s3://b/a.tgz\nchecksum: '{{ must_env \"SUM\" }}'\ndest: /srv/a\n".into(),
                "checksum",
            ),
            (
                format!(
                    "src: s3://b/a.tgz\nchecksum: {SUM}\ndest: '{{{{ env \"D\" \"/srv/a\" }}}}'\n"
                ),
                "dest",
            ),
            (
                format!("src: s3://b/a.tgz\nchecksum: {SUM}\ndest: /srv/{{{{ env \"D\" }}}}\n"),
                "dest",
            ),
            (
                format!(
                    "src: s3://b/a.tgz\nchecksum: {SUM}\ndest: /srv/a\ndest_mode: {{{{ env \"M\" }}}}\n"
                ),
                "dest_mode",
            ),
        ] {
            let e = parse_opaque(&text, None).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.reason.starts_with("is templated"), "{text}: {e}");
            assert!(!e.reason.contains(PLACEHOLDER));
        }
        // Literal fields and a bad template action are judged as before.
        let m = parse_opaque(
            &format!("src: s3://b/a.tgz\nchecksum: {SUM}\ndest: /srv/a\n"),
            None,
        )
        .unwrap();
        assert_eq!(m.dest.as_deref(), Some(std::path::Path::new("/srv/a")));
        assert!(
            parse_opaque("commands:\n  pre:\n    - '{{ exec \"x\" }}'\n", None)
                .unwrap_err()
                .reason
                .contains("unknown function")
        );
    }
}
