use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("'{0}' is not an IPv4 subnet (want e.g. 10.61.0.0/16)")]
    BadSubnet(String),
    #[error("subnet {0} has no free address left; remove VMs or configure a larger subnet")]
    Exhausted(String),
    #[error(
        "{ip} is not a usable address in {subnet} (network, gateway and broadcast are reserved)"
    )]
    OutOfRange { ip: Ipv4Addr, subnet: String },
    #[error("{0} is already leased to another VM")]
    Taken(Ipv4Addr),
}

/// An IPv4 subnet; `.1` is the gateway (the bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadSubnet(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.network) | !self.mask()
    }

    /// Whether `ip` may be given to a VM.
    pub fn usable(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n & self.mask() == u32::from(self.network)
            && n > u32::from(self.gateway())
            && n < self.broadcast()
    }

    /// The requested address if free and usable, else the lowest free one.
    pub fn allocate(
        &self,
        taken: &BTreeSet<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = requested {
            if !self.usable(ip) {
                return Err(IpamError::OutOfRange {
                    ip,
                    subnet: self.to_string(),
                });
            }
            if taken.contains(&ip) {
                return Err(IpamError::Taken(ip));
            }
            return Ok(ip);
        }
        let first = u32::from(self.gateway()) + 1;
        (first..self.broadcast())
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| IpamError::Exhausted(self.to_string()))
    }
}

/// A stable, locally administered MAC derived from the VM ID.
pub fn mac_for(vm_id: &str) -> String {
    let hex: Vec<u8> = (0..5)
        .map(|i| {
            vm_id
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        })
        .collect();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        hex[0], hex[1], hex[2], hex[3], hex[4]
    )
}

/// The VM's TAP device name (at most 15 bytes, IFNAMSIZ).
pub fn tap_name(vm_id: &str) -> String {
    format!("ig-{}", &vm_id[..vm_id.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_reuses_freed() {
        let s: Subnet = "10.61.0.0/16".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 61, 0, 1));
        let mut taken = BTreeSet::new();
        let a = s.allocate(&taken, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 61, 0, 2));
        taken.insert(a);
        let b = s.allocate(&taken, None).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 61, 0, 3));
        taken.insert(b);
        taken.remove(&a);
        assert_eq!(
            s.allocate(&taken, None).unwrap(),
            a,
            "freed address is reused"
        );
    }

    #[test]
    fn exhaustion_and_requested_addresses() {
        let s: Subnet = "192.168.50.0/30".parse().unwrap();
        // /30: .0 network, .1 gateway, .2 the only VM address, .3 broadcast
        let mut taken = BTreeSet::new();
        let only = s.allocate(&taken, None).unwrap();
        assert_eq!(only, Ipv4Addr::new(192, 168, 50, 2));
        taken.insert(only);
        assert!(matches!(
            s.allocate(&taken, None),
            Err(IpamError::Exhausted(_))
        ));
        assert!(matches!(
            s.allocate(&taken, Some(only)),
            Err(IpamError::Taken(_))
        ));
        for bad in ["192.168.50.1", "192.168.50.3", "10.0.0.5"] {
            assert!(
                matches!(
                    s.allocate(&BTreeSet::new(), Some(bad.parse().unwrap())),
                    Err(IpamError::OutOfRange { .. })
                ),
                "{bad}"
            );
        }
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("nonsense".parse::<Subnet>().is_err());
        assert_eq!(
            "10.61.7.9/16".parse::<Subnet>().unwrap().network,
            Ipv4Addr::new(10, 61, 0, 0)
        );
    }

    #[test]
    fn macs_and_tap_names_are_stable_and_valid() {
        assert_eq!(mac_for("0123456789abcdef"), "02:01:23:45:67:89");
        assert_eq!(tap_name("0123456789abcdef"), "ig-0123456789ab");
        assert!(tap_name("0123456789abcdef").len() <= 15);
    }
}
