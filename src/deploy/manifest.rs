//! stretcher's manifest (reference/stretcher.md §4): YAML, optionally templated with
//! `env` / `must_env` / `json_escape`, validated as a whole before anything runs.
//!
//! Departures, on purpose: every rule is checked when the manifest is loaded (a bad
//! `checksum`, `sync_strategy` or `dest_mode` is refused before any command runs, naming
//! the field), `must_env` on an undefined variable is an error instead of a crash, and
//! `dest_mode` follows YAML 1.1 (`0711` is octal, `711` decimal) even though the YAML
//! library speaks 1.2. A relative `src` (`src: app.tar.gz`) is resolved against the
//! manifest's own URL, as a link in a page is ([`parse_at`]), so a manifest and its
//! archive can be published (or committed) side by side; the result is checked against
//! the allow-list like any `src`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::command::{SOURCE_SCHEMES, SOURCE_SCHEMES_TEXT};

/// Why a manifest was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ManifestError {
    pub field: String,
    pub reason: String,
}

impl ManifestError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ManifestError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The hash a checksum names, chosen by its length (stretcher's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashKind {}

/// An expected digest, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub kind: HashKind,
    pub hex: String,
}

impl Checksum {
    pub(crate) fn parse(raw: &str) -> Result<Checksum, ManifestError> {
        let hex = raw.trim().to_ascii_lowercase();
        let kind = match hex.len() {
            32 => HashKind::Md5,
            40 => HashKind::Sha1,
            64 => HashKind::Sha256,
            128 => HashKind::Sha512,
            n => {
                return Err(ManifestError::new(
                    "checksum",
                    format!(
                        "must be an md5, sha1, sha256 or sha512 hex string (32, 40, 64 or 128 characters), not {n} characters"
                    ),
                ));
            }
        };
        if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(ManifestError::new(
                "checksum",
                format!("{c:?} is not a hex digit"),
            ));
        }
        Ok(Checksum { kind, hex })
    }
}

/// How the extracted tree reaches `dest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStrategy {
    /// `rsync -a --delete` into `dest` (stretcher's default).
    Rsync,
    /// Rename the extracted tree to `dest` (which must not exist).
    Mv,
    /// `dest/releases/<id>` plus an atomic `dest/current` symlink switch; the newest
    /// `keep_releases` are kept.
    Release,
}

impl SyncStrategy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SyncStrategy::Rsync => "rsync",
            SyncStrategy::Mv => "mv",
            SyncStrategy::Release => "release",
        }
    }
}

/// The four command lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Commands {
    pub pre: Vec<String>,
    pub post: Vec<String>,
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The archive; `None` is commands-only mode.
    pub src: Option<String>,
    /// Required when `src` is set.
    pub checksum: Option<Checksum>,
    /// Required when `src` is set.
    pub dest: Option<PathBuf>,
    pub dest_mode: u32,
    pub commands: Commands,
    pub excludes: Vec<String>,
    pub exclude_from: Option<String>,
    pub sync_strategy: SyncStrategy,
    /// Releases kept by the `release` strategy (corral's addition; default 5).
    pub keep_releases: usize,
}

/// Default `dest_mode` (0755).
pub(crate) const DEFAULT_DEST_MODE: u32 = 0o755;
/// Default number of releases kept.
pub(crate) const DEFAULT_KEEP_RELEASES: usize = 5;

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    checksum: Option<serde_norway::Value>,
    #[serde(default)]
    dest: Option<String>,
    #[serde(default)]
    dest_mode: Option<serde_norway::Value>,
    #[serde(default)]
    commands: Option<Commands>,
    #[serde(default)]
    excludes: Option<Vec<String>>,
    #[serde(default)]
    exclude_from: Option<String>,
    #[serde(default)]
    sync_strategy: Option<String>,
    #[serde(default)]
    keep_releases: Option<u64>,
}

/// Looks up an environment variable (`None` = undefined).
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses and validates a manifest, templates expanded with `env`; `src` must be an
/// absolute URL.
pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<Manifest, ManifestError> {
    parse_with(text, env, None)
}

