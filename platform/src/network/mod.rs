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

pub mod check;
pub mod nl;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use outpost_protocol::bindings::{Binding, MacvlanMode, parse_cidr};
use outpost_protocol::manifest::InterfaceType;
use rtnetlink::packet_route::link::{InfoKind, MacVlanMode};
use rtnetlink::{Handle, LinkBridge, LinkMacVlan, LinkUnspec, LinkVeth};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

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

/// Checks the bindings of `instrument` against the host and against the
/// records of other instruments; returns the undo records to store.
pub async fn preflight(
    instrument: &str,
    bindings: &BTreeMap<String, Binding>,
    others: &[Record],
) -> NlResult<Vec<Record>> {
    let h = nl::host()?;
    let mut out = Vec::new();
    let claimed_by = |dev: &str| {
        others.iter().find_map(|r| {
            (r.binding.owns() == Some(dev) && r.instrument != instrument)
                .then(|| r.instrument.clone())
        })
    };
    for (role, b) in bindings {
        let at = format!("instrument {instrument}, role {role}");
        let (host_end, peer, prio) = names(instrument, role);
        let mut rec = Record {
            instrument: instrument.to_string(),
            role: role.clone(),
            binding: b.clone(),
            host_end,
            peer,
            prio,
            phy: None,
            enslave_was_down: false,
            source_had_clsact: false,
        };
        let need = |dev: &str, field: &str| {
            let h = h.clone();
            let dev = dev.to_string();
            let field = field.to_string();
            let at = at.clone();
            let owner = claimed_by(&dev);
            async move {
                if let Some(o) = owner {
                    return Err(NetError::Refused(format!(
                        "{at}: host interface {dev} ({field}) is already bound to instrument {o} (fix: give each instrument its own interface)"
                    )));
                }
                nl::link(&h, &dev).await?.ok_or_else(|| {
                    NetError::Refused(format!(
                        "{at}: host interface {dev} ({field}) does not exist (fix: create it, or name an existing interface in the sensor file)"
                    ))
                })
            }
        };
        match b.kind {
            InterfaceType::Phy => {
                let dev = b.device.as_deref().unwrap_or_default();
                let l = need(dev, "device").await?;
                if dev == "lo" {
                    return Err(NetError::Refused(format!(
                        "{at}: the loopback interface cannot be moved into an instrument"
                    )));
                }
                if let Some(c) = nl::controller_of(&l) {
                    let master = nl::link_by_index(&h, c)
                        .await?
                        .map(|m| nl::name_of(&m))
                        .unwrap_or_else(|| format!("#{c}"));
                    return Err(NetError::Refused(format!(
                        "{at}: host interface {dev} is a port of {master} (fix: take it off {master} first, or bind the bridge instead)"
                    )));
                }
                let addrs = nl::addresses(&h, l.header.index).await?;
                rec.phy = Some(PhySnapshot {
                    name: dev.to_string(),
                    index: l.header.index,
                    mtu: nl::mtu_of(&l),
                    up: nl::is_up(&l),
                    promisc: nl::is_promisc(&l),
                    addresses: addrs
                        .iter()
                        .map(|(a, p, b)| (format!("{a}/{p}"), *b))
                        .collect(),
                });
            }
            InterfaceType::Bridge => {
                let br = b.bridge.as_deref().unwrap_or_default();
                match nl::link(&h, br).await? {
                    Some(l) if nl::kind_of(&l) != Some(InfoKind::Bridge) => {
                        return Err(NetError::Refused(format!(
                            "{at}: host interface {br} exists and is not a bridge (fix: name a bridge, or a free name with create = true)"
                        )));
                    }
                    Some(_) => {}
                    None if !b.create => {
                        return Err(NetError::Refused(format!(
                            "{at}: bridge {br} does not exist (fix: create it, or set create = true in the binding)"
                        )));
                    }
                    None => {}
                }
                if let Some(dev) = b.enslave.as_deref() {
                    let l = need(dev, "enslave").await?;
                    if let Some(c) = nl::controller_of(&l) {
                        let master = nl::link_by_index(&h, c).await?.map(|m| nl::name_of(&m));
                        if master.as_deref() != Some(br) {
                            return Err(NetError::Refused(format!(
                                "{at}: host interface {dev} is already a port of {} (fix: take it off first)",
                                master.unwrap_or_else(|| format!("#{c}"))
                            )));
                        }
                    }
                    rec.enslave_was_down = !nl::is_up(&l);
                }
            }
            InterfaceType::Macvlan => {
                need(b.parent.as_deref().unwrap_or_default(), "parent").await?;
            }
            InterfaceType::Mirror => {
                let src = b.source.as_deref().unwrap_or_default();
                let l = need(src, "source").await?;
                let ours_before = others
                    .iter()
                    .find(|r| {
                        r.binding.kind == InterfaceType::Mirror
                            && r.binding.source.as_deref() == Some(src)
                    })
                    .map(|r| r.source_had_clsact);
                rec.source_had_clsact = match ours_before {
                    Some(had) => had,
                    None => {
                        nl::filter_count(&h, l.header.index, Hook::Ingress).await? > 0
                            || nl::filter_count(&h, l.header.index, Hook::Egress).await? > 0
                            || nl::has_clsact(&h, l.header.index).await?
                    }
                };
            }
        }
        out.push(rec);
    }
    Ok(out)
}

