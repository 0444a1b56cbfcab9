//! Live tier (b): a stock Debian 12 image with cloud-init (debootstrapped
//! once per machine by scripts/cloud-image.sh, cached beside the kernel)
//! boots on QEMU with `--user-data`, and cloud-init itself applies the
//! NoCloud seed: the hostname and a user's authorized key, the instance-id
//! the VM's ID. Checked from the host through the agent. Then the same
//! systemd image stops cleanly once up and during its boot, and `start
//! --wait system` waits for systemd. Slow under TCG (systemd, Python):
//! generous waits, nothing timed.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn cloud_init_applies_the_seed_on_qemu() {
    if common::qemu_missing_piece().is_some() {
        // linux_env() says which piece, once.
        let _ = common::linux_env();
        return;
    }
    let Some(rootfs) = common::cloud::rootfs(common::tier::QEMU) else {
        return;
    };
    let Some(env) = common::linux_env() else {
        return;
    };
    common::cloud::import_image(&env, &rootfs);

    // A real key pair's public half (cloud-init parses the line).
    let key_file = env.dir.path().join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "cloud-init-test",
            "-f",
        ])
        .arg(&key_file)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(key_file.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    let user_data = env.dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nhostname: cloudy\npreserve_hostname: false\nusers:\n  - name: tester\n    shell: /bin/sh\n    ssh_authorized_keys:\n      - {pubkey}\nwrite_files:\n  - path: /etc/ignis-cloud-init-test\n    content: written by cloud-init\n"
        ),
    )
    .unwrap();
    let id = env.ok_id(&[
        "run",
        "--name",
        "ci-vm",
        "--memory",
        "768MB",
        "--user-data",
        user_data.to_str().unwrap(),
        "debian-cloud:12",
    ]);
    let exec = |args: &[&str]| -> Option<String> {
        let out = env
            .cmd()
            .args(["exec", "ci-vm"])
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    };
    // cloud-init's last stage writes boot-finished; TCG takes minutes.
    let finished = common::wait::within(Duration::from_secs(900), || {
        exec(&["cat", "/var/lib/cloud/instance/boot-finished"]).is_some()
    });
    let log = || env.ok(&["logs", "ci-vm"]);
    assert!(
        finished,
        "cloud-init did not finish; console:\n{}\ncloud-init.log:\n{}",
        log(),
        exec(&["tail", "-n", "60", "/var/log/cloud-init.log"]).unwrap_or_default()
    );
    let debug = || {
        format!(
            "console:\n{}\ncloud-init.log:\n{}",
            log(),
            exec(&["tail", "-n", "80", "/var/log/cloud-init.log"]).unwrap_or_default()
        )
    };
    // The seed was found on a disk (by its label) and read as NoCloud.
    let result = exec(&["cat", "/run/cloud-init/result.json"]).unwrap_or_default();
    assert!(
        result.contains("DataSourceNoCloud [seed=/dev/vd"),
        "result.json: {result}\n{}",
        debug()
    );
    assert_eq!(
        exec(&["cat", "/var/lib/cloud/data/instance-id"])
            .unwrap_or_default()
            .trim(),
        id,
        "instance-id is the VM ID\n{}",
        debug()
    );
    // user-data applied by cloud-init (ignis's init set "ci-vm" first).
    assert_eq!(
        exec(&["hostname"]).unwrap_or_default().trim(),
        "cloudy",
        "{}",
        debug()
    );
    assert_eq!(
        exec(&["cat", "/etc/hostname"]).unwrap_or_default().trim(),
        "cloudy"
    );
    let keys = exec(&["cat", "/home/tester/.ssh/authorized_keys"]).unwrap_or_default();
    assert!(
        keys.contains(&pubkey),
        "authorized_keys: {keys}\n{}",
        debug()
    );
    assert_eq!(
        exec(&["cat", "/etc/ignis-cloud-init-test"])
            .unwrap_or_default()
            .trim(),
        "written by cloud-init"
    );

    // The same systemd image, stopped and started: a stop once it is up
    // powers it off cleanly; a stop sent the moment its agent answers
    // (systemd only just exec'd, before it handles signals) powers it off
    // cleanly too instead of waiting out the timeout and killing it; and
    // `start --wait system` returns once systemd says running or degraded.
    let stopped = |when: &str| {
        env.ok(&["stop", "-t", "600", "ci-vm"]);
        let v = env.vm_json("ci-vm");
        assert_eq!(
            (
                v["status"]["exitCode"].as_i64(),
                v["status"]["reason"].as_str()
            ),
            (Some(0), Some("stopped")),
            "stop {when}: {v}\n{}",
            log()
        );
    };
    stopped("once up");
    env.ok(&["start", "ci-vm"]);
    stopped("during boot");
    env.ok(&["start", "--wait", "system", "ci-vm"]);
    // is-system-running exits 1 when degraded: its output is the answer.
    let state = env.run(&["exec", "ci-vm", "systemctl", "is-system-running"]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    assert!(
        state == "running" || state == "degraded",
        "after --wait system: {state:?}"
    );
    env.ok(&["rm", "-f", "ci-vm"]);
    assert!(!env.root().join("vms").join(&id).exists());
}
