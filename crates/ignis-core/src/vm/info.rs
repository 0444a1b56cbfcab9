use serde::{Deserialize, Serialize};

use crate::{Error, Ignis};

/// `ignis info`: what this host can run and what ignis would use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub version: String,
    pub root: String,
    pub host: ignis_vmm::HostInfo,
    pub backend: ignis_vmm::detect::BackendChoice,
    pub guest_init: Option<String>,
    pub default_kernel: Option<String>,
    pub images: usize,
    pub kernels: usize,
    pub vms: usize,
    pub vms_running: usize,
}

impl Ignis {
    pub fn info(&self) -> Result<Info, Error> {
        let host = ignis_vmm::detect();
        let backend = host.choose();
        let vms = self.vm_list(true)?;
        Ok(Info {
            version: env!("CARGO_PKG_VERSION").to_string(),
            root: self.root().display().to_string(),
            backend,
            host,
            guest_init: super::boot::find_init()
                .ok()
                .map(|p| p.display().to_string()),
            default_kernel: self
                .kernel_inspect(crate::kernel::DEFAULT_NAME)
                .ok()
                .map(|k| k.version),
            images: self.image_list()?.len(),
            kernels: self.kernel_list()?.len(),
            vms_running: vms
                .iter()
                .filter(|v| v.state() == ignis_api::VmState::Running)
                .count(),
            vms: vms.len(),
        })
    }
}
