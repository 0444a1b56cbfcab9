use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// `-p [ip:]host:vm[/tcp|udp]`; an IPv6 host address in brackets
/// (`[::1]:8080:80`, `[::]:8080:80`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub vm_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            Some(IpAddr::V6(i)) => format!("[{i}]"),
            Some(i) => i.to_string(),
            None => "0.0.0.0".into(),
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port,
            self.vm_port,
            self.proto.as_str()
        )
    }
}

/// The syntax `-p` wants, ending every [`PortError`].
const WANT: &str = "want [IP:]HOST_PORT:VM_PORT[/tcp|udp], an IPv6 IP in brackets";

/// Why a `-p` (or `spec.network.ports[]`) value was refused; each carries
/// the value as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("-p {0}: protocol must be tcp or udp ({WANT})")]
    Protocol(String),
    #[error("-p {0}: bad host IP ({WANT})")]
    HostIp(String),
    #[error("-p {0}: wrong number of fields ({WANT})")]
    Fields(String),
    #[error("-p {0}: ports are 1..65535 ({WANT})")]
    Port(String),
}

/// Parses Docker's `-p` syntax.
pub fn parse_port(s: &str) -> Result<PortMapping, PortError> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some(_) => return Err(PortError::Protocol(s.into())),
        None => (s, Proto::Tcp),
    };
    // `[v6]:HOST:VM`: the brackets keep the address's colons apart.
    let (v6, spec) = match spec.strip_prefix('[') {
        Some(rest) => {
            let (ip, rest) = rest
                .split_once(']')
                .ok_or_else(|| PortError::HostIp(s.into()))?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| PortError::HostIp(s.into()))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| PortError::Fields(s.into()))?;
            (Some(IpAddr::V6(ip)), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, vm) = match (v6, parts.as_slice()) {
        (v6, [host, vm]) => (v6, *host, *vm),
        (None, [ip, host, vm]) => (
            Some(IpAddr::V4(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| PortError::HostIp(s.into()))?,
            )),
            *host,
            *vm,
        ),
        _ => return Err(PortError::Fields(s.into())),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| PortError::Port(s.into()))
    };
    Ok(PortMapping {
        host_ip: ip,
        host_port: port(host)?,
        vm_port: port(vm)?,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_syntax() {
        assert_eq!(
            parse_port("8080:80").unwrap(),
            PortMapping {
                host_ip: None,
                host_port: 8080,
                vm_port: 80,
                proto: Proto::Tcp
            }
        );
        let m = parse_port("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (m.host_ip, m.proto),
            (Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), Proto::Udp)
        );
        assert_eq!(m.to_string(), "127.0.0.1:5353->53/udp");
        let m = parse_port("[::1]:8080:80").unwrap();
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        assert_eq!((m.host_port, m.vm_port), (8080, 80));
        assert_eq!(m.to_string(), "[::1]:8080->80/tcp");
        assert_eq!(
            parse_port("[::]:53:53/udp").unwrap().host_ip,
            Some("::".parse().unwrap())
        );
        for bad in [
            "[::1:8080:80",
            "[::1]8080:80",
            "[1.2.3.4]:80:80",
            "[::1]:1:2:3",
            "::1:80:80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        for bad in [
            "80",
            "0:80",
            "a:80",
            "8080:80/sctp",
            "1.2.3:80:80",
            "70000:80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_port("1.2.3:80:80").unwrap_err().to_string(),
            "-p 1.2.3:80:80: bad host IP (want [IP:]HOST_PORT:VM_PORT[/tcp|udp], an IPv6 IP in brackets)"
        );
        assert_eq!(
            parse_port("8080:80/sctp").unwrap_err(),
            PortError::Protocol("8080:80/sctp".into())
        );
    }
}
