//! The beacon's interface as the kernel has it: whether it can carry the
//! probe's attempts at all ([`problem`], from sysfs), and its addresses
//! and routes ([`read`], over netlink), so that a route the segment was
//! never meant to have (an IPv6 default route from a stray router
//! advertisement, say) shows up next to the alert it explains.
//!
//! A [`Snapshot`] holds addresses and routes as `ip` prints them, sorted;
//! [`Snapshot::diff`] names what came and went, and [`Tracker`] turns
//! successive snapshots into at most one [`Change`] per gap. Both are
//! pure; only [`read`] and [`problem`] touch the kernel.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteVia,
};
use serde::{Deserialize, Serialize};

/// How long [`read`] may take before it gives up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `iface` cannot carry the probe's attempts, if it cannot: missing,
/// administratively down, or without carrier. Read from the container's
/// own sysfs.
pub fn problem(iface: &str) -> Option<String> {
    let dir = Path::new("/sys/class/net").join(iface);
    let flags = match std::fs::read_to_string(dir.join("flags")) {
        Ok(f) => f,
        Err(_) => return Some(format!("interface {iface} does not exist in the container")),
    };
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    if flags & 1 == 0 {
        return Some(format!("interface {iface} is down"));
    }
    let oper = std::fs::read_to_string(dir.join("operstate")).unwrap_or_default();
    match oper.trim() {
        "down" | "lowerlayerdown" | "notpresent" => Some(format!(
            "interface {iface} has no link (operstate {})",
            oper.trim()
        )),
        _ => None,
    }
}

/// Why [`read`] could not read an interface.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error("cannot open netlink to read interface {interface}: {source}")]
    Open {
        interface: String,
        source: std::io::Error,
    },
    #[error("interface {interface} does not exist")]
    Missing { interface: String },
    #[error("cannot read the {what} of interface {interface}: {source}")]
    Dump {
        interface: String,
        what: &'static str,
        source: rtnetlink::Error,
    },
    #[error("the netlink connection closed while reading interface {interface}")]
    Closed { interface: String },
    #[error("reading interface {interface} took longer than {timeout:?}")]
    TimedOut {
        interface: String,
        timeout: Duration,
    },
}

/// An interface's addresses and routes, each as `ip` prints it without
/// the interface's name, sorted (IPv4 first) and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `10.79.0.2/24`, `fe80::1c2f:9aff:fe01:2/64`.
    pub addresses: Vec<String>,
    /// Routes of the main table that leave by the interface:
    /// `default via 10.79.0.1`, `10.79.0.0/24 proto kernel scope link src
    /// 10.79.0.2`, `default via fe80::1 proto ra metric 1024`.
    pub routes: Vec<String>,
}

/// What changed on an interface between two snapshots. `added` and
/// `removed` name each entry with its kind: `route default via fe80::1
/// proto ra metric 1024`, `address fd00:79::2/64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub interface: String,
    pub before: Snapshot,
    pub after: Snapshot,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Snapshot {
    /// Each entry named with its kind, addresses first.
    fn entries(&self) -> Vec<String> {
        let addresses = self.addresses.iter().map(|a| format!("address {a}"));
        let routes = self.routes.iter().map(|r| format!("route {r}"));
        addresses.chain(routes).collect()
    }

    /// What changed on `interface` from this snapshot to `after`; `None`
    /// when no entry came or went.
    pub fn diff(&self, interface: &str, after: &Snapshot) -> Option<Change> {
        let (old, new) = (self.entries(), after.entries());
        let (old_set, new_set): (BTreeSet<_>, BTreeSet<_>) =
            (old.iter().collect(), new.iter().collect());
        let added: Vec<String> = new
            .iter()
            .filter(|e| !old_set.contains(e))
            .cloned()
            .collect();
        let removed: Vec<String> = old
            .iter()
            .filter(|e| !new_set.contains(e))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return None;
        }
        Some(Change {
            interface: interface.to_string(),
            before: self.clone(),
            after: after.clone(),
            added,
            removed,
        })
    }
}

