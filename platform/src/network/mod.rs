//! Interface bindings: the host side of DESIGN.md's network section.
//!
//! Each role an instrument's image declares is bound to something real on
//! the sensor (see `outpost_protocol::bindings`). A binding goes through
//! three steps, all with rtnetlink (no `ip`, no `tc`):
//!
//! 1. [`preflight`], before the container exists: the host interfaces it
//!    names are there, free, and of the right kind. What must be restored
//!    later (a phy's name, MTU, flags and addresses) is captured here, and
//!    every host-side name the binding will use is fixed (derived from the
//!    instrument and role), so an undo record can be stored before
//!    anything changes.
//! 2. [`apply`], once the container's init runs (it waits for us before
//!    it starts the entrypoint): interfaces made, moved in, renamed to the
//!    role, addressed and routed; for a mirror, tc filters copy the source's
//!    traffic in and cls_bpf programs drop whatever the instrument sends.
//! 3. [`undo`], before the container stops, after it died, or at start-up
//!    for records a crash left: idempotent, driven by the stored record, so
//!    it works whatever step the apply reached.
//!
//! What differs between the kinds is a [`Kind`], one implementation per
//! kind (`phy`, `bridge`, `macvlan`, `mirror`); what they share (the undo
//! record, moving the interface in, naming, addressing and routing it
//! inside) is here.

mod bridge;
pub mod check;
#[cfg(test)]
pub mod fake;
mod macvlan;
mod mirror;
pub mod nl;
mod phy;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use futures::future::BoxFuture;
use outpost_protocol::bindings::{Binding, parse_cidr};
use outpost_protocol::manifest::InterfaceType;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::runtime::ffi;
pub use nl::NetError;
use nl::{Hook, NlResult};

/// The alias outpostd gives a bridge it made, so that whoever removes the
/// last port knows it may remove the bridge too.
pub const MADE_BY_OUTPOST: &str = "made by outpostd";

/// A phy interface's host state before it was moved in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhySnapshot {
    pub name: String,
    pub index: u32,
    pub mtu: Option<u32>,
    pub up: bool,
    pub promisc: bool,
    /// Addresses, `addr/prefix`, with the IPv4 broadcast address if any.
    pub addresses: Vec<(String, Option<std::net::Ipv4Addr>)>,
}

/// The undo record of one binding, stored before the first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub instrument: String,
    pub role: String,
    pub binding: Binding,
    /// veth end left on the host (bridge, mirror).
    pub host_end: String,
    /// The instrument's end while it is still on the host.
    pub peer: String,
    /// tc priority of the mirror's filters on the source.
    pub prio: u16,
    #[serde(default)]
    pub phy: Option<PhySnapshot>,
    /// bridge: whether `enslave` was down before (restored on undo).
    #[serde(default)]
    pub enslave_was_down: bool,
    /// mirror: whether the source had a clsact qdisc before outpostd
    /// mirrored it.
    #[serde(default)]
    pub source_had_clsact: bool,
}

impl Record {
    /// The record of binding `role` of `instrument` as `binding`, with its
    /// fixed host-side names and nothing yet captured from the host.
    pub fn new(instrument: &str, role: &str, binding: &Binding) -> Record {
        let (host_end, peer, prio) = names(instrument, role);
        Record {
            instrument: instrument.to_string(),
            role: role.to_string(),
            binding: binding.clone(),
            host_end,
            peer,
            prio,
            phy: None,
            enslave_was_down: false,
            source_had_clsact: false,
        }
    }
}

/// The host-side names and tc priority of a binding, fixed by instrument
/// and role: `op…` for the host end, `oi…` for the instrument's end.
pub fn names(instrument: &str, role: &str) -> (String, String, u16) {
    let d = Sha256::digest(format!("{instrument}/{role}").as_bytes());
    let hex = hex::encode(&d[..5]);
    let prio = 0xc000 | (u16::from_be_bytes([d[5], d[6]]) & 0x1fff);
    (format!("op{hex}"), format!("oi{hex}"), prio.max(1))
}

