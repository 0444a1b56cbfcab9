//! The part of a CNI result ignis reads (spec 0.3.0 to 1.0.0: `interfaces`,
//! `ips` with `interface` indexes, `routes`); the whole JSON is kept as
//! well, to hand back as `prevResult` to CHECK and DEL.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The namespace path for interfaces inside one ("" for the host's).
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR form: `10.22.0.5/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// An IPv4 address from IPAM: address, prefix length, gateway.
pub type Ipv4Address = (std::net::Ipv4Addr, u8, Option<std::net::Ipv4Addr>);

/// A plugin chain's final result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

impl CniResult {
    /// The interface `ifname` inside the namespace, and the IPv4 address
    /// (address, prefix, gateway) the IPAM gave it.
    pub fn for_interface(&self, ifname: &str) -> Option<(&Interface, Option<Ipv4Address>)> {
        let (index, iface) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && !i.sandbox.is_empty())?;
        let ip = self
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none_or(|i| i == index))
            .find_map(|ip| {
                let (a, p) = ip.address.split_once('/')?;
                let a: std::net::Ipv4Addr = a.parse().ok()?;
                let p: u8 = p.parse().ok().filter(|p| *p <= 32)?;
                let gw = ip.gateway.as_deref().and_then(|g| g.parse().ok());
                Some((a, p, gw))
            });
        Some((iface, ip))
    }

    pub fn parse(v: &Value) -> Result<Self, String> {
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bridge_plugins_result() {
        // What the bridge plugin with host-local IPAM prints (1.0.0).
        let v: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","interfaces":[
                {"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},
                {"name":"veth1","mac":"bb:bb:bb:bb:bb:bb"},
                {"name":"eth0","mac":"02:42:0a:16:00:05","sandbox":"/run/netns/ignis-x"}],
              "ips":[{"interface":2,"address":"10.22.0.5/16","gateway":"10.22.0.1"},
                     {"interface":2,"address":"fd00::5/64"}],
              "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
        )
        .unwrap();
        let r = CniResult::parse(&v).unwrap();
        let (iface, ip) = r.for_interface("eth0").unwrap();
        assert_eq!(iface.mac, "02:42:0a:16:00:05");
        assert_eq!(
            ip,
            Some((
                "10.22.0.5".parse().unwrap(),
                16,
                Some("10.22.0.1".parse().unwrap())
            ))
        );
        // The host side's name is not the VM's interface.
        assert!(r.for_interface("cni0").is_none());
    }
}
