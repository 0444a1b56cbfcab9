//! DNS for VMs on a stock host. A VM cannot reach the host's loopback
//! resolvers (systemd-resolved's stub on 127.0.0.53, a dnsmasq on
//! 127.0.0.1), so [`plan`] picks, in order:
//!
//! 1. the servers the user gave (`--dns`),
//! 2. the host's non-loopback servers in `/etc/resolv.conf`,
//! 3. with the systemd-resolved stub: its upstream servers
//!    (`/run/systemd/resolve/resolv.conf`),
//! 4. on the bridge: the bridge's gateway, where a [`Forwarder`] relays to
//!    the loopback resolvers,
//!
//! plus the host's search domains (or `--dns-search`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The host's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of its upstream servers.
pub const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// Override [`RESOLV_CONF`] (tests).
pub const ENV_RESOLV_CONF: &str = "IGNIS_RESOLV_CONF";
/// Override [`RESOLVED_UPSTREAM`] (tests).
pub const ENV_RESOLVED_UPSTREAM: &str = "IGNIS_RESOLVED_UPSTREAM";

/// `nameserver` and `search` lines of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        r.nameservers.push(ip);
                    }
                }
                Some("search" | "domain") => {
                    r.search = words.map(str::to_string).collect();
                }
                _ => {}
            }
        }
        r
    }

    fn read(path: &Path) -> Option<Self> {
        std::fs::read_to_string(path).ok().map(|t| Self::parse(&t))
    }

    /// This host's: `/etc/resolv.conf`, and systemd-resolved's upstream
    /// list when it exists (`None` otherwise).
    pub fn host() -> (Self, Option<Self>) {
        let path = |env: &str, default: &str| {
            std::env::var_os(env).map_or_else(|| default.into(), std::path::PathBuf::from)
        };
        (
            Self::read(&path(ENV_RESOLV_CONF, RESOLV_CONF)).unwrap_or_default(),
            Self::read(&path(ENV_RESOLVED_UPSTREAM, RESOLVED_UPSTREAM)),
        )
    }
}

/// What a VM gets: its resolv.conf, and the loopback resolvers a
/// forwarder on the gateway must relay to (empty: none needed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub forward_to: Vec<SocketAddr>,
}

/// Decides a VM's DNS (see the module's documentation): `given` and
/// `search` are `--dns`/`--dns-search`; `gateway` is the bridge's address
/// when the VM is on it.
pub fn plan(
    given: &[IpAddr],
    search: &[String],
    host: &ResolvConf,
    upstream: Option<&ResolvConf>,
    gateway: Option<Ipv4Addr>,
) -> Plan {
    let search = if search.is_empty() {
        host.search.clone()
    } else {
        search.to_vec()
    };
    let reachable = |r: &ResolvConf| -> Vec<IpAddr> {
        r.nameservers
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback())
            .collect()
    };
    if !given.is_empty() {
        return Plan {
            nameservers: given.to_vec(),
            search,
            forward_to: vec![],
        };
    }
    let direct = reachable(host);
    if !direct.is_empty() {
        return Plan {
            nameservers: direct,
            search,
            forward_to: vec![],
        };
    }
    if let Some(up) = upstream.map(reachable).filter(|u| !u.is_empty()) {
        return Plan {
            nameservers: up,
            search,
            forward_to: vec![],
        };
    }
    let loopback: Vec<SocketAddr> = host
        .nameservers
        .iter()
        .filter(|ip| ip.is_loopback())
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect();
    match gateway {
        Some(gw) if !loopback.is_empty() => Plan {
            nameservers: vec![IpAddr::V4(gw)],
            search,
            forward_to: loopback,
        },
        _ => Plan {
            nameservers: vec![],
            search,
            forward_to: vec![],
        },
    }
}