/// An interface's state and counters, as the status shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub role: String,
    pub kind: String,
    pub state: String,
    pub up: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One binding kind's three steps.
trait Kind: Sync {
    /// Checks the host for this binding and fills in what its undo will
    /// need.
    fn preflight<'a>(
        &'a self,
        cx: &'a PreflightCx<'a>,
        rec: &'a mut Record,
    ) -> BoxFuture<'a, NlResult<()>>;
    /// Makes the interface on the host side; returns the name of the host
    /// interface that goes into the instrument.
    fn apply<'a>(&'a self, cx: &'a ApplyCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<String>>;
    /// Whether `apply` moved the interface into the namespace itself.
    fn moves_itself(&self) -> bool {
        false
    }
    /// Undoes the binding, whatever step its apply reached.
    fn undo<'a>(&'a self, cx: &'a UndoCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<()>>;
}

/// The implementation of a binding kind.
fn kind(k: InterfaceType) -> &'static dyn Kind {
    match k {
        InterfaceType::Phy => &phy::Phy,
        InterfaceType::Bridge => &bridge::Bridge,
        InterfaceType::Macvlan => &macvlan::Macvlan,
        InterfaceType::Mirror => &mirror::Mirror,
    }
}

/// What a preflight has at hand.
struct PreflightCx<'a> {
    h: &'a Handle,
    at: &'a str,
    instrument: &'a str,
    /// Other instruments' records.
    others: &'a [Record],
}

impl PreflightCx<'_> {
    /// The host interface `dev` (named in `field`), which must exist and
    /// be no other instrument's.
    async fn need(&self, dev: &str, field: &str) -> NlResult<LinkMessage> {
        let at = self.at;
        if let Some(o) = self.others.iter().find_map(|r| {
            (r.binding.owns() == Some(dev) && r.instrument != self.instrument)
                .then(|| r.instrument.clone())
        }) {
            return Err(NetError::Refused(format!(
                "{at}: host interface {dev} ({field}) is already bound to instrument {o} (fix: give each instrument its own interface)"
            )));
        }
        nl::link(self.h, dev).await?.ok_or_else(|| {
            NetError::Refused(format!(
                "{at}: host interface {dev} ({field}) does not exist (fix: create it, or name an existing interface in the sensor file)"
            ))
        })
    }
}

/// What an apply has at hand.
struct ApplyCx<'a> {
    h: &'a Handle,
    at: &'a str,
    /// The instrument's network namespace.
    ns: &'a File,
    /// The drop-everything program, loaded when a mirror is bound.
    drop_prog: Option<&'a OwnedFd>,
}

/// What an undo has at hand.
struct UndoCx<'a> {
    h: &'a Handle,
    at: &'a str,
    /// The instrument's namespace, while it still exists.
    inside: Option<&'a Handle>,
}

/// Checks the bindings of `instrument` against the host and against the
/// records of other instruments; returns the undo records to store.
pub async fn preflight(
    instrument: &str,
    bindings: &BTreeMap<String, Binding>,
    others: &[Record],
) -> NlResult<Vec<Record>> {
    let h = nl::host()?;
    let mut out = Vec::new();
    for (role, b) in bindings {
        let at = format!("instrument {instrument}, role {role}");
        let mut rec = Record::new(instrument, role, b);
        let cx = PreflightCx {
            h: &h,
            at: &at,
            instrument,
            others,
        };
        kind(b.kind).preflight(&cx, &mut rec).await?;
        out.push(rec);
    }
    Ok(out)
}

