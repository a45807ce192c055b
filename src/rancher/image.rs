//! Docker image references and the tag rule of `/upgrade image`.
//!
//! rancher-service-updater split a reference at its last `:` and compared the pieces
//! byte-wise (reference/rancher-tools.md §3): `10.0 → 9.0` was an upgrade, `latest →
//! latest` was not, and `myorg/apx` counted as `myorg/app` because the repository lost
//! its last character. This module reads a reference the way Docker does and compares
//! tags as versions.
//!
//! * [`ImageRef::parse`] — `[docker:][registry[:port]/]namespace/…/name[:tag][@digest]`.
//!   The first path segment is a registry only if it holds a `.` or a `:` or is
//!   `localhost` (Docker's rule, and Cattle's: reference/rancher-api.md §10). Docker Hub is
//!   implicit: `nginx`, `library/nginx`, `docker.io/library/nginx` and
//!   `index.docker.io/library/nginx` are the same image.
//! * [`ImageRef::same_image`] — equal registry and repository after that normalisation;
//!   tag and digest do not matter.
//! * [`decide`] — the updater's README table plus version ordering; see its docs.

use std::cmp::Ordering;
use std::fmt;

/// Docker Hub's canonical registry name.
pub(crate) const DOCKER_HUB: &str = "docker.io";

