//! Prometheus metrics (prometheus-client): VMs by state, operation
//! latencies and errors of the API and the reconcilers, and per VM: its
//! state, CPU and memory (its cgroup), the VMM's resident memory, agent
//! health, restarts, and how long boots and restores took (histograms).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResult {
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabel {
    vm: String,
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmStateLabel {
    vm: String,
    id: String,
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartKind {
    /// boot, or restore (a fork or restore resuming a snapshot).
    kind: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Which of Firecracker's totals a series shows.
type FcCounter = fn(&ignis_core::vm::VmmTotals) -> u64;

/// Firecracker's own metrics exported per VM: name, help, value.
const FC_SERIES: &[(&str, &str, FcCounter)] = &[
    (
        "firecracker_vcpu_exits",
        "vCPU exits to Firecracker (port I/O and MMIO) in this run of the VMM",
        |t| t.vcpu_exits,
    ),
    (
        "firecracker_block_read_bytes",
        "Bytes the guest read through Firecracker's block devices in this run",
        |t| t.block_read_bytes,
    ),
    (
        "firecracker_block_write_bytes",
        "Bytes the guest wrote through Firecracker's block devices in this run",
        |t| t.block_write_bytes,
    ),
    (
        "firecracker_net_rx_bytes",
        "Bytes the guest received through Firecracker's network devices in this run",
        |t| t.net_rx_bytes,
    ),
    (
        "firecracker_net_tx_bytes",
        "Bytes the guest sent through Firecracker's network devices in this run",
        |t| t.net_tx_bytes,
    ),
    (
        "firecracker_seccomp_faults",
        "Syscalls Firecracker's seccomp filters refused in this run",
        |t| t.seccomp_faults,
    ),
    (
        "firecracker_metric_flushes",
        "Metric documents Firecracker wrote in this run (one per flush)",
        |t| t.flushes,
    ),
];

pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    vms: Family<StateLabel, Gauge>,
    ops: Family<OpResult, Counter>,
    latency: Family<OpLabel, Histogram>,
    vm_state: Family<VmStateLabel, Gauge>,
    vm_cpu: Family<VmLabel, F64Gauge>,
    vm_memory: Family<VmLabel, Gauge>,
    vm_rss: Family<VmLabel, Gauge>,
    vm_agent: Family<VmLabel, Gauge>,
    vm_paused: Family<VmLabel, Gauge>,
    vm_restarts: Family<VmLabel, Gauge>,
    start_seconds: Family<StartKind, Histogram>,
    /// Firecracker's own counters, per VM.
    fc: Vec<(FcCounter, Family<VmLabel, Counter>)>,
    /// Starts already observed: (VM ID, start time).
    observed: std::sync::Mutex<std::collections::HashSet<(String, i64)>>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ignis");
        let vms = Family::<StateLabel, Gauge>::default();
        let ops = Family::<OpResult, Counter>::default();
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("vms", "VMs by state", vms.clone());
        registry.register("operations", "Operations by result", ops.clone());
        registry.register("operation_seconds", "Operation latency", latency.clone());
        let vm_state = Family::<VmStateLabel, Gauge>::default();
        let vm_cpu = Family::<VmLabel, F64Gauge>::default();
        let vm_memory = Family::<VmLabel, Gauge>::default();
        let vm_rss = Family::<VmLabel, Gauge>::default();
        let vm_agent = Family::<VmLabel, Gauge>::default();
        let vm_paused = Family::<VmLabel, Gauge>::default();
        let vm_restarts = Family::<VmLabel, Gauge>::default();
        let start_seconds = Family::<StartKind, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 16))
        });
        registry.register(
            "vm_state",
            "1 for each VM, labelled with its state (created, running, exited)",
            vm_state.clone(),
        );
        registry.register(
            "vm_cpu_seconds",
            "CPU time a running VM used (its cgroup, else its VMM process); only grows while it runs",
            vm_cpu.clone(),
        );
        registry.register(
            "vm_memory_bytes",
            "Memory of a running VM: its cgroup's, else its VMM's resident memory",
            vm_memory.clone(),
        );
        registry.register(
            "vm_vmm_resident_bytes",
            "Resident memory of a running VM's VMM process",
            vm_rss.clone(),
        );
        registry.register(
            "vm_agent_healthy",
            "1 when a running VM's guest agent answers its health checks, 0 when not",
            vm_agent.clone(),
        );
        registry.register(
            "vm_paused",
            "1 when a running VM's vCPUs are paused",
            vm_paused.clone(),
        );
        registry.register(
            "vm_restarts",
            "How often a VM's restart policy restarted it (RestartCount)",
            vm_restarts.clone(),
        );
        registry.register(
            "vm_start_seconds",
            "From the start command to the guest ready (boot) or the snapshot resumed (restore)",
            start_seconds.clone(),
        );
        let fc = FC_SERIES
            .iter()
            .map(|(name, help, value)| {
                let f = Family::<VmLabel, Counter>::default();
                registry.register(*name, *help, f.clone());
                (*value, f)
            })
            .collect();
        Self {
            fc,
            registry: std::sync::Mutex::new(registry),
            vms,
            ops,
            latency,
            vm_state,
            vm_cpu,
            vm_memory,
            vm_rss,
            vm_agent,
            vm_paused,
            vm_restarts,
            start_seconds,
            observed: Default::default(),
        }
    }

    /// The per-VM series, from the records and what the host says of each
    /// running VM now (called at each scrape: the series of removed VMs go);
    /// `vmm` gives a running VM's Firecracker counters.
    pub fn set_vms(
        &self,
        vms: &[ignis_api::VmRecord],
        vmm: &dyn Fn(&ignis_api::VmRecord) -> Option<ignis_core::vm::VmmTotals>,
    ) {
        for (_, f) in &self.fc {
            f.clear();
        }
        for f in [
            &self.vm_memory,
            &self.vm_rss,
            &self.vm_agent,
            &self.vm_paused,
        ] {
            f.clear();
        }
        self.vm_state.clear();
        self.vm_cpu.clear();
        self.vm_restarts.clear();
        for v in vms {
            let label = VmLabel {
                vm: v.name.clone(),
                id: v.id.clone(),
            };
            self.vm_state
                .get_or_create(&VmStateLabel {
                    vm: v.name.clone(),
                    id: v.id.clone(),
                    backend: v.spec.backend.as_str().into(),
                    state: v.state().as_str().into(),
                })
                .set(1);
            self.vm_restarts
                .get_or_create(&label)
                .set(i64::from(v.status.restart_count));
            if v.state() != ignis_api::VmState::Running {
                continue;
            }
            let u = ignis_core::vm::vm_sample(v);
            #[allow(clippy::cast_precision_loss)] // nanoseconds, exact below 2^53 (104 days)
            self.vm_cpu.get_or_create(&label).set(u.cpu_ns as f64 / 1e9);
            let int = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
            self.vm_memory
                .get_or_create(&label)
                .set(int(u.memory_bytes));
            if v.status.vmm_pid.is_some() {
                self.vm_rss
                    .get_or_create(&label)
                    .set(int(u.vmm_resident_bytes));
            }
            if let Some(h) = &v.status.health {
                self.vm_agent
                    .get_or_create(&label)
                    .set(i64::from(*h == ignis_api::Health::Healthy));
            }
            self.vm_paused
                .get_or_create(&label)
                .set(i64::from(v.status.paused));
            if let Some(t) = vmm(v) {
                for (value, f) in &self.fc {
                    f.get_or_create(&label).inc_by(value(&t));
                }
            }
        }
    }

    /// Observes the start time of each VM start not seen yet: a boot once
    /// its guest is ready, a restore (the `load` phase) once it ran.
    pub fn observe_starts(&self, vms: &[ignis_api::VmRecord]) {
        let mut observed = self.observed.lock().expect("metrics");
        for v in vms {
            let (Some(started), true) = (
                v.status.started_at,
                v.state() == ignis_api::VmState::Running,
            ) else {
                continue;
            };
            let restore = v.status.timings.iter().any(|p| p.phase == "load");
            let seconds = if restore {
                let end = v
                    .status
                    .timings
                    .iter()
                    .map(|p| p.at_us + p.took_us)
                    .max()
                    .unwrap_or(0);
                #[allow(clippy::cast_precision_loss)]
                Some(end as f64 / 1e6)
            } else {
                #[allow(clippy::cast_precision_loss)]
                v.status.ready_ms.map(|ms| ms as f64 / 1e3)
            };
            let Some(seconds) = seconds else { continue };
            if observed.insert((v.id.clone(), started)) {
                self.start_seconds
                    .get_or_create(&StartKind {
                        kind: if restore { "restore" } else { "boot" }.into(),
                    })
                    .observe(seconds);
            }
        }
        // Forget VMs that are gone.
        observed.retain(|(id, _)| vms.iter().any(|v| &v.id == id));
    }

    pub fn set_vm_counts(&self, vms: &[ignis_api::VmRecord]) {
        for state in ["created", "running", "exited"] {
            let n = vms.iter().filter(|v| v.state().as_str() == state).count();
            self.vms
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn observe(&self, op: &str, seconds: f64, ok: bool) {
        self.ops
            .get_or_create(&OpResult {
                op: op.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.latency
            .get_or_create(&OpLabel { op: op.into() })
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("metrics"),
        );
        out
    }
}
