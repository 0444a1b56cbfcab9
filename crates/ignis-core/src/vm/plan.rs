use serde::Serialize;

use ignis_vmm::{Accel, BackendKind};

use crate::{Error, Ignis};

/// How a VM would be booted by hand: for benchmarks (the "raw VMM"
/// baseline) and debugging (`ignis __boot-plan VM`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootPlan {
    pub backend: String,
    /// QEMU: the full command line.
    pub argv: Vec<String>,
    /// Firecracker: a `--config-file` document for the same boot.
    pub firecracker_config: Option<serde_json::Value>,
}

impl Ignis {
    /// Writes the VM's initrd and returns the VMM invocation for it.
    pub fn vm_boot_plan(&self, query: &str) -> Result<BootPlan, Error> {
        let rec = self.find_vm(query)?;
        let kind = super::backend_kind(&rec.spec.backend)?;
        let accel = if rec.spec.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        let spec = self.boot_spec(&rec, kind, accel)?;
        let mut plan = BootPlan {
            backend: kind.as_str().to_string(),
            argv: vec![],
            firecracker_config: None,
        };
        match kind {
            BackendKind::Qemu => {
                plan.argv.push(ignis_vmm::qemu::BINARY.to_string());
                plan.argv.extend(ignis_vmm::qemu::QemuBackend::args(&spec));
            }
            BackendKind::Firecracker => {
                plan.firecracker_config =
                    Some(ignis_vmm::firecracker::FirecrackerBackend::config(&spec));
            }
            #[cfg(feature = "fake-vmm")]
            BackendKind::Fake => {}
        }
        Ok(plan)
    }
}
