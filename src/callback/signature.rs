//! Tencent's callback authentication (docs/protocol.md#signature):
//! `Sign = lowercase_hex(SHA-256(token ‖ RequestTime))`, with a replay window on `RequestTime`.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Sign or RequestTime is missing")]
    Missing,
    #[error("RequestTime is not a Unix time in seconds")]
    BadRequestTime,
    #[error("RequestTime is outside the allowed window")]
    Expired,
    #[error("Sign does not match")]
    Mismatch,
}

/// The signature Tencent computes, as lowercase hex.
pub fn sign(token: &str, request_time: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(token.as_bytes());
    hash.update(request_time.as_bytes());
    hex::encode(hash.finalize())
}

/// Checks `Sign`/`RequestTime` against the token; `now_secs` is the current Unix time.
pub fn verify_signature(
    token: &str,
    sign_param: Option<&str>,
    request_time: Option<&str>,
    now_secs: i64,
    max_skew: Duration,
) -> Result<(), SignatureError> {
    let (Some(given), Some(request_time)) = (sign_param, request_time) else {
        return Err(SignatureError::Missing);
    };
    // Plain decimal digits only, as Tencent writes a Unix time: `parse` also takes a sign and
    // leading zeros, which would give one time many spellings, each with its own signature.
    let plain = !request_time.is_empty()
        && request_time.bytes().all(|b| b.is_ascii_digit())
        && (request_time == "0" || !request_time.starts_with('0'));
    let sent_at: i64 = request_time
        .parse()
        .ok()
        .filter(|_| plain)
        .ok_or(SignatureError::BadRequestTime)?;
    let skew = i64::try_from(max_skew.as_secs()).unwrap_or(i64::MAX);
    if now_secs.abs_diff(sent_at) > skew.unsigned_abs() {
        return Err(SignatureError::Expired);
    }
    let expected = sign(token, request_time);
    // Hex case is not part of the secret; compare in constant time so timing tells nothing.
    let given = given.to_ascii_lowercase();
    if expected.as_bytes().ct_eq(given.as_bytes()).into() {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const VECTOR: &str = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";

    #[test]
    fn request_time_is_plain_digits() {
        let now = 1669872112;
        for odd in [
            "+1669872112",
            "0001669872112",
            " 1669872112",
            "1669872112 ",
            "",
            "-0",
        ] {
            let sign = sign("t", odd);
            assert_eq!(
                verify_signature("t", Some(&sign), Some(odd), now, WINDOW),
                Err(SignatureError::BadRequestTime),
                "{odd:?}"
            );
        }
        let sign = sign("t", "1669872112");
        assert_eq!(
            verify_signature("t", Some(&sign), Some("1669872112"), now, WINDOW),
            Ok(())
        );
    }

    #[test]
    fn tencent_test_vector() {
        assert_eq!(sign("xxxxyyyy", "1669872112"), VECTOR);
        assert_eq!(
            verify_signature(
                "xxxxyyyy",
                Some(VECTOR),
                Some("1669872112"),
                1669872112,
                WINDOW
            ),
            Ok(())
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let upper = VECTOR.to_ascii_uppercase();
        let result = verify_signature(
            "xxxxyyyy",
            Some(&upper),
            Some("1669872112"),
            1669872112,
            WINDOW,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn skew_is_bounded_both_ways() {
        let at = |now| verify_signature("xxxxyyyy", Some(VECTOR), Some("1669872112"), now, WINDOW);
        assert_eq!(at(1669872112 + 60), Ok(()));
        assert_eq!(at(1669872112 - 60), Ok(()));
        assert_eq!(at(1669872112 + 61), Err(SignatureError::Expired));
        assert_eq!(at(1669872112 - 61), Err(SignatureError::Expired));
    }

    #[test]
    fn missing_or_wrong_parts() {
        let now = 1669872112;
        let check = |s, t| verify_signature("xxxxyyyy", s, t, now, WINDOW);
        assert_eq!(
            check(None, Some("1669872112")),
            Err(SignatureError::Missing)
        );
        assert_eq!(check(Some(VECTOR), None), Err(SignatureError::Missing));
        assert_eq!(
            check(Some(VECTOR), Some("soon")),
            Err(SignatureError::BadRequestTime)
        );
        assert_eq!(
            check(Some("00"), Some("1669872112")),
            Err(SignatureError::Mismatch)
        );
        let wrong_token = verify_signature("other", Some(VECTOR), Some("1669872112"), now, WINDOW);
        assert_eq!(wrong_token, Err(SignatureError::Mismatch));
    }
}
