//! The core's network wiring against a recording fake host network: what
//! start, exit and rm ask of the host, in order. (The real host side is
//! proven by the live netns test in ignis-cli/tests/net.rs.)

#![cfg(feature = "fake-vmm")]

use std::io::Write;

use ignis_core::vm::VmSettings;
use ignis_core::{Ignis, Options};
use ignis_testkit::{ImageSpec, LayerBuilder, OciWriter};

#[test]
fn start_exit_and_rm_drive_bridge_tap_and_rules() {
    if !rustix::process::geteuid().is_root() || ignis_vmm_missing_nft() {
        ignis_testkit::tier::skip(
            ignis_testkit::tier::ROOT,
            "bridge mode's preflight needs root and nft",
        );
        return;
    }
    let _ran = ignis_testkit::tier::ran(ignis_testkit::tier::ROOT);
    let dir = tempfile::tempdir().unwrap();
    let net = ignis_net::FakeNet::default();
    let ignis = Ignis::open(Options {
        root: dir.path().join("root"),
        progress: false,
        insecure_registries: vec![],
        subnet: Some("10.77.0.0/24".into()),
    })
    .unwrap()
    .with_net_host(Box::new(net.clone()));

    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/app", b"x", 0o755)
        .build();
    let spec = ImageSpec {
        layers: vec![layer],
        cmd: Some(vec!["/bin/app".into()]),
        name: Some("app:1".into()),
        ..Default::default()
    };
    let layout = dir.path().join("layout");
    OciWriter::write_dir(&OciWriter::oci_files(&spec), &layout).unwrap();
    ignis.image_import(&layout, None).unwrap();
    let elf = ignis_kernel::elf::test_elf(b"Linux version 6.6.6 (t)");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&elf).unwrap();
    let kpath = dir.path().join("vmlinuz");
    std::fs::write(
        &kpath,
        ignis_kernel::bzimage::test_bzimage(&gz.finish().unwrap(), "6.6.6"),
    )
    .unwrap();
    ignis
        .kernel_import(kpath.to_str().unwrap(), None, true)
        .unwrap();

    let vm = ignis
        .vm_create(
            &VmSettings {
                image: Some("app:1".into()),
                backend: Some("fake".into()),
                network: Some("bridge".into()),
                ports: vec!["18080:80".into()],
                kernel_args: Some("ignis.fake=exit:0".into()),
                disk_size: Some("64MB".into()),
                ..Default::default()
            }
            .parse()
            .unwrap(),
        )
        .unwrap();
    assert_eq!(vm.spec.network.ip.as_deref(), Some("10.77.0.2"));
    assert!(net.calls().is_empty(), "create touches no host network");

    // The supervisor, in-process: the fake VMM reports exit 0 at once.
    ignis.vm_supervise(&vm.id, Default::default()).unwrap();
    let tap = format!("ig-{}", &vm.id[..12]);
    let calls = net.calls();
    assert_eq!(calls[0], "ensure_bridge ignis0 10.77.0.1/24");
    assert!(
        calls[1].starts_with("apply_rules")
            && calls[1].contains(r#""dnat":{"addr":"10.77.0.2","port":80}"#),
        "{}",
        calls[1]
    );
    assert!(
        calls[1].contains(r#""len":24"#),
        "masquerade covers the configured subnet"
    );
    assert_eq!(calls[2], format!("attach_tap {tap} ignis0"));
    assert_eq!(
        calls[3],
        format!("delete_link {tap}"),
        "the TAP is released when the VM exits"
    );

    ignis.vm_remove(&vm.id, false).unwrap();
    let calls = net.calls();
    let last = calls.last().unwrap();
    assert!(
        last.starts_with("apply_rules") && !last.contains("dnat"),
        "rm drops the VM's port rules: {last}"
    );
    // The host says another root's TAP is on the bridge: prune asks, the
    // host keeps it, prune goes on.
    net.set_in_use(Some("attached to ignis0: ig-0123456789ab"));
    let (_, _) = ignis.system_prune().unwrap();
    assert_eq!(
        net.calls().last().unwrap(),
        "teardown ignis0",
        "no VM of this root left on the bridge: the host decides"
    );
    net.set_in_use(None);
    let (_, _) = ignis.system_prune().unwrap();
    assert_eq!(net.calls().last().unwrap(), "teardown ignis0");
}

fn ignis_vmm_missing_nft() -> bool {
    ignis_vmm::detect::find_in_path("nft").is_none()
}
