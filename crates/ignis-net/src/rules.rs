//! The nftables ruleset of table `ip ignis` (and `ip6 ignis` when the
//! bridge has IPv6), as `nft -j` JSON, generated from the leases and
//! published ports (a pure function, unit-tested).

use serde_json::{json, Value};

use std::net::IpAddr;

use crate::{PortMapping, Subnet, Subnet6};

pub const TABLE: &str = "ignis";

/// One published port and a VM address behind it (a VM with an IPv4 and
/// an IPv6 address has a forward for each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mapping: PortMapping,
    pub vm_ip: IpAddr,
}

impl Forward {
    /// Whether this forward is published in the family of its VM address:
    /// a host IP of the other family is not, no host IP (or the IPv4
    /// wildcard, which is how "none given" is stored) is in both.
    fn published(&self) -> bool {
        match (self.mapping.host_ip, self.vm_ip) {
            // `[::1]` is relayed by the supervisor (`proxy`): the kernel
            // does not route IPv6 loopback traffic out of the bridge.
            (Some(IpAddr::V6(h)), _) if h.is_loopback() => false,
            (None, _) => true,
            (Some(IpAddr::V4(h)), IpAddr::V6(_)) => h.is_unspecified(),
            (Some(h), v) => h.is_ipv4() == v.is_ipv4(),
        }
    }
}