/// A UDP DNS relay from `listen` (the bridge's gateway, port 53) to the
/// host's loopback resolvers, for as long as it lives (dropped: the thread
/// ends and the socket closes). A minimal relay on purpose: it parses
/// nothing (the resolver it relays to does the work), each query goes to
/// the first resolver that answers within 2 s. Every supervisor of a VM
/// that needs it runs one on the same address (SO_REUSEPORT), so none
/// outlives its VMs and none depends on another. TCP on the same port too:
/// an answer too big for UDP comes back truncated and the guest's resolver
/// asks again over TCP; each such connection is passed whole to the first
/// resolver that accepts one (DNS over TCP frames its own messages).
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Forwarder {
    pub fn start(listen: SocketAddr, upstream: Vec<SocketAddr>) -> std::io::Result<Self> {
        use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
        let family = if listen.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let fd = rustix::net::socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        sockopt::set_socket_reuseport(&fd, true)?;
        rustix::net::bind(&fd, &listen)?;
        let sock = UdpSocket::from(fd);
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let addr = sock.local_addr()?;
        // The same port over TCP; without it (something else holds TCP
        // there) UDP still answers most queries.
        let tcp = || -> std::io::Result<TcpListener> {
            let fd =
                rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
            sockopt::set_socket_reuseaddr(&fd, true)?;
            sockopt::set_socket_reuseport(&fd, true)?;
            rustix::net::bind(&fd, &addr)?;
            rustix::net::listen(&fd, 64)?;
            let listener = TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = vec![{
            let (stop, upstream) = (stop.clone(), upstream.clone());
            std::thread::spawn(move || relay(&sock, &upstream, &stop))
        }];
        match tcp() {
            Ok(listener) => {
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    relay_tcp(&listener, &upstream, &stop)
                }));
            }
            Err(e) => tracing::warn!(%addr, error = %e, "no DNS relay over TCP (UDP only)"),
        }
        Ok(Self {
            stop,
            threads,
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn relay(sock: &UdpSocket, upstream: &[SocketAddr], stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, client)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let (query, upstream) = (buf[..n].to_vec(), upstream.to_vec());
        let Ok(reply_sock) = sock.try_clone() else {
            continue;
        };
        // One short-lived thread per query: a slow resolver holds up no
        // other query.
        std::thread::spawn(move || {
            for server in upstream {
                if let Some(answer) = ask(server, &query) {
                    let _ = reply_sock.send_to(&answer, client);
                    return;
                }
            }
        });
    }
}

