//! The SQLite file: opening it with the durability settings, the schema, loading it into the
//! index, and the few statements the writer runs.
//!
//! Tables (schema version 3, in `PRAGMA user_version`; version 1 lacked `agents`, version 2
//! `groups`):
//! * `kv(owner, key, value, version, expires_at)`: one row per durable key; `owner` 0 is a
//!   `global` key, any other value the id owning an `agent` key; `value` is JSON text;
//!   `expires_at` is wall-clock epoch milliseconds or NULL.
//! * `meta(name, value)`: the id floor (`next_id`) of [`super::StateStore::id_block`].
//! * `agents(id, seq, owner_uid, uid, spec)`: one row per agent that a restarted kernel
//!   brings back (see [`super::SavedAgent`]); `seq` orders them as they were spawned, `spec`
//!   is the resolved SpawnRequest as JSON text.
//! * `groups(name, seq, owner_uid, spec)`: one row per supervisor group that a restarted kernel
//!   creates again (see [`super::SavedGroup`]); `spec` is the GroupCreateRequest as JSON text.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clove_abi::error::{ErrorCode, WireError};
use clove_abi::msg::state::StateScope;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::index::{Entry, Index, PLAIN};
use super::{SavedAgent, SavedGroup};

/// The schema this code reads and writes.
const SCHEMA_VERSION: i64 = 3;

/// The file name inside the state dir.
pub const FILE_NAME: &str = "state.db";

/// Opens (creating if needed) `<dir>/state.db` in WAL mode with `synchronous=FULL`, so that a
/// committed transaction is on disk when COMMIT returns.
pub fn open(dir: &Path) -> anyhow::Result<Connection> {
    let path = dir.join(FILE_NAME);
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("open state database {}", path.display()))?;
    let what = || format!("set up state database {}", path.display());
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .with_context(what)?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!(
            "state database {}: cannot use WAL mode (sqlite kept {mode:?})",
            path.display()
        );
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
        .with_context(what)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(what)?;
    if version > SCHEMA_VERSION {
        anyhow::bail!(
            "state database {} has schema version {version}, this kernel knows up to {SCHEMA_VERSION}",
            path.display()
        );
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS kv (
             owner INTEGER NOT NULL,
             key TEXT NOT NULL,
             value TEXT NOT NULL,
             version INTEGER NOT NULL,
             expires_at INTEGER,
             PRIMARY KEY (owner, key)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meta (
             name TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS agents (
             id INTEGER PRIMARY KEY,
             seq INTEGER NOT NULL,
             owner_uid INTEGER NOT NULL,
             uid INTEGER NOT NULL,
             spec TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS groups (
             name TEXT PRIMARY KEY,
             seq INTEGER NOT NULL,
             owner_uid INTEGER NOT NULL,
             spec TEXT NOT NULL
         );
         PRAGMA user_version = 3;
         COMMIT;",
    )
    .with_context(what)?;
    Ok(conn)
}

/// Deletes the rows that expired while the kernel was down (nobody can have seen them) and
/// loads the rest into a fresh index.
pub fn load(conn: &Connection, now: i64) -> anyhow::Result<Index> {
    conn.execute("DELETE FROM kv WHERE expires_at <= ?1", params![now])
        .context("purge expired state rows")?;
    let mut stmt = conn
        .prepare("SELECT owner, key, value, version, expires_at FROM kv")
        .context("load state rows")?;
    let mut rows = stmt.query([]).context("load state rows")?;
    let mut index = Index::default();
    while let Some(row) = rows.next().context("load state rows")? {
        let owner: u32 = row.get(0).context("load state rows: owner")?;
        let key: String = row.get(1).context("load state rows: key")?;
        let value: String = row.get(2).context("load state rows: value")?;
        let version: i64 = row.get(3).context("load state rows: version")?;
        let version = u64::try_from(version)
            .with_context(|| format!("state row {owner}/{key:?}: negative version {version}"))?;
        let expires_at: Option<i64> = row.get(4).context("load state rows: expires_at")?;
        let scope = if owner == PLAIN {
            StateScope::Global
        } else {
            StateScope::Agent
        };
        let entry = Entry {
            scope,
            value: Arc::from(value),
            version,
            expires_at,
        };
        index.put(owner, &key, Some(entry));
    }
    Ok(index)
}

/// The saved agents in the order they were spawned. A row whose spec no longer parses is
/// logged, deleted and skipped: nothing could start it again.
pub fn load_agents(conn: &Connection) -> anyhow::Result<Vec<SavedAgent>> {
    let mut stmt = conn
        .prepare("SELECT id, owner_uid, uid, spec FROM agents ORDER BY seq")
        .context("load saved agents")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .context("load saved agents")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("load saved agents")?;
    let mut saved = Vec::with_capacity(rows.len());
    for (id, owner_uid, uid, spec) in rows {
        match serde_json::from_str(&spec) {
            Ok(spec) => saved.push(SavedAgent {
                id,
                owner_uid,
                uid,
                spec,
            }),
            Err(e) => {
                tracing::error!(
                    "saved agent {id}: its spec is not a spawn request ({e}); forgetting it"
                );
                delete_agent(conn, id).context("forget a saved agent")?;
            }
        }
    }
    Ok(saved)
}

/// The saved groups in the order they were created. A row whose spec no longer parses is
/// logged, deleted and skipped.
pub fn load_groups(conn: &Connection) -> anyhow::Result<Vec<SavedGroup>> {
    let mut stmt = conn
        .prepare("SELECT name, owner_uid, spec FROM groups ORDER BY seq")
        .context("load saved groups")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .context("load saved groups")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("load saved groups")?;
    let mut saved = Vec::with_capacity(rows.len());
    for (name, owner_uid, spec) in rows {
        match serde_json::from_str(&spec) {
            Ok(spec) => saved.push(SavedGroup { owner_uid, spec }),
            Err(e) => {
                tracing::error!(
                    "saved group {name:?}: its spec is not a group request ({e}); forgetting it"
                );
                delete_group(conn, &name).context("forget a saved group")?;
            }
        }
    }
    Ok(saved)
}

/// Saves (inserts, or updates keeping its place in the order) a group's row.
pub fn save_group(
    conn: &Connection,
    name: &str,
    owner_uid: u32,
    spec: &str,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO groups (name, seq, owner_uid, spec)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM groups), ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET owner_uid = ?2, spec = ?3",
    )?;
    stmt.execute(params![name, owner_uid, spec])?;
    Ok(())
}

