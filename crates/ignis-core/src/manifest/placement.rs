//! Placement: which node of a GitOps fleet runs which VM. A pure function
//! of the manifests and the node records in the repository, so every
//! daemon computes the same answer without talking to the others:
//!
//! - no `nodeName`, `nodeSelector` or `replicas`: every node runs the VM
//!   (Ignite's behaviour: each host runs what the repository names);
//! - `nodeName: X`: node X runs it (X needs no record);
//! - `nodeSelector` (and/or `replicas`): the candidates are the nodes with a
//!   record whose labels include every pair of the selector (an empty
//!   selector: every node with a record), sorted by name. Without
//!   `replicas` the first candidate runs the VM; with `replicas: N` the VMs
//!   NAME-1..NAME-N go round-robin over the candidates (NAME-i on candidate
//!   (i-1) mod count). No candidate: the VM runs nowhere (unschedulable).
//!   With `nodeName` and `replicas`, all N run on that node.
//!
//! Stale nodes stay candidates: a dead host's VMs are not moved behind the
//! operator's back (moving them is a one-line manifest change, or removing
//! the node's record from the repository).

use std::collections::{BTreeMap, BTreeSet};

use ignis_api::manifest::{Manifest, VmManifest};

use crate::{Error, ErrorKind};

/// Most copies one manifest may ask for.
pub const MAX_REPLICAS: u32 = 256;

/// A node as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Where one VM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// No placement in the manifest: on every node.
    Everywhere,
    On(String),
    /// No node matches.
    Nowhere,
}

impl Placement {
    /// Whether node `me` runs the VM.
    pub fn includes(&self, me: &str) -> bool {
        match self {
            Self::Everywhere => true,
            Self::On(n) => n == me,
            Self::Nowhere => false,
        }
    }
}

