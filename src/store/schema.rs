//! Opening the state database: pragmas (WAL, `synchronous = NORMAL`, busy timeout) and the
//! tables, created if missing. A file that is not a SQLite database fails here, naming the
//! file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// The schema version this herald writes; a newer file is refused rather than misread.
const VERSION: i64 = 1;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    hub         TEXT NOT NULL,
    message     TEXT NOT NULL,
    source      TEXT NOT NULL,
    accepted_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    answer     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    seq       INTEGER PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    hub       TEXT NOT NULL,
    user      TEXT,
    time_ms   INTEGER NOT NULL,
    target    TEXT NOT NULL,
    arguments TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_hub ON history (hub, seq);
CREATE TABLE IF NOT EXISTS retained (
    source  TEXT NOT NULL,
    key     TEXT NOT NULL,
    hub     TEXT NOT NULL,
    id      TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retained_by_hub ON retained (hub, time_ms);
CREATE TABLE IF NOT EXISTS messages (
    id          TEXT PRIMARY KEY,
    hub         TEXT NOT NULL,
    source      TEXT NOT NULL,
    accepted_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (accepted_ms);
CREATE TABLE IF NOT EXISTS acks (
    id         TEXT NOT NULL,
    connection TEXT NOT NULL,
    user       TEXT,
    time_ms    INTEGER NOT NULL,
    PRIMARY KEY (id, connection)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fires (
    schedule   TEXT NOT NULL,
    instant_ms INTEGER NOT NULL,
    PRIMARY KEY (schedule, instant_ms)
) WITHOUT ROWID;
";

fn unusable(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unusable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The writer's connection: pragmas set, tables created, version checked.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| unusable(path, e))?;
    // Room for every statement the writer runs (rusqlite keeps 16 by default, fewer than
    // the writer's, so some were prepared again and again).
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| unusable(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unusable(
            path,
            format!("cannot switch to WAL mode (got {mode})"),
        ));
    }
    // Commits write the log without syncing it; under `synchronous: full` the syncer
    // (`syncer.rs`) syncs it before any caller hears "kept".
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
        .map_err(|e| unusable(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| unusable(path, e))?;
    if version > VERSION {
        return Err(unusable(
            path,
            format!(
                "it was written by a newer herald (schema {version}, this one knows {VERSION})"
            ),
        ));
    }
    conn.execute_batch(TABLES).map_err(|e| unusable(path, e))?;
    conn.execute_batch(&format!("PRAGMA user_version = {VERSION};"))
        .map_err(|e| unusable(path, e))?;
    Ok(conn)
}

/// A read-only connection for queries beside the writer.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| unusable(path, e))?;
    Ok(conn)
}
