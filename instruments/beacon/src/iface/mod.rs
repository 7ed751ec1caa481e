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

mod route;
use route::snapshot_of;

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

#[cfg(test)]
mod tests;
