//! [`Store`] in an embedded SQLite file (`DATA_DIR/netbore.db`).
//!
//! One connection behind a mutex: control-plane calls are few and short. The file is in
//! WAL mode with a busy timeout, so `netbore key …` can write while the server runs.
//! The change marker is `PRAGMA data_version`, which moves when another connection
//! (such as `netbore key revoke`) commits.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{ApiKeyRecord, Reserve, ReservedName, Store, StoreError, TunnelRecord};
use crate::api::Protocol;

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another process (the CLI, the server) to finish its own.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    label       TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reserved_names (
    name       TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES api_keys(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reserved_names_by_key ON reserved_names(key_id);
CREATE TABLE IF NOT EXISTS tunnels (
    tunnel_id     TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    name          TEXT,
    remote_port   INTEGER,
    public_url    TEXT NOT NULL,
    recreate_hash TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tunnels_by_owner ON tunnels(owner);
CREATE INDEX IF NOT EXISTS tunnels_by_name ON tunnels(name);
";

const TUNNEL_COLUMNS: &str =
    "tunnel_id, owner, protocol, name, remote_port, public_url, recreate_hash, created_at";

/// The store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Keys revoked through this handle: `PRAGMA data_version` ignores the
    /// connection's own commits, so [`Store::change_marker`] counts these itself.
    own_revocations: AtomicU64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Seconds since the epoch as SQLite's integer (saturating: dates past 2262 are not
/// a concern of this store).
fn to_sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn from_sql_time(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        // The database holds key hashes and agents' addresses: owner-only, and so
        // are its journal files, which SQLite creates with the database's mode.
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        crate::private_fs::open(path, &mut options).map_err(|e| open_err(e.to_string()))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut journal = path.as_os_str().to_owned();
            journal.push(suffix);
            let journal = std::path::PathBuf::from(journal);
            if journal.exists() {
                crate::private_fs::open(&journal, std::fs::OpenOptions::new().read(true))
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        Self::init(conn).map_err(|e| match e {
            StoreError::Backend(reason) => open_err(reason),
            other => other,
        })
    }

    /// A store in memory, gone when dropped (for tests and throwaway servers).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // In-memory databases answer "memory"; both are fine.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(backend)?;
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")
            .map_err(backend)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "schema version {version} is newer than this netbore ({SCHEMA_VERSION}); run a newer netbore"
            )));
        }
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(backend)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            own_revocations: AtomicU64::new(0),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done write behind: every
        // multi-statement change runs in a transaction that rolls back on drop.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        label: row.get(1)?,
        secret_hash: row.get(2)?,
        created_at: from_sql_time(row.get(3)?),
        revoked: row.get::<_, i64>(4)? != 0,
    })
}

fn name_from_row(row: &Row<'_>) -> rusqlite::Result<ReservedName> {
    Ok(ReservedName {
        name: row.get(0)?,
        key_id: row.get(1)?,
        created_at: from_sql_time(row.get(2)?),
    })
}

/// A tunnel row with its protocol still as text (checked in [`tunnel_from_raw`]).
type RawTunnel = (TunnelRecord, String);

fn tunnel_from_row(row: &Row<'_>) -> rusqlite::Result<RawTunnel> {
    let port: Option<i64> = row.get(4)?;
    let record = TunnelRecord {
        tunnel_id: row.get(0)?,
        owner: row.get(1)?,
        protocol: Protocol::Tcp,
        name: row.get(3)?,
        remote_port: port.and_then(|p| u16::try_from(p).ok()),
        public_url: row.get(5)?,
        recreate_hash: row.get(6)?,
        created_at: from_sql_time(row.get(7)?),
    };
    Ok((record, row.get(2)?))
}

fn tunnel_from_raw((mut record, protocol): RawTunnel) -> Result<TunnelRecord, StoreError> {
    record.protocol = match protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "http" => Protocol::Http,
        "tls" => Protocol::Tls,
        other => {
            return Err(StoreError::Corrupt(format!(
                "tunnel {} has unknown protocol {other:?}",
                record.tunnel_id
            )));
        }
    };
    Ok(record)
}

impl SqliteStore {
    fn tunnels_where(&self, clause: &str, value: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE {clause} ORDER BY created_at, tunnel_id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map([value], tunnel_from_row)
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        rows.into_iter().map(tunnel_from_raw).collect()
    }

    fn tunnel_where(&self, clause: &str, value: &str) -> Result<Option<TunnelRecord>, StoreError> {
        let raw = self
            .conn()
            .query_row(
                &format!("SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE {clause}"),
                [value],
                tunnel_from_row,
            )
            .optional()
            .map_err(backend)?;
        raw.map(tunnel_from_raw).transpose()
    }
}

