//! `KeyPath`: where a key or value sits in the config document (`hubs.chat.negotiate.path`),
//! as mapping keys and sequence indexes. Positions, diagnostics and compile all name places
//! with it; `.child()` builds a path one level down.

use std::fmt;

/// A path of mapping keys and sequence indexes (as text) from the document root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    /// The document itself.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// The path one level down, at mapping key (or sequence index) `key`.
    pub fn child(&self, key: impl fmt::Display) -> KeyPath {
        let mut segments = Vec::with_capacity(self.0.len() + 1);
        segments.extend(self.0.iter().cloned());
        segments.push(key.to_string());
        KeyPath(segments)
    }

    /// The enclosing path; `None` at the root.
    pub fn parent(&self) -> Option<KeyPath> {
        let (_, head) = self.0.split_last()?;
        Some(KeyPath(head.to_vec()))
    }

    /// The last key, if any.
    pub fn last(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// The keys from the root down.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// How many keys deep the path is.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Step down in place (for tree walks that push and pop).
    pub(crate) fn push(&mut self, key: impl Into<String>) {
        self.0.push(key.into());
    }

    /// Step up in place; the removed key.
    pub(crate) fn pop(&mut self) -> Option<String> {
        self.0.pop()
    }
}

impl From<Vec<String>> for KeyPath {
    fn from(segments: Vec<String>) -> Self {
        KeyPath(segments)
    }
}

impl From<&[&str]> for KeyPath {
    fn from(segments: &[&str]) -> Self {
        KeyPath(segments.iter().map(|s| s.to_string()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for KeyPath {
    fn from(segments: [&str; N]) -> Self {
        KeyPath::from(&segments[..])
    }
}

/// Dotted form, as error messages name keys: `http.cors.allowed_origins.0`.
impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyPath;

    #[test]
    fn child_parent_and_display() {
        let p = KeyPath::root().child("hubs").child("chat").child(0);
        assert_eq!(p.to_string(), "hubs.chat.0");
        assert_eq!(p.len(), 3);
        assert_eq!(p.last(), Some("0"));
        assert_eq!(p.parent(), Some(KeyPath::from(["hubs", "chat"])));
        assert_eq!(KeyPath::root().parent(), None);
        assert!(KeyPath::root().is_empty());
    }
}
