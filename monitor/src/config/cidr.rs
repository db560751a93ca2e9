//! IPv4 and IPv6 networks in CIDR notation, for `[[allow]] destination`.
//!
//! Matching is done on 128-bit addresses, with IPv4 as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`): a dual-stack socket reports an IPv4 peer that way, and the same
//! host must not escape an exception (or fall into one) by the family of the socket.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// A network: an address with its prefix length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or network; write it as `10.0.0.0/8` or `2001:db8::/32`")]
    Syntax(String),
    #[error("`{text}`: an {family} prefix length is 0 to {max}")]
    Prefix {
        text: String,
        family: &'static str,
        max: u8,
    },
    #[error("`{text}` has host bits set; did you mean `{network}`?")]
    HostBits { text: String, network: Cidr },
}

impl Cidr {
    /// `addr/prefix`, refusing host bits outside the prefix (a typo more often than not).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let text = || format!("{addr}/{prefix}");
        let max = family_bits(addr);
        if prefix > max {
            return Err(CidrError::Prefix {
                text: text(),
                family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                max,
            });
        }
        let network = Self {
            addr: truncate(addr, prefix),
            prefix,
        };
        if network.addr != addr {
            return Err(CidrError::HostBits {
                text: text(),
                network,
            });
        }
        Ok(network)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network, IPv4 and IPv4-mapped IPv6 being the same address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, len) = self.wide();
        let ip = wide_addr(ip);
        len == 0 || (ip ^ net) >> (128 - len) == 0
    }

    /// The network as 128 bits and a prefix over them.
    fn wide(&self) -> (u128, u32) {
        let extra = 128 - u32::from(family_bits(self.addr));
        (wide_addr(self.addr), u32::from(self.prefix) + extra)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d/n`, `x:y::/n`, or a bare address (the network of that host alone).
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let prefix = match prefix {
            // Digits only: `u32::from_str` would take a `+`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
            None => u32::from(family_bits(addr)),
        };
        let prefix = u8::try_from(prefix).unwrap_or(u8::MAX);
        Self::new(addr, prefix).map_err(|e| match e {
            // Report the operator's own spelling.
            CidrError::Prefix { family, max, .. } => CidrError::Prefix {
                text: text.to_owned(),
                family,
                max,
            },
            CidrError::HostBits { network, .. } => CidrError::HostBits {
                text: text.to_owned(),
                network,
            },
            e @ CidrError::Syntax(_) => e,
        })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, CidrError> {
        text.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn family_bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn wide_addr(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `addr` with the bits past `prefix` cleared.
fn truncate(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}