/// Deletes a group's row (a no-op when there is none).
pub fn delete_group(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM groups WHERE name = ?1")?;
    stmt.execute(params![name])?;
    Ok(())
}

/// Saves (inserts, or updates keeping its place in the order) an agent's row.
pub fn save_agent(
    conn: &Connection,
    id: u32,
    owner_uid: u32,
    uid: u32,
    spec: &str,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO agents (id, seq, owner_uid, uid, spec)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM agents), ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET owner_uid = ?2, uid = ?3, spec = ?4",
    )?;
    stmt.execute(params![id, owner_uid, uid, spec])?;
    Ok(())
}

/// Deletes an agent's row (a no-op when there is none).
pub fn delete_agent(conn: &Connection, id: u32) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM agents WHERE id = ?1")?;
    stmt.execute(params![id])?;
    Ok(())
}

/// Writes (inserts or replaces) the row of a durable entry.
pub fn put(conn: &Connection, owner: u32, key: &str, e: &Entry) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO kv (owner, key, value, version, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // Versions grow by one per write: they cannot reach i64::MAX.
    let version = i64::try_from(e.version).unwrap_or(i64::MAX);
    stmt.execute(params![owner, key, &*e.value, version, e.expires_at])?;
    Ok(())
}

/// Deletes one row (a no-op when there is none).
pub fn delete(conn: &Connection, owner: u32, key: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM kv WHERE owner = ?1 AND key = ?2")?;
    stmt.execute(params![owner, key])?;
    Ok(())
}

/// Deletes every row of `owner`.
pub fn delete_owner(conn: &Connection, owner: u32) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM kv WHERE owner = ?1")?;
    stmt.execute(params![owner])?;
    Ok(())
}

/// Reads the stored id floor (1 when never written).
pub fn next_id(conn: &Connection) -> rusqlite::Result<u32> {
    let v: Option<u32> = conn
        .query_row("SELECT value FROM meta WHERE name = 'next_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.unwrap_or(1).max(1))
}

/// Stores the id floor.
pub fn set_next_id(conn: &Connection, next: u32) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('next_id', ?1)",
        params![next],
    )?;
    Ok(())
}

/// The wire error for a failed SQLite call during `what` (`commit`, `write key "k"`, ...):
/// a full disk, an I/O error or a locked file is `unavailable` (the caller may retry later),
/// anything else `internal`.
pub fn wire_error(what: &str, e: &rusqlite::Error) -> WireError {
    use rusqlite::ffi::ErrorCode as C;
    let code = match e.sqlite_error_code() {
        Some(
            C::DiskFull
            | C::SystemIoFailure
            | C::CannotOpen
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::ReadOnly
            | C::OutOfMemory,
        ) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    WireError::new(code, format!("state store: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_map_to_wire_codes() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = wire_error("commit", &full);
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(
            e.message.starts_with("state store: commit: "),
            "{}",
            e.message
        );
        let e = wire_error("commit", &rusqlite::Error::InvalidQuery);
        assert_eq!(e.code, ErrorCode::Internal);
    }

    #[test]
    fn open_sets_wal_and_full_sync_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let e = open(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("schema version 99"), "{e:#}");
    }
}
