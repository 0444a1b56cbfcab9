//! IPv6 on the bridge: a ULA prefix (RFC 4193), `::1` the gateway (the
//! bridge), one address a VM leased like the IPv4 one.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use crate::Subnet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipam6Error {
    #[error("'{0}' is not an IPv6 prefix (want e.g. fd00:1:2:3::/64, a /48 to /120, or auto)")]
    BadSubnet(String),
    #[error("prefix {0} has no free address left; remove VMs or configure a larger prefix")]
    Exhausted(String),
    #[error("{ip} is not a usable address in {subnet} (the prefix's first two addresses are the network and the gateway)")]
    OutOfRange { ip: Ipv6Addr, subnet: String },
    #[error("{0} is already leased to another VM")]
    Taken(Ipv6Addr),
}

/// An IPv6 prefix; `::1` of it is the gateway (the bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet6 {
    pub network: Ipv6Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Subnet6 {
    type Err = Ipam6Error;
    fn from_str(s: &str) -> Result<Self, Ipam6Error> {
        let bad = || Ipam6Error::BadSubnet(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(48..=120).contains(&prefix) {
            return Err(bad());
        }
        Ok(Self {
            network: Ipv6Addr::from(u128::from(ip) & mask(prefix)),
            prefix,
        })
    }
}

fn mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (the
/// default prefix must not move when ignis is rebuilt).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Subnet6 {
    /// The default prefix for the IPv4 subnet `v4`: `fdXX:XXXX:XXXX::/64`,
    /// its 40-bit global ID hashed from `ignis` and the IPv4 subnet, so
    /// each host (and each `--subnet`) gets the same one every time, and
    /// two ignis networks with different subnets do not collide.
    pub fn derived(v4: Subnet) -> Self {
        let h = fnv1a(format!("ignis {v4}").as_bytes());
        let global = h & 0xff_ffff_ffff; // 40 bits
        let network = (0xfdu128 << 120) | (u128::from(global) << 80);
        Self {
            network: Ipv6Addr::from(network),
            prefix: 64,
        }
    }

    /// `auto` (the derived prefix) or a prefix.
    pub fn parse_or_derive(s: &str, v4: Subnet) -> Result<Self, Ipam6Error> {
        if s == "auto" {
            Ok(Self::derived(v4))
        } else {
            s.parse()
        }
    }

    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) + 1)
    }

    fn last(&self) -> u128 {
        u128::from(self.network) | !mask(self.prefix)
    }

    /// Whether `ip` may be given to a VM.
    pub fn usable(&self, ip: Ipv6Addr) -> bool {
        let n = u128::from(ip);
        n & mask(self.prefix) == u128::from(self.network) && n > u128::from(self.gateway())
    }

    /// The requested address if free and usable, else the lowest free one.
    pub fn allocate(
        &self,
        taken: &BTreeSet<Ipv6Addr>,
        requested: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, Ipam6Error> {
        if let Some(ip) = requested {
            if !self.usable(ip) {
                return Err(Ipam6Error::OutOfRange {
                    ip,
                    subnet: self.to_string(),
                });
            }
            if taken.contains(&ip) {
                return Err(Ipam6Error::Taken(ip));
            }
            return Ok(ip);
        }
        // At most `taken.len() + 1` candidates: one of them is free.
        let first = u128::from(self.gateway()) + 1;
        let mut n = first;
        while n <= self.last() {
            if !taken.contains(&Ipv6Addr::from(n)) {
                return Ok(Ipv6Addr::from(n));
            }
            n += 1;
        }
        Err(Ipam6Error::Exhausted(self.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_prefix_is_a_stable_ula_per_subnet() {
        let a = Subnet6::derived("10.61.0.0/16".parse().unwrap());
        // Pinned: the default must not change between builds.
        assert_eq!(
            a.to_string(),
            Subnet6::derived("10.61.0.0/16".parse().unwrap()).to_string()
        );
        assert_eq!(a.prefix, 64);
        assert_eq!(
            a.network.segments()[0] & 0xff00,
            0xfd00,
            "ULA fd00::/8: {a}"
        );
        assert_eq!(a.network.segments()[3], 0, "subnet ID 0");
        assert_eq!(a.network.segments()[4..], [0, 0, 0, 0]);
        let b = Subnet6::derived("10.99.0.0/16".parse().unwrap());
        assert_ne!(a, b, "another IPv4 subnet, another prefix");
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a test vector");
        assert_eq!(
            Subnet6::parse_or_derive("auto", "10.61.0.0/16".parse().unwrap()).unwrap(),
            a
        );
    }

    #[test]
    fn allocates_lowest_free_and_checks_requests() {
        let s: Subnet6 = "fd00:1:2:3::/64".parse().unwrap();
        assert_eq!(s.gateway(), "fd00:1:2:3::1".parse::<Ipv6Addr>().unwrap());
        let mut taken = BTreeSet::new();
        let a = s.allocate(&taken, None).unwrap();
        assert_eq!(a, "fd00:1:2:3::2".parse::<Ipv6Addr>().unwrap());
        taken.insert(a);
        let b = s.allocate(&taken, None).unwrap();
        assert_eq!(b, "fd00:1:2:3::3".parse::<Ipv6Addr>().unwrap());
        taken.insert(b);
        taken.remove(&a);
        assert_eq!(s.allocate(&taken, None).unwrap(), a, "freed address reused");
        let want: Ipv6Addr = "fd00:1:2:3::beef".parse().unwrap();
        assert_eq!(s.allocate(&taken, Some(want)).unwrap(), want);
        assert!(matches!(
            s.allocate(&taken, Some(b)),
            Err(Ipam6Error::Taken(_))
        ));
        for bad in ["fd00:1:2:3::1", "fd00:1:2:3::", "fd00:1:2:4::5", "::1"] {
            assert!(
                matches!(
                    s.allocate(&taken, Some(bad.parse().unwrap())),
                    Err(Ipam6Error::OutOfRange { .. })
                ),
                "{bad}"
            );
        }
        // A /120: ::0 network, ::1 gateway, ::2 to ::ff for VMs.
        let small: Subnet6 = "fd00::/120".parse().unwrap();
        let full: BTreeSet<Ipv6Addr> = (2..=255u128)
            .map(|n| Ipv6Addr::from(u128::from(small.network) + n))
            .collect();
        assert!(matches!(
            small.allocate(&full, None),
            Err(Ipam6Error::Exhausted(_))
        ));
        for bad in [
            "fd00::/40",
            "fd00::/121",
            "10.0.0.0/8",
            "nonsense",
            "fd00::",
        ] {
            assert!(bad.parse::<Subnet6>().is_err(), "{bad}");
        }
        assert_eq!(
            "fd00:1:2:3:4::9/64".parse::<Subnet6>().unwrap().to_string(),
            "fd00:1:2:3::/64"
        );
    }
}