impl Store for SqliteStore {
    fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (id, label, secret_hash, created_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.id,
                    key.label,
                    key.secret_hash,
                    to_sql_time(key.created_at),
                    i64::from(key.revoked)
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, label, secret_hash, created_at, revoked FROM api_keys WHERE secret_hash = ?1",
                [secret_hash],
                key_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, label, secret_hash, created_at, revoked FROM api_keys WHERE id = ?1",
                [id],
                key_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, label, secret_hash, created_at, revoked FROM api_keys ORDER BY created_at, id")
            .map_err(backend)?;
        stmt.query_map([], key_from_row)
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)
    }

    fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let changed = tx
            .execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])
            .map_err(backend)?;
        tx.execute("DELETE FROM reserved_names WHERE key_id = ?1", [id])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        // Counted while the connection is still locked, so a marker read after this
        // commit is visible also sees the count.
        self.own_revocations.fetch_add(1, Ordering::Relaxed);
        drop(conn);
        Ok(changed > 0)
    }

    fn reserve_name(
        &self,
        name: &str,
        key_id: &str,
        now: u64,
        max_per_key: usize,
    ) -> Result<Reserve, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let holder: Option<String> = tx
            .query_row(
                "SELECT key_id FROM reserved_names WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        match holder {
            Some(h) if h == key_id => return Ok(Reserve::AlreadyYours),
            Some(_) => return Ok(Reserve::Taken),
            None => {}
        }
        let held: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM reserved_names WHERE key_id = ?1",
                [key_id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_key {
            return Ok(Reserve::LimitReached);
        }
        tx.execute(
            "INSERT INTO reserved_names (name, key_id, created_at) VALUES (?1, ?2, ?3)",
            params![name, key_id, to_sql_time(now)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Reserve::Reserved)
    }

    fn name_reservation(&self, name: &str) -> Result<Option<ReservedName>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name, key_id, created_at FROM reserved_names WHERE name = ?1",
                [name],
                name_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn names_of(&self, key_id: &str) -> Result<Vec<ReservedName>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT name, key_id, created_at FROM reserved_names WHERE key_id = ?1 ORDER BY name",
            )
            .map_err(backend)?;
        stmt.query_map([key_id], name_from_row)
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)
    }

    fn release_name(&self, name: &str, key_id: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM reserved_names WHERE name = ?1 AND key_id = ?2",
                [name, key_id],
            )
            .map_err(backend)?;
        Ok(changed > 0)
    }

    fn insert_tunnel(&self, t: &TunnelRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO tunnels ({TUNNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    t.tunnel_id,
                    t.owner,
                    t.protocol.as_str(),
                    t.name,
                    t.remote_port.map(i64::from),
                    t.public_url,
                    t.recreate_hash,
                    to_sql_time(t.created_at)
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn tunnel(&self, tunnel_id: &str) -> Result<Option<TunnelRecord>, StoreError> {
        self.tunnel_where("tunnel_id = ?1", tunnel_id)
    }

    fn tunnel_by_recreate_hash(
        &self,
        recreate_hash: &str,
    ) -> Result<Option<TunnelRecord>, StoreError> {
        self.tunnel_where("recreate_hash = ?1", recreate_hash)
    }

    fn tunnels_of(&self, owner: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        self.tunnels_where("owner = ?1", owner)
    }

    fn tunnels_named(&self, name: &str) -> Result<Vec<TunnelRecord>, StoreError> {
        self.tunnels_where("name = ?1", name)
    }

    fn all_tunnels(&self) -> Result<Vec<TunnelRecord>, StoreError> {
        // A clause true of every row, so the one query shape serves.
        self.tunnels_where("?1 = ?1", "all")
    }

    fn set_public_url(&self, tunnel_id: &str, public_url: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE tunnels SET public_url = ?2 WHERE tunnel_id = ?1",
                [tunnel_id, public_url],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn delete_tunnel(&self, tunnel_id: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute("DELETE FROM tunnels WHERE tunnel_id = ?1", [tunnel_id])
            .map_err(backend)?;
        Ok(changed > 0)
    }

    fn count_tunnels(&self) -> Result<u64, StoreError> {
        // COUNT(*) walks the smallest index inside SQLite; no row reaches Rust.
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM tunnels", [], |r| r.get(0))
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn health(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        // An open connection keeps answering from a database file that was deleted;
        // a store whose file is gone would lose everything at the next start.
        if let Some(path) = conn.path().filter(|p| !p.is_empty())
            && !Path::new(path).exists()
        {
            return Err(StoreError::Backend(format!(
                "the database file {path} is gone"
            )));
        }
        conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend)
    }

    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        let conn = self.conn();
        // Differs between two reads on one connection exactly when another connection
        // committed in between (WAL or not; every other process's writes included).
        // The pragma opens its own read transaction, and this store never leaves one
        // open between calls, so it sees every commit made before it. SQLite keeps it
        // in 32 bits; this connection's own revocations go in the high half.
        let version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(backend)?;
        let version = u64::try_from(version).unwrap_or(0) & u64::from(u32::MAX);
        let own = self.own_revocations.load(Ordering::Relaxed);
        Ok(Some((own << 32) | version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::create_api_key;

    #[test]
    fn the_change_marker_moves_when_any_handle_revokes_a_key() {
        let dir = std::env::temp_dir().join(format!("netbore-marker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("netbore.db");
        // The server's handle, and `netbore key` in another process.
        let server = SqliteStore::open(&path).unwrap();
        let cli = SqliteStore::open(&path).unwrap();
        let key = create_api_key(&cli, "k").unwrap().record;

        let marker = |s: &SqliteStore| s.change_marker().unwrap().unwrap();
        let before = marker(&server);
        assert_eq!(marker(&server), before, "nothing committed in between");
        // The server's own writes other than revocations leave it alone.
        create_api_key(&server, "other").unwrap();
        assert_eq!(marker(&server), before);

        assert!(cli.revoke_key(&key.id).unwrap());
        let after_cli = marker(&server);
        assert_ne!(after_cli, before, "another connection's commit");
        assert_eq!(marker(&server), after_cli);

        let other = create_api_key(&cli, "third").unwrap().record;
        let after_create = marker(&server);
        assert!(server.revoke_key(&other.id).unwrap());
        assert_ne!(
            marker(&server),
            after_create,
            "this handle's own revocation"
        );

        drop((server, cli));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
