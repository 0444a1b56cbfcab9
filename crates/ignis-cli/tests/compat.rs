//! A state root written by an earlier release opens with this one, and its
//! VMs start: records with backends, health and run state as strings,
//! schema version 2 (no blob seals), snapshot blobs named by plain sha256.
//!
//! The fixture `fixtures/root-4041d2f.tar.gz` was made by the release at
//! commit 4041d2f (before typed state, the driver boundary and chunked
//! digests) with `fixtures/make-root.sh`. Its records hold absolute paths,
//! so it unpacks at the path it was made at.

use std::path::Path;
use std::process::Command;

const ROOT: &str = "/var/tmp/ignis-compat-root";

fn ignis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ignis"))
        .arg("--root")
        .arg(ROOT)
        .args(args)
        .env("IGNIS_NETWORK", "none")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = ignis(args);
    assert!(
        out.status.success(),
        "ignis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn state(vm: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", vm])).unwrap();
    v["status"]["state"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_root_from_the_previous_release_opens_and_its_vms_start() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/root-4041d2f.tar.gz");
    let _ = std::fs::remove_dir_all(ROOT);
    let st = Command::new("tar")
        .args(["-xSzf", fixture.to_str().unwrap(), "-C", "/"])
        .status()
        .unwrap();
    assert!(st.success(), "unpack the fixture");
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let ids = ignis(&["ps", "-a", "-Q"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            if args.len() > 2 {
                let _ = ignis(&args);
            }
            let _ = std::fs::remove_dir_all(ROOT);
        }
    }
    let _cleanup = Cleanup;

    // Everything the old release recorded reads back, typed.
    let ps = ok(&["ps", "-a", "--format", "{{.Name}} {{.Spec.Backend}}"]);
    for vm in ["created", "stopped", "snapsrc"] {
        assert!(ps.contains(&format!("{vm} fake")), "{ps}");
    }
    assert_eq!(state("created"), "created");
    assert_eq!(state("stopped"), "exited");
    let snaps = ok(&["snapshot", "ls", "-o", "json"]);
    assert!(
        snaps.contains("\"sha256:"),
        "the old snapshot's blobs: {snaps}"
    );

    // Its VMs start, stop and end as today's do.
    ok(&["start", "created"]);
    assert_eq!(state("created"), "running");
    ok(&["stop", "created"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "created"])).unwrap();
    assert_eq!(v["status"]["reason"], "stopped");
    ok(&["start", "stopped"]);
    assert_eq!(state("stopped"), "running");
    ok(&["kill", "stopped"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "stopped"])).unwrap();
    assert_eq!(v["status"]["exitCode"], 137);

    // Its snapshot forks: the blobs, never sealed by that release, are
    // checked (re-hashed once) and the clone runs.
    let clone = ok(&["fork", "snap"]);
    assert_eq!(state(clone.trim()), "running");

    // The database was migrated forward.
    let db = rusqlite::Connection::open(Path::new(ROOT).join("state.db")).unwrap();
    let v: u32 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(v >= 3, "schema {v}");
    let seals: u32 = db
        .query_row("SELECT COUNT(*) FROM blob_seals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seals, 3, "the snapshot's blobs are sealed once checked");
}
