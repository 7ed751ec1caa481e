//! `mirror`: a veth pair whose host end receives a copy of a host
//! interface's traffic (tc mirred on its ingress and egress); cls_bpf
//! programs drop whatever the instrument sends, on both ends.

use std::os::fd::AsRawFd;

use futures::future::BoxFuture;
use outpost_protocol::manifest::InterfaceType;
use rtnetlink::LinkUnspec;
use tracing::debug;

use super::nl::{self, Hook, NlResult};
use super::{ApplyCx, Kind, NetError, PreflightCx, Record, UndoCx, host_index, veth};

pub(super) struct Mirror;

impl Kind for Mirror {
    fn preflight<'a>(
        &'a self,
        cx: &'a PreflightCx<'a>,
        rec: &'a mut Record,
    ) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let h = cx.h;
            let src = rec.binding.source.clone().unwrap_or_default();
            let l = cx.need(&src, "source").await?;
            let ours_before = cx
                .others
                .iter()
                .find(|r| {
                    r.binding.kind == InterfaceType::Mirror
                        && r.binding.source.as_deref() == Some(src.as_str())
                })
                .map(|r| r.source_had_clsact);
            rec.source_had_clsact = match ours_before {
                Some(had) => had,
                None => {
                    nl::filter_count(h, l.header.index, Hook::Ingress).await? > 0
                        || nl::filter_count(h, l.header.index, Hook::Egress).await? > 0
                        || nl::has_clsact(h, l.header.index).await?
                }
            };
            Ok(())
        })
    }

    fn apply<'a>(&'a self, cx: &'a ApplyCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<String>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let src = r.binding.source.as_deref().unwrap_or_default();
            let s = nl::link(h, src)
                .await?
                .ok_or_else(|| NetError::Refused(format!("{at}: host interface {src} is gone")))?;
            veth(h, r, at).await?;
            let he = host_index(h, &r.host_end, at).await?;
            // The host end takes no part in the host's own traffic.
            let sysctl = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", r.host_end);
            if let Err(e) = std::fs::write(&sysctl, "1") {
                debug!("{sysctl}: {e}");
            }
            let fd = cx.drop_prog.expect("loaded for mirrors").as_raw_fd();
            nl::add_clsact(h, he, &r.host_end).await?;
            nl::add_drop_filter(h, he, Hook::Ingress, 1, fd, &r.host_end).await?;
            nl::set(
                h,
                LinkUnspec::new_with_index(he).up().build(),
                &format!("{at}: cannot bring {} up", r.host_end),
            )
            .await?;
            nl::add_clsact(h, s.header.index, src).await?;
            for hook in [Hook::Ingress, Hook::Egress] {
                nl::add_mirror_filter(h, s.header.index, hook, r.prio, he, src).await?;
            }
            Ok(r.peer.clone())
        })
    }

    fn undo<'a>(&'a self, cx: &'a UndoCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            let h = cx.h;
            let src = r.binding.source.as_deref().unwrap_or_default();
            if let Some(s) = nl::link(h, src).await? {
                let i = s.header.index;
                for hook in [Hook::Ingress, Hook::Egress] {
                    nl::del_filters(h, i, hook, r.prio, src).await?;
                }
                if !r.source_had_clsact
                    && nl::filter_count(h, i, Hook::Ingress).await? == 0
                    && nl::filter_count(h, i, Hook::Egress).await? == 0
                {
                    nl::del_clsact(h, i, src).await?;
                }
            }
            nl::delete_named(h, &r.host_end).await?;
            nl::delete_named(h, &r.peer).await?;
            Ok(())
        })
    }
}