/// [`parse`] for a manifest fetched from `manifest_url`: a relative `src` is resolved
/// against it (see the module).
pub fn parse_at(
    text: &str,
    env: EnvLookup<'_>,
    manifest_url: &str,
) -> Result<Manifest, ManifestError> {
    parse_with(text, env, Some(manifest_url))
}

/// A `src` as written, or resolved against `base` when it is a relative reference. The
/// base's credentials (`user:pass@`) are not carried over: they would be shown with the
/// `src` in the channel.
fn resolve_src(src: String, base: Option<&str>) -> Result<String, ManifestError> {
    let Some(base) = base else { return Ok(src) };
    match url::Url::parse(&src) {
        Err(url::ParseError::RelativeUrlWithoutBase) => {}
        _ => return Ok(src),
    }
    let mut base = url::Url::parse(base).map_err(|e| {
        ManifestError::new("src", format!("{src}: the manifest URL is not a URL: {e}"))
    })?;
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base.join(&src).map(String::from).map_err(|e| {
        ManifestError::new(
            "src",
            format!("{src} cannot be resolved against the manifest's URL: {e}"),
        )
    })
}

/// See [`parse`] and [`parse_at`].
fn parse_with(
    text: &str,
    env: EnvLookup<'_>,
    base: Option<&str>,
) -> Result<Manifest, ManifestError> {
    let text = expand_template(text, env)?;
    let raw = read_raw(&text)?;
    let src = raw
        .src
        .filter(|s| !s.is_empty())
        .map(|s| resolve_src(s, base))
        .transpose()?;
    let checksum = checksum_field(&text, raw.checksum)?;
    if src.is_some() && checksum.is_none() {
        return Err(ManifestError::new(
            "checksum",
            "is required when src is set (an md5, sha1, sha256 or sha512 hex string)",
        ));
    }
    if let Some(s) = &src {
        check_src(s)?;
    }
    let dest = dest_field(raw.dest, src.is_some())?;
    let dest_mode = match raw.dest_mode {
        None | Some(serde_norway::Value::Null) => DEFAULT_DEST_MODE,
        Some(v) => dest_mode(&text, &v)?,
    };
    let sync_strategy = sync_strategy_field(raw.sync_strategy.as_deref())?;
    let excludes = raw.excludes.unwrap_or_default();
    for (i, e) in excludes.iter().enumerate() {
        if e.is_empty() {
            return Err(ManifestError::new(format!("excludes[{i}]"), "is empty"));
        }
    }
    let exclude_from = exclude_from_field(raw.exclude_from)?;
    let keep_releases = match raw.keep_releases {
        None => DEFAULT_KEEP_RELEASES,
        Some(0) => return Err(ManifestError::new("keep_releases", "must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Ok(Manifest {
        src,
        checksum,
        dest,
        dest_mode,
        commands: raw.commands.unwrap_or_default(),
        excludes,
        exclude_from,
        sync_strategy,
        keep_releases,
    })
}

/// The expanded text as YAML, after the pre-scan's bounds (manifest_limits.rs).
fn read_raw(text: &str) -> Result<Raw, ManifestError> {
    if text.trim().is_empty() {
        return Err(ManifestError::new("manifest", "is empty"));
    }
    super::manifest_limits::check(text).map_err(|e| ManifestError::new("manifest", e.reason))?;
    serde_norway::from_str(text).map_err(|e| yaml_error(&e))
}

/// `checksum`: a hex string; an empty or null one is no checksum.
fn checksum_field(
    text: &str,
    value: Option<serde_norway::Value>,
) -> Result<Option<Checksum>, ManifestError> {
    let s = match value {
        None | Some(serde_norway::Value::Null) => return Ok(None),
        Some(serde_norway::Value::String(s)) => s,
        // An all-digit digest reads as a (huge) number: take its text as written.
        Some(serde_norway::Value::Number(n)) => {
            raw_top_level_scalar(text, "checksum").unwrap_or_else(|| n.to_string())
        }
        Some(_) => return Err(ManifestError::new("checksum", "must be a hex string")),
    };
    if s.is_empty() {
        Ok(None)
    } else {
        Checksum::parse(&s).map(Some)
    }
}

/// `dest`: required with `src`, absolute.
fn dest_field(dest: Option<String>, has_src: bool) -> Result<Option<PathBuf>, ManifestError> {
    let dest = dest.filter(|d| !d.is_empty()).map(PathBuf::from);
    if has_src && dest.is_none() {
        return Err(ManifestError::new("dest", "is required when src is set"));
    }
    if let Some(d) = &dest
        && !d.is_absolute()
    {
        return Err(ManifestError::new(
            "dest",
            format!("{} must be an absolute path", d.display()),
        ));
    }
    Ok(dest)
}

fn sync_strategy_field(name: Option<&str>) -> Result<SyncStrategy, ManifestError> {
    match name {
        None | Some("") | Some("rsync") => Ok(SyncStrategy::Rsync),
        Some("mv") => Ok(SyncStrategy::Mv),
        Some("release") => Ok(SyncStrategy::Release),
        Some(other) => Err(ManifestError::new(
            "sync_strategy",
            format!("invalid strategy name: {other} (use rsync, mv or release)"),
        )),
    }
}

/// `exclude_from`: a path inside the archive, never above it.
fn exclude_from_field(value: Option<String>) -> Result<Option<String>, ManifestError> {
    let exclude_from = value.filter(|s| !s.is_empty());
    if let Some(x) = &exclude_from
        && std::path::Path::new(x.trim_start_matches('/'))
            .components()
            .any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
    {
        return Err(ManifestError::new(
            "exclude_from",
            format!("{x} must be a path inside the archive (no `..`)"),
        ));
    }
    Ok(exclude_from)
}

fn check_src(s: &str) -> Result<(), ManifestError> {
    let url = url::Url::parse(s)
        .map_err(|e| ManifestError::new("src", format!("{s} is not a URL: {e}")))?;
    if !SOURCE_SCHEMES.contains(&url.scheme()) {
        return Err(ManifestError::new(
            "src",
            format!("URL scheme must be {SOURCE_SCHEMES_TEXT}: {s}"),
        ));
    }
    Ok(())
}

fn yaml_error(e: &serde_norway::Error) -> ManifestError {
    let text = super::manifest_limits::unquoted(&e.to_string());
    // serde_norway prefixes the path of the offending field (`commands.pre[0]: …`).
    match text.split_once(": ") {
        Some((path, reason)) if !path.contains(' ') && !path.is_empty() && path != "." => {
            ManifestError::new(path, reason)
        }
        _ => ManifestError::new("manifest", format!("not valid YAML: {text}")),
    }
}

/// `dest_mode` as YAML 1.1 reads it: a leading `0` or `0o` is octal, `0x` hex, anything
/// else decimal. The raw token is taken from the text because a YAML 1.2 parser has
/// already read `0711` as decimal 711.
fn dest_mode(text: &str, value: &serde_norway::Value) -> Result<u32, ManifestError> {
    let bad = |why: String| ManifestError::new("dest_mode", why);
    let token = raw_top_level_scalar(text, "dest_mode");
    let quoted = token
        .as_deref()
        .is_some_and(|t| t.starts_with('\'') || t.starts_with('"'));
    let mode = match (token.as_deref(), value) {
        (_, serde_norway::Value::String(s)) if quoted || token.is_none() => {
            return Err(bad(format!(
                "must be a number like 0755, not the string {s:?} (write it without quotes)"
            )));
        }
        (Some(tok), serde_norway::Value::Number(_) | serde_norway::Value::String(_)) => {
            let t = tok.trim_start_matches('+');
            let parsed = if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
                u32::from_str_radix(&o.replace('_', ""), 8)
            } else if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                u32::from_str_radix(&h.replace('_', ""), 16)
            } else if t.len() > 1 && t.starts_with('0') {
                u32::from_str_radix(&t.replace('_', ""), 8)
            } else {
                t.replace('_', "").parse::<u32>()
            };
            parsed.map_err(|_| {
                bad(format!(
                    "{tok} is not a valid mode (octal needs digits 0-7)"
                ))
            })?
        }
        (None, serde_norway::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(format!("{n} is not a valid mode")))?,
        (_, other) => return Err(bad(format!("must be a number like 0755, not {other:?}"))),
    };
    if mode > 0o7777 {
        return Err(bad(format!(
            "{mode:#o} is larger than 07777 (note: 711 without a leading 0 is decimal)"
        )));
    }
    Ok(mode)
}

