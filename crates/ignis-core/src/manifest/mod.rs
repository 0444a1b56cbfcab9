//! Manifests: parsing (YAML or JSON, several documents per file), strict
//! validation with field paths, Ignite `v1alpha4` conversion, and the
//! level-based reconciler that `apply`, `delete` and the daemon share.

mod apply;
mod ignite;
pub mod placement;

pub use apply::{Action, Applied};

use ignis_api::manifest::{
    ImageManifest, KernelManifest, Manifest, SnapshotManifest, VmManifest, API_VERSION,
};

use crate::{Error, ErrorKind};

/// Largest manifest file accepted.
pub const MAX_FILE: usize = 1 << 20;

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::Invalid, msg)
}

/// Deserializes `value` as `T`, reporting the path of the first bad field.
fn strict<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    origin: &str,
) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        invalid(format!(
            "{origin}: {}: {}",
            if path == "." {
                "(document)".into()
            } else {
                path
            },
            e.inner()
        ))
    })
}

/// Parses every document of `text` (YAML; JSON is YAML). `origin` names
/// the source in errors (file path, `-`).
pub fn parse(text: &str, origin: &str) -> Result<Vec<Manifest>, Error> {
    parse_as(text, origin, false)
}

/// A `run --config FILE`: VM manifests in which the name and the image may
/// be missing (the command line gives them: Ignite's precedence, flags over
/// the file); every other check as [`parse`].
pub fn read_config(path: &std::path::Path) -> Result<Vec<Manifest>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::with_source(
            ErrorKind::NotFound,
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    parse_as(&text, &path.display().to_string(), true)
}

fn parse_as(text: &str, origin: &str, partial: bool) -> Result<Vec<Manifest>, Error> {
    if text.len() > MAX_FILE {
        return Err(invalid(format!(
            "{origin}: larger than {} KiB",
            MAX_FILE >> 10
        )));
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{origin} (document {})", i + 1);
        // serde_yaml bounds nesting depth and alias expansion (billion
        // laughs), so hostile documents fail here with an error.
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| invalid(format!("{origin}: not valid YAML: {e}")))?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        let api = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        let m = match (api, kind) {
            (API_VERSION, "VM") => Manifest::Vm(strict::<VmManifest>(value, &origin)?),
            (API_VERSION, "Image") => Manifest::Image(strict::<ImageManifest>(value, &origin)?),
            (API_VERSION, "Kernel") => Manifest::Kernel(strict::<KernelManifest>(value, &origin)?),
            (API_VERSION, "Snapshot") => {
                Manifest::Snapshot(strict::<SnapshotManifest>(value, &origin)?)
            }
            (ignite::API_VERSION, "VM") => Manifest::Vm(ignite::convert(strict(value, &origin)?, &origin)?),
            ("", _) => return Err(invalid(format!("{origin}: apiVersion missing (want {API_VERSION})"))),
            (API_VERSION | ignite::API_VERSION, other) => {
                return Err(invalid(format!(
                    "{origin}: kind '{other}' is not one of VM, Image, Kernel, Snapshot"
                )))
            }
            (other, _) => {
                return Err(invalid(format!(
                    "{origin}: apiVersion '{other}' is not supported (want {API_VERSION}, or {} for Ignite manifests)",
                    ignite::API_VERSION
                )))
            }
        };
        validate_as(&m, &origin, partial)?;
        out.push(m);
    }
    Ok(out)
}

/// Checks values serde cannot: names, sizes, ports, env.
pub fn validate(m: &Manifest, origin: &str) -> Result<(), Error> {
    validate_as(m, origin, false)
}

