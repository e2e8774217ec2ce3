//! Core layer (bottom): an IP network written as CIDR (`10.8.0.0/16`, `fd00::/8`, or a bare
//! address for one host), for the networks exempt from the per-address connection cap.
//!
//! Invariants: the stored address has no host bits set (they are masked when parsed, so
//! `10.8.3.1/16` is `10.8.0.0/16`); an IPv4 network matches an IPv4-mapped IPv6 peer
//! (`::ffff:10.8.3.1`, as a dual-stack listener reports it) the same as the plain address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("'{s}' is not an IP address or network (like 10.8.0.0/16 or fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                let n: u8 = p.parse().map_err(|_| bad())?;
                if n > max {
                    return Err(format!("'{s}': the prefix length must be at most {max}"));
                }
                n
            }
            Some(_) => return Err(bad()),
        };
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match_their_addresses_only() {
        let v4 = net("10.8.0.0/16");
        assert!(v4.contains(ip("10.8.0.0")));
        assert!(v4.contains(ip("10.8.255.255")));
        assert!(!v4.contains(ip("10.9.0.1")));
        assert!(!v4.contains(ip("::1")));
        // A dual-stack listener reports IPv4 peers mapped into IPv6.
        assert!(v4.contains(ip("::ffff:10.8.3.1")));
        let host = net("192.168.50.1");
        assert_eq!(host.to_string(), "192.168.50.1/32");
        assert!(host.contains(ip("192.168.50.1")));
        assert!(!host.contains(ip("192.168.50.2")));
        let v6 = net("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(net("::1").contains(ip("::1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        // Host bits are masked.
        assert_eq!(net("10.8.3.1/16"), net("10.8.0.0/16"));
    }

    #[test]
    fn bad_networks_are_refused_with_the_text() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "10.0.0.0/8/8",
            "host.example",
            "10.0.0.0/0008",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
