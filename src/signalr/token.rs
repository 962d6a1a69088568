//! HS256 access tokens as Azure SignalR Service issues and checks them: minted for clients
//! (negotiate) and for REST calls, and verified by the embedded service with Azure's rules
//! (signature over the UTF-8 bytes of the access key, `exp` required, `aud` compared ignoring
//! port, query, fragment and a trailing slash, user id from `asrs.s.uid`, `nameid` or `sub`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claim the Functions binding and `NegotiateAsync` use for the user id.
pub const USER_ID_CLAIM: &str = "asrs.s.uid";

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is missing")]
    Missing,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (HS256 or HS512 only)")]
    Algorithm(String),
    #[error("token signature does not match the access key")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token has no `exp` claim")]
    NoExpiry,
    #[error("token has no `aud` claim")]
    NoAudience,
    #[error("token audience `{found}` does not match `{expected}`")]
    Audience { found: String, expected: String },
    #[error("could not sign token: {0}")]
    Sign(String),
}

/// Claims herald puts in (and reads from) a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(
        rename = "asrs.s.uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub asrs_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl Claims {
    /// The user id as Azure resolves it: `asrs.s.uid`, else `nameid`, else `sub`.
    pub fn user_id(&self) -> Option<&str> {
        self.asrs_uid
            .as_deref()
            .or(self.nameid.as_deref())
            .or(self.sub.as_deref())
            .filter(|u| !u.is_empty())
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Claims {
    /// Claims for audience `aud`, issued now, expiring after `ttl` (at least one second).
    fn issued_now(aud: &str, ttl: Duration) -> Self {
        let now = now_secs();
        Claims {
            aud: aud.to_string(),
            exp: now + ttl.as_secs().max(1),
            iat: Some(now),
            nbf: Some(now),
            asrs_uid: None,
            nameid: None,
            sub: None,
        }
    }
}

/// Mint a client token (negotiate): `aud` = the client URL, user id in `asrs.s.uid`.
pub fn mint_client(
    access_key: &str,
    audience: &str,
    user_id: Option<&str>,
    ttl: Duration,
) -> Result<String, TokenError> {
    let claims = Claims {
        asrs_uid: user_id.map(str::to_string),
        ..Claims::issued_now(audience, ttl)
    };
    sign(access_key, &claims)
}

/// Mint a REST token: `aud` = the request URL, `nameid` = the calling server's name.
pub fn mint_rest(
    access_key: &str,
    audience: &str,
    server_name: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    let claims = Claims {
        nameid: Some(server_name.to_string()),
        ..Claims::issued_now(audience, ttl)
    };
    sign(access_key, &claims)
}

fn sign(access_key: &str, claims: &Claims) -> Result<String, TokenError> {
    let header = Header::new(Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(access_key.as_bytes()),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

/// Verify `token` against any of `access_keys` and check that its audience matches
/// `expected_audience` with Azure's rules (see [`audience_matches`]). Returns the claims.
pub fn verify(
    token: &str,
    access_keys: &[&str],
    expected_audience: &str,
) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        // `alg: none` (or any unknown algorithm) fails header parsing.
        let text = e.to_string();
        if token_alg(token).is_some_and(|a| a != "HS256" && a != "HS512") {
            TokenError::Algorithm(token_alg(token).unwrap_or_default())
        } else {
            TokenError::Malformed(text)
        }
    })?;
    if !matches!(header.alg, Algorithm::HS256 | Algorithm::HS512) {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![Algorithm::HS256, Algorithm::HS512];
    validation.validate_aud = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    validation.leeway = 60;

    let mut last = TokenError::Signature;
    for key in access_keys {
        match jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_secret(key.as_bytes()),
            &validation,
        ) {
            Ok(data) => {
                let raw = data.claims;
                if raw.get("exp").is_none() {
                    return Err(TokenError::NoExpiry);
                }
                let claims: Claims = serde_json::from_value(raw).map_err(|e| {
                    if e.to_string().contains("aud") {
                        TokenError::NoAudience
                    } else {
                        TokenError::Malformed(e.to_string())
                    }
                })?;
                if !audience_matches(&claims.aud, expected_audience) {
                    return Err(TokenError::Audience {
                        found: claims.aud,
                        expected: expected_audience.to_string(),
                    });
                }
                return Ok(claims);
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidAlgorithm => {
                        TokenError::Algorithm(format!("{:?}", header.alg))
                    }
                    _ => TokenError::Malformed(e.to_string()),
                };
                if last != TokenError::Signature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// The `alg` field of a token's header, read without trusting anything.
fn token_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// Azure's audience comparison: scheme, host and path compared case-insensitively, ignoring
/// the port, query string, fragment and a trailing `/`.
pub fn audience_matches(found: &str, expected: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.split(['?', '#']).next().unwrap_or("");
        let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host = match authority.rsplit_once(':') {
            // Keep IPv6 literals intact: only strip a trailing `:digits`.
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        let path = path.trim_end_matches('/');
        format!("{scheme}://{host}{path}").to_ascii_lowercase()
    }
    norm(found) == norm(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }

    #[test]
    fn client_token_round_trip() {
        install();
        let t = mint_client(
            "key",
            "http://localhost/client/?hub=chat",
            Some("alice"),
            Duration::from_secs(60),
        )
        .unwrap();
        let c = verify(
            &t,
            &["other", "key"],
            "http://localhost:8888/client/?hub=chat",
        )
        .unwrap();
        assert_eq!(c.user_id(), Some("alice"));
    }

    #[test]
    fn wrong_key_and_audience_are_refused() {
        install();
        let t = mint_client(
            "key",
            "http://h/client/?hub=a",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            verify(&t, &["nope"], "http://h/client/?hub=a"),
            Err(TokenError::Signature)
        );
        assert!(matches!(
            verify(&t, &["key"], "http://other/client/"),
            Err(TokenError::Audience { .. })
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        install();
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none","typ":"JWT"}"#),
            e.encode(br#"{"aud":"http://h/client/","exp":9999999999}"#)
        );
        assert_eq!(
            verify(&t, &["key"], "http://h/client/"),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn expired_is_refused() {
        install();
        let claims = Claims {
            aud: "http://h/x".into(),
            exp: 1000,
            iat: None,
            nbf: None,
            asrs_uid: None,
            nameid: None,
            sub: None,
        };
        let t = sign("key", &claims).unwrap();
        assert_eq!(verify(&t, &["key"], "http://h/x"), Err(TokenError::Expired));
    }

    #[test]
    fn audience_rules() {
        assert!(audience_matches(
            "http://localhost/api/hubs/chat/:send?api-version=2022-06-01",
            "http://LOCALHOST:8888/api/hubs/chat/:send/"
        ));
        assert!(!audience_matches("http://a/x", "http://a/y"));
        assert!(!audience_matches("https://a/x", "http://a/x"));
    }
}