fn validate_as(m: &Manifest, origin: &str, partial: bool) -> Result<(), Error> {
    let name = m.name();
    let vm_config = partial && matches!(m, Manifest::Vm(_));
    if name.is_empty() && !vm_config {
        return Err(invalid(format!("{origin}: metadata.name is missing")));
    }
    if !name.is_empty() && !crate::vm::valid_name(name) {
        return Err(invalid(format!(
            "{origin}: metadata.name '{name}': use letters, digits, '_', '.', '-', starting with a letter or digit"
        )));
    }
    if let Manifest::Vm(vm) = m {
        let s = &vm.spec;
        if s.image.is_empty() && !vm_config {
            return Err(invalid(format!("{origin}: spec.image is empty")));
        }
        for (field, v) in [("spec.memory", &s.memory), ("spec.diskSize", &s.disk_size)] {
            if let Some(v) = v {
                ignis_api::parse_size(v, 1 << 20)
                    .map_err(|e| invalid(format!("{origin}: {field}: {e}")))?;
            }
        }
        for (i, kv) in s.env.iter().enumerate() {
            if !kv.contains('=') || kv.starts_with('=') {
                return Err(invalid(format!(
                    "{origin}: spec.env[{i}]: '{kv}' is not KEY=VALUE"
                )));
            }
        }
        if let Some(n) = &s.network {
            for (i, p) in n.ports.iter().enumerate() {
                ignis_net::parse_port(p)
                    .map_err(|e| invalid(format!("{origin}: spec.network.ports[{i}]: {e}")))?;
            }
            if let Some(mode) = &n.mode {
                if mode != "bridge" && mode != "none" {
                    return Err(invalid(format!(
                        "{origin}: spec.network.mode '{mode}': want bridge or none"
                    )));
                }
            }
        }
        if let Some(c) = s.cpus {
            if c == 0 || c > 64 {
                return Err(invalid(format!("{origin}: spec.cpus {c}: want 1 to 64")));
            }
        }
        if let Some(n) = &s.node_name {
            if !placement::valid_node_name(n) {
                return Err(invalid(format!(
                    "{origin}: spec.nodeName '{n}': use letters, digits, '_', '.', '-', starting with a letter or digit"
                )));
            }
            if !s.node_selector.is_empty() {
                return Err(invalid(format!(
                    "{origin}: spec.nodeSelector: give either spec.nodeName (one node) or spec.nodeSelector (labels), not both"
                )));
            }
        }
        for (k, v) in &s.node_selector {
            placement::parse_label(&format!("{k}={v}"))
                .map_err(|e| invalid(format!("{origin}: spec.nodeSelector.{k}: {}", e.message)))?;
        }
        if let Some(r) = s.replicas {
            if r > placement::MAX_REPLICAS {
                return Err(invalid(format!(
                    "{origin}: spec.replicas {r}: want 0 to {}",
                    placement::MAX_REPLICAS
                )));
            }
            let last = placement::replica_name(name, r.max(1));
            if !crate::vm::valid_name(&last) {
                return Err(invalid(format!(
                    "{origin}: metadata.name '{name}': too long for spec.replicas {r} ('{last}' exceeds 64 characters)"
                )));
            }
        }
    }
    Ok(())
}

/// Reads manifests from a file, a directory (`*.yaml`, `*.yml`, `*.json`,
/// sorted, not recursive into hidden directories) or `-` (stdin).
pub fn read_path(path: &std::path::Path) -> Result<Vec<Manifest>, Error> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), MAX_FILE as u64 + 1),
            &mut text,
        )
        .map_err(|e| invalid(format!("cannot read stdin: {e}")))?;
        return parse(&text, "-");
    }
    let mut out = Vec::new();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Error::with_source(
                ErrorKind::NotFound,
                format!("cannot read {}", file.display()),
                e,
            )
        })?;
        out.extend(parse(&text, &file.display().to_string())?);
    }
    Ok(out)
}

