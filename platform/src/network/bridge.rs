//! `bridge`: a veth pair, the host end a port of a host bridge (made if
//! asked, and removed with its last port), optionally with a host
//! interface put on the bridge too.

use futures::future::BoxFuture;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute};
use rtnetlink::{LinkBridge, LinkUnspec};
use tracing::info;

use super::nl::{self, NlResult};
use super::{
    ApplyCx, Kind, MADE_BY_OUTPOST, NetError, PreflightCx, Record, UndoCx, host_index, veth,
};

pub(super) struct Bridge;

impl Kind for Bridge {
    fn preflight<'a>(
        &'a self,
        cx: &'a PreflightCx<'a>,
        rec: &'a mut Record,
    ) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let b = rec.binding.clone();
            let br = b.bridge.as_deref().unwrap_or_default();
            match nl::link(h, br).await? {
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
                let l = cx.need(dev, "enslave").await?;
                if let Some(c) = nl::controller_of(&l) {
                    let master = nl::link_by_index(h, c).await?.map(|m| nl::name_of(&m));
                    if master.as_deref() != Some(br) {
                        return Err(NetError::Refused(format!(
                            "{at}: host interface {dev} is already a port of {} (fix: take it off first)",
                            master.unwrap_or_else(|| format!("#{c}"))
                        )));
                    }
                }
                rec.enslave_was_down = !nl::is_up(&l);
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, cx: &'a ApplyCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<String>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let b = &r.binding;
            let br = b.bridge.as_deref().unwrap_or_default();
            let bidx = match nl::link(h, br).await? {
                Some(l) => l.header.index,
                None => {
                    nl::add(
                        h,
                        LinkBridge::new(br).up().build(),
                        &format!("{at}: cannot create bridge {br}"),
                    )
                    .await?;
                    let idx = host_index(h, br, at).await?;
                    // The kernel takes an alias only on an existing link.
                    nl::set(
                        h,
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
                let l = nl::link(h, dev).await?.ok_or_else(|| {
                    NetError::Refused(format!("{at}: host interface {dev} is gone"))
                })?;
                nl::set(
                    h,
                    LinkUnspec::new_with_index(l.header.index)
                        .controller(bidx)
                        .up()
                        .build(),
                    &format!("{at}: cannot put {dev} on bridge {br}"),
                )
                .await?;
            }
            veth(h, r, at).await?;
            let he = host_index(h, &r.host_end, at).await?;
            nl::set(
                h,
                LinkUnspec::new_with_index(he).controller(bidx).up().build(),
                &format!("{at}: cannot put {} on bridge {br}", r.host_end),
            )
            .await?;
            Ok(r.peer.clone())
        })
    }

    fn undo<'a>(&'a self, cx: &'a UndoCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let b = &r.binding;
            // Both ends are tried, also when one fails.
            let ends = [
                nl::delete_named(h, &r.host_end).await,
                nl::delete_named(h, &r.peer).await,
            ];
            NetError::all(ends.into_iter().filter_map(Result::err).collect())?;
            let br = b.bridge.as_deref().unwrap_or_default();
            let Some(bl) = nl::link(h, br).await? else {
                return Ok(());
            };
            let bidx = bl.header.index;
            if let Some(dev) = b.enslave.as_deref()
                && let Some(l) = nl::link(h, dev).await?
                && nl::controller_of(&l) == Some(bidx)
            {
                // Only the last instrument on the bridge lets it go.
                let others_on_it = nl::all_links(h)
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
                    nl::set(h, m.build(), &format!("{at}: cannot take {dev} off {br}")).await?;
                }
            }
            let made = bl
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfAlias(s) if s == MADE_BY_OUTPOST));
            let ports = nl::all_links(h)
                .await?
                .iter()
                .filter(|x| nl::controller_of(x) == Some(bidx))
                .count();
            if made && ports == 0 {
                h.link()
                    .del(bidx)
                    .execute()
                    .await
                    .map_err(|e| NetError::ctx(format!("{at}: cannot remove bridge {br}"), e))?;
                info!(
                    bridge = br,
                    "bridge removed (outpostd made it; no ports left)"
                );
            }
            Ok(())
        })
    }
}
