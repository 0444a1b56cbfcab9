//! Source routing of a VM with several NICs: each NIC with a gateway gets
//! a routing table of its own (its on-link subnet and the default route
//! via its gateway) and the rule `from <its address> lookup <that table>`,
//! so what the VM sends from a NIC's address (a reply to a client beyond
//! that NIC's subnet) leaves by that NIC, not by the first NIC's default
//! route (an asymmetric path that rp_filter or NAT on the way drops). The
//! main table keeps the first NIC's default route for everything else.
//!
//! Netlink (RTM_NEWROUTE with a table, RTM_NEWRULE), which the route
//! ioctls cannot express; messages from `netlink-packet-route` on a plain
//! blocking socket. Idempotent: routes replace, an existing rule is kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

pub use ignis_guest_config::nic_table as table_for;

/// One address family of a NIC: its address, prefix length and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
}

/// The subnet `ip/prefix` is in (host bits cleared).
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route(
    table: u32,
    oif: u32,
    dst: Option<(IpAddr, u8)>,
    via: Option<IpAddr>,
    s: &Source,
) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(s.ip);
    m.header.table = u8::try_from(table).unwrap_or(0);
    m.header.protocol = RouteProtocol::Boot;
    m.header.kind = RouteType::Unicast;
    m.header.scope = if via.is_none() && s.ip.is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    if let Some((d, len)) = dst {
        m.header.destination_prefix_length = len;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(d)));
    }
    if let Some(g) = via {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if s.ip.is_ipv4() {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(s.ip)));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    m.attributes.push(RouteAttribute::Table(table));
    m
}

/// The requests that source-route `s` on the interface `oif` through
/// `table`, with their flags: the subnet route, the default route (both
/// replacing what the table had), the rule (kept if there).
pub fn requests(oif: u32, table: u32, s: &Source) -> Vec<(RouteNetlinkMessage, u16)> {
    let subnet = route(
        table,
        oif,
        Some((network(s.ip, s.prefix), s.prefix)),
        None,
        s,
    );
    let default = route(table, oif, None, Some(s.gateway), s);
    let mut rule = RuleMessage::default();
    rule.header.family = family(s.ip);
    rule.header.src_len = if s.ip.is_ipv4() { 32 } else { 128 };
    rule.header.table = u8::try_from(table).unwrap_or(0);
    rule.header.action = RuleAction::ToTable;
    rule.attributes = vec![
        RuleAttribute::Source(s.ip),
        RuleAttribute::Table(table),
        RuleAttribute::Priority(table),
    ];
    vec![
        (
            RouteNetlinkMessage::NewRoute(subnet),
            NLM_F_CREATE | NLM_F_REPLACE,
        ),
        (
            RouteNetlinkMessage::NewRoute(default),
            NLM_F_CREATE | NLM_F_REPLACE,
        ),
        (
            RouteNetlinkMessage::NewRule(rule),
            NLM_F_CREATE | NLM_F_EXCL,
        ),
    ]
}

/// What failed, for the console report.
#[derive(Debug, thiserror::Error)]
#[error("source routing of {ip} on {name} (table {table}): {what}")]
pub struct PolicyError {
    name: String,
    ip: IpAddr,
    table: u32,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

/// Gives the interface `name` (index `oif`) the table and rule of `s`.
pub fn apply(name: &str, oif: u32, table: u32, s: &Source) -> Result<(), PolicyError> {
    let fail = |what: &'static str| {
        move |source: std::io::Error| PolicyError {
            name: name.to_string(),
            ip: s.ip,
            table,
            what,
            source,
        }
    };
    let sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
        .map_err(fail("netlink socket"))?;
    sock.connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(fail("netlink socket"))?;
    for (seq, (msg, flags)) in requests(oif, table, s).into_iter().enumerate() {
        let what = match (&msg, seq) {
            (RouteNetlinkMessage::NewRule(_), _) => {
                "add the rule (a kernel without CONFIG_IP_MULTIPLE_TABLES?)"
            }
            (_, 0) => "add the subnet route",
            _ => "add the default route",
        };
        let rule = matches!(msg, RouteNetlinkMessage::NewRule(_));
        match request(&sock, u32::try_from(seq).unwrap_or(0) + 1, msg, flags) {
            Ok(()) => {}
            // The rule is there already (a second configuration).
            Err(e) if rule && e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(what)(e)),
        }
    }
    Ok(())
}

/// Sends one request and reads its acknowledgement.
fn request(
    sock: &netlink_sys::Socket,
    seq: u32,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> std::io::Result<()> {
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0)?;
    loop {
        let mut reply = Vec::with_capacity(8192);
        sock.recv(&mut reply, 0)?;
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        if m.header.sequence_number != seq {
            continue;
        }
        return match m.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
            _ => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(m: &RouteNetlinkMessage) -> String {
        format!("{m:?}")
    }

    #[test]
    fn a_nic_gets_its_subnet_default_route_and_rule_in_its_table() {
        let s = Source {
            ip: "10.88.7.5".parse().unwrap(),
            prefix: 24,
            gateway: "10.88.7.1".parse().unwrap(),
        };
        let r = requests(3, table_for(1), &s);
        assert_eq!(r.len(), 3);
        let RouteNetlinkMessage::NewRoute(subnet) = &r[0].0 else {
            panic!("{:?}", r[0].0)
        };
        assert_eq!(subnet.header.table, 101);
        assert_eq!(subnet.header.destination_prefix_length, 24);
        assert_eq!(subnet.header.scope, RouteScope::Link);
        assert!(subnet
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "10.88.7.0".parse().unwrap()
            ))));
        assert!(subnet.attributes.contains(&RouteAttribute::Oif(3)));
        assert!(subnet.attributes.contains(&RouteAttribute::Table(101)));
        let RouteNetlinkMessage::NewRoute(default) = &r[1].0 else {
            panic!("{:?}", r[1].0)
        };
        assert_eq!(default.header.destination_prefix_length, 0);
        assert!(default
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "10.88.7.1".parse().unwrap()
            ))));
        assert!(
            default.attributes.contains(&RouteAttribute::Table(101)),
            "{}",
            attrs(&r[1].0)
        );
        let RouteNetlinkMessage::NewRule(rule) = &r[2].0 else {
            panic!("{:?}", r[2].0)
        };
        assert_eq!(rule.header.src_len, 32);
        assert_eq!(rule.header.action, RuleAction::ToTable);
        assert!(rule.attributes.contains(&RuleAttribute::Source(s.ip)));
        assert!(rule.attributes.contains(&RuleAttribute::Table(101)));
        // Routes replace; a rule that is there is not added twice.
        assert_eq!(r[0].1 & NLM_F_REPLACE, NLM_F_REPLACE);
        assert_eq!(r[2].1 & NLM_F_EXCL, NLM_F_EXCL);
    }

    #[test]
    fn ipv6_rules_match_the_whole_address_and_routes_take_the_prefix() {
        let s = Source {
            ip: "fd00:61::5".parse().unwrap(),
            prefix: 64,
            gateway: "fd00:61::1".parse().unwrap(),
        };
        let r = requests(2, table_for(0), &s);
        let RouteNetlinkMessage::NewRoute(subnet) = &r[0].0 else {
            panic!()
        };
        assert_eq!(subnet.header.address_family, AddressFamily::Inet6);
        assert!(subnet
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet6(
                "fd00:61::".parse().unwrap()
            ))));
        let RouteNetlinkMessage::NewRule(rule) = &r[2].0 else {
            panic!()
        };
        assert_eq!((rule.header.src_len, rule.header.table), (128, 100));
    }
}
