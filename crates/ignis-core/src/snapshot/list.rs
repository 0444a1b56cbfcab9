//! `ignis snapshot ls [--tree]`.

use ignis_api::SnapshotRecord;

use super::{parse, KIND};
use crate::{Error, Ignis};

/// One line of the lineage tree: a snapshot at `depth`, with the VMs
/// forked from it that still exist.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TreeLine {
    pub depth: usize,
    pub snapshot: SnapshotRecord,
    pub forks: Vec<String>,
}

impl Ignis {
    /// Every snapshot, oldest first.
    pub fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error> {
        let rows = self.store.db().read(|tx| tx.list_objects(KIND))?;
        let mut out = rows.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// The lineage: a snapshot's children are the snapshots taken of VMs
    /// forked from it. Roots are snapshots of booted VMs (or whose parent
    /// was removed).
    pub fn snapshot_tree(&self) -> Result<Vec<TreeLine>, Error> {
        let snaps = self.snapshot_list()?;
        let vms = self.vm_list(true)?;
        let ids: std::collections::BTreeSet<&str> = snaps.iter().map(|s| s.id.as_str()).collect();
        let mut out = Vec::new();
        fn walk(
            parent: Option<&str>,
            depth: usize,
            snaps: &[SnapshotRecord],
            ids: &std::collections::BTreeSet<&str>,
            vms: &[ignis_api::VmRecord],
            out: &mut Vec<TreeLine>,
        ) {
            for s in snaps.iter().filter(|s| match parent {
                None => s.parent.as_deref().is_none_or(|p| !ids.contains(p)),
                Some(p) => s.parent.as_deref() == Some(p),
            }) {
                let forks = vms
                    .iter()
                    .filter(|v| v.spec.snapshot.as_ref().is_some_and(|o| o.id == s.id))
                    .map(|v| v.name.clone())
                    .collect();
                out.push(TreeLine {
                    depth,
                    snapshot: s.clone(),
                    forks,
                });
                walk(Some(&s.id), depth + 1, snaps, ids, vms, out);
            }
        }
        walk(None, 0, &snaps, &ids, &vms, &mut out);
        Ok(out)
    }
}
