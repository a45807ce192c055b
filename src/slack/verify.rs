//! Slack request signing, v0 (reference/slack.md §a).
//!
//! `v0=` + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw body)), compared in
//! constant time, with the timestamp within 300 seconds of now. The clock is a
//! parameter so Slack's published 2018 vector can be checked as a known answer.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Slack's replay window.
pub(crate) const MAX_AGE_SECONDS: i64 = 300;

/// Why a request's signature was not accepted. The text is safe to log: it never holds
/// the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp header")]
    Missing,
    #[error("X-Slack-Request-Timestamp is not a whole number of seconds")]
    BadTimestamp,
    #[error("request timestamp is more than {MAX_AGE_SECONDS} s from now (replay?)")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
    #[error("no signing secret is configured (SLACK_SIGNING_SECRET)")]
    NoSecret,
}

/// The `v0=…` signature of `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request: headers as received (`None` when absent), raw body, and now.
pub fn verify(
    secret: &str,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(VerifyError::Missing);
    };
    if timestamp.is_empty()
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
        || timestamp.len() > 12
    {
        return Err(VerifyError::BadTimestamp);
    }
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > MAX_AGE_SECONDS {
        return Err(VerifyError::Stale);
    }
    let expected = sign(secret, timestamp, body);
    if expected.as_bytes().ct_eq(signature.as_bytes()).into() {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn body() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/signing/slack_docs_example.body.form"
        ))
        .expect("fixture present")
    }

    #[test]
    fn slacks_published_vector() {
        let body = body();
        assert_eq!(body.len(), 362);
        assert_eq!(sign(SECRET, TS, &body), SIG);
        assert_eq!(
            verify(SECRET, Some(SIG), Some(TS), &body, 1531420618),
            Ok(())
        );
    }

    #[test]
    fn window_edges() {
        let body = body();
        let t = 1531420618;
        assert_eq!(verify(SECRET, Some(SIG), Some(TS), &body, t + 299), Ok(()));
        assert_eq!(verify(SECRET, Some(SIG), Some(TS), &body, t + 300), Ok(()));
        assert_eq!(
            verify(SECRET, Some(SIG), Some(TS), &body, t + 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(SIG), Some(TS), &body, t - 301),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn tampering() {
        let mut body = body();
        let t = 1531420618;
        assert_eq!(
            verify("wrong", Some(SIG), Some(TS), &body, t),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&SIG[3..]), Some(TS), &body, t),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&SIG.to_uppercase().replacen("V0", "v0", 1)),
                Some(TS),
                &body,
                t
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, None, Some(TS), &body, t),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(SIG), None, &body, t),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(SIG), Some("-5"), &body, t),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some(SIG), Some("1e9"), &body, t),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify("", Some(SIG), Some(TS), &body, t),
            Err(VerifyError::NoSecret)
        );
        body[10] ^= 1;
        assert_eq!(
            verify(SECRET, Some(SIG), Some(TS), &body, t),
            Err(VerifyError::Mismatch)
        );
    }
}
