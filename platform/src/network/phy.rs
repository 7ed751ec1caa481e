//! `phy`: a host interface moved into the instrument, and given back
//! exactly (name, MTU, flags, addresses) when it stops.

use futures::future::BoxFuture;
use outpost_protocol::bindings::parse_cidr;
use rtnetlink::{Handle, LinkUnspec};
use tracing::warn;

use super::nl::{self, NlResult};
use super::{ApplyCx, Kind, NetError, PhySnapshot, PreflightCx, Record, UndoCx};

pub(super) struct Phy;

impl Kind for Phy {
    fn preflight<'a>(
        &'a self,
        cx: &'a PreflightCx<'a>,
        rec: &'a mut Record,
    ) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let dev = rec.binding.device.clone().unwrap_or_default();
            let l = cx.need(&dev, "device").await?;
            if dev == "lo" {
                return Err(NetError::Refused(format!(
                    "{at}: the loopback interface cannot be moved into an instrument"
                )));
            }
            if let Some(c) = nl::controller_of(&l) {
                let master = nl::link_by_index(h, c)
                    .await?
                    .map(|m| nl::name_of(&m))
                    .unwrap_or_else(|| format!("#{c}"));
                return Err(NetError::Refused(format!(
                    "{at}: host interface {dev} is a port of {master} (fix: take it off {master} first, or bind the bridge instead)"
                )));
            }
            let addrs = nl::addresses(h, l.header.index).await?;
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
            Ok(())
        })
    }

    fn apply<'a>(&'a self, cx: &'a ApplyCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<String>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let dev = r.binding.device.as_deref().unwrap_or_default();
            let l = nl::link(h, dev)
                .await?
                .ok_or_else(|| NetError::Refused(format!("{at}: host interface {dev} is gone")))?;
            nl::move_to(
                h,
                l.header.index,
                cx.ns,
                &format!("{at}: cannot move {dev} into the instrument"),
            )
            .await?;
            Ok(dev.to_string())
        })
    }

    fn moves_itself(&self) -> bool {
        true
    }

    fn undo<'a>(&'a self, cx: &'a UndoCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let at = cx.at;
            let snap = r.phy.as_ref();
            if let (Some(n), Some(snap)) = (cx.inside, snap) {
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
                restore(cx.h, r, snap, at).await?;
            }
            Ok(())
        })
    }
}

/// Gives a phy back its host name, MTU, flags and addresses. It is found
/// by index (a move between namespaces keeps it when it can) under any
/// name it may carry: its own, the role's, or the kernel's `dev<index>`.
async fn restore(h: &Handle, r: &Record, snap: &PhySnapshot, at: &str) -> NlResult<()> {
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
