//! What the API and the reconcilers need from ignis, as a trait: the real
//! service is `ignis_core::Ignis`; the HTTP layer's tests drive a fake, so
//! they check what the layer parses and maps (paths, queries, bodies,
//! errors to problem+json) and nothing else.

use std::time::Duration;

use ignis_api::manifest::{Manifest, VmManifest};
use ignis_api::{ImageRecord, SnapshotRecord, VmRecord};
use ignis_core::manifest::Applied;
use ignis_core::snapshot::ForkOptions;
use ignis_core::Error;

pub trait Service: Send + Sync + 'static {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error>;
    fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error>;
    fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error>;
    fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error>;
    fn vm_stop(&self, query: &str, timeout: Duration) -> Result<VmRecord, Error>;
    fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error>;
    fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied>;
    fn converge(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied>;
    fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied>;
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error>;
    fn image_list(&self) -> Result<Vec<ImageRecord>, Error>;
    fn vm_kill(&self, query: &str) -> Result<VmRecord, Error>;
    /// The console log so far.
    fn vm_logs(&self, query: &str) -> Result<Vec<u8>, Error>;
    fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error>;
    fn vm_fork(
        &self,
        source: &str,
        opts: &ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error>;
}

impl Service for ignis_core::Ignis {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error> {
        ignis_core::Ignis::vm_list(self, all)
    }
    fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_inspect(self, query)
    }
    fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        ignis_core::Ignis::vm_remove(self, query, force)
    }
    fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_start(self, query, wait_ready)
    }
    fn vm_stop(&self, query: &str, timeout: Duration) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_stop(self, query, timeout)
    }
    fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error> {
        ignis_core::Ignis::vm_manifest(self, query)
    }
    fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        ignis_core::Ignis::apply(self, manifests, owner)
    }
    fn converge(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        ignis_core::Ignis::converge(self, manifests, owner)
    }
    fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied> {
        ignis_core::Ignis::delete_manifests(self, manifests)
    }
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error> {
        ignis_core::Ignis::snapshot_list(self)
    }
    fn image_list(&self) -> Result<Vec<ImageRecord>, Error> {
        ignis_core::Ignis::image_list(self)
    }
    fn vm_kill(&self, query: &str) -> Result<VmRecord, Error> {
        ignis_core::Ignis::vm_kill(self, query)
    }
    fn vm_logs(&self, query: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        ignis_core::Ignis::vm_logs(self, query, false, &mut out)?;
        Ok(out)
    }
    fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error> {
        ignis_core::Ignis::vm_snapshot(self, query, name)
    }
    fn vm_fork(
        &self,
        source: &str,
        opts: &ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error> {
        ignis_core::Ignis::vm_fork(self, source, opts)
    }
}
