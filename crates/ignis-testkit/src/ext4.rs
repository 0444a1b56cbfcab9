//! Looking into ext4 disk images with e2fsprogs (`debugfs`, `e2fsck`).

use std::path::Path;
use std::process::Command;

/// `debugfs -R CMD DISK` stdout.
pub fn debugfs(disk: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(disk)
        .output()
        .expect("debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `e2fsck -fn DISK` finds the filesystem clean; the failure
/// message is `WHAT: ` and e2fsck's report.
pub fn assert_fsck_clean(disk: &Path, what: &str) {
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(disk)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
