//! Prometheus metrics (prometheus-client): VMs by state, operation
//! latencies and errors of the API and the reconcilers.

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

pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    vms: Family<StateLabel, Gauge>,
    ops: Family<OpResult, Counter>,
    latency: Family<OpLabel, Histogram>,
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
        Self {
            registry: std::sync::Mutex::new(registry),
            vms,
            ops,
            latency,
        }
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