/// Accepts connections until told to stop (polled: the listener does not
/// block), each spliced to an upstream resolver on a thread of its own.
fn relay_tcp(listener: &TcpListener, upstream: &[SocketAddr], stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let upstream = upstream.to_vec();
                std::thread::spawn(move || splice(conn, &upstream));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Passes one DNS-over-TCP connection to the first resolver that accepts
/// it, both ways, until either side closes or is idle for 10 s (RFC 7766
/// lets servers close idle connections; resolvers reconnect).
fn splice(client: TcpStream, upstream: &[SocketAddr]) {
    let idle = Some(Duration::from_secs(10));
    let Some(server) = upstream
        .iter()
        .find_map(|s| TcpStream::connect_timeout(s, Duration::from_secs(2)).ok())
    else {
        return;
    };
    for s in [&client, &server] {
        if s.set_nonblocking(false).is_err() || s.set_read_timeout(idle).is_err() {
            return;
        }
    }
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let _ = std::io::copy(&mut s_in, &mut c_out);
    let _ = c_out.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

fn ask(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(server).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// `--add-host NAME:IP` (Docker's syntax; `host-gateway` is the bridge's
/// gateway when the VM is on it).
pub fn parse_add_host(s: &str) -> Result<(String, String), String> {
    let (name, ip) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: want NAME:IP"))?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !valid_name {
        return Err(format!("{s}: {name:?} is not a host name"));
    }
    if ip != "host-gateway" && ip.parse::<IpAddr>().is_err() {
        return Err(format!("{s}: {ip:?} is not an IP address"));
    }
    Ok((name.to_string(), ip.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_stub_resolver_is_replaced_by_what_a_vm_can_reach() {
        let stub = ResolvConf::parse(
            "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan corp.example\n",
        );
        assert_eq!(stub.nameservers, [ip("127.0.0.53")]);
        assert_eq!(stub.search, ["lan", "corp.example"]);
        let upstream = ResolvConf::parse("nameserver 192.168.1.1\nnameserver ::1\n");
        let gw = Some(Ipv4Addr::new(10, 61, 0, 1));
        // systemd-resolved: its upstream servers, the host's search list.
        let p = plan(&[], &[], &stub, Some(&upstream), gw);
        assert_eq!(p.nameservers, [ip("192.168.1.1")]);
        assert_eq!(p.search, ["lan", "corp.example"]);
        assert!(p.forward_to.is_empty());
        // A loopback dnsmasq and no upstream list: the gateway relays.
        let dnsmasq = ResolvConf::parse("nameserver 127.0.0.1\n");
        let p = plan(&[], &[], &dnsmasq, None, gw);
        assert_eq!(p.nameservers, [ip("10.61.0.1")]);
        assert_eq!(p.forward_to, ["127.0.0.1:53".parse().unwrap()]);
        // ... but only on the bridge.
        assert_eq!(plan(&[], &[], &dnsmasq, None, None), Plan::default());
        // A reachable host server is used as it is; --dns and --dns-search win.
        let plain = ResolvConf::parse("nameserver 127.0.0.53\nnameserver 9.9.9.9\n");
        assert_eq!(
            plan(&[], &[], &plain, None, gw).nameservers,
            [ip("9.9.9.9")]
        );
        let p = plan(
            &[ip("1.1.1.1")],
            &["x.test".into()],
            &stub,
            Some(&upstream),
            gw,
        );
        assert_eq!(
            (p.nameservers, p.search),
            (vec![ip("1.1.1.1")], vec!["x.test".to_string()])
        );
    }

    #[test]
    fn add_host_is_name_colon_ip() {
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert!(parse_add_host("gw:host-gateway").is_ok());
        assert!(
            parse_add_host("db:fe80::1").is_ok(),
            "split at the first colon"
        );
        for bad in ["db", "db:nope", ":10.0.0.1", "a b:10.0.0.1"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
    }

    /// The relay passes a query to the upstream resolver and its answer
    /// back, and leaves nothing when dropped.
    #[test]
    fn the_forwarder_relays_and_goes_away() {
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut b) {
                let mut answer = b[..n].to_vec();
                answer.extend_from_slice(b" answered");
                let _ = upstream.send_to(&answer, from);
            }
        });
        let fwd = Forwarder::start("127.0.0.1:0".parse().unwrap(), vec![up_addr]).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"query", fwd.addr()).unwrap();
        let mut b = [0u8; 64];
        let (n, from) = client.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"query answered");
        assert_eq!(
            from,
            fwd.addr(),
            "the answer comes from where the query went"
        );
        let addr = fwd.addr();
        drop(fwd);
        // Its port is free again.
        UdpSocket::bind(addr).unwrap();
    }

    /// Over TCP (what a resolver does after a truncated UDP answer): the
    /// connection reaches the upstream resolver and its framed answer comes
    /// back on the port the UDP relay uses; the port is free once dropped.
    #[test]
    fn the_forwarder_carries_dns_over_tcp() {
        use std::io::{Read, Write};
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in upstream.incoming() {
                let mut c = conn.unwrap();
                // One framed query, one framed answer (length-prefixed).
                let mut len = [0u8; 2];
                c.read_exact(&mut len).unwrap();
                let mut q = vec![0u8; u16::from_be_bytes(len).into()];
                c.read_exact(&mut q).unwrap();
                q.extend_from_slice(&[b'!'; 1000]);
                let n = u16::try_from(q.len()).unwrap().to_be_bytes();
                c.write_all(&n).unwrap();
                c.write_all(&q).unwrap();
            }
        });
        let fwd = Forwarder::start("127.0.0.1:0".parse().unwrap(), vec![up_addr]).unwrap();
        let mut c = TcpStream::connect(fwd.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&[0, 5]).unwrap();
        c.write_all(b"query").unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).unwrap();
        assert_eq!(u16::from_be_bytes(len), 1005);
        let mut a = vec![0u8; 1005];
        c.read_exact(&mut a).unwrap();
        assert_eq!(&a[..5], b"query");
        drop(c);
        let addr = fwd.addr();
        drop(fwd);
        TcpListener::bind(addr).unwrap();
    }
}
