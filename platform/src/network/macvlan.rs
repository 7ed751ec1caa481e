//! `macvlan`: a macvlan on a host parent, moved into the instrument.

use futures::future::BoxFuture;
use outpost_protocol::bindings::MacvlanMode;
use rtnetlink::LinkMacVlan;
use rtnetlink::packet_route::link::MacVlanMode;

use super::nl::{self, NlResult};
use super::{ApplyCx, Kind, NetError, PreflightCx, Record, UndoCx};

pub(super) struct Macvlan;

impl Kind for Macvlan {
    fn preflight<'a>(
        &'a self,
        cx: &'a PreflightCx<'a>,
        rec: &'a mut Record,
    ) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            cx.need(rec.binding.parent.as_deref().unwrap_or_default(), "parent")
                .await?;
            Ok(())
        })
    }

    fn apply<'a>(&'a self, cx: &'a ApplyCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<String>> {
        Box::pin(async move {
            let (h, at) = (cx.h, cx.at);
            let parent = r.binding.parent.as_deref().unwrap_or_default();
            let p = nl::link(h, parent).await?.ok_or_else(|| {
                NetError::Refused(format!("{at}: host interface {parent} is gone"))
            })?;
            let mode = match r.binding.mode.unwrap_or_default() {
                MacvlanMode::Private => MacVlanMode::Private,
                MacvlanMode::Vepa => MacVlanMode::Vepa,
                MacvlanMode::Bridge => MacVlanMode::Bridge,
                MacvlanMode::Passthru => MacVlanMode::Passthrough,
            };
            nl::add(
                h,
                LinkMacVlan::new(&r.peer, p.header.index, mode).build(),
                &format!("{at}: cannot make a macvlan on {parent}"),
            )
            .await?;
            Ok(r.peer.clone())
        })
    }

    fn undo<'a>(&'a self, cx: &'a UndoCx<'a>, r: &'a Record) -> BoxFuture<'a, NlResult<()>> {
        Box::pin(async move {
            if let Some(n) = cx.inside {
                nl::delete_named(n, &r.role).await?;
            }
            nl::delete_named(cx.h, &r.peer).await?;
            Ok(())
        })
    }
}
