//! Which stacks a catalog upgrade touches (reference/rancher-api.md §7–§8,
//! reference/cowpoke.md §6).
//!
//! A catalog stack's `externalId` is `catalog://<catalog>:<template>:<revision>`; the
//! revision is the version folder's name, normally an integer (`0`, `1`, …), sometimes a
//! semantic version (`v0.0.3`). A stack is upgraded when it comes from the same catalog
//! and template at a **lower** version:
//!
//! * both revisions integers → integer order (`9 < 10`, go-cowpoke's rule);
//! * otherwise the semantic versions (the catalog's version strings for those
//!   revisions when known, else the revisions themselves, read leniently: `v1.2` is
//!   `1.2.0`).
//!
//! Anything else — equal or higher, another template, a hand-made stack, an externalId
//! that does not parse — is not upgradable and gets a reason; nothing here panics.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// `<catalog>:<template>:<revision>`, from a template-version id or a stack externalId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogId {
    pub catalog: String,
    pub template: String,
    pub revision: String,
}

impl CatalogId {
    /// Parses a template-version id `catalog:template:revision` (three non-empty parts).
    pub(crate) fn parse(id: &str) -> Option<CatalogId> {
        let mut parts = id.split(':');
        let (Some(c), Some(t), Some(r), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if [c, t, r]
            .iter()
            .any(|p| p.trim().is_empty() || p.chars().any(char::is_whitespace))
        {
            return None;
        }
        Some(CatalogId {
            catalog: c.to_string(),
            template: t.to_string(),
            revision: r.to_string(),
        })
    }

    /// The stack externalId for this version: `catalog://<id>`.
    pub(crate) fn external_id(&self) -> String {
        format!("catalog://{}", self)
    }
}

impl std::fmt::Display for CatalogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.catalog, self.template, self.revision)
    }
}

/// What a stack's externalId says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `""`: made by hand.
    Handmade,
    /// Another scheme (`system://`, `kubernetes://`, no `://` at all).
    NotCatalog(String),
    /// `catalog://` followed by something that is not `catalog:template:revision`.
    Unparseable(String),
    Catalog(CatalogId),
}

/// Reads a stack's externalId.
pub(crate) fn origin(external_id: &str) -> Origin {
    let e = external_id.trim();
    if e.is_empty() {
        return Origin::Handmade;
    }
    match e.strip_prefix("catalog://") {
        None => Origin::NotCatalog(e.to_string()),
        Some(rest) => match CatalogId::parse(rest) {
            Some(id) => Origin::Catalog(id),
            None => Origin::Unparseable(e.to_string()),
        },
    }
}

/// A semantic version read leniently: a leading `v` is dropped and a missing minor or
/// patch is zero (`v1.2-rc1` is `1.2.0-rc1`).
pub(crate) fn lenient_semver(s: &str) -> Option<semver::Version> {
    let s = s.trim();
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    let split = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(split);
    let nums: Vec<&str> = core.split('.').collect();
    if nums.is_empty()
        || nums.len() > 3
        || nums
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = nums.join(".");
    for _ in nums.len()..3 {
        padded.push_str(".0");
    }
    semver::Version::parse(&format!("{padded}{rest}")).ok()
}

/// Orders two versions of one template: integer revisions by number; otherwise their
/// semantic versions (`*_version` when known, else the revision). `None` when they
/// cannot be compared.
pub(crate) fn compare(
    have_rev: &str,
    have_version: Option<&str>,
    want_rev: &str,
    want_version: Option<&str>,
) -> Option<Ordering> {
    if let (Ok(a), Ok(b)) = (have_rev.parse::<u64>(), want_rev.parse::<u64>()) {
        return Some(a.cmp(&b));
    }
    // A folder id (an integer) is not a version: it only compares through the catalog's
    // version string for it.
    let side = |rev: &str, version: Option<&str>| {
        version.and_then(lenient_semver).or_else(|| {
            if rev.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                lenient_semver(rev)
            }
        })
    };
    let a = side(have_rev, have_version)?;
    let b = side(want_rev, want_version)?;
    Some(a.cmp_precedence(&b))
}