/// Turns successive snapshots of one interface into changes, at most one
/// per `gap`. The first snapshot is the baseline and makes none. A change
/// inside the gap is held and folded into the next one: its `before` is
/// the snapshot last reported, its `after` the latest, so a route that
/// came and went again inside the gap makes no change at all. Pure: the
/// caller passes the time in.
#[derive(Debug, Clone)]
pub struct Tracker {
    interface: String,
    gap: Duration,
    reported: Option<Snapshot>,
    last_change: Option<Instant>,
}

impl Tracker {
    pub fn new(interface: &str, gap: Duration) -> Tracker {
        Tracker {
            interface: interface.to_string(),
            gap,
            reported: None,
            last_change: None,
        }
    }

    /// The interface this tracker follows.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Takes the latest snapshot; answers the change to report now, if
    /// there is one.
    pub fn observe(&mut self, now: Snapshot, at: Instant) -> Option<Change> {
        let Some(reported) = &self.reported else {
            self.reported = Some(now);
            return None;
        };
        if self
            .last_change
            .is_some_and(|t| at.duration_since(t) < self.gap)
        {
            return None;
        }
        let change = reported.diff(&self.interface, &now)?;
        self.reported = Some(now);
        self.last_change = Some(at);
        Some(change)
    }
}

/// Reads the addresses and routes of `iface` in the caller's network
/// namespace, on a netlink connection of its own that ends with the read.
pub async fn read(iface: &str) -> Result<Snapshot, IfaceError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| IfaceError::Open {
        interface: iface.to_string(),
        source,
    })?;
    let dump = |what: &'static str| {
        move |source| IfaceError::Dump {
            interface: iface.to_string(),
            what,
            source,
        }
    };
    let work = async {
        let link = handle
            .link()
            .get()
            .match_name(iface)
            .execute()
            .try_next()
            .await;
        let index = match link {
            Ok(Some(l)) => l.header.index,
            Ok(None) => {
                return Err(IfaceError::Missing {
                    interface: iface.to_string(),
                });
            }
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(IfaceError::Missing {
                    interface: iface.to_string(),
                });
            }
            Err(e) => return Err(dump("link")(e)),
        };
        let addresses: Vec<AddressMessage> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(dump("addresses"))?;
        let mut routes: Vec<RouteMessage> = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(dump("IPv4 routes"))?;
        let v6: Vec<RouteMessage> = handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(dump("IPv6 routes"))?;
        routes.extend(v6);
        Ok(snapshot_of(index, &addresses, &routes))
    };
    tokio::select! {
        r = tokio::time::timeout(READ_TIMEOUT, work) => r.unwrap_or(Err(IfaceError::TimedOut {
            interface: iface.to_string(),
            timeout: READ_TIMEOUT,
        })),
        () = conn => Err(IfaceError::Closed { interface: iface.to_string() }),
    }
}

