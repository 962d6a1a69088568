//! Token checks for the client endpoint and the REST API, with Azure's rules: HS256/HS512
//! signed with one of the access keys, `exp` required, and `aud` equal to the request URL
//! (`scheme://host/client/?hub=h` for clients, `scheme://host/path` for REST) ignoring port,
//! query and trailing slash; a client token's `?hub=` must also name the requested hub.

use axum::http::{HeaderMap, Uri, header};

use super::Shared;
use crate::signalr::token::{self, Claims, TokenError};

/// Why a request was not authenticated (→ 401 with this text as the body).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("no access token (Authorization: Bearer or access_token)")]
    Missing,
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("token is for hub `{token_hub}`, not `{hub}`")]
    HubMismatch { token_hub: String, hub: String },
    #[error("request has no Host header")]
    NoHost,
}

/// The token of `Authorization: Bearer <token>`, if present.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `scheme://host[:port]` of the request as the client addressed it. The scheme comes from
/// `X-Forwarded-Proto` when a TLS proxy sets it (tokens are minted for the public URL);
/// a forged header can only make the audience check stricter to pass, never skip it.
pub(crate) fn base_url(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https")
        .or_else(|| uri.scheme_str().map(str::to_string))
        .unwrap_or_else(|| "http".to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// Check a client-endpoint request (negotiate or transport) for `hub`.
pub(crate) fn client(
    shared: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    hub: &str,
    query_token: Option<&str>,
) -> Result<Claims, AuthError> {
    let token = bearer(headers)
        .or(query_token.filter(|t| !t.is_empty()))
        .ok_or(AuthError::Missing)?;
    let base = base_url(headers, uri).ok_or(AuthError::NoHost)?;
    let expected = format!("{base}/client/?hub={hub}");
    let claims = token::verify(token, &shared.keys(), &expected)?;
    if let Some(token_hub) = query_param(&claims.aud, "hub")
        && !token_hub.eq_ignore_ascii_case(hub)
    {
        return Err(AuthError::HubMismatch {
            token_hub,
            hub: hub.to_string(),
        });
    }
    Ok(claims)
}

/// Check a REST request: the audience is the request URL without its query.
pub(crate) fn rest(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Result<Claims, AuthError> {
    let token = bearer(headers).ok_or(AuthError::Missing)?;
    let base = base_url(headers, uri).ok_or(AuthError::NoHost)?;
    let expected = format!("{base}{}", uri.path());
    Ok(token::verify(token, &shared.keys(), &expected)?)
}

/// The first value of query parameter `name` in `url` (percent-decoded).
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    Query::parse(query).get(name).map(str::to_string)
}

/// A request's query parameters, decoded as forms are (`+` is a space, `%XX` escapes), in
/// order.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: &str) -> Self {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn of(uri: &axum::http::Uri) -> Self {
        Self::parse(uri.query().unwrap_or(""))
    }

    /// The first non-empty value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (e.g. repeated `excluded`).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decode `%XX` escapes in a path segment; invalid UTF-8 is replaced.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_query() {
        assert_eq!(percent_decode("a%20b%2Fc%zz%"), "a b/c%zz%");
        assert_eq!(
            query_param("http://h/client/?x=1&hub=Chat%20Room", "hub").as_deref(),
            Some("Chat Room")
        );
        assert_eq!(query_param("http://h/client/", "hub"), None);
        let q = Query::parse("excluded=a&excluded=b+c&empty=");
        assert_eq!(q.all("excluded").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(q.get("empty"), None);
    }

    #[test]
    fn bearer_and_base() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        headers.insert(header::HOST, "example.com:8080".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        let uri: Uri = "/client/?hub=x".parse().unwrap();
        assert_eq!(
            base_url(&headers, &uri).as_deref(),
            Some("http://example.com:8080")
        );
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(
            base_url(&headers, &uri).as_deref(),
            Some("https://example.com:8080")
        );
    }
}