/// The raw text of `key: value` on a top-level line, comments dropped.
fn raw_top_level_scalar(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let rest = line.strip_prefix(key)?.trim_start();
        let rest = rest.strip_prefix(':')?;
        let v = rest.split(" #").next().unwrap_or("").trim();
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// Expands `{{ … }}` actions the way stretcher's templating does: `env "A" "B" … "default"`,
/// `must_env "NAME"`, `json_escape "text"`, a bare string literal, and a `| json_escape`
/// pipe. Anything else is refused with the action named.
pub fn expand_template(text: &str, env: EnvLookup<'_>) -> Result<String, ManifestError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            ManifestError::new("template", "`{{` without a closing `}}`".to_string())
        })?;
        let action = after[..end].trim_matches('-').trim();
        out.push_str(&eval_action(action, env)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval_action(action: &str, env: EnvLookup<'_>) -> Result<String, ManifestError> {
    let err = |why: String| ManifestError::new("template", format!("{{{{ {action} }}}}: {why}"));
    let mut stages = action.split('|').map(str::trim);
    let first = stages.next().unwrap_or("");
    let words = split_words(first).map_err(&err)?;
    let mut value = match words.split_first() {
        Some((Word::Str(s), [])) => s.clone(),
        Some((Word::Ident(f), args)) => {
            let args: Vec<&str> = args
                .iter()
                .map(|w| match w {
                    Word::Str(s) => Ok(s.as_str()),
                    Word::Ident(i) => Err(err(format!("argument {i} must be a quoted string"))),
                })
                .collect::<Result<_, _>>()?;
            match (f.as_str(), args.as_slice()) {
                ("env", []) => return Err(err("env needs at least one argument".into())),
                ("env", names) => names
                    .iter()
                    .find_map(|n| env(n).filter(|v| !v.is_empty()))
                    .unwrap_or_else(|| names.last().map(|s| s.to_string()).unwrap_or_default()),
                ("must_env", [name]) => env(name)
                    .ok_or_else(|| err(format!("environment variable {name} is not defined")))?,
                ("must_env", _) => return Err(err("must_env takes one name".into())),
                ("json_escape", [s]) => json_escape(s),
                (other, _) => {
                    return Err(err(format!(
                        "unknown function {other} (env, must_env, json_escape; write {{{{\"{{{{\"}}}}\" for a literal)"
                    )));
                }
            }
        }
        _ => {
            return Err(err(
                "unsupported action (env, must_env, json_escape or a quoted string)".into(),
            ));
        }
    };
    for stage in stages {
        match stage {
            "json_escape" => value = json_escape(&value),
            other => return Err(err(format!("unsupported pipe {other}"))),
        }
    }
    Ok(value)
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or("")
        .to_string()
}

enum Word {
    Ident(String),
    Str(String),
}

fn split_words(s: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut v = String::new();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' && c == '"' {
                    match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(o) => v.push(o),
                        None => break,
                    }
                } else {
                    v.push(ch);
                }
            }
            if !closed {
                return Err("unterminated string".into());
            }
            words.push(Word::Str(v));
        } else {
            let mut v = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                v.push(ch);
                chars.next();
            }
            if !v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                return Err(format!("unsupported action `{v}`"));
            }
            words.push(Word::Ident(v));
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn p(text: &str) -> Result<Manifest, ManifestError> {
        parse(text, &no_env)
    }

    #[test]
    fn a_relative_src_is_resolved_against_the_manifest_url() {
        let sum = "e0840daaa97cd2cf2175f9e5d133ffb3324a2b93";
        let at = |src: &str, url: &str| {
            parse_at(
                &format!("src: {src}\nchecksum: {sum}\ndest: /srv/x\n"),
                &no_env,
                url,
            )
            .map(|m| m.src.unwrap_or_default())
        };
        let file = "file:///work/examples/hello.yml#corral-job=7";
        assert_eq!(
            at("hello.tar.gz", file).unwrap(),
            "file:///work/examples/hello.tar.gz"
        );
        assert_eq!(
            at("./sub/a.tgz", file).unwrap(),
            "file:///work/examples/sub/a.tgz"
        );
        // Leaving the manifest's folder resolves as a link would; the allow-list judges it.
        assert_eq!(at("../../etc/a.tgz", file).unwrap(), "file:///etc/a.tgz");
        assert_eq!(
            at("a.tgz", "https://u:secret@h.example/app/m.yml").unwrap(),
            "https://h.example/app/a.tgz",
            "no credentials carried over"
        );
        assert_eq!(
            at("a.tgz", "s3://bucket/app/m.yml").unwrap(),
            "s3://bucket/app/a.tgz"
        );
        // An absolute src stays as written.
        assert_eq!(
            at("https://other.example/a.tgz", file).unwrap(),
            "https://other.example/a.tgz"
        );
        // Without a manifest URL (parse), a relative src is still refused.
        let e = p(&format!(
            "src: hello.tar.gz\nchecksum: {sum}\ndest: /srv/x\n"
        ))
        .unwrap_err();
        assert_eq!(e.field, "src");
        // A resolved src of a bad scheme is refused like a written one.
        let e = at("a.tgz", "ftp://h.example/m.yml").unwrap_err();
        assert_eq!(e.field, "src", "{e}");
    }

    const BASE: &str = "src: s3://example.com/a.tgz\nchecksum: e0840daaa97cd2cf2175f9e5d133ffb3324a2b93\ndest: /srv/app\n";

    #[test]
    fn defaults() {
        let m = p(BASE).unwrap();
        assert_eq!(m.dest_mode, 0o755);
        assert_eq!(m.sync_strategy, SyncStrategy::Rsync);
        assert_eq!(m.checksum.unwrap().kind, HashKind::Sha1);
        assert!(m.excludes.is_empty() && m.exclude_from.is_none());
        assert_eq!(m.keep_releases, 5);
        assert_eq!(m.commands, Commands::default());
    }

    #[test]
    fn dest_mode_yaml11() {
        for (raw, want) in [
            ("0711", Ok(0o711)),
            ("0o751", Ok(0o751)),
            ("711", Ok(711)),
            ("0755 # comment", Ok(0o755)),
            ("0x1ed", Ok(0o755)),
            ("0789", Err("octal")),
            ("'0711'", Err("without quotes")),
            ("99999", Err("larger than 07777")),
            ("[1]", Err("must be a number")),
        ] {
            let r = p(&format!("{BASE}dest_mode: {raw}\n")).map(|m| m.dest_mode);
            match want {
                Ok(v) => assert_eq!(r, Ok(v), "{raw}"),
                Err(needle) => {
                    let e = r.unwrap_err();
                    assert_eq!(e.field, "dest_mode", "{raw}");
                    assert!(e.reason.contains(needle), "{raw}: {e}");
                }
            }
        }
    }

    #[test]
    fn checksum_rules() {
        for (len, kind) in [
            (32, HashKind::Md5),
            (40, HashKind::Sha1),
            (64, HashKind::Sha256),
            (128, HashKind::Sha512),
        ] {
            let c = Checksum::parse(&"A".repeat(len)).unwrap();
            assert_eq!((c.kind, c.hex.as_str()), (kind, "a".repeat(len).as_str()));
        }
        // An all-digit digest is a number to YAML; its text is what counts.
        let digits = BASE.replace("e0840daaa97cd2cf2175f9e5d133ffb3324a2b93", &"1".repeat(40));
        assert_eq!(p(&digits).unwrap().checksum.unwrap().hex, "1".repeat(40));
        assert!(
            Checksum::parse("abc")
                .unwrap_err()
                .reason
                .contains("not 3 characters")
        );
        assert!(
            Checksum::parse(&"g".repeat(40))
                .unwrap_err()
                .reason
                .contains("hex digit")
        );
        let e = p("src: file:///a.tar\ndest: /x\n").unwrap_err();
        assert_eq!(e.field, "checksum");
        let e = p("src: file:///a.tar\nchecksum: e0840daaa97cd2cf2175f9e5d133ffb3324a2b93\n")
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("dest", "is required when src is set")
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (extra, field, needle) in [
            (
                "sync_strategy: dummy\n",
                "sync_strategy",
                "invalid strategy name: dummy",
            ),
            ("excludes: '*.pid'\n", "excludes", "invalid type"),
            (
                "commands:\n  pre: echo hi\n",
                "commands.pre",
                "invalid type",
            ),
            (
                "exclude_from: ../../etc/passwd\n",
                "exclude_from",
                "inside the archive",
            ),
            ("keep_releases: 0\n", "keep_releases", "at least 1"),
        ] {
            let e = p(&format!("{BASE}{extra}")).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.reason.contains(needle), "{extra}: {e}");
        }
        assert_eq!(
            p("src: ftp://x/a\nchecksum: e0840daaa97cd2cf2175f9e5d133ffb3324a2b93\ndest: /x\n")
                .unwrap_err()
                .field,
            "src"
        );
        assert_eq!(
            p("src: s3://x/a\nchecksum: e0840daaa97cd2cf2175f9e5d133ffb3324a2b93\ndest: rel/x\n")
                .unwrap_err()
                .field,
            "dest"
        );
        assert_eq!(p("").unwrap_err().field, "manifest");
        assert_eq!(p("::: [").unwrap_err().field, "manifest");
    }

    #[test]
    fn commands_only_and_null_commands() {
        let m = p("commands:\n  pre:\n    - echo hi\n").unwrap();
        assert!(m.src.is_none() && m.dest.is_none());
        assert_eq!(m.commands.pre, vec!["echo hi"]);
        assert!(p(&format!("{BASE}commands:\n")).is_ok());
        let m = p(&format!(
            "{BASE}sync_strategy: release\nkeep_releases: 3\nunknown_key: 1\n"
        ))
        .unwrap();
        assert_eq!(
            (m.sync_strategy, m.keep_releases),
            (SyncStrategy::Release, 3)
        );
    }

    #[test]
    fn templates() {
        let env = |n: &str| match n {
            "SRC" => Some("s3://example.com/path/to/archive.tar.gz".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand_template(r#"{{ env "DEST" "/home/stretcher/app" }}"#, &env).unwrap(),
            "/home/stretcher/app"
        );
        assert_eq!(
            expand_template(r#"{{ env "EMPTY" "SRC" "x" }}"#, &env).unwrap(),
            "s3://example.com/path/to/archive.tar.gz"
        );
        assert_eq!(
            expand_template(r#"{{ must_env "EMPTY" }}"#, &env).unwrap(),
            ""
        );
        assert_eq!(
            expand_template(r#"a{{ json_escape "q\"x" }}b"#, &env).unwrap(),
            r#"aq\"xb"#
        );
        assert_eq!(
            expand_template(r#"{{"{{"}}.Id}}"#, &env).unwrap(),
            "{{.Id}}"
        );
        let e = expand_template(r#"{{ must_env "NOPE" }}"#, &env).unwrap_err();
        assert!(e.reason.contains("NOPE is not defined"), "{e}");
        assert!(
            expand_template("{{.Id}}", &env)
                .unwrap_err()
                .reason
                .contains("unsupported")
        );
        assert!(
            expand_template("{{ env", &env)
                .unwrap_err()
                .reason
                .contains("closing")
        );
        assert!(
            expand_template(r#"{{ exec "rm" }}"#, &env)
                .unwrap_err()
                .reason
                .contains("unknown function")
        );
    }
}
