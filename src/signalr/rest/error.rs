//! `RestError`: why a REST call failed, with what the service answered (status,
//! `x-ms-error-code`, a body excerpt) or why nothing was answered. Never carries the access
//! key or a token.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::ApiVersion;
use crate::signalr::token::TokenError;

/// How much of an error response body is kept in [`RestError::Status`].
pub(crate) const BODY_EXCERPT_CHARS: usize = 512;

/// Why a REST call failed. Never carries the access key or a token.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The JSON body is over [`super::MAX_BODY_BYTES`]; nothing was sent.
    #[error(
        "message body is {size} bytes, over the service limit of {limit} bytes (1 MB); not sent"
    )]
    TooLarge { size: usize, limit: usize },
    /// The service answered with a non-success status (after any retries).
    #[error("{method} {path} answered HTTP {status}{}{}", code_suffix(.error_code), body_suffix(.body))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        /// The `x-ms-error-code` header (e.g. `Warning.Connection.NotExisted`).
        error_code: Option<String>,
        /// The start of the response body, trimmed.
        body: String,
        /// The last answer's `Retry-After`, when it had one (uncapped, as the service asked).
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, or the request timed out (after any retries).
    #[error("{method} {path} failed after {attempts} attempt(s): {}", transport_kind(.source))]
    Transport {
        method: Method,
        path: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The REST access token could not be minted.
    #[error("could not mint the REST access token")]
    Token(#[from] TokenError),
    /// An argument cannot be sent (bad hub name, empty id, empty target...); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation has no path in the chosen API version.
    #[error("{operation} is not available in the {api} REST API")]
    Unsupported {
        operation: &'static str,
        api: ApiVersion,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl RestError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RestError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `x-ms-error-code` header, when the service answered with one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            RestError::Status { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    /// How long the service asked callers to wait (`Retry-After` of its last answer).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RestError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the service answered 404 (e.g. removing a connection that is gone).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A transport failure in three words, never with the URL (reqwest's Display has it).
pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection error"
    }
}

/// The trimmed start of an error body, at most [`BODY_EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut() {
        let long = "é".repeat(2000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("  short \n"), "short");
    }
}