/// The nodes that may run a placed manifest, sorted by name.
fn candidates(vm: &VmManifest, nodes: &[Node<'_>]) -> Vec<String> {
    if let Some(n) = &vm.spec.node_name {
        // Validation keeps nodeName and nodeSelector apart; the node needs
        // no record.
        return vec![n.clone()];
    }
    let names: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| {
            vm.spec
                .node_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .map(|n| n.name)
        .collect();
    names.into_iter().map(str::to_string).collect()
}

/// The VMs `vm` describes: itself, or NAME-1..NAME-N with `replicas`
/// (the copies carry no `replicas`).
pub fn copies(vm: &VmManifest) -> Vec<VmManifest> {
    match vm.spec.replicas {
        None => vec![vm.clone()],
        Some(n) => (1..=n)
            .map(|i| {
                let mut copy = vm.clone();
                copy.metadata.name = replica_name(&vm.metadata.name, i);
                copy.spec.replicas = None;
                copy
            })
            .collect(),
    }
}

/// The VMs `vm` describes ([`copies`]), each with where it runs.
pub fn place(vm: &VmManifest, nodes: &[Node<'_>]) -> Vec<(VmManifest, Placement)> {
    if !vm.spec.is_placed() {
        return vec![(vm.clone(), Placement::Everywhere)];
    }
    let cands = candidates(vm, nodes);
    copies(vm)
        .into_iter()
        .enumerate()
        .map(|(k, copy)| {
            let p = if cands.is_empty() {
                Placement::Nowhere
            } else {
                Placement::On(cands[k % cands.len()].clone())
            };
            (copy, p)
        })
        .collect()
}

/// The name of copy `i` (from 1) of `name`.
pub fn replica_name(name: &str, i: u32) -> String {
    format!("{name}-{i}")
}

/// What node `me` runs of `manifests`: its VMs (replicas expanded), every
/// image and kernel, and the snapshots of VMs it runs or that no manifest
/// describes.
pub fn for_node(manifests: &[Manifest], nodes: &[Node<'_>], me: &str) -> Vec<Manifest> {
    let mut out = Vec::new();
    let mut elsewhere = BTreeSet::new();
    for m in manifests {
        if let Manifest::Vm(vm) = m {
            for (copy, p) in place(vm, nodes) {
                if p.includes(me) {
                    out.push(Manifest::Vm(copy));
                } else {
                    elsewhere.insert(copy.metadata.name);
                }
            }
        }
    }
    let vms_here: BTreeSet<String> = out.iter().map(|m| m.name().to_string()).collect();
    for m in manifests {
        match m {
            Manifest::Vm(_) => {}
            Manifest::Snapshot(s)
                if elsewhere.contains(&s.spec.vm) && !vms_here.contains(&s.spec.vm) => {}
            other => out.push(other.clone()),
        }
    }
    out
}

/// `manifests` as `ignis apply` runs them on this host: replicas expanded,
/// placement ignored (placement is the GitOps daemon's).
pub fn expand_here(manifests: &[Manifest]) -> Vec<Manifest> {
    manifests
        .iter()
        .flat_map(|m| match m {
            Manifest::Vm(vm) => copies(vm).into_iter().map(Manifest::Vm).collect(),
            other => vec![other.clone()],
        })
        .collect()
}

/// A label key: letters, digits, `.`, `_`, `-`, `/` (Kubernetes' `prefix/name`),
/// starting with a letter or digit, at most 253 bytes.
pub fn valid_label_key(k: &str) -> bool {
    k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && k.len() <= 253
}

/// A label value: letters, digits, `.`, `_`, `-`; may be empty; at most 63.
pub fn valid_label_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && v.len() <= 63
}

/// A node name: what a VM name may be (it names a directory of the
/// repository).
pub fn valid_node_name(n: &str) -> bool {
    crate::vm::valid_name(n)
}

/// `key=value` (a `--node-label`).
pub fn parse_label(kv: &str) -> Result<(String, String), Error> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("'{kv}' is not KEY=VALUE")))?;
    if !valid_label_key(k) {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("label key '{k}': use letters, digits, '.', '_', '-', '/', starting with a letter or digit"),
        ));
    }
    if !valid_label_value(v) {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("label value '{v}': use letters, digits, '.', '_', '-' (at most 63)"),
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(yaml_spec: &str) -> VmManifest {
        let text = format!(
            "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {{name: web}}\nspec: {{image: x{yaml_spec}}}\n"
        );
        match crate::manifest::parse(&text, "t").unwrap().remove(0) {
            Manifest::Vm(v) => v,
            _ => unreachable!(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Three nodes, given out of order: placement sorts them by name.
    fn fleet() -> Vec<(String, BTreeMap<String, String>)> {
        vec![
            ("c".into(), labels(&[("zone", "east"), ("disk", "ssd")])),
            ("a".into(), labels(&[("zone", "west")])),
            ("b".into(), labels(&[("zone", "east")])),
        ]
    }

    fn nodes(f: &[(String, BTreeMap<String, String>)]) -> Vec<Node<'_>> {
        f.iter().map(|(n, l)| Node { name: n, labels: l }).collect()
    }

    fn placed(v: &VmManifest, n: &[Node<'_>]) -> Vec<(String, Placement)> {
        place(v, n)
            .into_iter()
            .map(|(c, p)| (c.metadata.name, p))
            .collect()
    }

    fn on(n: &str) -> Placement {
        Placement::On(n.into())
    }

    #[test]
    fn without_placement_every_node_runs_it() {
        let f = fleet();
        assert_eq!(
            placed(&vm(""), &nodes(&f)),
            vec![("web".into(), Placement::Everywhere)]
        );
        assert!(Placement::Everywhere.includes("any-host-even-without-a-record"));
    }

    #[test]
    fn node_name_is_exact_and_needs_no_record() {
        let f = fleet();
        assert_eq!(
            placed(&vm(", nodeName: b"), &nodes(&f)),
            vec![("web".into(), on("b"))]
        );
        assert_eq!(
            placed(&vm(", nodeName: newhost"), &nodes(&f)),
            vec![("web".into(), on("newhost"))]
        );
        // Replicas of a named node all run there.
        assert_eq!(
            placed(&vm(", nodeName: a, replicas: 2"), &nodes(&f)),
            vec![("web-1".into(), on("a")), ("web-2".into(), on("a"))]
        );
    }

    #[test]
    fn a_selector_picks_the_first_match_by_name() {
        let f = fleet();
        let n = nodes(&f);
        assert_eq!(
            placed(&vm(", nodeSelector: {zone: east}"), &n),
            vec![("web".into(), on("b"))]
        );
        assert_eq!(
            placed(&vm(", nodeSelector: {zone: east, disk: ssd}"), &n),
            vec![("web".into(), on("c"))]
        );
        assert_eq!(
            placed(&vm(", nodeSelector: {zone: north}"), &n),
            vec![("web".into(), Placement::Nowhere)]
        );
        // The order nodes are listed in does not matter: every daemon
        // reads the records in its own order and agrees.
        let mut g = fleet();
        g.reverse();
        assert_eq!(
            placed(&vm(", nodeSelector: {zone: east}"), &nodes(&g)),
            vec![("web".into(), on("b"))]
        );
    }

    #[test]
    fn replicas_go_round_robin_over_the_sorted_matches() {
        let f = fleet();
        let n = nodes(&f);
        assert_eq!(
            placed(&vm(", nodeSelector: {zone: east}, replicas: 3"), &n),
            vec![
                ("web-1".into(), on("b")),
                ("web-2".into(), on("c")),
                ("web-3".into(), on("b")),
            ]
        );
        // Replicas without a selector: over every node with a record.
        assert_eq!(
            placed(&vm(", replicas: 4"), &n),
            vec![
                ("web-1".into(), on("a")),
                ("web-2".into(), on("b")),
                ("web-3".into(), on("c")),
                ("web-4".into(), on("a")),
            ]
        );
        assert!(placed(&vm(", replicas: 0"), &n).is_empty());
        // No node known yet: nothing runs (rather than everywhere).
        assert_eq!(
            placed(&vm(", replicas: 1"), &[]),
            vec![("web-1".into(), Placement::Nowhere)]
        );
    }

    #[test]
    fn a_node_gets_its_share_and_the_snapshots_of_its_vms() {
        let f = fleet();
        let n = nodes(&f);
        let text = "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: w}\nspec: {image: x, nodeSelector: {zone: east}, replicas: 2}\n---\napiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: all}\nspec: {image: x}\n---\napiVersion: ignis.dev/v1alpha1\nkind: Snapshot\nmetadata: {name: s1}\nspec: {vm: w-1}\n---\napiVersion: ignis.dev/v1alpha1\nkind: Snapshot\nmetadata: {name: s2}\nspec: {vm: unmanaged}\n---\napiVersion: ignis.dev/v1alpha1\nkind: Image\nmetadata: {name: i}\nspec: {reference: busybox}\n";
        let ms = crate::manifest::parse(text, "t").unwrap();
        let names = |me: &str| -> Vec<String> {
            for_node(&ms, &n, me)
                .iter()
                .map(|m| format!("{}/{}", m.kind(), m.name()))
                .collect()
        };
        assert_eq!(names("a"), ["VM/all", "Snapshot/s2", "Image/i"]);
        assert_eq!(
            names("b"),
            ["VM/w-1", "VM/all", "Snapshot/s1", "Snapshot/s2", "Image/i"]
        );
        assert_eq!(names("c"), ["VM/w-2", "VM/all", "Snapshot/s2", "Image/i"]);
        // `ignis apply` runs every copy here and ignores placement.
        let here: Vec<String> = expand_here(&ms)
            .iter()
            .filter(|m| m.kind() == "VM")
            .map(|m| m.name().to_string())
            .collect();
        assert_eq!(here, ["w-1", "w-2", "all"]);
    }

    #[test]
    fn labels_parse_as_key_value() {
        assert_eq!(
            parse_label("topology.example/zone=eu-1").unwrap(),
            ("topology.example/zone".into(), "eu-1".into())
        );
        assert_eq!(parse_label("gpu=").unwrap(), ("gpu".into(), String::new()));
        for bad in ["zone", "=x", "zo ne=x", "zone=a b", "-z=1"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }
}