fn chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {"family": family, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn matches(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// The whole table (two with IPv6): created if missing, flushed,
/// refilled, in one batch.
pub fn ruleset(
    bridge: &str,
    subnet: Subnet,
    subnet6: Option<Subnet6>,
    forwards: &[Forward],
) -> Value {
    let mut cmds = family_rules(
        "ip",
        bridge,
        (subnet.network.to_string(), subnet.prefix),
        ("127.0.0.0", 8),
        forwards.iter().filter(|f| f.vm_ip.is_ipv4()),
    );
    if let Some(s6) = subnet6 {
        cmds.extend(family_rules(
            "ip6",
            bridge,
            (s6.network.to_string(), s6.prefix),
            ("::1", 128),
            forwards.iter().filter(|f| f.vm_ip.is_ipv6()),
        ));
    }
    json!({ "nftables": cmds })
}

/// One family's table: masquerade out of the VMs' prefix, forwarding to and
/// from the bridge, DNAT for each published port.
fn family_rules<'a>(
    family: &str,
    bridge: &str,
    (net_addr, net_len): (String, u8),
    (lo_addr, lo_len): (&str, u8),
    forwards: impl Iterator<Item = &'a Forward>,
) -> Vec<Value> {
    let saddr = json!({"payload": {"protocol": family, "field": "saddr"}});
    let daddr = json!({"payload": {"protocol": family, "field": "daddr"}});
    let net = json!({"prefix": {"addr": net_addr, "len": net_len}});
    let mut cmds = vec![
        json!({"add": {"table": {"family": family, "name": TABLE}}}),
        json!({"flush": {"table": {"family": family, "name": TABLE}}}),
        chain(family, "prerouting", "nat", "prerouting", -100),
        chain(family, "output", "nat", "output", -100),
        chain(family, "postrouting", "nat", "postrouting", 100),
        chain(family, "forward", "filter", "forward", 0),
        // VMs reach the outside through the host's address.
        rule(
            family,
            "postrouting",
            vec![
                matches(saddr.clone(), "==", net),
                matches(json!({"meta": {"key": "oifname"}}), "!=", json!(bridge)),
                json!({"masquerade": null}),
            ],
        ),
        // Host-local clients of published ports (DNATed in `output`) keep a
        // loopback source the VM could not answer: masquerade to the bridge.
        rule(
            family,
            "postrouting",
            vec![
                matches(
                    saddr,
                    "==",
                    json!({"prefix": {"addr": lo_addr, "len": lo_len}}),
                ),
                matches(json!({"meta": {"key": "oifname"}}), "==", json!(bridge)),
                json!({"masquerade": null}),
            ],
        ),
        rule(
            family,
            "forward",
            vec![
                matches(json!({"meta": {"key": "iifname"}}), "==", json!(bridge)),
                json!({"accept": null}),
            ],
        ),
        rule(
            family,
            "forward",
            vec![
                matches(json!({"meta": {"key": "oifname"}}), "==", json!(bridge)),
                json!({"accept": null}),
            ],
        ),
    ];
    for f in forwards.filter(|f| f.published()) {
        let proto = f.mapping.proto.as_str();
        let mut expr = vec![matches(
            json!({"payload": {"protocol": proto, "field": "dport"}}),
            "==",
            json!(f.mapping.host_port),
        )];
        if let Some(ip) = f.mapping.host_ip.filter(|i| !i.is_unspecified()) {
            expr.push(matches(daddr.clone(), "==", json!(ip.to_string())));
        }
        expr.push(json!({"dnat": {"addr": f.vm_ip.to_string(), "port": f.mapping.vm_port}}));
        cmds.push(rule(family, "prerouting", expr.clone()));
        // Locally generated traffic to a local address (curl localhost:8080).
        let mut local = vec![matches(
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            "==",
            json!("local"),
        )];
        local.extend(expr);
        cmds.push(rule(family, "output", local));
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_port, Subnet};

    #[test]
    fn ruleset_masquerades_and_forwards_each_port() {
        let subnet: Subnet = "10.61.0.0/16".parse().unwrap();
        let fw = vec![
            Forward {
                mapping: parse_port("8080:80").unwrap(),
                vm_ip: "10.61.0.2".parse().unwrap(),
            },
            Forward {
                mapping: parse_port("127.0.0.1:5353:53/udp").unwrap(),
                vm_ip: "10.61.0.3".parse().unwrap(),
            },
        ];
        let r = ruleset("ignis0", subnet, None, &fw);
        let cmds = r["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["add"]["table"]["name"], "ignis");
        assert!(
            cmds[1].get("flush").is_some(),
            "the table is rebuilt as a whole"
        );
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        let dnats: Vec<&Value> = rules
            .iter()
            .filter(|r| r["expr"].to_string().contains("dnat"))
            .copied()
            .collect();
        assert_eq!(dnats.len(), 4, "prerouting + output per port");
        let text = r.to_string();
        assert!(
            text.contains(r#""dnat":{"addr":"10.61.0.2","port":80}"#),
            "{text}"
        );
        assert!(text.contains(r#""field":"dport","protocol":"udp""#));
        assert!(text.contains(r#""right":"127.0.0.1""#));
        assert!(text.contains("masquerade"));
        // No ports: only the base rules.
        let base = ruleset("ignis0", subnet, None, &[]);
        assert!(!base.to_string().contains("dnat"));
    }

    #[test]
    fn ipv6_adds_an_ip6_table_with_nat66_and_v6_forwards() {
        let subnet: Subnet = "10.61.0.0/16".parse().unwrap();
        let s6: Subnet6 = "fd00:1:2:3::/64".parse().unwrap();
        let fw = |spec: &str, ip: &str| Forward {
            mapping: parse_port(spec).unwrap(),
            vm_ip: ip.parse().unwrap(),
        };
        let fws = vec![
            // No host IP: both families, one forward per VM address.
            fw("8080:80", "10.61.0.2"),
            fw("8080:80", "fd00:1:2:3::2"),
            // IPv6 host IPs: only the VM's IPv6 address.
            fw("[::1]:8081:81", "10.61.0.2"),
            fw("[::1]:8081:81", "fd00:1:2:3::2"),
            fw("[::]:8082:82/udp", "fd00:1:2:3::2"),
            // An IPv4 host IP: only the VM's IPv4 address.
            fw("127.0.0.1:8083:83", "10.61.0.2"),
            fw("127.0.0.1:8083:83", "fd00:1:2:3::2"),
        ];
        let r = ruleset("ignis0", subnet, Some(s6), &fws);
        let cmds = r["nftables"].as_array().unwrap();
        let tables: Vec<String> = cmds
            .iter()
            .filter_map(|c| c["add"].get("table"))
            .map(|t| {
                format!(
                    "{} {}",
                    t["family"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(tables, ["ip ignis", "ip6 ignis"]);
        let dnats = |family: &str| -> Vec<String> {
            cmds.iter()
                .filter_map(|c| c["add"].get("rule"))
                .filter(|r| r["family"] == family && r["chain"] == "prerouting")
                .map(|r| r["expr"].to_string())
                .collect()
        };
        let v4 = dnats("ip");
        assert_eq!(v4.len(), 2, "{v4:?}");
        assert!(v4[0].contains(r#""dnat":{"addr":"10.61.0.2","port":80}"#));
        assert!(v4[1].contains(r#""right":"127.0.0.1""#));
        let v6 = dnats("ip6");
        assert_eq!(v6.len(), 2, "{v6:?}");
        assert!(
            v6[0].contains(r#""dnat":{"addr":"fd00:1:2:3::2","port":80}"#),
            "{}",
            v6[0]
        );
        assert!(!v6[0].contains("daddr"), "no host IP: any address");
        assert!(
            !r.to_string().contains(r#""port":81"#),
            "[::1] is the supervisor's relay, not a DNAT (an output DNAT would take its traffic)"
        );
        assert!(!v6[1].contains("daddr"), "[::]: any IPv6 address");
        assert!(v6[1].contains(r#""protocol":"udp""#));
        // NAT66: the VMs' prefix masqueraded out of the bridge.
        let text = r.to_string();
        assert!(
            text.contains(r#"{"prefix":{"addr":"fd00:1:2:3::","len":64}}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"prefix":{"addr":"::1","len":128}}"#));
        // IPv6 off: the IPv4 table alone, as before.
        let v4only = ruleset("ignis0", subnet, None, &fws);
        assert!(!v4only.to_string().contains("ip6"));
    }
}
