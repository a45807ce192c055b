//! `CORRAL_DEPLOY_ALLOW`: which manifest and source URLs a deploy may fetch. The bot
//! checks the manifest URL, its `src`, and every redirect hop of either; `corral agent`
//! does the same when the host sets `CORRAL_DEPLOY_ALLOW`.

/// Whether `url` is under one of the `allow` prefixes (`CORRAL_DEPLOY_ALLOW`).
///
/// Compared as URLs, not strings: same scheme, same host, same port, and the path under
/// the prefix's path segment by segment, both decoded. So `https://artifacts.example.com`
/// does not allow `https://artifacts.example.com.evil.net/…` nor
/// `https://artifacts.example.com@evil.net/…`; URLs carrying credentials are never allowed,
/// and neither is a path with a segment that hides a separator (`%2F`, `%5C`, `\`), a NUL
/// (`%00`) or is a dot segment (`..`, `%2E%2E`, `.%2e`…), in one encoding or two: what a
/// file system or a decoding server would make of it could lie outside the prefix.
pub fn allowed(allow: &[String], url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() {
        return false;
    }
    // The text as given too: the URL parser resolves `..` and `%2E%2E` itself, and a
    // URL that needed that is refused, not reinterpreted.
    let as_given = url.split(['?', '#']).next().unwrap_or("");
    if !as_given.split('/').all(|s| segment(s).is_some()) {
        return false;
    }
    let Some(path) = segments(u.path()) else {
        return false;
    };
    allow.iter().any(|prefix| {
        let Ok(a) = url::Url::parse(prefix) else {
            return false;
        };
        a.scheme() == u.scheme()
            && a.host_str() == u.host_str()
            && a.port_or_known_default() == u.port_or_known_default()
            && segments(a.path()).is_some_and(|p| under(&p, &path))
    })
}

/// How many times a segment is decoded looking for a hidden separator (`%252F` is `%2F`
/// after one decoding, `/` after two).
const DECODE_ROUNDS: usize = 3;

/// A URL path as its decoded segments; `None` when a segment is unsafe (see [`allowed`]).
fn segments(path: &str) -> Option<Vec<String>> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    raw.split('/').map(segment).collect()
}

fn segment(raw: &str) -> Option<String> {
    let unsafe_text = |s: &str| s == "." || s == ".." || s.contains(['/', '\\', '\0']);
    if unsafe_text(raw) {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned())
    };
    let once = decode(raw)?;
    let mut level = once.clone();
    for _ in 0..DECODE_ROUNDS {
        if unsafe_text(&level) {
            return None;
        }
        let next = decode(&level)?;
        if next == level {
            break;
        }
        level = next;
    }
    if unsafe_text(&level) {
        return None;
    }
    Some(once)
}

/// `path` is `prefix` or below it. A prefix ending in `/` (its last segment empty) is a
/// directory: only what is inside it matches.
fn under(prefix: &[String], path: &[String]) -> bool {
    match prefix.split_last() {
        Some((last, dir)) if last.is_empty() => path.len() > dir.len() && path[..dir.len()] == *dir,
        _ => path.len() >= prefix.len() && path[..prefix.len()] == *prefix,
    }
}

/// `CORRAL_DEPLOY_ALLOW` as written on an agent's host: comma-separated prefixes, each
/// checked by [`check_prefixes`].
pub(crate) fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    check_prefixes(&list)?;
    Ok(list)
}