/// Puts the bindings in place for the instrument whose init is `pid`.
/// On error, whatever was done stays recorded for [`undo`].
pub async fn apply(pid: i32, records: &[Record]) -> NlResult<()> {
    let h = nl::host()?;
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| NetError::ctx(format!("cannot open the network namespace of pid {pid}"), e))?;
    let inside = nl::in_namespace_of(pid)?;
    let drop_prog = if records
        .iter()
        .any(|r| r.binding.kind == InterfaceType::Mirror)
    {
        Some(
            ffi::load_drop_all_program()
                .map_err(|e| NetError::ctx("cannot load the receive-only tc program (bpf)", e))?,
        )
    } else {
        None
    };
    for r in records {
        let at = format!("instrument {}, role {}", r.instrument, r.role);
        let t0 = std::time::Instant::now();
        // Names that are ours by construction; a crash may have left them.
        nl::delete_named(&h, &r.host_end).await?;
        nl::delete_named(&h, &r.peer).await?;
        let k = kind(r.binding.kind);
        let cx = ApplyCx {
            h: &h,
            at: &at,
            ns: &ns,
            drop_prog: drop_prog.as_ref(),
        };
        let moved_name = k.apply(&cx, r).await?;
        if !k.moves_itself() {
            let idx = host_index(&h, &moved_name, &at).await?;
            nl::move_to(
                &h,
                idx,
                &ns,
                &format!("{at}: cannot move {moved_name} into the instrument"),
            )
            .await?;
        }
        configure_inside(
            &inside,
            r,
            &moved_name,
            drop_prog.as_ref().map(|f| f.as_raw_fd()),
            &at,
        )
        .await?;
        info!(
            instrument = %r.instrument,
            role = %r.role,
            kind = r.binding.kind.as_str(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "interface bound"
        );
    }
    Ok(())
}

async fn veth(h: &Handle, r: &Record, at: &str) -> NlResult<()> {
    nl::add(
        h,
        LinkVeth::new(&r.host_end, &r.peer).build(),
        &format!("{at}: cannot make veth pair {}/{}", r.host_end, r.peer),
    )
    .await
}

async fn host_index(h: &Handle, name: &str, at: &str) -> NlResult<u32> {
    Ok(nl::link(h, name)
        .await?
        .ok_or_else(|| NetError::Refused(format!("{at}: interface {name} vanished")))?
        .header
        .index)
}

/// Inside the instrument: the role's name, MTU, flags, addresses, routes,
/// and for a mirror the egress drop.
async fn configure_inside(
    h: &Handle,
    r: &Record,
    current: &str,
    drop_fd: Option<i32>,
    at: &str,
) -> NlResult<()> {
    let l = nl::link(h, current).await?.ok_or_else(|| {
        NetError::Refused(format!("{at}: {current} did not arrive in the instrument"))
    })?;
    let idx = l.header.index;
    let b = &r.binding;
    let mut m = LinkUnspec::new_with_index(idx).name(r.role.clone());
    if let Some(mtu) = b.mtu {
        m = m.mtu(mtu);
    }
    m = m.promiscuous(b.promiscuous);
    nl::set(
        h,
        m.build(),
        &format!("{at}: cannot rename {current} to {} inside", r.role),
    )
    .await?;
    if b.kind == InterfaceType::Mirror {
        let fd = drop_fd.expect("loaded for mirrors");
        nl::add_clsact(h, idx, &r.role).await?;
        nl::add_drop_filter(h, idx, Hook::Egress, 1, fd, &r.role).await?;
    }
    nl::set(
        h,
        LinkUnspec::new_with_index(idx).up().build(),
        &format!("{at}: cannot bring {} up inside", r.role),
    )
    .await?;
    for a in &b.addresses {
        let c = parse_cidr(a).map_err(|e| NetError::ctx(at, e))?;
        let brd = nl::default_broadcast(c.addr, c.prefix);
        nl::add_address(
            h,
            idx,
            (c.addr, c.prefix, brd),
            &format!("{} ({at})", r.role),
        )
        .await?;
    }
    for rt in &b.routes {
        let to = parse_cidr(&rt.to).map_err(|e| NetError::ctx(at, e))?;
        let via: Option<IpAddr> = match &rt.via {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| NetError::Refused(format!("{at}: bad gateway {v:?}")))?,
            ),
            None => None,
        };
        nl::add_route(
            h,
            idx,
            to.addr,
            to.prefix,
            via,
            &format!("{} ({at})", r.role),
        )
        .await?;
    }
    Ok(())
}

