use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::schema::{MIGRATIONS, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database has schema version {found}, newer than this ignis understands ({known}); upgrade ignis")]
    TooNew { found: u32, known: u32 },
    #[error("{kind} {id} is already recorded")]
    Exists { kind: String, id: String },
}

/// The SQLite database of a state root. WAL mode, foreign keys on, a long
/// busy timeout so concurrent ignis processes queue instead of failing.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

/// One object row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub id: String,
    pub created: i64,
    pub record: String,
    pub names: Vec<String>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(60))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL: commits are atomic and the database never
        // corrupts; a power cut may lose the last commits (not a crash of
        // ignis, whose commits are in the WAL). Records name only files
        // that exist before the commit, and GC collects files whose record
        // was lost, so the state stays consistent either way. FULL cost an
        // fsync per commit on every start.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn schema_version(&self) -> Result<u32, DbError> {
        let conn = self.conn.lock().expect("db mutex");
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Gives back the page cache's memory and keeps it small from now on
    /// (a long-lived process that writes a record now and then: the
    /// supervisor).
    pub fn shrink_memory(&self) {
        let conn = self.conn.lock().expect("db mutex");
        let _ = conn.pragma_update(None, "cache_size", -64);
        let _ = conn.pragma_update(None, "shrink_memory", 0);
    }

    /// Runs a read-only `f` in a DEFERRED transaction: in WAL mode a
    /// consistent snapshot that never waits for, or blocks, a writer.
    pub fn read<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn.lock().expect("db mutex");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| E::from(DbError::from(e)))?;
        let out = f(&Tx { tx: &tx })?;
        tx.commit().map_err(|e| E::from(DbError::from(e)))?;
        Ok(out)
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock is taken up
    /// front, so two writers never deadlock on upgrade) and commits it when
    /// `f` succeeds.
    pub fn tx<T, E: From<DbError>>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.conn.lock().expect("db mutex");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(DbError::from(e)))?;
        let out = f(&Tx { tx: &tx })?;
        tx.commit().map_err(|e| E::from(DbError::from(e)))?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(DbError::TooNew {
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            u32::try_from(i + 1).expect("few migrations"),
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A published port and the VM address behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRow {
    pub host_ip: String,
    pub host_port: u16,
    pub proto: String,
    pub vm_port: u16,
    pub vm_ip: String,
}

/// A write transaction on the records.
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl Tx<'_> {
    /// Inserts an object; `Ok(false)` when one with this kind and ID exists.
    pub fn insert_object(
        &self,
        kind: &str,
        id: &str,
        created: i64,
        record: &str,
    ) -> Result<bool, DbError> {
        let n = self.tx.execute(
            "INSERT INTO objects (kind, id, created, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, id) DO NOTHING",
            params![kind, id, created, record],
        )?;
        Ok(n == 1)
    }

    pub fn update_record(&self, kind: &str, id: &str, record: &str) -> Result<(), DbError> {
        self.tx.execute(
            "UPDATE objects SET record = ?3 WHERE kind = ?1 AND id = ?2",
            params![kind, id, record],
        )?;
        Ok(())
    }

    pub fn get_object(&self, kind: &str, id: &str) -> Result<Option<ObjectRow>, DbError> {
        let row = self
            .tx
            .query_row(
                "SELECT id, created, record FROM objects WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((id, created, record)) => {
                let names = self.names_of(kind, &id)?;
                Ok(Some(ObjectRow {
                    id,
                    created,
                    record,
                    names,
                }))
            }
        }
    }

    /// All objects of a kind, newest first, with their names.
    pub fn list_objects(&self, kind: &str) -> Result<Vec<ObjectRow>, DbError> {
        let mut stmt = self.tx.prepare(
            "SELECT id, created, record FROM objects WHERE kind = ?1 ORDER BY created DESC, id",
        )?;
        let rows = stmt
            .query_map(params![kind], |r| {
                Ok(ObjectRow {
                    id: r.get(0)?,
                    created: r.get(1)?,
                    record: r.get(2)?,
                    names: vec![],
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|mut row| {
                row.names = self.names_of(kind, &row.id)?;
                Ok(row)
            })
            .collect()
    }

    pub fn delete_object(&self, kind: &str, id: &str) -> Result<bool, DbError> {
        let n = self.tx.execute(
            "DELETE FROM objects WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        )?;
        Ok(n == 1)
    }

    /// Points `name` at `id`, taking it from whatever object had it.
    /// Returns the ID that held the name before, if another.
    pub fn set_name(&self, kind: &str, name: &str, id: &str) -> Result<Option<String>, DbError> {
        let before = self.lookup_name(kind, name)?;
        self.tx.execute(
            "INSERT INTO names (kind, name, id) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET id = excluded.id",
            params![kind, name, id],
        )?;
        Ok(before.filter(|b| b != id))
    }

    pub fn remove_name(&self, kind: &str, name: &str) -> Result<bool, DbError> {
        let n = self.tx.execute(
            "DELETE FROM names WHERE kind = ?1 AND name = ?2",
            params![kind, name],
        )?;
        Ok(n == 1)
    }

    pub fn lookup_name(&self, kind: &str, name: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .tx
            .query_row(
                "SELECT id FROM names WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn names_of(&self, kind: &str, id: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self
            .tx
            .prepare("SELECT name FROM names WHERE kind = ?1 AND id = ?2 ORDER BY name")?;
        let names = stmt
            .query_map(params![kind, id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(names)
    }

    /// Records that `owner` references blob `digest` (idempotent).
    pub fn add_blob_ref(
        &self,
        digest: &str,
        owner_kind: &str,
        owner_id: &str,
    ) -> Result<(), DbError> {
        self.tx.execute(
            "INSERT OR IGNORE INTO blob_refs (digest, owner_kind, owner_id) VALUES (?1, ?2, ?3)",
            params![digest, owner_kind, owner_id],
        )?;
        Ok(())
    }

    /// How many owners reference `digest`.
    pub fn blob_refcount(&self, digest: &str) -> Result<u64, DbError> {
        let n: i64 = self.tx.query_row(
            "SELECT COUNT(*) FROM blob_refs WHERE digest = ?1",
            params![digest],
            |r| r.get(0),
        )?;
        Ok(n.unsigned_abs())
    }

    /// Records the seal of a verified blob (see `schema.rs`, v3).
    pub fn set_seal(&self, digest: &str, seal: (u64, u64, i64)) -> Result<(), DbError> {
        let (ino, size, mtime_ns) = seal;
        self.tx.execute(
            "INSERT INTO blob_seals (digest, ino, size, mtime_ns) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (digest) DO UPDATE SET ino = excluded.ino, size = excluded.size, mtime_ns = excluded.mtime_ns",
            params![digest, ino.cast_signed(), size.cast_signed(), mtime_ns],
        )?;
        Ok(())
    }

    pub fn seal(&self, digest: &str) -> Result<Option<(u64, u64, i64)>, DbError> {
        self.tx
            .query_row(
                "SELECT ino, size, mtime_ns FROM blob_seals WHERE digest = ?1",
                params![digest],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.cast_unsigned(),
                        r.get::<_, i64>(1)?.cast_unsigned(),
                        r.get(2)?,
                    ))
                },
            )
            .optional()
            .map_err(Into::into)
    }

    pub fn remove_seal(&self, digest: &str) -> Result<(), DbError> {
        self.tx
            .execute("DELETE FROM blob_seals WHERE digest = ?1", params![digest])?;
        Ok(())
    }

    pub fn referenced_blobs(&self) -> Result<BTreeSet<String>, DbError> {
        let mut stmt = self.tx.prepare("SELECT DISTINCT digest FROM blob_refs")?;
        let set = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(set)
    }

    /// Records that `owner` owns the derived file `path`.
    pub fn add_file(&self, path: &str, owner_kind: &str, owner_id: &str) -> Result<(), DbError> {
        self.tx.execute(
            "INSERT INTO files (path, owner_kind, owner_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (path) DO UPDATE SET owner_kind = excluded.owner_kind, owner_id = excluded.owner_id",
            params![path, owner_kind, owner_id],
        )?;
        Ok(())
    }

    pub fn owned_files(&self) -> Result<BTreeSet<String>, DbError> {
        let mut stmt = self.tx.prepare("SELECT path FROM files")?;
        let set = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(set)
    }

    /// Records that `user` uses `(kind, id)` (a VM uses an image).
    pub fn add_use(
        &self,
        user_kind: &str,
        user_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<(), DbError> {
        self.tx.execute(
            "INSERT OR IGNORE INTO uses (user_kind, user_id, kind, id) VALUES (?1, ?2, ?3, ?4)",
            params![user_kind, user_id, kind, id],
        )?;
        Ok(())
    }

    /// Addresses leased in `network`.
    pub fn leased(&self, network: &str) -> Result<BTreeSet<String>, DbError> {
        let mut stmt = self
            .tx
            .prepare("SELECT ip FROM leases WHERE network = ?1")?;
        let set = stmt
            .query_map(params![network], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(set)
    }

    /// Networks other than `network` that have leases.
    pub fn other_networks(&self, network: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self
            .tx
            .prepare("SELECT DISTINCT network FROM leases WHERE network != ?1")?;
        let v = stmt
            .query_map(params![network], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    pub fn add_lease(
        &self,
        network: &str,
        ip: &str,
        vm_id: &str,
        mac: &str,
    ) -> Result<(), DbError> {
        self.tx.execute(
            "INSERT INTO leases (network, ip, vm_id, mac) VALUES (?1, ?2, ?3, ?4)",
            params![network, ip, vm_id, mac],
        )?;
        Ok(())
    }

    /// The VM that publishes `host_ip:host_port/proto`, if any.
    pub fn port_owner(
        &self,
        host_ip: &str,
        host_port: u16,
        proto: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(self
            .tx
            .query_row(
                // `0.0.0.0` (no IP given) is every address of both
                // families, `::` every IPv6 address.
                "SELECT vm_id FROM ports WHERE host_port = ?2 AND proto = ?3
                 AND (host_ip = ?1 OR host_ip = '0.0.0.0' OR ?1 = '0.0.0.0'
                      OR (host_ip = '::' AND instr(?1, ':') > 0)
                      OR (?1 = '::' AND instr(host_ip, ':') > 0))",
                params![host_ip, host_port, proto],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn add_port(
        &self,
        host_ip: &str,
        host_port: u16,
        proto: &str,
        vm_id: &str,
        vm_port: u16,
    ) -> Result<(), DbError> {
        self.tx.execute(
            "INSERT INTO ports (host_ip, host_port, proto, vm_id, vm_port) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![host_ip, host_port, proto, vm_id, vm_port],
        )?;
        Ok(())
    }

    /// Every published port with the address of the VM behind it.
    pub fn forwards(&self) -> Result<Vec<ForwardRow>, DbError> {
        let mut stmt = self.tx.prepare(
            "SELECT p.host_ip, p.host_port, p.proto, p.vm_port, l.ip FROM ports p
             JOIN leases l ON l.vm_id = p.vm_id ORDER BY p.host_port, p.proto",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ForwardRow {
                    host_ip: r.get(0)?,
                    host_port: r.get(1)?,
                    proto: r.get(2)?,
                    vm_port: r.get(3)?,
                    vm_ip: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The objects that use `(kind, id)`, as `(user_kind, user_id)`.
    pub fn users_of(&self, kind: &str, id: &str) -> Result<Vec<(String, String)>, DbError> {
        let mut stmt = self.tx.prepare(
            "SELECT user_kind, user_id FROM uses WHERE kind = ?1 AND id = ?2 ORDER BY user_kind, user_id",
        )?;
        let users = stmt
            .query_map(params![kind, id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        (dir, db)
    }

    #[test]
    fn migrates_to_current_version_and_reopens() {
        let (dir, db) = db();
        assert_eq!(db.schema_version().unwrap(), VERSION);
        drop(db);
        let again = Db::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(again.schema_version().unwrap(), VERSION);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let (dir, db) = db();
        drop(db);
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Db::open(&dir.path().join("state.db")).unwrap_err();
        assert!(matches!(err, DbError::TooNew { .. }), "{err}");
    }

    #[test]
    fn deleting_an_object_drops_its_names_refs_files_and_uses() {
        let (_d, db) = db();
        db.tx(|tx| {
            assert!(tx.insert_object("image", "i1", 1, "{}")?);
            assert!(
                !tx.insert_object("image", "i1", 2, "{}")?,
                "second insert is a no-op"
            );
            tx.insert_object("vm", "v1", 1, "{}")?;
            tx.set_name("image", "busybox", "i1")?;
            tx.add_blob_ref("sha256:aa", "image", "i1")?;
            tx.add_blob_ref("sha256:aa", "image", "i1")?;
            tx.add_file("/d/i1.ext4", "image", "i1")?;
            tx.add_use("vm", "v1", "image", "i1")?;
            assert_eq!(tx.blob_refcount("sha256:aa")?, 1);
            assert_eq!(
                tx.users_of("image", "i1")?,
                vec![("vm".into(), "v1".into())]
            );
            assert!(tx.delete_object("vm", "v1")?);
            assert!(tx.users_of("image", "i1")?.is_empty());
            assert!(tx.delete_object("image", "i1")?);
            assert_eq!(tx.blob_refcount("sha256:aa")?, 0);
            assert!(tx.owned_files()?.is_empty());
            assert_eq!(tx.lookup_name("image", "busybox")?, None);
            Ok::<_, DbError>(())
        })
        .unwrap();
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let (_d, db) = db();
        let res: Result<(), DbError> = db.tx(|tx| {
            tx.insert_object("image", "i1", 1, "{}")?;
            Err(DbError::Exists {
                kind: "image".into(),
                id: "i1".into(),
            })
        });
        assert!(res.is_err());
        let rows = db.tx(|tx| tx.list_objects("image")).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn set_name_moves_a_name_and_reports_the_previous_holder() {
        let (_d, db) = db();
        db.tx(|tx| {
            tx.insert_object("image", "a", 1, "{}")?;
            tx.insert_object("image", "b", 2, "{}")?;
            assert_eq!(tx.set_name("image", "n", "a")?, None);
            assert_eq!(tx.set_name("image", "n", "a")?, None);
            assert_eq!(tx.set_name("image", "n", "b")?, Some("a".into()));
            assert_eq!(tx.names_of("image", "a")?, Vec::<String>::new());
            Ok::<_, DbError>(())
        })
        .unwrap();
    }
}
