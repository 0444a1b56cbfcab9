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
/// An IPv6 address from IPAM: address, prefix length, gateway.
pub type Ipv6Address = (std::net::Ipv6Addr, u8, Option<std::net::Ipv6Addr>);

/// The addresses IPAM gave one interface: the first of each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addresses {
    pub v4: Option<Ipv4Address>,
    pub v6: Option<Ipv6Address>,
}

/// A plugin chain's final result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

impl CniResult {
    /// The interface `ifname` inside the namespace, and the addresses the
    /// IPAM gave it (an IPv4 one, an IPv6 one, both or none: the first of
    /// each family; an `ips` entry without `interface` is anyone's).
    pub fn for_interface(&self, ifname: &str) -> Option<(&Interface, Addresses)> {
        let (index, iface) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && !i.sandbox.is_empty())?;
        let mut found = Addresses::default();
        for ip in self
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none_or(|i| i == index))
        {
            let Some((a, p)) = ip.address.split_once('/') else {
                continue;
            };
            let Ok(p) = p.parse::<u8>() else { continue };
            let gw: Option<std::net::IpAddr> = ip.gateway.as_deref().and_then(|g| g.parse().ok());
            match a.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) if p <= 32 && found.v4.is_none() => {
                    let gw = match gw {
                        Some(std::net::IpAddr::V4(g)) => Some(g),
                        _ => None,
                    };
                    found.v4 = Some((a, p, gw));
                }
                Ok(std::net::IpAddr::V6(a)) if p <= 128 && found.v6.is_none() => {
                    let gw = match gw {
                        Some(std::net::IpAddr::V6(g)) => Some(g),
                        _ => None,
                    };
                    found.v6 = Some((a, p, gw));
                }
                _ => {}
            }
        }
        Some((iface, found))
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
            ip.v4,
            Some((
                "10.22.0.5".parse().unwrap(),
                16,
                Some("10.22.0.1".parse().unwrap())
            ))
        );
        assert_eq!(ip.v6, Some(("fd00::5".parse().unwrap(), 64, None)));
        // The host side's name is not the VM's interface.
        assert!(r.for_interface("cni0").is_none());
    }

    fn result(ips: &str) -> CniResult {
        CniResult::parse(
            &serde_json::from_str(&format!(
                r#"{{"cniVersion":"1.0.0","interfaces":[
                    {{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"}},
                    {{"name":"eth0","mac":"02:00:00:00:00:05","sandbox":"/run/netns/x"}}],
                  "ips":{ips}}}"#
            ))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn dual_stack_v6_only_and_other_interfaces_addresses() {
        // Dual stack, IPv6 first, with the host side's address before.
        let r = result(
            r#"[{"interface":0,"address":"10.22.0.1/16"},
                {"interface":1,"address":"fd00:1::5/64","gateway":"fd00:1::1"},
                {"interface":1,"address":"fd00:2::5/64"},
                {"interface":1,"address":"10.22.0.5/16","gateway":"10.22.0.1"}]"#,
        );
        let (_, a) = r.for_interface("eth0").unwrap();
        assert_eq!(
            a.v4,
            Some((
                "10.22.0.5".parse().unwrap(),
                16,
                Some("10.22.0.1".parse().unwrap())
            ))
        );
        assert_eq!(
            a.v6,
            Some((
                "fd00:1::5".parse().unwrap(),
                64,
                Some("fd00:1::1".parse().unwrap())
            ))
        );
        // IPv6 only (no interface index: the one interface's).
        let r = result(r#"[{"address":"fd00::7/112","gateway":"fd00::1"}]"#);
        let (_, a) = r.for_interface("eth0").unwrap();
        assert_eq!(a.v4, None);
        assert_eq!(
            a.v6,
            Some((
                "fd00::7".parse().unwrap(),
                112,
                Some("fd00::1".parse().unwrap())
            ))
        );
        // Nothing usable: an interface without addresses.
        for bad in [
            r#"[]"#,
            r#"[{"interface":1,"address":"fd00::7/129"}]"#,
            r#"[{"interface":1,"address":"10.0.0.1"}]"#,
        ] {
            let (_, a) = result(bad).for_interface("eth0").unwrap();
            assert_eq!(a, Addresses::default(), "{bad}");
        }
    }
}
