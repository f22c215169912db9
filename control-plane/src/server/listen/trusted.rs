//! The load balancers allowed to name the client of a connection (`--trusted-proxy`): single
//! addresses or networks in CIDR notation. A connection from one of them must begin with a
//! PROXY protocol v2 header ([`super::proxy_header`]); from any other address no header is read.

use std::net::IpAddr;
use std::str::FromStr;

/// One `--trusted-proxy` value: an address, or a network `address/prefix` with no host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxy` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an IP address or a network in CIDR notation: {reason}")]
pub struct TrustedNetError {
    value: String,
    reason: String,
}

impl FromStr for TrustedNet {
    type Err = TrustedNetError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| TrustedNetError {
            value: value.to_owned(),
            reason,
        };
        let (address, prefix) = match value.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            refuse(format!(
                "{address:?} is not an IP address (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/64)"
            ))
        })?;
        let bits = bits_of(network);
        let prefix = match prefix {
            None => bits,
            Some(text) => text
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| refuse(format!("the prefix must be a number from 0 to {bits}")))?,
        };
        let net = Self { network, prefix };
        if masked(network, prefix) != network {
            return Err(refuse(format!(
                "it has bits set past the /{prefix} prefix; did you mean {}/{prefix}?",
                masked(network, prefix)
            )));
        }
        Ok(net)
    }
}

impl std::fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl TrustedNet {
    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix) == self.network
    }
}

/// Every `--trusted-proxy`; empty (the default) trusts no one and reads no header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<TrustedNet>);

impl TrustedProxies {
    /// The given networks.
    pub fn new(nets: Vec<TrustedNet>) -> Self {
        Self(nets)
    }

    /// Whether a connection from `ip` must carry a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// Whether no balancer is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(", "))
    }
}

fn bits_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` with every bit past `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{TrustedNet, TrustedProxies};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> TrustedNet {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks() {
        assert!(net("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!net("127.0.0.2").contains(ip("127.0.0.3")));
        assert!(net("10.1.0.0/16").contains(ip("10.1.255.7")));
        assert!(!net("10.1.0.0/16").contains(ip("10.2.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("::1").contains(ip("::1")));
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
        assert!(net("192.0.2.0/24").contains(ip("::ffff:192.0.2.10")));
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(net("10.0.0.5").to_string(), "10.0.0.5/32");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (value, expected) in [
            ("haproxy.example.org", "is not an IP address"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.0/", "from 0 to 32"),
            ("10.0.0.0/-1", "from 0 to 32"),
            ("10.0.0.5/24", "did you mean 10.0.0.0/24?"),
            ("", "is not an IP address"),
        ] {
            let error = value.parse::<TrustedNet>().unwrap_err().to_string();
            assert!(error.contains(expected), "{value}: {error}");
            assert!(error.contains(&format!("{value:?}")), "{value}: {error}");
        }
    }

    #[test]
    fn only_listed_balancers_are_trusted() {
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert!(!none.trusts(ip("127.0.0.1")));
        let some = TrustedProxies::new(vec![net("127.0.0.2"), net("10.9.0.0/24")]);
        assert!(some.trusts(ip("127.0.0.2")));
        assert!(some.trusts(ip("10.9.0.200")));
        assert!(!some.trusts(ip("127.0.0.1")));
        assert_eq!(some.to_string(), "127.0.0.2/32, 10.9.0.0/24");
    }
}
