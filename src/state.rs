//! Where herald keeps state on disk: the state directory (`$STATE_DIRECTORY`,
//! `$XDG_STATE_HOME/herald` or `~/.local/state/herald`) and the embedded service's generated
//! access key in it, so that `herald token` and `herald send` sign with the key a running
//! `herald run` uses.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Name of the key file inside `state_dir()`.
pub const KEY_FILE: &str = "embedded-access-key";

/// A generated access key: 32 random bytes, base64 (43 characters).
pub fn generate_access_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The state directory: `$STATE_DIRECTORY` (systemd; its first entry), else
/// `$XDG_STATE_HOME/herald`, else `~/.local/state/herald` (the temp dir without `$HOME`).
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").and_then(|d| {
        d.to_str()
            .and_then(|s| s.split(':').next().map(PathBuf::from))
    }) {
        return dir;
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("herald");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/herald"),
        None => std::env::temp_dir().join("herald"),
    }
}

/// The embedded service's access key: the configured one, else the one kept in
/// `state_dir()/embedded-access-key` (created with mode 0600 on first use).
pub fn embedded_access_key(configured: Option<&crate::config::Secret>) -> std::io::Result<String> {
    if let Some(k) = configured {
        return Ok(k.expose().to_string());
    }
    let dir = state_dir();
    let path = dir.join(KEY_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_string();
        if key.len() >= 16 {
            return Ok(key);
        }
    }
    std::fs::create_dir_all(&dir)?;
    let key = generate_access_key();
    let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    // Rename is atomic: a concurrent first start sees one whole key or none.
    std::fs::rename(&tmp, &path)?;
    std::fs::read_to_string(&path).map(|k| k.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate_access_key(), generate_access_key());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
