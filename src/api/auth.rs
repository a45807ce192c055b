//! The API token (SPEC §4): `Authorization: Bearer <token>`, or go-cowpoke's
//! `bearer: <token>` header. With no token configured every protected endpoint refuses,
//! saying how to set one: corral never runs an unauthenticated upgrade endpoint.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::secret::Secret;

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error(
        "the API is off: set CORRAL_API_TOKEN (or API_KEY) and send it as `Authorization: Bearer <token>`"
    )]
    NotConfigured,
    #[error("missing API token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("wrong API token")]
    Wrong,
}

/// The token a request carries, from either header form.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    headers
        .get("bearer")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Checks a request's token against the configured API token, in constant time.
pub(crate) fn check(headers: &HeaderMap, config: &Config) -> Result<(), AuthError> {
    check_against(headers, &[config.api_token.as_ref()])
}

/// The report endpoint's check: `CORRAL_REPORT_TOKEN` (accepted there and nowhere else)
/// or the API token.
pub(crate) fn check_report(headers: &HeaderMap, config: &Config) -> Result<(), AuthError> {
    check_against(
        headers,
        &[config.report_token.as_ref(), config.api_token.as_ref()],
    )
}

fn check_against(headers: &HeaderMap, tokens: &[Option<&Secret>]) -> Result<(), AuthError> {
    let configured: Vec<&Secret> = tokens.iter().flatten().copied().collect();
    if configured.is_empty() {
        return Err(AuthError::NotConfigured);
    }
    let Some(given) = presented(headers) else {
        return Err(AuthError::Missing);
    };
    // Digests first, so the comparison takes the same time whatever the lengths; every
    // token is compared, so the time does not say which one matched.
    let given = Sha256::digest(given.as_bytes());
    let mut ok = subtle::Choice::from(0);
    for expected in configured {
        let expected = Sha256::digest(expected.expose().as_bytes());
        ok |= given.as_slice().ct_eq(expected.as_slice());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn config(token: Option<&str>) -> Config {
        let pairs: Vec<(&str, &str)> = token.map(|t| ("CORRAL_API_TOKEN", t)).into_iter().collect();
        Config::from_env(&Env::from_pairs(pairs)).expect("valid")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn both_header_forms() {
        let c = config(Some("s3cret"));
        assert_eq!(
            check(&headers(&[("authorization", "Bearer s3cret")]), &c),
            Ok(())
        );
        assert_eq!(
            check(&headers(&[("authorization", "bearer s3cret")]), &c),
            Ok(())
        );
        assert_eq!(check(&headers(&[("bearer", "s3cret")]), &c), Ok(()));
        assert_eq!(
            check(&headers(&[("authorization", "Bearer nope")]), &c),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            check(&headers(&[("authorization", "Basic s3cret")]), &c),
            Err(AuthError::Missing)
        );
        assert_eq!(check(&headers(&[]), &c), Err(AuthError::Missing));
        assert_eq!(
            check(&headers(&[("bearer", "s3cre")]), &c),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn no_token_configured_refuses_everyone() {
        let c = config(None);
        assert_eq!(
            check(&headers(&[("authorization", "Bearer x")]), &c),
            Err(AuthError::NotConfigured)
        );
        assert!(
            AuthError::NotConfigured
                .to_string()
                .contains("CORRAL_API_TOKEN")
        );
    }
}
