//! `CORRAL_DEPLOY_ALLOW`: which manifest and source URLs a deploy may fetch. The bot
//! checks the manifest URL, its `src`, and every redirect hop of either; `corral agent`
//! does the same when the host sets `CORRAL_DEPLOY_ALLOW`.

/// Whether `url` is under one of the `allow` prefixes (`CORRAL_DEPLOY_ALLOW`).
///
/// Compared as URLs, not strings: same scheme, same host, same port, and the path under
/// the prefix's path on a segment boundary. So `https://artifacts.example.com` does not
/// allow `https://artifacts.example.com.evil.net/…` nor `https://artifacts.example.com@evil.net/…`;
/// URLs carrying credentials are never allowed.
pub fn allowed(allow: &[String], url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() {
        return false;
    }
    allow.iter().any(|prefix| {
        let Ok(a) = url::Url::parse(prefix) else {
            return false;
        };
        a.scheme() == u.scheme()
            && a.host_str() == u.host_str()
            && a.port_or_known_default() == u.port_or_known_default()
            && under(a.path(), u.path())
    })
}

/// `path` is `prefix` or below it.
fn under(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `CORRAL_DEPLOY_ALLOW` as written on an agent's host: comma-separated `http(s)://`,
/// `file://` or `s3://` prefixes without credentials.
pub fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for prefix in &list {
        let ok = url::Url::parse(prefix).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https" | "file" | "s3")
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !ok {
            return Err(format!(
                "CORRAL_DEPLOY_ALLOW: {:?} is not an http(s)://, file:// or s3:// URL prefix without credentials",
                crate::text::redact_url(prefix)
            ));
        }
    }
    Ok(list)
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
    use super::allowed;

    #[test]
    fn prefixes_are_compared_as_urls() {
        let allow = vec![
            "https://artifacts.example.com/app".to_string(),
            "s3://releases/".to_string(),
        ];
        for ok in [
            "https://artifacts.example.com/app",
            "https://artifacts.example.com/app/1.2/manifest.yml",
            "https://ARTIFACTS.example.com:443/app/m.yml",
            "s3://releases/app/m.yml",
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
            "not a url",
        ] {
            assert!(!allowed(&allow, bad), "{bad}");
        }
        assert!(!allowed(&[], "https://artifacts.example.com/app/m.yml"));
    }
}