/// The longest repository name Docker accepts (registry included).
const MAX_NAME: usize = 255;
/// The longest tag Docker accepts.
const MAX_TAG: usize = 128;

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("the image reference is empty")]
    Empty,
    #[error(
        "`{0}` has an invalid tag: a tag is 1–128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
    )]
    BadTag(String),
    #[error("`{0}` has an invalid digest: expected `algorithm:hex`, e.g. `sha256:…`")]
    BadDigest(String),
    #[error("`{0}` has an invalid registry: expected `host` or `host:port`")]
    BadRegistry(String),
    #[error(
        "`{reference}` has an invalid path component `{component}`: lowercase letters and digits, separated by `.`, `_`, `__` or dashes"
    )]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("`{0}` is longer than {MAX_NAME} characters")]
    TooLong(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ImageRef {
    /// Registry host (and port), lowercased; `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path; Docker Hub's official images carry `library/`.
    pub repository: String,
    /// The tag, if one was written.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if one was written.
    pub digest: Option<String>,
    /// The name as written (without `docker:`, tag or digest), so an upgrade can keep the
    /// service's own spelling of it.
    pub written_name: String,
}

impl ImageRef {
    /// Parses a reference, with or without Rancher's `docker:` prefix.
    pub(crate) fn parse(input: &str) -> Result<ImageRef, ImageError> {
        let s = input.trim();
        let s = s.strip_prefix("docker:").unwrap_or(s);
        if s.is_empty() {
            return Err(ImageError::Empty);
        }
        let shown = shorten(s);
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                if !valid_digest(d) {
                    return Err(ImageError::BadDigest(shown));
                }
                (rest, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last `:` only if no `/` comes after it (else the `:` is a
        // registry port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ImageError::BadTag(shown));
        }
        if name.is_empty() {
            return Err(ImageError::Empty);
        }
        if name.len() > MAX_NAME {
            return Err(ImageError::TooLong(shown));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_registry(first) {
                    return Err(ImageError::BadRegistry(shown));
                }
                (first.to_ascii_lowercase(), path)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        for component in path.split('/') {
            if !valid_component(component) {
                return Err(ImageError::BadComponent {
                    reference: shown,
                    component: shorten(component),
                });
            }
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                DOCKER_HUB.to_string()
            }
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
            written_name: name.to_string(),
        })
    }

    /// True when both name the same image: same registry and repository after
    /// normalisation, whatever their tags and digests.
    pub(crate) fn same_image(&self, other: &ImageRef) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }

    /// The tag Docker pulls: the written one, or `latest` when neither tag nor digest was
    /// given.
    pub(crate) fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// This image under its own written name, with `wanted`'s tag and digest: what goes
    /// into the service's `imageUuid` (with `docker:` in front).
    pub(crate) fn retagged(&self, wanted: &ImageRef) -> String {
        let mut s = self.written_name.clone();
        if let Some(t) = &wanted.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &wanted.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The tag and digest as people read them (`2.0`, `2.0@sha256:…`, `@sha256:…`).
    pub(crate) fn version_text(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => format!("{t}@{}", short_digest(d)),
            (Some(t), None) => t.clone(),
            (None, Some(d)) => format!("@{}", short_digest(d)),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for ImageRef {
    /// The fully normalised form: `docker.io/library/nginx:1.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn short_digest(d: &str) -> &str {
    // `sha256:` + 12 hex digits, like `docker images`.
    let end = d.find(':').map(|i| i + 13).unwrap_or(d.len()).min(d.len());
    d.get(..end).unwrap_or(d)
}

/// Input echoed in an error is kept short and printable.
fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TAG
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_digest(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else {
        return false;
    };
    let algo_ok = !algo.is_empty()
        && algo
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && algo.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'_' | b'-')
        });
    let hex_ok = hex.len() >= 32
        && hex.len() <= 128
        && hex
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algo_ok
        && hex_ok
        && (algo != "sha256"
            || (hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    host_ok && port_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` — Docker's path-component grammar.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "."
            || sep == "_"
            || sep == "__"
            || (!sep.is_empty() && sep.bytes().all(|x| x == b'-'));
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A tag read as a version: `v1.2.3-rc.1_4` = core `[1,2,3]`, pre-release `rc.1`, build `4`.
///
/// * an optional `v`/`V` in front is ignored, so `v1.2` and `1.2` are the same version;
/// * the core is one or more dot-separated numbers, compared numerically and padded with
///   zeros (`1.0` = `1.0.0`; numbers of any length, no overflow);
/// * `-…` is a pre-release, ordered below the release as in SemVer (`1.0-rc1 < 1.0`;
///   numeric identifiers numerically, others as text, numbers below text);
/// * `_N` (Docker tags cannot hold `+`) is a build number: `1.2.3_2 > 1.2.3_1 > 1.2.3`.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    core: Vec<String>,
    pre: Vec<String>,
    build: Option<String>,
}

impl Version {
    /// Reads a tag as a version, or `None` when it is not one (`latest`, `stable`,
    /// `abc123f`, `1..2`).
    pub(crate) fn parse(tag: &str) -> Option<Version> {
        let s = tag
            .strip_prefix('v')
            .or_else(|| tag.strip_prefix('V'))
            .unwrap_or(tag);
        let (s, build) = match s.split_once('_') {
            Some((v, b)) => {
                if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                (v, Some(trim_zeros(b).to_string()))
            }
            None => (s, None),
        };
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        if core.is_empty() {
            return None;
        }
        let mut nums = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            nums.push(trim_zeros(part).to_string());
        }
        // Trailing zeros do not change a version: 1.0 = 1.0.0 = 1.
        while nums.len() > 1 && nums.last().is_some_and(|n| n == "0") {
            nums.pop();
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<String> = p.split(['.', '-']).map(str::to_string).collect();
                if ids
                    .iter()
                    .any(|i| i.is_empty() || !i.bytes().all(|c| c.is_ascii_alphanumeric()))
                {
                    return None;
                }
                ids
            }
        };
        Some(Version {
            core: nums,
            pre,
            build,
        })
    }
}

fn trim_zeros(n: &str) -> &str {
    let t = n.trim_start_matches('0');
    if t.is_empty() { "0" } else { t }
}

/// Compares two digit strings without leading zeros as numbers of any size.
fn cmp_num(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn cmp_pre_id(a: &str, b: &str) -> Ordering {
    let an = a.bytes().all(|c| c.is_ascii_digit());
    let bn = b.bytes().all(|c| c.is_ascii_digit());
    match (an, bn) {
        (true, true) => cmp_num(trim_zeros(a), trim_zeros(b)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.core.len().max(other.core.len());
        for i in 0..n {
            let a = self.core.get(i).map(String::as_str).unwrap_or("0");
            let b = other.core.get(i).map(String::as_str).unwrap_or("0");
            match cmp_num(a, b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        let pre = match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let mut o = Ordering::Equal;
                for (a, b) in self.pre.iter().zip(&other.pre) {
                    o = cmp_pre_id(a, b);
                    if o != Ordering::Equal {
                        break;
                    }
                }
                if o == Ordering::Equal {
                    self.pre.len().cmp(&other.pre.len())
                } else {
                    o
                }
            }
        };
        pre.then_with(|| {
            let a = self.build.as_deref().unwrap_or("0");
            let b = other.build.as_deref().unwrap_or("0");
            cmp_num(a, b)
        })
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What to do with one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Upgrade,
    /// Left alone, with the reason people see in the plan.
    Skip(String),
}

/// The tag rule: should a service running `current` move to `wanted`? (Same image is
/// checked by the caller.)
///
/// The updater's README table is the contract: `1.0→2.0` yes, `2.0→1.3` no,
/// `1.0→latest` yes, `latest→latest` yes (a re-deploy that pulls the moving tag again),
/// `latest→1.0` no. A missing tag is `latest`, as in Docker. Tags that read as
/// [`Version`]s compare as versions; an equal version is skipped (`already at`), unless
/// the wanted reference pins a different digest. Anything else cannot be compared and is
/// skipped with that reason, unless `force` — which only overrides "cannot compare",
/// never a downgrade.
pub(crate) fn decide(current: &ImageRef, wanted: &ImageRef, force: bool) -> Decision {
    let cur_tag = current.effective_tag();
    let want_tag = wanted.effective_tag();
    let digest_differs = wanted.digest.is_some() && wanted.digest != current.digest;
    if want_tag.is_none() {
        // A bare digest: nothing to order by.
        return if !digest_differs {
            Decision::Skip(format!("already at {}", current.version_text()))
        } else if force {
            Decision::Upgrade
        } else {
            Decision::Skip(format!(
                "cannot compare {} with digest {}: no tag to order by (use --force)",
                current.version_text(),
                wanted.version_text()
            ))
        };
    }
    if want_tag == Some("latest") {
        return Decision::Upgrade;
    }
    if cur_tag == Some("latest") {
        return Decision::Skip(format!(
            "runs `latest`, which counts as newer than `{}`",
            wanted.version_text()
        ));
    }
    let (Some(ct), Some(wt)) = (cur_tag, want_tag) else {
        return if force {
            Decision::Upgrade
        } else {
            Decision::Skip(format!(
                "cannot compare {} with {}: the running image is pinned by digest only (use --force)",
                current.version_text(),
                wanted.version_text()
            ))
        };
    };
    match (Version::parse(ct), Version::parse(wt)) {
        (Some(c), Some(w)) => match w.cmp(&c) {
            Ordering::Greater => Decision::Upgrade,
            Ordering::Equal if digest_differs => Decision::Upgrade,
            Ordering::Equal => Decision::Skip(format!("already at {}", current.version_text())),
            Ordering::Less => Decision::Skip(format!("runs {ct}, newer than {wt}")),
        },
        _ if ct == wt && !digest_differs => {
            Decision::Skip(format!("already at {}", current.version_text()))
        }
        _ if force => Decision::Upgrade,
        (c, w) => {
            let which = match (c.is_some(), w.is_some()) {
                (false, false) => format!("neither `{ct}` nor `{wt}` reads as a version"),
                (false, true) => format!("`{ct}` does not read as a version"),
                _ => format!("`{wt}` does not read as a version"),
            };
            Decision::Skip(format!("cannot compare tags: {which} (use --force)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn d(cur: &str, want: &str) -> Decision {
        decide(&r(cur), &r(want), false)
    }

    #[test]
    fn parse_forms() {
        let i = r(
            "docker:registry.io:5000/team/sub/app:1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        assert_eq!(i.registry, "registry.io:5000");
        assert_eq!(i.repository, "team/sub/app");
        assert_eq!(i.tag.as_deref(), Some("1.2"));
        assert!(
            i.digest
                .as_deref()
                .is_some_and(|d| d.starts_with("sha256:0123"))
        );
        assert_eq!(i.written_name, "registry.io:5000/team/sub/app");

        let i = r("nginx");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_deref()),
            ("docker.io", "library/nginx", None)
        );
        assert_eq!(i.effective_tag(), Some("latest"));
        assert_eq!(i.to_string(), "docker.io/library/nginx");

        let i = r("localhost/app:v1");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str()),
            ("localhost", "app")
        );
        let i = r("localhost:5000/app");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_deref()),
            ("localhost:5000", "app", None)
        );
        let i = r("myorg/app:2.0");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str()),
            ("docker.io", "myorg/app")
        );
        let i = r("nexus.example.com/frontend:v1.2.3_1");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_deref()),
            ("nexus.example.com", "frontend", Some("v1.2.3_1"))
        );
        let i = r("Registry.IO:5000/app");
        assert_eq!(i.registry, "registry.io:5000");
    }

    #[test]
    fn docker_hub_is_implicit() {
        for a in [
            "nginx",
            "library/nginx",
            "docker.io/library/nginx",
            "index.docker.io/library/nginx",
            "docker:nginx:1",
            "docker.io/nginx",
        ] {
            assert!(r(a).same_image(&r("nginx:1.25")), "{a}");
        }
        assert!(r("myorg/app").same_image(&r("docker.io/myorg/app:3")));
        assert!(!r("myorg/app").same_image(&r("library/app")));
    }

    #[test]
    fn different_images() {
        // The updater's "last character ignored" bug.
        assert!(!r("myorg/apx:1.0").same_image(&r("myorg/app:2.0")));
        assert!(!r("registry.io:5000/app").same_image(&r("registry.io:5001/app")));
        assert!(!r("registry.io/app").same_image(&r("app")));
        assert!(!r("myorg/app").same_image(&r("myorg/app/sub")));
        assert!(!r("quay.io/myorg/app").same_image(&r("myorg/app")));
    }

    #[test]
    fn malformed_references() {
        for (s, want) in [
            ("", "empty"),
            ("docker:", "empty"),
            ("   ", "empty"),
            ("app:", "invalid tag"),
            ("app:.1", "invalid tag"),
            ("app:1 2", "invalid tag"),
            ("MyOrg/app", "path component"),
            ("a//b", "path component"),
            ("app-", "path component"),
            ("a/b/../c", "path component"),
            ("app@sha256:abc", "invalid digest"),
            ("app@", "invalid digest"),
            (
                "app@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                "invalid digest",
            ),
            ("reg.io:99999/app", "invalid registry"),
            ("reg.io:/app", "invalid registry"),
            ("-reg.io/app", "invalid registry"),
            (":1.0", "empty"),
        ] {
            let e = ImageRef::parse(s).expect_err(s).to_string();
            assert!(e.contains(want), "{s:?}: {e}");
        }
        let long = format!("{}/app", "a".repeat(300));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageError::TooLong(_))
        ));
        let long_tag = format!("app:{}", "1".repeat(129));
        assert!(matches!(
            ImageRef::parse(&long_tag),
            Err(ImageError::BadTag(_))
        ));
        // Errors echo a short, printable form.
        let e = ImageRef::parse(&format!("app:\u{7}{}", "x".repeat(200)))
            .expect_err("bad")
            .to_string();
        assert!(e.len() < 300 && !e.contains('\u{7}'), "{e}");
    }

    #[test]
    fn readme_table() {
        assert_eq!(d("myorg/app:1.0", "myorg/app:2.0"), Decision::Upgrade);
        assert!(matches!(
            d("myorg/app:2.0", "myorg/app:1.3"),
            Decision::Skip(_)
        ));
        assert_eq!(d("myorg/app:1.0", "myorg/app:latest"), Decision::Upgrade);
        assert_eq!(d("myorg/app:latest", "myorg/app:latest"), Decision::Upgrade);
        assert!(matches!(
            d("myorg/app:latest", "myorg/app:1.0"),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn versions_compare_as_versions() {
        assert_eq!(d("app:1.9", "app:1.10"), Decision::Upgrade);
        assert_eq!(d("app:9.0", "app:10.0"), Decision::Upgrade);
        assert_eq!(
            d("app:10.0", "app:9.0"),
            Decision::Skip("runs 10.0, newer than 9.0".into())
        );
        assert_eq!(d("app:v1.2", "app:1.3"), Decision::Upgrade);
        assert_eq!(d("app:v1.0", "app:1.1"), Decision::Upgrade);
        assert_eq!(d("app:1.0-rc1", "app:1.0"), Decision::Upgrade);
        assert!(matches!(d("app:1.0", "app:1.0-rc1"), Decision::Skip(_)));
        assert_eq!(d("app:1.0-rc.2", "app:1.0-rc.10"), Decision::Upgrade);
        assert_eq!(d("app:1.0-alpha", "app:1.0-beta"), Decision::Upgrade);
        assert_eq!(d("app:1.2.3_1", "app:1.2.3_2"), Decision::Upgrade);
        assert_eq!(
            d("app:1.0", "app:1.0.0"),
            Decision::Skip("already at 1.0".into())
        );
        assert_eq!(
            d("app:1.0", "app:1.0"),
            Decision::Skip("already at 1.0".into())
        );
        assert_eq!(
            d(
                "app:99999999999999999999999",
                "app:100000000000000000000000"
            ),
            Decision::Upgrade
        );
        assert_eq!(d("app:007", "app:8"), Decision::Upgrade);
    }

    #[test]
    fn untagged_means_latest() {
        // The updater skipped (or panicked on) these.
        assert_eq!(d("docker:myorg/app", "myorg/app:latest"), Decision::Upgrade);
        assert!(matches!(
            d("docker:myorg/app", "myorg/app:2.0"),
            Decision::Skip(_)
        ));
        assert_eq!(d("myorg/app:1.0", "myorg/app"), Decision::Upgrade);
        assert_eq!(
            d("registry.io:5000/app:1.0", "registry.io:5000/app:2.0"),
            Decision::Upgrade
        );
    }

    #[test]
    fn uncomparable_needs_force() {
        let Decision::Skip(why) = d("app:abc123f", "app:def456a") else {
            panic!("skip expected")
        };
        assert!(
            why.contains("cannot compare") && why.contains("--force"),
            "{why}"
        );
        assert_eq!(
            decide(&r("app:abc123f"), &r("app:def456a"), true),
            Decision::Upgrade
        );
        let Decision::Skip(why) = d("app:stable", "app:1.0") else {
            panic!()
        };
        assert!(why.contains("`stable` does not read"), "{why}");
        assert_eq!(
            d("app:stable", "app:stable"),
            Decision::Skip("already at stable".into())
        );
        // --force never turns a downgrade into an upgrade.
        assert!(matches!(
            decide(&r("app:2.0"), &r("app:1.0"), true),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn digests() {
        let a = "sha256:".to_string() + &"a".repeat(64);
        let b = "sha256:".to_string() + &"b".repeat(64);
        assert_eq!(
            d(&format!("app:1.0@{a}"), &format!("app:1.0@{b}")),
            Decision::Upgrade
        );
        assert!(matches!(
            d(&format!("app:1.0@{a}"), &format!("app:1.0@{a}")),
            Decision::Skip(_)
        ));
        assert!(matches!(
            d("app:1.0", &format!("app@{b}")),
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(&r("app:1.0"), &r(&format!("app@{b}")), true),
            Decision::Upgrade
        );
        assert!(matches!(
            d(&format!("app@{a}"), &format!("app@{a}")),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn retagged_keeps_the_services_spelling() {
        let cur = r("docker:index.docker.io/library/nginx:1.0");
        assert_eq!(
            cur.retagged(&r("nginx:1.1")),
            "index.docker.io/library/nginx:1.1"
        );
        let cur = r("docker:registry.io:5000/app:1.0");
        assert_eq!(
            cur.retagged(&r("registry.io:5000/app:2.0")),
            "registry.io:5000/app:2.0"
        );
    }

    #[test]
    fn not_versions() {
        for t in [
            "latest", "stable", "abc123f", "1..2", ".1", "1.", "v", "1.0-", "1.0_x", "1.0-rc!",
            "-1", "vv1",
        ] {
            assert_eq!(Version::parse(t), None, "{t}");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?"
    }

    fn reference() -> impl Strategy<Value = (Option<String>, Vec<String>, Option<String>)> {
        (
            proptest::option::of(
                (
                    "[a-z][a-z0-9]{0,6}\\.(io|com)",
                    proptest::option::of(1u16..=65535),
                )
                    .prop_map(|(h, p)| match p {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    }),
            ),
            proptest::collection::vec(component(), 1..4),
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        )
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = ImageRef::parse(&s);
            let _ = Version::parse(&s);
        }

        #[test]
        fn written_references_round_trip((reg, path, tag) in reference()) {
            let mut s = String::new();
            if let Some(r) = &reg { s.push_str(r); s.push('/'); }
            s.push_str(&path.join("/"));
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            let a = ImageRef::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(a.tag.as_deref(), tag.as_deref());
            prop_assert_eq!(&a.written_name, &s[..s.len() - tag.as_ref().map_or(0, |t| t.len() + 1)]);
            // Normalised form names the same image, with the same tag.
            let b = ImageRef::parse(&a.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(a.same_image(&b));
            prop_assert_eq!(&a, &ImageRef { written_name: a.written_name.clone(), ..b.clone() });
            // The docker: prefix changes nothing.
            let c = ImageRef::parse(&format!("docker:{s}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&a, &c);
            // Without a registry it is Docker Hub, and spelling docker.io out is the same image.
            if reg.is_none() && !path[0].contains('.') && path.len() > 1 || reg.is_none() && path.len() == 1 {
                let hub = ImageRef::parse(&format!("docker.io/{s}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(a.same_image(&hub));
            }
        }

        #[test]
        fn different_repositories_differ((reg, path, _t) in reference(), extra in component()) {
            let base = match &reg { Some(r) => format!("{r}/{}", path.join("/")), None => path.join("/") };
            let a = ImageRef::parse(&base).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = ImageRef::parse(&format!("{base}{extra}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!a.same_image(&b));
            let c = ImageRef::parse(&format!("{base}/{extra}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!a.same_image(&c));
        }

        #[test]
        fn versions_order_like_number_tuples(a in proptest::collection::vec(0u32..200, 1..5), b in proptest::collection::vec(0u32..200, 1..5), va in any::<bool>(), vb in any::<bool>()) {
            let text = |v: &[u32], p: bool| format!("{}{}", if p { "v" } else { "" }, v.iter().map(u32::to_string).collect::<Vec<_>>().join("."));
            let pad = |v: &[u32]| { let mut v = v.to_vec(); v.resize(5, 0); v };
            let expected = pad(&a).cmp(&pad(&b));
            let (ta, tb) = (text(&a, va), text(&b, vb));
            let got = Version::parse(&ta).zip(Version::parse(&tb)).map(|(x, y)| x.cmp(&y));
            prop_assert_eq!(got, Some(expected));
            let dec = decide(&r(&format!("app:{ta}")), &r(&format!("app:{tb}")), false);
            prop_assert_eq!(dec == Decision::Upgrade, expected == Ordering::Less);
        }

        #[test]
        fn pre_releases_sort_below_their_release(v in proptest::collection::vec(0u32..50, 1..4), pre in "[a-z]{1,5}(\\.[0-9]{1,3})?") {
            let core = v.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let rel = Version::parse(&core);
            let pr = Version::parse(&format!("{core}-{pre}"));
            prop_assert!(rel.is_some() && pr.is_some());
            prop_assert!(pr < rel);
        }

        #[test]
        fn never_upgrade_both_ways(a in "[a-z0-9._-]{1,8}", b in "[a-z0-9._-]{1,8}", force in any::<bool>()) {
            // Whatever the tags, at most one direction is an upgrade unless one side is
            // `latest` (always re-deployable) or --force overrides "cannot compare".
            if let (Ok(x), Ok(y)) = (ImageRef::parse(&format!("app:{a}")), ImageRef::parse(&format!("app:{b}"))) {
                let there = decide(&x, &y, force) == Decision::Upgrade;
                let back = decide(&y, &x, force) == Decision::Upgrade;
                let comparable = Version::parse(&a).is_some() && Version::parse(&b).is_some();
                if comparable && a != "latest" && b != "latest" {
                    prop_assert!(!(there && back));
                }
            }
        }

        #[test]
        fn version_order_is_total_and_consistent(a in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-z0-9]{1,3}(\\.[a-z0-9]{1,3})?)?(_[0-9]{1,2})?", b in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-z0-9]{1,3})?(_[0-9]{1,2})?") {
            let (Some(x), Some(y)) = (Version::parse(&a), Version::parse(&b)) else {
                return Err(TestCaseError::fail(format!("{a} or {b} did not parse")));
            };
            prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            prop_assert_eq!(x.cmp(&y) == Ordering::Equal, x == y);
        }
    }
}
