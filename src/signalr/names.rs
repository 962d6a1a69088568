//! The naming rules of Azure SignalR Service's data-plane REST API for hubs, users, groups
//! and connections, in one place: the REST client, the embedded service and config compile
//! all check names here, so a name one accepts the others accept too.

/// What kind of name is checked; used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Hub,
    Application,
    User,
    Group,
    Connection,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Hub => "hub name",
            NameKind::Application => "application name",
            NameKind::User => "user id",
            NameKind::Group => "group name",
            NameKind::Connection => "connection id",
        }
    }
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name the REST API does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty")]
    Empty { kind: NameKind },
    #[error("{kind} is only whitespace")]
    Blank { kind: NameKind },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: NameKind, max: usize },
    #[error("{kind} `{value}` cannot be used in a URL path")]
    DotSegment { kind: NameKind, value: String },
    #[error(
        "invalid {kind} `{value}`: start with a letter, then letters, digits or _`,.[] (at most 128)"
    )]
    Pattern { kind: NameKind, value: String },
}

/// Longest group name (REST spec).
pub const MAX_GROUP_CHARS: usize = 1024;
/// Longest hub or application name (REST spec).
pub const MAX_HUB_CHARS: usize = 128;

/// The REST spec's hub pattern: `` ^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$ ``.
pub fn hub(name: &str) -> Result<(), NameError> {
    pattern(NameKind::Hub, name)
}

/// An application name (the `application` query parameter) follows the hub pattern.
pub fn application(name: &str) -> Result<(), NameError> {
    pattern(NameKind::Application, name)
}

fn pattern(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= MAX_HUB_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || "_`,.[]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(NameError::Pattern {
            kind,
            value: name.to_string(),
        })
    }
}

/// A user id: non-empty, not only whitespace, and not `.` or `..` (which URL parsing
/// resolves away even when percent-encoded).
pub fn user(name: &str) -> Result<(), NameError> {
    id(NameKind::User, name)
}

/// A connection id: the same rule as a user id.
pub fn connection(name: &str) -> Result<(), NameError> {
    id(NameKind::Connection, name)
}

/// A group name: 1 to 1024 characters, not all whitespace, not `.`/`..`.
pub fn group(name: &str) -> Result<(), NameError> {
    id(NameKind::Group, name)?;
    if name.chars().count() > MAX_GROUP_CHARS {
        return Err(NameError::TooLong {
            kind: NameKind::Group,
            max: MAX_GROUP_CHARS,
        });
    }
    Ok(())
}

fn id(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.trim().is_empty() {
        return Err(NameError::Blank { kind });
    }
    if name == "." || name == ".." {
        return Err(NameError::DotSegment {
            kind,
            value: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubs() {
        for ok in ["chat", "Chat_1", "a", "x`,.[]", &"a".repeat(128)] {
            assert_eq!(hub(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1chat", "_x", "ch at", "chat/x", "é", &"a".repeat(129)] {
            assert!(hub(bad).is_err(), "{bad}");
        }
        assert_eq!(
            hub("").unwrap_err().to_string(),
            "hub name is empty",
            "empty names say so"
        );
    }

    #[test]
    fn ids_and_groups() {
        for ok in ["alice", "a b", "ü", "a/b", "%"] {
            assert_eq!(user(ok), Ok(()));
            assert_eq!(connection(ok), Ok(()));
            assert_eq!(group(ok), Ok(()));
        }
        for bad in ["", " ", "\t", ".", ".."] {
            assert!(user(bad).is_err(), "{bad:?}");
            assert!(connection(bad).is_err(), "{bad:?}");
            assert!(group(bad).is_err(), "{bad:?}");
        }
        assert!(group(&"g".repeat(1024)).is_ok());
        assert_eq!(
            group(&"g".repeat(1025)),
            Err(NameError::TooLong {
                kind: NameKind::Group,
                max: 1024
            })
        );
        assert_eq!(user("").unwrap_err().to_string(), "user id is empty");
    }
}
