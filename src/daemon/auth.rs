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

/// Verify `token` with `rule`; return the user claim (if present) on success.
pub fn verify_jwt(token: &str, rule: &JwtRule) -> Result<Option<String>, String> {
    let mut validation = Validation::new(rule.algorithm);
    validation.leeway = 60;
    match &rule.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &rule.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &rule.key, &validation)
        .map_err(|e| format!("bearer token rejected: {e}"))?;
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
        assert!(verify_jwt(&good, &rule(Some("other"))).is_err());
        let forged = token(serde_json::json!({"sub": "alice", "exp": exp}), b"wrong");
        assert!(verify_jwt(&forged, &rule(None)).is_err());
        let expired = token(serde_json::json!({"sub": "alice", "exp": 1000}), b"s3cret");
        assert!(verify_jwt(&expired, &rule(None)).is_err());
    }

    #[test]
    fn constant_time_keys() {
        assert!(keys_equal("abc", "abc"));
        assert!(!keys_equal("abc", "abd"));
        assert!(!keys_equal("abc", "abcd"));
    }
}
