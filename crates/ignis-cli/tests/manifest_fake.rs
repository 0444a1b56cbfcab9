//! `ignis apply/get/delete` through the real binary on the fake VMM: the
//! reconciler creates, starts, stops, recreates and removes VMs from
//! manifests, and a bad manifest changes nothing.

#![cfg(feature = "fake-vmm")]

mod common;

use common::Env;

fn setup() -> Env {
    Env::fake_app().0
}

fn manifest(name: &str, running: bool, cpus: u32) -> String {
    format!(
        "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {name}\nspec:\n  image: app:1\n  backend: fake\n  cpus: {cpus}\n  diskSize: 64MB\n  network: {{mode: none}}\n  running: {running}\n"
    )
}

fn state(env: &Env, vm: &str) -> String {
    env.vm_json(vm)["status"]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn apply_converges_and_delete_removes() {
    let env = setup();
    let dir = env.dir.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("a", true, 1)).unwrap();
    std::fs::write(dir.join("b.yaml"), manifest("b", false, 1)).unwrap();
    let out = env.ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(out, "vm/a created\nvm/b created\n");
    assert_eq!(state(&env, "a"), "running");
    assert_eq!(state(&env, "b"), "created");
    let id_a = env.vm_json("a")["id"].as_str().unwrap().to_string();
    // Level-based: applying again changes nothing.
    assert_eq!(
        env.ok(&["apply", "-f", dir.to_str().unwrap()]),
        "vm/a unchanged\nvm/b unchanged\n"
    );
    // Flip the desired power state; change a's spec.
    std::fs::write(dir.join("b.yaml"), manifest("b", true, 1)).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("a", false, 2)).unwrap();
    let out = env.ok(&["apply", "-f", dir.to_str().unwrap(), "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r[0]["action"], "recreated");
    assert_eq!(r[1]["action"], "started");
    assert_ne!(env.vm_json("a")["id"], id_a.as_str());
    assert_eq!(env.vm_json("a")["spec"]["cpus"], 2);
    assert_eq!(state(&env, "b"), "running");
    std::fs::write(dir.join("b.yaml"), manifest("b", false, 1)).unwrap();
    assert!(env
        .ok(&["apply", "-f", dir.join("b.yaml").to_str().unwrap()])
        .contains("vm/b stopped"));
    // get: the VM as a manifest with its status.
    let y = env.ok(&["get", "vm", "b"]);
    assert!(
        y.contains("apiVersion: ignis.dev/v1alpha1") && y.contains("state: exited"),
        "{y}"
    );
    // delete -f removes what the files name.
    assert_eq!(
        env.ok(&["delete", "-f", dir.to_str().unwrap()]),
        "vm/a removed\nvm/b removed\n"
    );
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "");
}

#[test]
fn a_bad_manifest_changes_nothing_and_unmanaged_vms_are_left_alone() {
    let env = setup();
    let dir = env.dir.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("a", true, 1)).unwrap();
    std::fs::write(
        dir.join("z.yaml"),
        manifest("z", true, 1).replace("cpus:", "cpuz:"),
    )
    .unwrap();
    let out = env.run(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("z.yaml (document 1): spec.cpuz: unknown field"),
        "{err}"
    );
    assert_eq!(env.ok(&["ps", "-a", "-Q"]), "", "nothing applied");
    // A VM made by hand is not taken over by a manifest of the same name.
    env.fake_vm("create", "a", "app:1");
    let out = env.run(&["apply", "-f", dir.join("a.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not created from a manifest"));
    assert_eq!(state(&env, "a"), "created");
}

/// `run --config vm.yaml IMAGE` with an Ignite manifest that has no
/// `spec.image` (nor a name), as Ignite's own config test writes them: the
/// command line fills in what the file leaves out; `apply` still wants both.
#[test]
fn run_config_without_an_image_takes_it_from_the_command_line() {
    let env = setup();
    let cfg = env.dir.path().join("vm.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nspec:\n  cpus: 2\n  memory: 320MB\n  diskSize: 64MB\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let id = env.ok_id(&[
        "run",
        "--config",
        c,
        "--backend",
        "fake",
        "-n",
        "cfgvm",
        "app:1",
    ]);
    let v = env.vm_json(&id);
    assert_eq!(v["image"], "app:1", "{v}");
    assert_eq!(v["name"], "cfgvm");
    assert_eq!(v["spec"]["cpus"], 2, "from the file");
    assert_eq!(v["spec"]["memoryMib"], 320, "{v}");
    // Nothing names the image: the error says where one goes.
    let out = env.run(&["create", "--config", c, "--backend", "fake"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IMAGE: no image given") && err.contains("spec.image in the manifest"),
        "{err}"
    );
    // `apply` of the same file: a manifest must name its image and itself.
    let out = env.run(&["apply", "-f", c]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metadata.name is missing"));
}

/// `create --config`: environment defaults < the manifest < flags (Ignite's
/// precedence); an Ignite manifest works as a config too.
#[test]
fn create_config_precedence() {
    let env = setup();
    let cfg = env.dir.path().join("cfg.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: fromcfg, labels: {team: a}}\nspec: {image: app:1, backend: fake, cpus: 2, memory: 256MB, diskSize: 64MB, env: [A=manifest, B=manifest]}\n",
    )
    .unwrap();
    // IGNIS_BACKEND (a default) loses to the manifest; --cpus and -e win.
    let out = env
        .cmd()
        .env("IGNIS_BACKEND", "qemu")
        .args([
            "create",
            "--config",
            cfg.to_str().unwrap(),
            "--cpus",
            "1",
            "-e",
            "B=flag",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = env.vm_json("fromcfg");
    assert_eq!(v["spec"]["backend"], "fake");
    assert_eq!(v["spec"]["cpus"], 1);
    assert_eq!(v["spec"]["memoryMib"], 256);
    assert_eq!(v["spec"]["labels"]["team"], "a");
    let envs: Vec<&str> = v["spec"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        envs.contains(&"A=manifest") && envs.contains(&"B=flag") && !envs.contains(&"B=manifest"),
        "{envs:?}"
    );
    // An Ignite manifest works as a config too (flags still win).
    let ignite = env.dir.path().join("ignite.yaml");
    std::fs::write(
        &ignite,
        "apiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata:\n  name: fromignite\n  labels: {team: b}\nspec:\n  image:\n    oci: app:1\n  cpus: 2\n  memory: 384MB\n  diskSize: 64MB\n",
    )
    .unwrap();
    env.ok(&[
        "create",
        "--config",
        ignite.to_str().unwrap(),
        "--backend",
        "fake",
        "--cpus",
        "3",
    ]);
    let v = env.vm_json("fromignite");
    assert_eq!(v["image"], "app:1", "{v}");
    assert_eq!(v["spec"]["backend"], "fake");
    assert_eq!(v["spec"]["cpus"], 3, "the flag wins");
    assert_eq!(v["spec"]["memoryMib"], 384, "{v}");
    assert_eq!(v["spec"]["labels"]["team"], "b");
    // Without an image anywhere: a usage error.
    let out = env.run(&["create", "--backend", "fake"]);
    assert_eq!(out.status.code(), Some(2));
}
