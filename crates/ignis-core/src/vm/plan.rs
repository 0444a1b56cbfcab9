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
                let calls = ignis_vmm::firecracker::FirecrackerBackend::calls(&spec);
                let drives: Vec<serde_json::Value> = calls
                    .iter()
                    .filter(|c| c.1.starts_with("/drives/"))
                    .map(|c| c.2.clone())
                    .collect();
                plan.firecracker_config = Some(serde_json::json!({
                    "boot-source": calls[0].2,
                    "machine-config": calls[1].2,
                    "drives": drives,
                }));
            }
            #[cfg(feature = "fake-vmm")]
            BackendKind::Fake => {}
        }
        Ok(plan)
    }
}
