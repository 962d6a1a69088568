//! Watching the config file for edits: the file's *directory* is watched (a watch on the file
//! itself is lost after the first rename-replace save), events are debounced, and any batch
//! that touches the file's name or a Kubernetes ConfigMap `..data` link sends
//! `Control::Reload`. The reload itself skips files whose content did not change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::control::{Control, ControlSender};

/// Quiet time after the last event before a batch is delivered; well under a second so an
/// edit is live within one.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    pub dir: PathBuf,
}

/// Why the watch could not be set up (reloads still work through SIGHUP).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir} for config changes: {source}")]
pub struct WatchError {
    dir: PathBuf,
    #[source]
    source: notify::Error,
}

/// Names whose change means the config may have changed.
fn relevant_names(config: &Path) -> Vec<OsString> {
    let mut names = vec![OsString::from("..data")];
    if let Some(name) = config.file_name() {
        names.push(name.to_os_string());
    }
    names
}

/// Watch `config`'s directory and send `Control::Reload` on relevant changes.
pub fn watch(config: &Path, control: ControlSender) -> Result<ConfigWatcher, WatchError> {
    let absolute = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let dir = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let names = relevant_names(&absolute);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let touched = events.iter().any(|e| {
                !matches!(e.event.kind, notify::EventKind::Access(_))
                    && e.event
                        .paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
            });
            if touched {
                tracing::debug!("config directory changed; reloading");
                // A full channel already holds a pending reload: nothing is lost.
                let _ = control.try_send(Control::Reload);
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "config watcher error");
            }
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(|source| WatchError {
        dir: dir.clone(),
        source,
    })?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError {
            dir: dir.clone(),
            source,
        })?;
    tracing::info!(dir = %dir.display(), "watching the config directory for edits");
    Ok(ConfigWatcher {
        _debouncer: debouncer,
        dir,
    })
}
