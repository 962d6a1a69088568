//! Caller checks for negotiate and status routes: API keys compared in constant time, and
//! bearer JWTs verified with the configured HS256 secret or RS256 public key, issuer and
//! audience. The user id is read from the configured claim.

use axum::http::HeaderMap;
use jsonwebtoken::Validation;
use subtle::ConstantTimeEq;

use crate::config::JwtRule;

/// Constant-time equality of two secrets (length differences are not hidden, contents are).
pub fn keys_equal(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a bearer token was refused. The text is safe to show the caller: it says which check
/// failed, never the key or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// `exp` is past (beyond the 60 s leeway).
    #[error("bearer token rejected: it has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("bearer token rejected: it is not valid yet")]
    NotYetValid,
    /// The signature does not verify with the configured key.
    #[error("bearer token rejected: the signature does not verify")]
    Signature,
    /// The token's `alg` is not the configured algorithm.
    #[error("bearer token rejected: it is not signed with the expected algorithm")]
    Algorithm,
    /// `iss` is missing or not the configured issuer.
    #[error("bearer token rejected: wrong or missing issuer")]
    Issuer,
    /// `aud` is missing or not the configured audience.
    #[error("bearer token rejected: wrong or missing audience")]
    Audience,
    /// A claim the rules need (`exp`, or `iss`/`aud` when configured) is absent.
    #[error("bearer token rejected: the `{0}` claim is missing")]
    MissingClaim(String),
    /// Not a JWT at all: bad base64, JSON or structure.
    #[error("bearer token rejected: not a well-formed JWT")]
    Malformed,
    /// Any other refusal by the JWT library, named by its kind.
    #[error("bearer token rejected: {0}")]
    Other(String),
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidSignature => JwtError::Signature,
            ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
            ErrorKind::InvalidIssuer => JwtError::Issuer,
            ErrorKind::InvalidAudience => JwtError::Audience,
            ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim.clone()),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => JwtError::Malformed,
            _ => JwtError::Other(e.to_string()),
        }
    }
}

/// Verify `token` with `rule`; return the user claim (if present) on success.
pub fn verify_jwt(token: &str, rule: &JwtRule) -> Result<Option<String>, JwtError> {
    let mut validation = Validation::new(rule.algorithm);
    validation.leeway = 60;
    // Off by default in jsonwebtoken; a token that says "not before" is held to it.
    validation.validate_nbf = true;
    // jsonwebtoken checks `iss` and `aud` only when the token has them; a configured issuer
    // or audience must also be present, or a token without the claim would pass.
    match &rule.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match &rule.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &rule.key, &validation)?;
    Ok(match data.claims.get(&rule.claim) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
    use std::sync::Arc;

    fn rule(iss: Option<&str>) -> JwtRule {
        JwtRule {
            key: Arc::new(DecodingKey::from_secret(b"s3cret")),
            algorithm: Algorithm::HS256,
            issuer: iss.map(str::to_string),
            audience: None,
            claim: "sub".into(),
        }
    }

    fn token(claims: serde_json::Value, key: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key),
        )
        .unwrap()
    }

    #[test]
    fn jwt_rules() {
        crate::install_crypto();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let good = token(
            serde_json::json!({"sub": "alice", "exp": exp, "iss": "me"}),
            b"s3cret",
        );
        assert_eq!(
            verify_jwt(&good, &rule(Some("me"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            verify_jwt(&good, &rule(Some("other"))),
            Err(JwtError::Issuer)
        );
        let forged = token(serde_json::json!({"sub": "alice", "exp": exp}), b"wrong");
        assert_eq!(verify_jwt(&forged, &rule(None)), Err(JwtError::Signature));
        let expired = token(serde_json::json!({"sub": "alice", "exp": 1000}), b"s3cret");
        assert_eq!(verify_jwt(&expired, &rule(None)), Err(JwtError::Expired));
        let early = token(
            serde_json::json!({"sub": "alice", "exp": exp, "nbf": exp - 100}),
            b"s3cret",
        );
        let mut r = rule(None);
        assert_eq!(verify_jwt(&early, &r), Err(JwtError::NotYetValid));
        r.audience = Some("api".into());
        assert_eq!(
            verify_jwt(&good, &r),
            Err(JwtError::MissingClaim("aud".into()))
        );
        assert_eq!(verify_jwt("not.a.jwt", &r), Err(JwtError::Malformed));
        let no_iss = token(serde_json::json!({"sub": "alice", "exp": exp}), b"s3cret");
        assert_eq!(
            verify_jwt(&no_iss, &rule(Some("me"))),
            Err(JwtError::MissingClaim("iss".into()))
        );
        let no_exp = token(serde_json::json!({"sub": "alice"}), b"s3cret");
        assert_eq!(
            verify_jwt(&no_exp, &rule(None)),
            Err(JwtError::MissingClaim("exp".into()))
        );
        // The caller sees which check failed, never the key.
        assert!(!JwtError::Signature.to_string().contains("s3cret"));
    }

    #[test]
    fn constant_time_keys() {
        assert!(keys_equal("abc", "abc"));
        assert!(!keys_equal("abc", "abd"));
        assert!(!keys_equal("abc", "abcd"));
    }
}
