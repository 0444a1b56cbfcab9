//! State database schema.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`. `MIGRATIONS[i]`
//! takes the database from version `i` to `i + 1`; they run in one
//! exclusive transaction at open, so concurrent openers never both migrate.
//! A database newer than this binary is refused, never downgraded.
//!
//! Records are JSON documents of the `ignis-api` types, keyed by kind and ID;
//! relations that queries and garbage collection need are tables:
//!
//! - `objects(kind, id)`: images, kernels (later VMs, snapshots)
//! - `names(kind, name) -> id`: human names, unique per kind
//! - `blob_refs(digest, owner)`: the reference count of a blob is its rows
//! - `files(path, owner)`: derived files (image disks) owned by a record
//! - `uses(user, used)`: e.g. a VM uses an image; blocks `image rm`
//! - `leases(network, ip) -> vm`, `ports(host_ip, host_port, proto) -> vm`
//! - `blob_seals(digest)`: the file identity of a blob when it was verified

pub const MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE objects (
        kind    TEXT NOT NULL,
        id      TEXT NOT NULL,
        created INTEGER NOT NULL,
        record  TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE TABLE names (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        id   TEXT NOT NULL,
        PRIMARY KEY (kind, name),
        FOREIGN KEY (kind, id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    CREATE INDEX names_by_id ON names (kind, id);
    CREATE TABLE blob_refs (
        digest     TEXT NOT NULL,
        owner_kind TEXT NOT NULL,
        owner_id   TEXT NOT NULL,
        PRIMARY KEY (digest, owner_kind, owner_id),
        FOREIGN KEY (owner_kind, owner_id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    CREATE INDEX blob_refs_by_owner ON blob_refs (owner_kind, owner_id);
    CREATE TABLE files (
        path       TEXT PRIMARY KEY,
        owner_kind TEXT NOT NULL,
        owner_id   TEXT NOT NULL,
        FOREIGN KEY (owner_kind, owner_id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    CREATE TABLE uses (
        user_kind TEXT NOT NULL,
        user_id   TEXT NOT NULL,
        kind      TEXT NOT NULL,
        id        TEXT NOT NULL,
        PRIMARY KEY (user_kind, user_id, kind, id),
        FOREIGN KEY (user_kind, user_id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    CREATE INDEX uses_by_used ON uses (kind, id);
    "#,
    // v2: networking. A lease or a published port belongs to a VM and goes
    // with it (ON DELETE CASCADE): never leaked.
    r#"
    CREATE TABLE leases (
        network TEXT NOT NULL,
        ip      TEXT NOT NULL,
        vm_kind TEXT NOT NULL DEFAULT 'vm',
        vm_id   TEXT NOT NULL,
        mac     TEXT NOT NULL,
        PRIMARY KEY (network, ip),
        FOREIGN KEY (vm_kind, vm_id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    CREATE TABLE ports (
        host_ip   TEXT NOT NULL,
        host_port INTEGER NOT NULL,
        proto     TEXT NOT NULL,
        vm_kind   TEXT NOT NULL DEFAULT 'vm',
        vm_id     TEXT NOT NULL,
        vm_port   INTEGER NOT NULL,
        PRIMARY KEY (host_ip, host_port, proto),
        FOREIGN KEY (vm_kind, vm_id) REFERENCES objects (kind, id) ON DELETE CASCADE
    );
    "#,
    // v3: seals of verified blobs. A blob is hashed when it enters the
    // store; its file's identity then (inode, size, mtime) is its seal.
    // Using it checks the seal (a stat), and re-hashes only a blob whose
    // file changed since.
    r#"
    CREATE TABLE blob_seals (
        digest   TEXT PRIMARY KEY,
        ino      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL
    );
    "#,
];

#[allow(clippy::cast_possible_truncation)] // a handful of migrations
pub const VERSION: u32 = MIGRATIONS.len() as u32;