/// Undoes a binding, whatever step its apply reached. `pid` is the
/// instrument's init while its namespace still exists.
pub async fn undo(pid: Option<i32>, r: &Record) -> NlResult<()> {
    let h = nl::host()?;
    let at = format!("instrument {}, role {}", r.instrument, r.role);
    let inside = match pid {
        Some(p) if std::path::Path::new(&format!("/proc/{p}/ns/net")).exists() => {
            nl::in_namespace_of(p).ok()
        }
        _ => None,
    };
    let cx = UndoCx {
        h: &h,
        at: &at,
        inside: inside.as_ref(),
    };
    kind(r.binding.kind).undo(&cx, r).await
}

/// The host side of interface bindings as the daemon uses it: the seam
/// that lets the daemon's binding decisions be tested with a fake.
pub trait Binder: Send + Sync + 'static {
    /// See [`preflight`].
    fn preflight<'a>(
        &'a self,
        instrument: &'a str,
        bindings: &'a BTreeMap<String, Binding>,
        others: &'a [Record],
    ) -> BoxFuture<'a, NlResult<Vec<Record>>>;
    /// See [`apply`].
    fn apply<'a>(&'a self, pid: i32, records: &'a [Record]) -> BoxFuture<'a, NlResult<()>>;
    /// See [`undo`].
    fn undo<'a>(&'a self, pid: Option<i32>, r: &'a Record) -> BoxFuture<'a, NlResult<()>>;
}

/// The real [`Binder`]: rtnetlink on this host.
pub struct Netlink;

impl Binder for Netlink {
    fn preflight<'a>(
        &'a self,
        instrument: &'a str,
        bindings: &'a BTreeMap<String, Binding>,
        others: &'a [Record],
    ) -> BoxFuture<'a, NlResult<Vec<Record>>> {
        Box::pin(preflight(instrument, bindings, others))
    }
    fn apply<'a>(&'a self, pid: i32, records: &'a [Record]) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(apply(pid, records))
    }
    fn undo<'a>(&'a self, pid: Option<i32>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(undo(pid, r))
    }
}

/// The state and counters of an instrument's interfaces, read inside its
/// namespace.
pub async fn statuses(
    pid: i32,
    bindings: &BTreeMap<String, Binding>,
) -> NlResult<Vec<InterfaceStatus>> {
    let n = nl::in_namespace_of(pid)?;
    let mut out = Vec::new();
    for (role, b) in bindings {
        let l = nl::link(&n, role).await?;
        let c = l.as_ref().map(nl::counters).unwrap_or_default();
        let s = InterfaceStatus {
            role: role.clone(),
            kind: b.kind.as_str().into(),
            state: l
                .as_ref()
                .map(nl::oper_state)
                .unwrap_or_else(|| "missing".into()),
            up: l.as_ref().is_some_and(nl::is_up),
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_dropped: c.rx_dropped,
            tx_dropped: c.tx_dropped,
        };
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let (a, b, p) = names("beacon", "seg0");
        assert_eq!((a.clone(), b.clone(), p), names("beacon", "seg0"));
        assert!(a.starts_with("op") && b.starts_with("oi"));
        assert!(a.len() <= outpost_protocol::bindings::IFNAMSIZ_MAX);
        assert_eq!(a[2..], b[2..]);
        assert_ne!(names("beacon", "seg0").0, names("beacon", "seg1").0);
        assert_ne!(names("beacon", "seg0").0, names("beacon2", "seg0").0);
        assert!(p >= 0xc000);
    }
}
