//! The ignis service layer.
//!
//! Every user-visible operation is a method on [`Ignis`], one file per
//! operation under `image/`, `kernel/` and `system/`. The CLI calls these
//! in-process; the daemon and GitOps reconciler will call the same methods,
//! so no front end re-implements an operation.

mod error;
pub mod fault;
pub mod image;
pub mod kernel;
pub mod manifest;
mod resolve;
pub mod snapshot;
pub mod system;
pub mod timing;
pub mod vm;
pub mod volume;

pub use error::{Error, ErrorKind};
pub use ignis_image::progress::Progress;

std::thread_local! {
    /// The progress of the operation this thread runs, when not the
    /// instance's own ([`with_progress`]).
    static PROGRESS: std::cell::RefCell<Option<Progress>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the pulls and imports it makes on this thread reporting
/// their bars to `p` (the daemon's progress streams) instead of the
/// instance's own progress.
pub fn with_progress<T>(p: &Progress, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Progress>);
    impl Drop for Reset {
        fn drop(&mut self) {
            PROGRESS.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(PROGRESS.with(|c| c.borrow_mut().replace(p.clone())));
    f()
}
pub use resolve::{resolve, ResolveError};

use std::path::{Path, PathBuf};

use ignis_image::ext4::{DiskBuilder, Mke2fs};
use ignis_state::Store;

/// Default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/ignis";

/// Options for opening the service.
pub struct Options {
    pub root: PathBuf,
    /// Show progress bars (the CLI sets this when stderr is a terminal).
    pub progress: bool,
    /// Registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The bridge network's subnet (default 10.61.0.0/16).
    pub subnet: Option<String>,
    /// IPv6 on the bridge network: `auto` (a ULA /64 derived from the IPv4
    /// subnet) or a prefix; `None` (or `off`): IPv4 only.
    pub subnet6: Option<String>,
}

/// The service: a state root plus the host side-effect implementations.
pub struct Ignis {
    store: Store,
    disks: Box<dyn DiskBuilder>,
    net: Box<dyn ignis_net::NetHost>,
    progress: Progress,
    insecure: Vec<String>,
    subnet: ignis_net::Subnet,
    subnet6: Option<ignis_net::Subnet6>,
}

impl Ignis {
    /// The progress of this thread's operation ([`with_progress`]), else
    /// the instance's own.
    pub(crate) fn progress(&self) -> Progress {
        PROGRESS
            .with(|c| c.borrow().clone())
            .unwrap_or_else(|| self.progress.clone())
    }

    /// The shared side of the garbage collector's lock: held while writing
    /// blobs or disks that no committed record names yet.
    pub(crate) fn operation_guard(&self) -> Result<ignis_state::FileLock, Error> {
        self.store
            .operation_guard()
            .map_err(|e| Error::internal("take the operation lock", e))
    }

    pub fn open(opts: Options) -> Result<Self, Error> {
        let subnet = opts
            .subnet
            .as_deref()
            .unwrap_or(ignis_net::SUBNET)
            .parse()
            .map_err(|e: ignis_net::IpamError| Error::new(ErrorKind::Invalid, e.to_string()))?;
        let subnet6 = match opts.subnet6.as_deref() {
            None | Some("" | "off") => None,
            Some(s) => Some(
                ignis_net::Subnet6::parse_or_derive(s, subnet)
                    .map_err(|e| Error::new(ErrorKind::Invalid, format!("--subnet6: {e}")))?,
            ),
        };
        let store =
            Store::open(&opts.root).map_err(|e| Error::internal("open the state root", e))?;
        ignis_vmm::detect::cache_versions_in(&store.cache_dir());
        Ok(Self {
            store,
            disks: Box::new(Mke2fs),
            net: Box::new(ignis_net::LinuxNet),
            progress: if opts.progress {
                Progress::new(true)
            } else {
                Progress::hidden()
            },
            insecure: opts.insecure_registries,
            subnet,
            subnet6,
        })
    }

    /// Replaces the disk builder (tests).
    pub fn with_disk_builder(mut self, b: Box<dyn DiskBuilder>) -> Self {
        self.disks = b;
        self
    }

    /// Replaces the host networking implementation (tests).
    pub fn with_net_host(mut self, n: Box<dyn ignis_net::NetHost>) -> Self {
        self.net = n;
        self
    }

    /// The bridge's IPv6 prefix as `--subnet6` takes it (`off`: none).
    pub fn subnet6_setting(&self) -> String {
        self.subnet6
            .map(|s| s.to_string())
            .unwrap_or_else(|| "off".into())
    }

    pub fn root(&self) -> &Path {
        self.store.root()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
