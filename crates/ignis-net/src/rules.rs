//! The nftables ruleset of table `ip ignis`, as `nft -j` JSON, generated
//! from the leases and published ports (a pure function, unit-tested).

use serde_json::{json, Value};

use crate::{PortMapping, Subnet};

pub const TABLE: &str = "ignis";

/// One published port and the VM address behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mapping: PortMapping,
    pub vm_ip: std::net::Ipv4Addr,
}

fn chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn matches(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// The whole table: created if missing, flushed, refilled, in one batch.
pub fn ruleset(bridge: &str, subnet: Subnet, forwards: &[Forward]) -> Value {
    let saddr = json!({"payload": {"protocol": "ip", "field": "saddr"}});
    let daddr = json!({"payload": {"protocol": "ip", "field": "daddr"}});
    let net = json!({"prefix": {"addr": subnet.network.to_string(), "len": subnet.prefix}});
    let mut cmds = vec![
        json!({"add": {"table": {"family": "ip", "name": TABLE}}}),
        json!({"flush": {"table": {"family": "ip", "name": TABLE}}}),
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        chain("postrouting", "nat", "postrouting", 100),
        chain("forward", "filter", "forward", 0),
        // VMs reach the outside through the host's address.
        rule(
            "postrouting",
            vec![
                matches(saddr.clone(), "==", net.clone()),
                matches(json!({"meta": {"key": "oifname"}}), "!=", json!(bridge)),
                json!({"masquerade": null}),
            ],
        ),
        // Host-local clients of published ports (DNATed in `output`) keep a
        // 127/8 source the VM could not answer: masquerade to the bridge.
        rule(
            "postrouting",
            vec![
                matches(
                    saddr,
                    "==",
                    json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                ),
                matches(json!({"meta": {"key": "oifname"}}), "==", json!(bridge)),
                json!({"masquerade": null}),
            ],
        ),
        rule(
            "forward",
            vec![
                matches(json!({"meta": {"key": "iifname"}}), "==", json!(bridge)),
                json!({"accept": null}),
            ],
        ),
        rule(
            "forward",
            vec![
                matches(json!({"meta": {"key": "oifname"}}), "==", json!(bridge)),
                json!({"accept": null}),
            ],
        ),
    ];
    for f in forwards {
        let proto = f.mapping.proto.as_str();
        let mut expr = vec![matches(
            json!({"payload": {"protocol": proto, "field": "dport"}}),
            "==",
            json!(f.mapping.host_port),
        )];
        if let Some(ip) = f.mapping.host_ip {
            expr.push(matches(daddr.clone(), "==", json!(ip.to_string())));
        }
        expr.push(json!({"dnat": {"addr": f.vm_ip.to_string(), "port": f.mapping.vm_port}}));
        cmds.push(rule("prerouting", expr.clone()));
        // Locally generated traffic to a local address (curl localhost:8080).
        let mut local = vec![matches(
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            "==",
            json!("local"),
        )];
        local.extend(expr);
        cmds.push(rule("output", local));
    }
    json!({ "nftables": cmds })
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
        let r = ruleset("ignis0", subnet, &fw);
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
        let base = ruleset("ignis0", subnet, &[]);
        assert!(!base.to_string().contains("dnat"));
    }
}
