//! Netlink messages to the lines `ip` prints.

use super::*;

/// The snapshot of interface `index` from what the kernel answered.
pub(super) fn snapshot_of(
    index: u32,
    addresses: &[AddressMessage],
    routes: &[RouteMessage],
) -> Snapshot {
    let mut addrs: Vec<(IpAddr, u8)> = addresses
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(address_of)
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut routes: Vec<(bool, String)> = routes
        .iter()
        .filter_map(|m| Route::of(m, index))
        .map(|r| (r.v6, r.to_string()))
        .collect();
    routes.sort();
    routes.dedup();
    Snapshot {
        addresses: addrs
            .iter()
            .map(|(ip, len)| format!("{ip}/{len}"))
            .collect(),
        routes: routes.into_iter().map(|(_, r)| r).collect(),
    }
}

/// The address and prefix length of an address message: the local
/// address (for IPv4 point-to-point links the other one is the peer's).
pub(super) fn address_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    let find = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true)
        .or_else(|| find(false))
        .map(|ip| (ip, m.header.prefix_len))
}

/// One route as `ip route show dev <interface>` prints it, from the
/// fields that say where traffic goes. Left out: the interface (implied),
/// expiry times and cache info (they tick), IPv6 preference and metrics
/// such as hoplimit, and the `linkdown` and `dead` flags (carrier state,
/// which [`problem`] reports).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Route {
    pub(super) v6: bool,
    /// `RTN_*`; only other than unicast is it printed.
    pub(super) kind: u8,
    pub(super) destination: Option<IpAddr>,
    pub(super) destination_len: u8,
    pub(super) source: Option<IpAddr>,
    pub(super) source_len: u8,
    pub(super) tos: u8,
    pub(super) gateway: Option<IpAddr>,
    /// `RTPROT_*`; `boot` (what `ip route add` makes) is not printed.
    pub(super) protocol: u8,
    /// `RT_SCOPE_*`; `global` is not printed.
    pub(super) scope: u8,
    pub(super) preferred_source: Option<IpAddr>,
    pub(super) metric: Option<u32>,
    pub(super) onlink: bool,
    /// For a multipath route, its next hops on the interface.
    pub(super) nexthops: Vec<NextHop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct NextHop {
    pub(super) gateway: Option<IpAddr>,
    /// `rtnh_hops` + 1, as `ip` prints it.
    pub(super) weight: u16,
    pub(super) onlink: bool,
}

pub(super) const RTN_UNICAST: u8 = 1;
pub(super) const RTPROT_BOOT: u8 = 3;
pub(super) const RT_SCOPE_UNIVERSE: u8 = 0;

impl Route {
    /// The route if it is in the main table and leaves by interface
    /// `index`: directly, or by one of its next hops.
    fn of(m: &RouteMessage, index: u32) -> Option<Route> {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN)
            || m.header.flags.contains(RouteFlags::Cloned)
        {
            return None;
        }
        let oif = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let nexthops: Vec<NextHop> = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::MultiPath(hops) => Some(hops),
                _ => None,
            })
            .into_iter()
            .flatten()
            .filter(|h| h.interface_index == index)
            .map(NextHop::of)
            .collect();
        if oif != Some(index) && nexthops.is_empty() {
            return None;
        }
        let mut r = Route {
            v6: m.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6,
            kind: m.header.kind.into(),
            destination_len: m.header.destination_prefix_length,
            source_len: m.header.source_prefix_length,
            tos: m.header.tos,
            protocol: m.header.protocol.into(),
            scope: m.header.scope.into(),
            onlink: m.header.flags.contains(RouteFlags::Onlink),
            nexthops,
            ..Route::default()
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => r.destination = ip_of(d),
                RouteAttribute::Source(s) => r.source = ip_of(s),
                RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
                RouteAttribute::Via(v) => r.gateway = via_of(v),
                RouteAttribute::PrefSource(s) => r.preferred_source = ip_of(s),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                _ => {}
            }
        }
        Some(r)
    }
}

impl NextHop {
    fn of(h: &RouteNextHop) -> NextHop {
        let gateway = h.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => ip_of(g),
            RouteAttribute::Via(v) => via_of(v),
            _ => None,
        });
        NextHop {
            gateway,
            weight: u16::from(h.hops) + 1,
            onlink: h.flags.contains(RouteNextHopFlags::Onlink),
        }
    }
}

pub(super) fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

pub(super) fn via_of(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// `addr/len`, or `addr` alone for a host prefix, as `ip` writes a
/// destination; `0/len` when the kernel gave a length but no address.
pub(super) fn prefix(ip: Option<IpAddr>, len: u8) -> String {
    match ip {
        Some(ip) if (ip.is_ipv4() && len == 32) || (ip.is_ipv6() && len == 128) => ip.to_string(),
        Some(ip) => format!("{ip}/{len}"),
        None => format!("0/{len}"),
    }
}

impl std::fmt::Display for Route {
    /// In the order `ip route` prints the same fields.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if self.kind != RTN_UNICAST {
            words.push(route_type(self.kind));
        }
        words.push(match (self.destination, self.destination_len) {
            (None, 0) => "default".into(),
            (d, len) => prefix(d, len),
        });
        if self.source.is_some() || self.source_len != 0 {
            words.push(format!("from {}", prefix(self.source, self.source_len)));
        }
        if self.tos != 0 {
            words.push(format!("tos 0x{:02x}", self.tos));
        }
        if let Some(g) = self.gateway {
            words.push(format!("via {g}"));
        }
        if self.protocol != RTPROT_BOOT {
            words.push(format!("proto {}", protocol(self.protocol)));
        }
        if self.scope != RT_SCOPE_UNIVERSE {
            words.push(format!("scope {}", scope(self.scope)));
        }
        if let Some(s) = self.preferred_source {
            words.push(format!("src {s}"));
        }
        if let Some(m) = self.metric {
            words.push(format!("metric {m}"));
        }
        if self.onlink {
            words.push("onlink".into());
        }
        for h in &self.nexthops {
            words.push("nexthop".into());
            if let Some(g) = h.gateway {
                words.push(format!("via {g}"));
            }
            words.push(format!("weight {}", h.weight));
            if h.onlink {
                words.push("onlink".into());
            }
        }
        f.write_str(&words.join(" "))
    }
}

/// `ip`'s names for route types (`RTN_*`).
pub(super) fn route_type(t: u8) -> String {
    let name = match t {
        0 => "none",
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        11 => "xresolve",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `ip`'s names for route protocols (`RTPROT_*`, `/etc/iproute2/rt_protos`).
pub(super) fn protocol(p: u8) -> String {
    let name = match p {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        8 => "gated",
        9 => "ra",
        10 => "mrt",
        11 => "zebra",
        12 => "bird",
        13 => "dnrouted",
        14 => "xorp",
        15 => "ntk",
        16 => "dhcp",
        17 => "mrouted",
        18 => "keepalived",
        42 => "babel",
        99 => "openr",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        192 => "eigrp",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `ip`'s names for route scopes (`RT_SCOPE_*`).
pub(super) fn scope(s: u8) -> String {
    let name = match s {
        0 => "global",
        200 => "site",
        253 => "link",
        254 => "host",
        255 => "nowhere",
        other => return other.to_string(),
    };
    name.to_string()
}