/// Puts the bindings in place for the instrument whose init is `pid`.
/// On error, whatever was done stays recorded for [`undo`].
pub async fn apply(pid: i32, records: &[Record]) -> NlResult<()> {
    let h = nl::host()?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
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
        let b = &r.binding;
        let moved_name = match b.kind {
            InterfaceType::Phy => {
                let dev = b.device.as_deref().unwrap_or_default();
                let l = nl::link(&h, dev).await?.ok_or_else(|| {
                    NetError::Refused(format!("{at}: host interface {dev} is gone"))
                })?;
                nl::move_to(
                    &h,
                    l.header.index,
                    &ns,
                    &format!("{at}: cannot move {dev} into the instrument"),
                )
                .await?;
                dev.to_string()
            }
            InterfaceType::Bridge => {
                let br = b.bridge.as_deref().unwrap_or_default();
                let bidx = match nl::link(&h, br).await? {
                    Some(l) => l.header.index,
                    None => {
                        nl::add(
                            &h,
                            LinkBridge::new(br).up().build(),
                            &format!("{at}: cannot create bridge {br}"),
                        )
                        .await?;
                        let idx = host_index(&h, br, &at).await?;
                        // The kernel takes an alias only on an existing link.
                        nl::set(
                            &h,
                            LinkUnspec::new_with_index(idx)
                                .alias(MADE_BY_OUTPOST)
                                .build(),
                            &format!("{at}: cannot mark bridge {br}"),
                        )
                        .await?;
                        info!(bridge = br, "bridge created");
                        idx
                    }
                };
                if let Some(dev) = b.enslave.as_deref() {
                    let l = nl::link(&h, dev).await?.ok_or_else(|| {
                        NetError::Refused(format!("{at}: host interface {dev} is gone"))
                    })?;
                    nl::set(
                        &h,
                        LinkUnspec::new_with_index(l.header.index)
                            .controller(bidx)
                            .up()
                            .build(),
                        &format!("{at}: cannot put {dev} on bridge {br}"),
                    )
                    .await?;
                }
                veth(&h, r, &at).await?;
                let he = host_index(&h, &r.host_end, &at).await?;
                nl::set(
                    &h,
                    LinkUnspec::new_with_index(he).controller(bidx).up().build(),
                    &format!("{at}: cannot put {} on bridge {br}", r.host_end),
                )
                .await?;
                r.peer.clone()
            }
            InterfaceType::Macvlan => {
                let parent = b.parent.as_deref().unwrap_or_default();
                let p = nl::link(&h, parent).await?.ok_or_else(|| {
                    NetError::Refused(format!("{at}: host interface {parent} is gone"))
                })?;
                let mode = match b.mode.unwrap_or_default() {
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                nl::add(
                    &h,
                    LinkMacVlan::new(&r.peer, p.header.index, mode).build(),
                    &format!("{at}: cannot make a macvlan on {parent}"),
                )
                .await?;
                r.peer.clone()
            }
            InterfaceType::Mirror => {
                let src = b.source.as_deref().unwrap_or_default();
                let s = nl::link(&h, src).await?.ok_or_else(|| {
                    NetError::Refused(format!("{at}: host interface {src} is gone"))
                })?;
                veth(&h, r, &at).await?;
                let he = host_index(&h, &r.host_end, &at).await?;
                // The host end takes no part in the host's own traffic.
                let sysctl = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", r.host_end);
                if let Err(e) = std::fs::write(&sysctl, "1") {
                    debug!("{sysctl}: {e}");
                }
                let fd = drop_prog.as_ref().expect("loaded for mirrors").as_raw_fd();
                nl::add_clsact(&h, he, &r.host_end).await?;
                nl::add_drop_filter(&h, he, Hook::Ingress, 1, fd, &r.host_end).await?;
                nl::set(
                    &h,
                    LinkUnspec::new_with_index(he).up().build(),
                    &format!("{at}: cannot bring {} up", r.host_end),
                )
                .await?;
                nl::add_clsact(&h, s.header.index, src).await?;
                for hook in [Hook::Ingress, Hook::Egress] {
                    nl::add_mirror_filter(&h, s.header.index, hook, r.prio, he, src).await?;
                }
                r.peer.clone()
            }
        };
        if b.kind != InterfaceType::Phy {
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
            kind = b.kind.as_str(),
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
    let b = &r.binding;
    match b.kind {
        InterfaceType::Phy => {
            let snap = r.phy.as_ref();
            if let (Some(n), Some(snap)) = (&inside, snap) {
                // Still inside (under the role's name, or its own if the
                // rename never happened): bring it home.
                for name in [r.role.as_str(), snap.name.as_str()] {
                    if let Some(l) = nl::link(n, name).await? {
                        let host_ns = nl::own_namespace()?;
                        nl::set(
                            n,
                            LinkUnspec::new_with_index(l.header.index).down().build(),
                            &format!("{at}: cannot take {name} down"),
                        )
                        .await?;
                        nl::move_to(
                            n,
                            l.header.index,
                            &host_ns,
                            &format!("{at}: cannot return {name} to the host"),
                        )
                        .await?;
                        break;
                    }
                }
            }
            if let Some(snap) = snap {
                restore_phy(&h, r, snap, &at).await?;
            }
        }
        InterfaceType::Bridge => {
            // Both ends are tried, also when one fails.
            let ends = [
                nl::delete_named(&h, &r.host_end).await,
                nl::delete_named(&h, &r.peer).await,
            ];
            NetError::all(ends.into_iter().filter_map(Result::err).collect())?;
            let br = b.bridge.as_deref().unwrap_or_default();
            if let Some(bl) = nl::link(&h, br).await? {
                let bidx = bl.header.index;
                if let Some(dev) = b.enslave.as_deref()
                    && let Some(l) = nl::link(&h, dev).await?
                    && nl::controller_of(&l) == Some(bidx)
                {
                    // Only the last instrument on the bridge lets it go.
                    let others_on_it = nl::all_links(&h)
                        .await?
                        .iter()
                        .filter(|x| {
                            nl::controller_of(x) == Some(bidx) && x.header.index != l.header.index
                        })
                        .count();
                    if others_on_it == 0 {
                        let mut m = LinkUnspec::new_with_index(l.header.index).nocontroller();
                        if r.enslave_was_down {
                            m = m.down();
                        }
                        nl::set(&h, m.build(), &format!("{at}: cannot take {dev} off {br}"))
                            .await?;
                    }
                }
                let made = bl.attributes.iter().any(|a| {
                    matches!(a, rtnetlink::packet_route::link::LinkAttribute::IfAlias(s) if s == MADE_BY_OUTPOST)
                });
                let ports = nl::all_links(&h)
                    .await?
                    .iter()
                    .filter(|x| nl::controller_of(x) == Some(bidx))
                    .count();
                if made && ports == 0 {
                    h.link().del(bidx).execute().await.map_err(|e| {
                        NetError::ctx(format!("{at}: cannot remove bridge {br}"), e)
                    })?;
                    info!(
                        bridge = br,
                        "bridge removed (outpostd made it; no ports left)"
                    );
                }
            }
        }
        InterfaceType::Macvlan => {
            if let Some(n) = &inside {
                nl::delete_named(n, &r.role).await?;
            }
            nl::delete_named(&h, &r.peer).await?;
        }
        InterfaceType::Mirror => {
            let src = b.source.as_deref().unwrap_or_default();
            if let Some(s) = nl::link(&h, src).await? {
                let i = s.header.index;
                for hook in [Hook::Ingress, Hook::Egress] {
                    nl::del_filters(&h, i, hook, r.prio, src).await?;
                }
                if !r.source_had_clsact
                    && nl::filter_count(&h, i, Hook::Ingress).await? == 0
                    && nl::filter_count(&h, i, Hook::Egress).await? == 0
                {
                    nl::del_clsact(&h, i, src).await?;
                }
            }
            nl::delete_named(&h, &r.host_end).await?;
            nl::delete_named(&h, &r.peer).await?;
        }
    }
    Ok(())
}

/// Gives a phy back its host name, MTU, flags and addresses. It is found
/// by index (a move between namespaces keeps it when it can) under any
/// name it may carry: its own, the role's, or the kernel's `dev<index>`.
async fn restore_phy(h: &Handle, r: &Record, snap: &PhySnapshot, at: &str) -> NlResult<()> {
    let l = match nl::link_by_index(h, snap.index).await? {
        Some(l) => {
            let n = nl::name_of(&l);
            if n == snap.name || n == r.role || n == format!("dev{}", snap.index) {
                Some(l)
            } else {
                None
            }
        }
        None => None,
    };
    let l = match l {
        Some(l) => l,
        None => match nl::link(h, &snap.name).await? {
            Some(l) => l,
            None => {
                warn!(
                    instrument = %r.instrument,
                    role = %r.role,
                    device = %snap.name,
                    "the phy interface is not on the host (a virtual device is destroyed with the instrument's namespace)"
                );
                return Ok(());
            }
        },
    };
    let idx = l.header.index;
    let mut m = LinkUnspec::new_with_index(idx).down();
    if nl::name_of(&l) != snap.name {
        m = m.name(snap.name.clone());
    }
    if let Some(mtu) = snap.mtu {
        m = m.mtu(mtu);
    }
    m = m.promiscuous(snap.promisc);
    nl::set(h, m.build(), &format!("{at}: cannot restore {}", snap.name)).await?;
    for (a, brd) in &snap.addresses {
        if let Ok(c) = parse_cidr(a) {
            nl::add_address(h, idx, (c.addr, c.prefix, *brd), &snap.name).await?;
        }
    }
    if snap.up {
        nl::set(
            h,
            LinkUnspec::new_with_index(idx).up().build(),
            &format!("{at}: cannot bring {} up", snap.name),
        )
        .await?;
    }
    Ok(())
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