/// The snapshot of interface `index` from what the kernel answered.
fn snapshot_of(index: u32, addresses: &[AddressMessage], routes: &[RouteMessage]) -> Snapshot {
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
fn address_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
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
struct Route {
    v6: bool,
    /// `RTN_*`; only other than unicast is it printed.
    kind: u8,
    destination: Option<IpAddr>,
    destination_len: u8,
    source: Option<IpAddr>,
    source_len: u8,
    tos: u8,
    gateway: Option<IpAddr>,
    /// `RTPROT_*`; `boot` (what `ip route add` makes) is not printed.
    protocol: u8,
    /// `RT_SCOPE_*`; `global` is not printed.
    scope: u8,
    preferred_source: Option<IpAddr>,
    metric: Option<u32>,
    onlink: bool,
    /// For a multipath route, its next hops on the interface.
    nexthops: Vec<NextHop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct NextHop {
    gateway: Option<IpAddr>,
    /// `rtnh_hops` + 1, as `ip` prints it.
    weight: u16,
    onlink: bool,
}

const RTN_UNICAST: u8 = 1;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;

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

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn via_of(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// `addr/len`, or `addr` alone for a host prefix, as `ip` writes a
/// destination; `0/len` when the kernel gave a length but no address.
fn prefix(ip: Option<IpAddr>, len: u8) -> String {
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
fn route_type(t: u8) -> String {
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
fn protocol(p: u8) -> String {
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
fn scope(s: u8) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::route::{RouteProtocol, RouteScope, RouteType};

    fn snap(addresses: &[&str], routes: &[&str]) -> Snapshot {
        Snapshot {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            routes: routes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an address"))
    }

    #[test]
    fn routes_print_as_ip_route_does() {
        let kernel = Route {
            kind: RTN_UNICAST,
            destination: ip("10.79.0.0"),
            destination_len: 24,
            protocol: 2,
            scope: 253,
            preferred_source: ip("10.79.0.2"),
            ..Route::default()
        };
        assert_eq!(
            kernel.to_string(),
            "10.79.0.0/24 proto kernel scope link src 10.79.0.2"
        );
        let default = Route {
            kind: RTN_UNICAST,
            gateway: ip("10.79.0.1"),
            protocol: RTPROT_BOOT,
            ..Route::default()
        };
        assert_eq!(default.to_string(), "default via 10.79.0.1");
        let ra = Route {
            v6: true,
            kind: RTN_UNICAST,
            gateway: ip("fe80::1"),
            protocol: 9,
            metric: Some(1024),
            ..Route::default()
        };
        assert_eq!(ra.to_string(), "default via fe80::1 proto ra metric 1024");
        let prefix = Route {
            v6: true,
            kind: RTN_UNICAST,
            destination: ip("fd00:79::"),
            destination_len: 64,
            protocol: 9,
            metric: Some(256),
            ..Route::default()
        };
        assert_eq!(prefix.to_string(), "fd00:79::/64 proto ra metric 256");
        let host = Route {
            kind: 6,
            destination: ip("198.51.100.7"),
            destination_len: 32,
            source: ip("10.79.0.2"),
            source_len: 32,
            protocol: 4,
            metric: Some(5),
            onlink: true,
            ..Route::default()
        };
        assert_eq!(
            host.to_string(),
            "blackhole 198.51.100.7 from 10.79.0.2 proto static metric 5 onlink"
        );
        let multipath = Route {
            kind: RTN_UNICAST,
            destination: ip("203.0.113.0"),
            destination_len: 24,
            protocol: 200,
            nexthops: vec![NextHop {
                gateway: ip("10.79.0.9"),
                weight: 2,
                onlink: false,
            }],
            ..Route::default()
        };
        assert_eq!(
            multipath.to_string(),
            "203.0.113.0/24 proto 200 nexthop via 10.79.0.9 weight 2"
        );
    }

    fn route_message(
        family: AddressFamily,
        table: u8,
        attributes: Vec<RouteAttribute>,
    ) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = table;
        m.header.protocol = RouteProtocol::Ra;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes = attributes;
        m
    }

    fn address_message(index: u32, family: AddressFamily, ip: &str, len: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family;
        m.header.index = index;
        m.header.prefix_len = len;
        let ip: IpAddr = ip.parse().expect("an address");
        m.attributes = vec![AddressAttribute::Address(ip)];
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        m
    }

    #[test]
    fn a_snapshot_keeps_the_main_table_routes_of_its_interface_sorted() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let gw6 = RouteAttribute::Gateway(RouteAddress::Inet6("fe80::1".parse().expect("v6")));
        let mut other_hop = RouteNextHop::default();
        other_hop.interface_index = 3;
        let mut our_hop = RouteNextHop::default();
        our_hop.interface_index = 2;
        our_hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(
            "10.79.0.9".parse().expect("v4"),
        ))];
        let routes = vec![
            route_message(
                AddressFamily::Inet6,
                main,
                vec![
                    gw6.clone(),
                    RouteAttribute::Oif(2),
                    RouteAttribute::Priority(1024),
                ],
            ),
            // The same route again (a dump may repeat one).
            route_message(
                AddressFamily::Inet6,
                main,
                vec![
                    gw6.clone(),
                    RouteAttribute::Oif(2),
                    RouteAttribute::Priority(1024),
                ],
            ),
            // Another interface's.
            route_message(
                AddressFamily::Inet6,
                main,
                vec![gw6.clone(), RouteAttribute::Oif(3)],
            ),
            // The local table's.
            route_message(AddressFamily::Inet6, 255, vec![gw6, RouteAttribute::Oif(2)]),
            // A table given only as an attribute (ids above 255).
            route_message(
                AddressFamily::Inet,
                252,
                vec![RouteAttribute::Table(1000), RouteAttribute::Oif(2)],
            ),
            route_message(
                AddressFamily::Inet,
                main,
                vec![
                    RouteAttribute::Destination(RouteAddress::Inet(
                        "203.0.113.0".parse().expect("v4"),
                    )),
                    RouteAttribute::MultiPath(vec![other_hop, our_hop]),
                ],
            ),
        ];
        let mut routes = routes;
        routes[5].header.destination_prefix_length = 24;
        let addresses = vec![
            address_message(2, AddressFamily::Inet6, "fd00:79::2", 64),
            address_message(2, AddressFamily::Inet, "10.79.0.2", 24),
            address_message(3, AddressFamily::Inet, "10.80.0.2", 24),
        ];
        assert_eq!(
            snapshot_of(2, &addresses, &routes),
            snap(
                &["10.79.0.2/24", "fd00:79::2/64"],
                &[
                    "203.0.113.0/24 proto ra nexthop via 10.79.0.9 weight 1",
                    "default via fe80::1 proto ra metric 1024",
                ],
            )
        );
    }

    #[test]
    fn a_diff_names_what_came_and_went() {
        let before = snap(&["10.79.0.2/24"], &["default via 10.79.0.1"]);
        assert_eq!(before.diff("seg0", &before.clone()), None);
        let after = snap(
            &["10.79.0.2/24", "fd00:79::2/64"],
            &["default via fe80::1 proto ra metric 1024"],
        );
        let c = before.diff("seg0", &after).expect("a change");
        assert_eq!(c.interface, "seg0");
        assert_eq!(c.before, before);
        assert_eq!(c.after, after);
        assert_eq!(
            c.added,
            [
                "address fd00:79::2/64",
                "route default via fe80::1 proto ra metric 1024"
            ]
        );
        assert_eq!(c.removed, ["route default via 10.79.0.1"]);
    }

    #[test]
    fn the_tracker_reports_one_change_per_gap_folding_the_rest() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let a = snap(&["10.79.0.2/24"], &[]);
        let b = snap(
            &["10.79.0.2/24"],
            &["default via fe80::1 proto ra metric 1024"],
        );
        let c = snap(
            &["10.79.0.2/24", "fd00:79::2/64"],
            &["default via fe80::1 proto ra metric 1024"],
        );
        let mut t = Tracker::new("seg0", Duration::from_secs(5));
        assert_eq!(t.interface(), "seg0");
        // The first snapshot is the baseline.
        assert_eq!(t.observe(a.clone(), s(0)), None);
        assert_eq!(t.observe(a.clone(), s(1)), None);
        let first = t.observe(b.clone(), s(2)).expect("a change");
        assert_eq!((first.before, first.after), (a.clone(), b.clone()));
        // Inside the gap: held, then folded into one.
        assert_eq!(t.observe(a.clone(), s(3)), None);
        assert_eq!(t.observe(c.clone(), s(4)), None);
        let folded = t.observe(c.clone(), s(7)).expect("the held change");
        assert_eq!(
            (folded.before, folded.after.clone()),
            (b.clone(), c.clone())
        );
        assert_eq!(folded.added, ["address fd00:79::2/64"]);
        assert!(folded.removed.is_empty());
        // A flap that ends where it began inside the gap reports nothing.
        assert_eq!(t.observe(a, s(8)), None);
        assert_eq!(t.observe(c.clone(), s(9)), None);
        assert_eq!(t.observe(c, s(13)), None);
    }

    #[tokio::test]
    async fn loopback_has_its_addresses() {
        let lo = read("lo").await.expect("read lo");
        assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{lo:?}");
        if std::path::Path::new("/proc/sys/net/ipv6/conf/lo").exists() {
            assert!(lo.addresses.iter().any(|a| a == "::1/128"), "{lo:?}");
        }
        // Loopback's routes are in the local table.
        assert!(lo.routes.iter().all(|r| !r.starts_with("127.")), "{lo:?}");
        assert!(matches!(
            read("no-such-if0").await,
            Err(IfaceError::Missing { .. })
        ));
    }

    /// A namespace of its own, made on a thread of its own so that the
    /// test process's other threads stay where they are: a veth end with
    /// an address and a default route, then an IPv6 default route as a
    /// router advertisement would leave it.
    #[test]
    fn a_route_added_in_a_namespace_shows_as_a_change() {
        let t = std::thread::spawn(|| {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("skipped: cannot make a network namespace: {e}");
                return;
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(in_namespace());
        });
        t.join().expect("the namespace thread");
    }

    async fn in_namespace() {
        use rtnetlink::{LinkUnspec, LinkVeth};
        let (conn, h, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(conn);
        h.link()
            .add(LinkVeth::new("seg0", "peer0").build())
            .execute()
            .await
            .expect("add veth");
        for name in ["seg0", "peer0"] {
            h.link()
                .set(LinkUnspec::new_with_name(name).up().build())
                .execute()
                .await
                .expect("set up");
        }
        let index = h
            .link()
            .get()
            .match_name("seg0")
            .execute()
            .try_next()
            .await
            .expect("get seg0")
            .expect("seg0")
            .header
            .index;
        h.address()
            .add(index, "10.79.0.2".parse().expect("v4"), 24)
            .execute()
            .await
            .expect("add address");
        h.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway("10.79.0.1".parse().expect("v4"))
                    .output_interface(index)
                    .build(),
            )
            .execute()
            .await
            .expect("add default route");
        let before = read("seg0").await.expect("read seg0");
        eprintln!("DEBUG {before:#?}");
        assert!(
            before.addresses.contains(&"10.79.0.2/24".to_string()),
            "{before:?}"
        );
        assert!(
            before
                .addresses
                .iter()
                .any(|a| a.starts_with("fe80::") && a.ends_with("/64")),
            "{before:?}"
        );
        for r in [
            "default via 10.79.0.1 proto static",
            "10.79.0.0/24 proto kernel scope link src 10.79.0.2",
            "fe80::/64 proto kernel metric 256",
        ] {
            assert!(before.routes.contains(&r.to_string()), "{r} in {before:?}");
        }

        let leak = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway("fe80::1".parse().expect("v6"))
            .output_interface(index)
            .protocol(RouteProtocol::Ra)
            .priority(1024)
            .build();
        h.route()
            .add(leak.clone())
            .execute()
            .await
            .expect("add the leak");
        let after = read("seg0").await.expect("read seg0");
        let c = before.diff("seg0", &after).expect("a change");
        assert_eq!(c.added, ["route default via fe80::1 proto ra metric 1024"]);
        assert!(c.removed.is_empty(), "{c:?}");

        h.route()
            .del(leak)
            .execute()
            .await
            .expect("delete the leak");
        let back = read("seg0").await.expect("read seg0");
        let c = after.diff("seg0", &back).expect("a change");
        assert_eq!(
            c.removed,
            ["route default via fe80::1 proto ra metric 1024"]
        );
        assert!(c.added.is_empty(), "{c:?}");
        assert_eq!(back, before);
    }
}
