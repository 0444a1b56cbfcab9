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
    let (ignis, net) = setup(dir.path(), None);

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

/// A state root on subnet 10.77.0.0/24 (and `subnet6`) with the fake
/// host network, an app image `app:1` and a default kernel.
fn setup(dir: &std::path::Path, subnet6: Option<&str>) -> (Ignis, ignis_net::FakeNet) {
    let net = ignis_net::FakeNet::default();
    let ignis = Ignis::open(Options {
        root: dir.join("root"),
        progress: false,
        insecure_registries: vec![],
        subnet: Some("10.77.0.0/24".into()),
        subnet6: subnet6.map(str::to_string),
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
    let layout = dir.join("layout");
    OciWriter::write_dir(&OciWriter::oci_files(&spec), &layout).unwrap();
    ignis.image_import(&layout, None).unwrap();
    let elf = ignis_kernel::elf::test_elf(b"Linux version 6.6.6 (t)");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&elf).unwrap();
    let kpath = dir.join("vmlinuz");
    std::fs::write(
        &kpath,
        ignis_kernel::bzimage::test_bzimage(&gz.finish().unwrap(), "6.6.6"),
    )
    .unwrap();
    ignis
        .kernel_import(kpath.to_str().unwrap(), None, true)
        .unwrap();
    (ignis, net)
}

/// IPv6 on (`--subnet6`): a lease per VM beside the IPv4 one, `--ip6`,
/// the bridge's IPv6 gateway, `ip6` DNAT for `-p [::1]:...`; bad input is
/// refused naming the field and leaves nothing behind.
#[test]
fn ipv6_leases_bridge_and_rules() {
    if !rustix::process::geteuid().is_root() || ignis_vmm_missing_nft() {
        ignis_testkit::tier::skip(
            ignis_testkit::tier::ROOT,
            "bridge mode's preflight needs root and nft",
        );
        return;
    }
    if let Err(why) = ignis_net::ipv6_available() {
        ignis_testkit::tier::skip(ignis_testkit::tier::ROOT, &format!("no IPv6 here: {why}"));
        return;
    }
    let _ran = ignis_testkit::tier::ran(ignis_testkit::tier::ROOT);
    let dir = tempfile::tempdir().unwrap();
    let (ignis, net) = setup(dir.path(), Some("fd00:77:0:1::/64"));
    let settings = |extra: VmSettings| VmSettings {
        image: Some("app:1".into()),
        backend: Some("fake".into()),
        network: Some("bridge".into()),
        kernel_args: Some("ignis.fake=exit:0".into()),
        disk_size: Some("64MB".into()),
        ..extra
    };
    let a = ignis
        .vm_create(
            &settings(VmSettings {
                ports: vec!["[::1]:18081:81".into(), "18082:82".into()],
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap();
    let n = &a.spec.network;
    assert_eq!(n.ip.as_deref(), Some("10.77.0.2"));
    assert_eq!(n.ip6.as_deref(), Some("fd00:77:0:1::2"));
    assert_eq!(n.prefix6, Some(64));
    assert_eq!(n.gateway6.as_deref(), Some("fd00:77:0:1::1"));
    assert_eq!(n.ports[0].to_string(), "[::1]:18081->81/tcp");
    let b = ignis
        .vm_create(
            &settings(VmSettings {
                ip6: Some("fd00:77:0:1::beef".into()),
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap();
    assert_eq!(b.spec.network.ip6.as_deref(), Some("fd00:77:0:1::beef"));
    assert_eq!(b.spec.network.ip.as_deref(), Some("10.77.0.3"));
    let info = ignis.network_inspect().unwrap();
    assert_eq!(info.subnet6.as_deref(), Some("fd00:77:0:1::/64"));
    assert_eq!(info.gateway6.as_deref(), Some("fd00:77:0:1::1"));
    assert_eq!(info.leases[0].ip6.as_deref(), Some("fd00:77:0:1::2"));

    // Refused, naming the field; no VM, lease or directory left.
    let vms_dir = dir.path().join("root/vms");
    let count = || std::fs::read_dir(&vms_dir).map(|d| d.count()).unwrap_or(0);
    let before = (ignis.vm_list(true).unwrap().len(), count());
    for (ip6, field, kind) in [
        (
            "fd00:77:0:1::beef",
            "network.ip6",
            ignis_core::ErrorKind::Conflict,
        ),
        ("fd00:99::5", "network.ip6", ignis_core::ErrorKind::Invalid),
        (
            "fd00:77:0:1::1",
            "network.ip6",
            ignis_core::ErrorKind::Invalid,
        ),
    ] {
        let e = ignis
            .vm_create(
                &settings(VmSettings {
                    ip6: Some(ip6.into()),
                    ..Default::default()
                })
                .parse()
                .unwrap(),
            )
            .unwrap_err();
        assert_eq!(e.kind, kind, "{ip6}: {e}");
        assert_eq!(e.field.map(|f| f.name()), Some(field), "{ip6}: {e}");
    }
    let e = ignis
        .vm_create(
            &settings(VmSettings {
                ports: vec!["[::]:18081:81".into()],
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.kind, ignis_core::ErrorKind::Conflict, "{e}");
    let e = ignis
        .vm_create(
            &settings(VmSettings {
                ports: vec!["[::1]:5353:53/udp".into()],
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.field.map(|f| f.name()), Some("network.ports"), "{e}");
    assert!(e.message.contains("UDP on [::1]"), "{e}");
    assert_eq!((ignis.vm_list(true).unwrap().len(), count()), before);
    assert!(
        settings(VmSettings {
            ip6: Some("10.0.0.1".into()),
            ..Default::default()
        })
        .parse()
        .is_err(),
        "--ip6 takes an IPv6 address"
    );

    let before = net.calls().len();
    ignis.vm_supervise(&a.id, Default::default()).unwrap();
    let calls = &net.calls()[before..];
    assert_eq!(calls[0], "ensure_bridge ignis0 10.77.0.1/24");
    assert_eq!(calls[1], "ensure_bridge6 ignis0 fd00:77:0:1::1/64");
    let rules = &calls[2];
    assert!(rules.starts_with("apply_rules"), "{rules}");
    assert!(
        !rules.contains(r#""port":81"#),
        "[::1]:18081 is the supervisor's relay, no DNAT: {rules}"
    );
    assert!(
        rules.contains(r#""dnat":{"addr":"fd00:77:0:1::2","port":82}"#)
            && rules.contains(r#""dnat":{"addr":"10.77.0.2","port":82}"#),
        "no host IP: published on both families"
    );

    // IPv6 off: --ip6 and -p [::]:... are refused, naming the flag.
    let dir2 = tempfile::tempdir().unwrap();
    let (v4only, _) = setup(dir2.path(), None);
    let e = v4only
        .vm_create(
            &settings(VmSettings {
                ip6: Some("fd00:77:0:1::9".into()),
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.field.map(|f| f.name()), Some("network.ip6"), "{e}");
    assert!(e.message.contains("--subnet6"), "{e}");
    let e = v4only
        .vm_create(
            &settings(VmSettings {
                ports: vec!["[::]:18083:83".into()],
                ..Default::default()
            })
            .parse()
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.field.map(|f| f.name()), Some("network.ports"), "{e}");
    assert!(v4only.vm_list(true).unwrap().is_empty());
    // A plain VM there has no IPv6 and the ruleset no ip6 table.
    let c = v4only
        .vm_create(&settings(VmSettings::default()).parse().unwrap())
        .unwrap();
    assert_eq!(c.spec.network.ip6, None);
}

fn ignis_vmm_missing_nft() -> bool {
    ignis_vmm::detect::find_in_path("nft").is_none()
}

/// A macvtap NIC: made on its host interface with the VM's MAC before the
/// VMM starts, handed to it as a device node, removed when the VMM ends
/// (the link would outlive it); a missing host interface is refused at
/// create and nothing is made.
#[test]
fn macvtap_is_made_per_run_and_removed_after() {
    if !rustix::process::geteuid().is_root() {
        ignis_testkit::tier::skip(ignis_testkit::tier::ROOT, "a macvtap NIC needs root");
        return;
    }
    let _ran = ignis_testkit::tier::ran(ignis_testkit::tier::ROOT);
    let dir = tempfile::tempdir().unwrap();
    let (ignis, net) = setup(dir.path(), None);
    let settings = |network: &str| VmSettings {
        image: Some("app:1".into()),
        backend: Some("fake".into()),
        network: Some(network.into()),
        kernel_args: Some("ignis.fake=exit:0".into()),
        disk_size: Some("64MB".into()),
        ..Default::default()
    };
    let e = ignis
        .vm_create(&settings("macvtap:nosuch0").parse().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("no interface nosuch0"), "{e}");
    assert!(ignis.vm_list(true).unwrap().is_empty(), "nothing recorded");
    assert!(net.calls().is_empty(), "nothing made on the host");

    let vm = ignis
        .vm_create(
            &settings("macvtap:eth9,ip=192.0.2.5/24,mac=02:00:00:00:0a:05")
                .parse()
                .unwrap(),
        )
        .unwrap();
    let n = &vm.spec.network;
    assert_eq!(
        (
            n.link.as_deref(),
            n.ip.as_deref(),
            n.prefix,
            n.gateway.as_deref()
        ),
        (Some("eth9"), Some("192.0.2.5"), Some(24), None)
    );
    assert!(net.calls().is_empty(), "create touches no host network");
    ignis.vm_supervise(&vm.id, Default::default()).unwrap();
    let name = format!("mv{}0", &vm.id[..11]);
    assert_eq!(
        net.calls(),
        [
            format!("create_macvtap {name} eth9 02:00:00:00:0a:05"),
            format!("delete_link {name}"),
        ]
    );
    let node = dir.path().join("root/vms").join(&vm.id).join("macvtap0");
    assert!(!node.exists(), "the device node went with the run");

    // Without a MAC: one of its own, not the bridge's scheme.
    let vm2 = ignis
        .vm_create(&settings("macvtap:eth9").parse().unwrap())
        .unwrap();
    let mac = vm2.spec.network.mac.clone().unwrap();
    assert_eq!(mac, ignis_net::macvtap::mac_for(&vm2.id, 0));
    assert_ne!(mac, ignis_net::mac_for(&vm2.id));
    ignis.vm_remove(&vm.id, false).unwrap();
    ignis.vm_remove(&vm2.id, false).unwrap();
}
