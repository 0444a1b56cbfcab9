use crate::{Error, Ignis};

impl Ignis {
    /// Writes the VM's initrd and returns how the VM would be booted by
    /// hand: for benchmarks (the "raw VMM" baseline) and debugging
    /// (`ignis __boot-plan VM`).
    pub fn vm_boot_plan(&self, query: &str) -> Result<ignis_vmm::BootPlan, Error> {
        let rec = self.find_vm(query)?;
        let driver = super::driver(rec.spec.backend)?;
        let spec = self.boot_spec(&rec, driver.as_ref())?;
        Ok(driver.boot_plan(&spec))
    }
}
