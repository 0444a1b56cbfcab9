use serde::{Deserialize, Serialize};

use crate::{Error, Ignis};

/// `ignis network ls/inspect`: the bridge network and who is on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    /// IPv6 on the bridge (`--subnet6`): its prefix and gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub leases: Vec<LeaseInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    pub mac: String,
    pub vm_id: String,
    pub vm_name: String,
    pub state: String,
    pub ports: Vec<String>,
}

impl Ignis {
    pub fn network_inspect(&self) -> Result<NetworkInfo, Error> {
        let subnet = self.subnet;
        let mut leases = Vec::new();
        for vm in self.vm_list(true)? {
            let n = &vm.spec.network;
            let Some(nic) = n
                .nics()
                .into_iter()
                .find(|n| n.mode == ignis_api::NetworkMode::Bridge)
            else {
                continue;
            };
            if let (Some(ip), Some(mac)) = (&nic.ip, &nic.mac) {
                leases.push(LeaseInfo {
                    ip: ip.clone(),
                    ip6: nic.ip6.clone(),
                    mac: mac.clone(),
                    vm_id: vm.id.clone(),
                    vm_name: vm.name.clone(),
                    state: vm.state().as_str().to_string(),
                    ports: n.ports.iter().map(ToString::to_string).collect(),
                });
            }
        }
        leases.sort_by_key(|l| {
            l.ip.parse::<std::net::Ipv4Addr>()
                .map(u32::from)
                .unwrap_or(0)
        });
        Ok(NetworkInfo {
            name: "bridge".into(),
            bridge: ignis_net::BRIDGE.into(),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            subnet6: self.subnet6.map(|s| s.to_string()),
            gateway6: self.subnet6.map(|s| s.gateway().to_string()),
            leases,
        })
    }
}
