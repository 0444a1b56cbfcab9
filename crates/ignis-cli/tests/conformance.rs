//! The API against its own OpenAPI document (`api/openapi.json`):
//! schemathesis, a property-based OpenAPI tester from PyPI (pinned in
//! `scripts/deps.sh`), runs every check (status codes, content types,
//! response schemas, negative-data rejection, positive-data acceptance,
//! ...) in all its phases, the stateful one included, against a live
//! `ignis daemon` on TCP with its token (fake VMM; a VM and a snapshot
//! exist so examples reach real objects). It must find nothing.
//!
//! Operations marked `x-ignis-stream: true` in the document (console
//! attach, the agent upgrade, logs that follow, event stream) hold a
//! connection open by design and are left out; `tests/equivalence.rs`
//! and `tests/daemon.rs` drive them.

#![cfg(feature = "fake-vmm")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::daemon::Daemon;
use common::{tier, Env};

/// The `st` to run: `IGNIS_SCHEMATHESIS`, else the venv of deps.sh.
fn schemathesis() -> Option<PathBuf> {
    let st = std::env::var_os("IGNIS_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ignis-test/schemathesis/bin/st"));
    st.exists().then_some(st)
}

#[test]
fn the_api_conforms_to_its_openapi_document() {
    let Some(st) = schemathesis() else {
        tier::skip(
            tier::CONFORMANCE,
            "schemathesis not installed (scripts/deps.sh, or IGNIS_SCHEMATHESIS)",
        );
        return;
    };
    let version = Command::new(&st).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    eprintln!("conformance tool: {version}");

    let (mut env, img) = Env::fake_app();
    env.ran = Some(tier::ran(tier::CONFORMANCE));
    if let Some(r) = env.ran.as_mut() {
        r.note(&version);
    }
    env.fake_vm("run", "demo", &img);
    env.ok(&["snapshot", "demo", "--name", "snap"]);

    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "a-conformance-token-of-32-chars!";
    let _d = Daemon::start(&env, &["--listen", &listen, "--token", token]);
    common::wait::until(
        "the daemon's TCP listener",
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(&listen).is_ok(),
    );

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = here.join("../../api/openapi.json");
    let fixtures = here.join("tests/fixtures");
    let report = env.dir.path().join("schemathesis-report");
    // Its output into a file as it runs (`tail -f` it while the test
    // runs), printed when it ends.
    std::fs::create_dir_all(&report).unwrap();
    let log = report.join("st.log");
    let status = Command::new(&st)
        .current_dir(env.dir.path())
        .arg("--config-file")
        .arg(fixtures.join("schemathesis.toml"))
        .args(["run", doc.to_str().unwrap(), "--url"])
        .arg(format!("http://{listen}"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "15", "--seed", "1", "--workers", "1"])
        .args(["--request-timeout", "20", "--no-color"])
        .args(["--exclude-by", "/x-ignis-stream == true"])
        .args(["--generation-database", "none"])
        .arg("--report-dir")
        .arg(&report)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .status()
        .unwrap();
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{stdout}");
    assert!(
        status.success(),
        "{version} found failures against api/openapi.json (above)"
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "schemathesis ran no operation:\n{stdout}"
    );
}