/// The manifest files under `path` (itself when a file).
pub fn manifest_files(path: &std::path::Path) -> Result<Vec<std::path::PathBuf>, Error> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::with_source(
            ErrorKind::NotFound,
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).map_err(|e| Error::internal("read a manifest directory", e))?
        {
            let e = e.map_err(|e| Error::internal("read a manifest directory", e))?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = r#"
apiVersion: ignis.dev/v1alpha1
kind: VM
metadata:
  name: web
  labels: {tier: front}
spec:
  image: nginx:1.27
  cpus: 2
  memory: 512MB
  network:
    ports: ["8080:80"]
  running: false
---
apiVersion: ignis.dev/v1alpha1
kind: Image
metadata: {name: base}
spec: {reference: busybox}
"#;

    #[test]
    fn documents_parse_strictly() {
        let ms = parse(VM, "t.yaml").unwrap();
        assert_eq!(ms.len(), 2);
        let Manifest::Vm(vm) = &ms[0] else { panic!() };
        assert_eq!(vm.spec.cpus, Some(2));
        assert!(!vm.spec.running);
        assert_eq!(ms[1].kind(), "Image");
        // JSON is YAML.
        let json = r#"{"apiVersion":"ignis.dev/v1alpha1","kind":"VM","metadata":{"name":"j"},"spec":{"image":"x"}}"#;
        let Manifest::Vm(vm) = &parse(json, "j.json").unwrap()[0] else {
            panic!()
        };
        assert!(vm.spec.running, "running defaults to true");
    }

    #[test]
    fn errors_name_the_field_path() {
        let bad = VM.replace("ports: [\"8080:80\"]", "portz: [\"8080:80\"]");
        let e = parse(&bad, "t.yaml").unwrap_err().to_string();
        assert!(
            e.contains("t.yaml (document 1): spec.network.portz: unknown field `portz`"),
            "{e}"
        );
        let e = parse(&VM.replace("512MB", "lots"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.memory"), "{e}");
        let e = parse(&VM.replace("8080:80", "99999:80"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.network.ports[0]"), "{e}");
        let e = parse(&VM.replace("kind: VM", "kind: Pod"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind 'Pod'"), "{e}");
        let e = parse(
            &VM.replace("ignis.dev/v1alpha1\nkind: VM", "v9\nkind: VM"),
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("apiVersion 'v9'"), "{e}");
        let e = parse(&VM.replace("name: web", "name: -web"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata.name"), "{e}");
        let e = parse(&VM.replace("cpus: 2", "cpus: two"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.cpus"), "{e}");
    }

    #[test]
    fn placement_fields_are_validated_with_their_path() {
        let with =
            |extra: &str| VM.replace("  running: false\n", &format!("  running: false\n{extra}"));
        let Manifest::Vm(vm) = &parse(
            &with("  nodeSelector: {zone: east}\n  replicas: 3\n"),
            "t.yaml",
        )
        .unwrap()[0] else {
            panic!()
        };
        assert_eq!(vm.spec.replicas, Some(3));
        assert_eq!(
            vm.spec.node_selector.get("zone").map(String::as_str),
            Some("east")
        );
        for (extra, want) in [
            ("  nodeName: 'a b'\n", "spec.nodeName 'a b'"),
            ("  nodeName: a\n  nodeSelector: {z: x}\n", "not both"),
            ("  nodeSelector: {z: 'a b'}\n", "spec.nodeSelector.z"),
            ("  replicas: 1000\n", "spec.replicas 1000"),
            ("  replicas: -1\n", "spec.replicas"),
            ("  nodeNames: a\n", "unknown field `nodeNames`"),
        ] {
            let e = parse(&with(extra), "t.yaml").unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    /// The VM manifest shape of Ignite's documentation (v1alpha4).
    #[test]
    fn ignite_v1alpha4_vms_are_converted() {
        let ignite = r#"
apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: my-vm
  uid: 599615df99804ae8
spec:
  image:
    oci: weaveworks/ignite-ubuntu
  kernel:
    oci: weaveworks/ignite-kernel:5.10.51
    cmdLine: console=ttyS0 reboot=k panic=1 pci=off ip=dhcp
  sandbox:
    oci: weaveworks/ignite:dev
  cpus: 2
  diskSize: 3GB
  memory: 800MB
  network:
    ports:
    - hostPort: 8080
      vmPort: 80
      protocol: tcp
  copyFiles:
  - hostPath: /tmp/foo
    vmPath: /tmp/bar
  ssh: true
  storage: {}
status:
  running: true
"#;
        let Manifest::Vm(vm) = &parse(ignite, "ignite.yaml").unwrap()[0] else {
            panic!()
        };
        assert_eq!(vm.api_version, API_VERSION);
        assert_eq!(vm.metadata.name, "my-vm");
        assert_eq!(vm.spec.image, "weaveworks/ignite-ubuntu");
        assert_eq!(
            vm.spec.kernel.as_deref(),
            Some("weaveworks/ignite-kernel:5.10.51")
        );
        assert_eq!(
            vm.spec.kernel_args.as_deref(),
            Some("console=ttyS0 reboot=k panic=1 pci=off ip=dhcp")
        );
        assert_eq!(
            (
                vm.spec.cpus,
                vm.spec.memory.as_deref(),
                vm.spec.disk_size.as_deref()
            ),
            (Some(2), Some("800MB"), Some("3GB"))
        );
        assert_eq!(vm.spec.network.as_ref().unwrap().ports, vec!["8080:80/tcp"]);
        assert_eq!(vm.spec.copy_files, vec!["/tmp/foo:/tmp/bar"]);
        assert_eq!(vm.spec.ssh.as_deref(), Some(""));
        assert!(vm.spec.running);
        let e = parse(&ignite.replace("cpus: 2", "cpuz: 2"), "i.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.cpuz: unknown field `cpuz`"), "{e}");
    }

    #[test]
    fn hostile_yaml_fails_fast_and_bounded() {
        // A billion-laughs alias bomb.
        let mut bomb = String::from(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let t = std::time::Instant::now();
        assert!(parse(&bomb, "bomb.yaml").is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Deep nesting.
        let deep = format!(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nx: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse(&deep, "deep.yaml").is_err());
        // Huge.
        let huge = format!(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nx: \"{}\"\n",
            "a".repeat(MAX_FILE)
        );
        assert!(parse(&huge, "huge.yaml")
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }
}

#[cfg(test)]
mod fuzz {
    /// A bounded, seeded property test of everything that reaches the
    /// parser (files, API bodies, Git blobs): mutated and truncated
    /// manifests and random bytes never panic and either parse into valid
    /// manifests or give an error.
    #[test]
    fn mutated_manifests_never_panic() {
        let base = "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata:\n  name: web\n  labels: {a: b}\nspec:\n  image: app:1\n  cpus: 2\n  memory: 512MB\n  env: [A=1]\n  network: {mode: bridge, ports: [\"8080:80\"]}\n---\napiVersion: ignite.weave.works/v1alpha4\nkind: VM\nmetadata: {name: ig}\nspec: {image: {oci: x}, cpus: 1, network: {ports: [{hostPort: 1, vmPort: 2}]}}\n";
        let mut x: u64 = 0x5eed_1915;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}[]:,-&*!|>'\"\n #abc019.=/";
        for _ in 0..3000 {
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..(next() % 8) {
                let i = usize::try_from(next() % bytes.len() as u64).unwrap_or(0);
                match next() % 3 {
                    0 => {
                        bytes[i] =
                            alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap_or(0)]
                    }
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(
                        i,
                        alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap_or(0)],
                    ),
                }
            }
            let cut = usize::try_from(next() % (bytes.len() as u64 + 1)).unwrap_or(0);
            bytes.truncate(cut.max(bytes.len() / 2));
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(ms) = super::parse(&text, "fuzz") {
                for m in &ms {
                    super::validate(m, "fuzz").expect("parse returns only valid manifests");
                }
            }
        }
    }
}