/// Every prefix is a URL of a [`SOURCE_SCHEMES`](crate::command::SOURCE_SCHEMES) scheme
/// without credentials (the bot's configuration and the agent read the list alike).
pub(crate) fn check_prefixes(list: &[String]) -> Result<(), String> {
    for prefix in list {
        let ok = url::Url::parse(prefix).is_ok_and(|u| {
            crate::command::SOURCE_SCHEMES.contains(&u.scheme())
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !ok {
            return Err(format!(
                "{:?} is not an {} URL prefix without credentials",
                crate::text::redact_url(prefix),
                crate::command::SOURCE_SCHEMES_TEXT
            ));
        }
    }
    Ok(())
}

/// The refusal for a URL outside the allow-list, naming what is allowed.
pub fn not_allowed_text(what: &str, url: &str, allow: &[String]) -> String {
    format!(
        "{what} {url} is not allowed: URLs must start with one of CORRAL_DEPLOY_ALLOW ({})",
        if allow.is_empty() {
            "empty: /deploy is off".to_string()
        } else {
            allow.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::{allowed, parse_list};

    #[test]
    fn prefixes_are_compared_as_urls() {
        let allow = vec![
            "https://artifacts.example.com/app".to_string(),
            "s3://releases/".to_string(),
            "gs://builds/web/".to_string(),
        ];
        for ok in [
            "https://artifacts.example.com/app",
            "https://artifacts.example.com/app/1.2/manifest.yml",
            "https://ARTIFACTS.example.com:443/app/m.yml",
            "s3://releases/app/m.yml",
            "gs://builds/web/1.2/deploy.yml",
        ] {
            assert!(allowed(&allow, ok), "{ok}");
        }
        for bad in [
            "https://artifacts.example.com.evil.net/app/m.yml",
            "https://artifacts.example.com@evil.net/app/m.yml",
            "https://user:pw@artifacts.example.com/app/m.yml",
            "https://artifacts.example.com/application/m.yml",
            "https://artifacts.example.com/app/../other/m.yml",
            "http://artifacts.example.com/app/m.yml",
            "https://artifacts.example.com:8443/app/m.yml",
            "s3://releases-evil/m.yml",
            "s3://builds/web/m.yml",
            "gs://builds/webapp/m.yml",
            "gs://releases/m.yml",
            "gs://builds/web/..%2F..%2Fother/m.yml",
            "not a url",
        ] {
            assert!(!allowed(&allow, bad), "{bad}");
        }
        assert!(!allowed(&[], "https://artifacts.example.com/app/m.yml"));
    }

    #[test]
    fn prefixes_are_source_urls_without_credentials() {
        let list =
            parse_list(" https://a.example/app/, s3://releases/ ,gs://builds/,file:///srv/x/,")
                .unwrap();
        assert_eq!(list.len(), 4);
        for bad in [
            "ftp://a.example/",
            "gs//builds/",
            "https://u:hunter2@a.example/",
            "/srv/x",
        ] {
            let e = parse_list(bad).unwrap_err();
            assert!(e.contains("http(s), file, s3 or gs"), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn encoded_separators_and_dot_segments_never_pass() {
        let allow = vec![
            "file:///srv/allowed/".to_string(),
            "https://artifacts.example.com/app/".to_string(),
            "s3://releases/app/".to_string(),
        ];
        for ok in [
            "file:///srv/allowed/m.yml",
            "file:///srv/allowed/sub/m%20x.yml",
            "https://artifacts.example.com/app/1.2/m.yml",
            "s3://releases/app/v1/deploy.yml",
        ] {
            assert!(allowed(&allow, ok), "{ok}");
        }
        for base in [
            "file:///srv/allowed/",
            "https://artifacts.example.com/app/",
            "s3://releases/app/",
        ] {
            for tail in [
                "..%2F..%2Fother%2Fevil.yml",
                "..%2f..%2fother%2fevil.yml",
                "x%2F..%2F..%2Fevil.yml",
                "..%5C..%5Cevil.yml",
                "evil.yml%00.txt",
                "%2E%2E/%2E%2E/other/evil.yml",
                "%2e%2E/other/evil.yml",
                ".%2E/other/evil.yml",
                "%2E/m.yml",
                "sub/%252E%252E/%252E%252E/evil.yml",
                "sub/..%252F..%252Fevil.yml",
                "..\\..\\evil.yml",
            ] {
                let url = format!("{base}{tail}");
                assert!(!allowed(&allow, &url), "{url}");
            }
        }
        // A prefix's own segments are compared decoded too.
        let spaced = vec!["file:///srv/my%20app/".to_string()];
        assert!(allowed(&spaced, "file:///srv/my%20app/m.yml"));
        assert!(allowed(&spaced, "file:///srv/my app/m.yml"));
        assert!(!allowed(
            &spaced,
            "file:///srv/my%20app%2F..%2F..%2Fetc/m.yml"
        ));
    }
}