/// The target of a catalog upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The template-version id (`library:web:12`).
    pub id: CatalogId,
    /// Its version string (`2.0.0`).
    pub version: String,
    /// Revision → version string, for every version of the template (from its
    /// `versionLinks`), to name versions and compare non-integer revisions.
    pub versions: BTreeMap<String, String>,
}

impl Target {
    /// The version string of a revision, or `rev N` when the catalog does not list it.
    pub(crate) fn label(&self, revision: &str) -> String {
        match self.versions.get(revision) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => format!("rev {revision}"),
        }
    }
}

/// Whether a stack is upgraded, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Upgrade it, from this version (a label for people).
    Upgrade {
        from: String,
    },
    Skip(String),
}

/// Decides for one stack.
pub(crate) fn classify(external_id: &str, target: &Target) -> Verdict {
    let id = match origin(external_id) {
        Origin::Handmade => return Verdict::Skip("not created from a catalog template".into()),
        Origin::NotCatalog(e) => {
            return Verdict::Skip(format!("not a catalog stack (`{}`)", short(&e)));
        }
        Origin::Unparseable(e) => {
            return Verdict::Skip(format!("unparseable externalId `{}`", short(&e)));
        }
        Origin::Catalog(id) => id,
    };
    if id.catalog != target.id.catalog || id.template != target.id.template {
        return Verdict::Skip(format!(
            "from another template (`{}:{}`)",
            short(&id.catalog),
            short(&id.template)
        ));
    }
    let have = target.versions.get(&id.revision).map(String::as_str);
    match compare(
        &id.revision,
        have,
        &target.id.revision,
        Some(&target.version),
    ) {
        Some(Ordering::Less) => Verdict::Upgrade {
            from: target.label(&id.revision),
        },
        Some(Ordering::Equal) => {
            Verdict::Skip(format!("already at {}", target.label(&id.revision)))
        }
        Some(Ordering::Greater) => Verdict::Skip(format!(
            "at a newer version ({})",
            target.label(&id.revision)
        )),
        None => Verdict::Skip(format!(
            "version `{}` cannot be compared with `{}`",
            short(&id.revision),
            short(&target.id.revision)
        )),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        return s.to_string();
    }
    let mut t: String = s.chars().take(80).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(id: &str, version: &str) -> Target {
        Target {
            id: CatalogId::parse(id).unwrap(),
            version: version.into(),
            versions: BTreeMap::new(),
        }
    }

    fn upgradable(ext: &str, t: &Target) -> bool {
        matches!(classify(ext, t), Verdict::Upgrade { .. })
    }

    /// go-cowpoke's IsUpgradableTo specs (reference/cowpoke.md §7), plus the cases it
    /// got wrong or did not cover.
    #[test]
    fn cowpoke_specs() {
        let t = target("catalog:template:2", "2.0.0");
        assert!(upgradable("catalog://catalog:template:1", &t));
        assert!(!upgradable("a-weird-id", &t));
        assert!(!upgradable("", &t));
        assert!(!upgradable(
            "catalog://catlog:template:1",
            &target("catalog1:template:2", "2")
        ));
        assert!(!upgradable(
            "catalog://catalog:template1:1",
            &target("catalog:template2:2", "2")
        ));
        assert!(!upgradable(
            "catalog://catalog:template:2",
            &target("catalog:template:1", "1")
        ));
        assert!(!upgradable("catalog://catalog:template:taco", &t));
        assert!(CatalogId::parse("").is_none());
        assert!(CatalogId::parse("some-weird-thing").is_none());
        assert!(CatalogId::parse("partially:bad-6").is_none());
        // Not covered upstream: equal is not lower; 9 < 10 by number.
        assert_eq!(
            classify("catalog://catalog:template:2", &t),
            Verdict::Skip("already at rev 2".into())
        );
        assert!(upgradable("catalog://c:t:9", &target("c:t:10", "10")));
        // go-cowpoke crashed on this one.
        assert_eq!(
            classify("catalog://library", &t),
            Verdict::Skip("unparseable externalId `catalog://library`".into())
        );
        assert!(
            matches!(classify("catalog://a:b:c:d", &t), Verdict::Skip(r) if r.starts_with("unparseable"))
        );
        assert!(
            matches!(classify("system://ipsec", &t), Verdict::Skip(r) if r.starts_with("not a catalog"))
        );
    }

    #[test]
    fn semantic_versions_when_not_integers() {
        let mut t = target("library:web:v1.10.0", "1.10.0");
        assert!(upgradable("catalog://library:web:v1.9.0", &t));
        assert!(!upgradable("catalog://library:web:v1.10.0", &t));
        assert!(!upgradable("catalog://library:web:v2", &t));
        // Mixed: an integer folder against a semver folder uses the catalog's versions.
        t.versions.insert("3".into(), "1.2.0".into());
        assert_eq!(
            classify("catalog://library:web:3", &t),
            Verdict::Upgrade {
                from: "1.2.0".into()
            }
        );
        assert!(
            matches!(classify("catalog://library:web:4", &t), Verdict::Skip(r) if r.contains("cannot be compared"))
        );
        assert_eq!(lenient_semver("v1.2-rc1").unwrap().to_string(), "1.2.0-rc1");
        assert_eq!(
            lenient_semver("3.2-rancher1").unwrap().to_string(),
            "3.2.0-rancher1"
        );
        assert!(lenient_semver("1.2.3.4").is_none());
        assert!(lenient_semver("latest").is_none());
    }

    #[test]
    fn labels_use_catalog_versions() {
        let mut t = target("library:web:2", "2.0.0");
        t.versions.insert("1".into(), "1.0.0".into());
        t.versions.insert("2".into(), "2.0.0".into());
        assert_eq!(
            classify("catalog://library:web:1", &t),
            Verdict::Upgrade {
                from: "1.0.0".into()
            }
        );
        assert_eq!(
            classify("catalog://library:web:0", &t),
            Verdict::Upgrade {
                from: "rev 0".into()
            }
        );
    }

    proptest! {
        #[test]
        fn never_panics(ext in ".{0,60}", rev in "[a-z0-9.:-]{1,12}") {
            let t = Target { id: CatalogId { catalog: "c".into(), template: "t".into(), revision: rev }, version: "1.0.0".into(), versions: BTreeMap::new() };
            let _ = classify(&ext, &t);
            let _ = origin(&ext);
        }

        #[test]
        fn integer_revisions_compare_as_numbers(a in 0u64..100_000, b in 0u64..100_000) {
            let t = target(&format!("lib:web:{b}"), "x");
            prop_assert_eq!(upgradable(&format!("catalog://lib:web:{a}"), &t), a < b);
        }

        #[test]
        fn semver_order_is_antisymmetric(a in (0u64..20, 0u64..20, 0u64..20), b in (0u64..20, 0u64..20, 0u64..20)) {
            let (x, y) = (format!("v{}.{}.{}", a.0, a.1, a.2), format!("v{}.{}.{}", b.0, b.1, b.2));
            let ab = compare(&x, None, &y, None).unwrap();
            let ba = compare(&y, None, &x, None).unwrap();
            prop_assert_eq!(ab, ba.reverse());
            prop_assert_eq!(ab, a.cmp(&b));
        }

        #[test]
        fn other_templates_never_upgrade(c in "[a-z]{1,5}", t in "[a-z*]{1,5}", r in 0u64..50) {
            let target = target("lib:web:100", "9.0.0");
            let ext = format!("catalog://{c}:{t}:{r}");
            prop_assert_eq!(upgradable(&ext, &target), c == "lib" && t == "web");
        }
    }
}
