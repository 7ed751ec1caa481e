//! Thin helpers over rtnetlink for what the bindings need: links,
//! addresses, routes, and the tc pieces rtnetlink has no builder for
//! (the clsact qdisc, a direct-action cls_bpf filter, and a u32 filter
//! with a mirred *mirror* action), built with `netlink-packet-route`.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State, Stats64,
};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcBpfFlags, TcFilterBpfOption, TcFilterU32Option, TcHandle,
    TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::{Handle, LinkGetRequest, LinkUnspec, RouteMessageBuilder};

/// Why an interface binding, a check or a status read failed, worded for
/// the operator (what was being done, on which interface) with the
/// kernel's or the system's error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The host or the binding does not allow it (missing, in use, …).
    #[error("{0}")]
    Refused(String),
    /// Several failures of one teardown, each kept.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<NetError>),
}

/// What a failure under a [`NetError`] can be.
pub trait Cause {
    fn with(self, what: String) -> NetError;
}

impl Cause for rtnetlink::Error {
    fn with(self, what: String) -> NetError {
        NetError::Netlink { what, source: self }
    }
}

impl Cause for std::io::Error {
    fn with(self, what: String) -> NetError {
        NetError::Os { what, source: self }
    }
}

impl Cause for nix::errno::Errno {
    fn with(self, what: String) -> NetError {
        NetError::Os {
            what,
            source: self.into(),
        }
    }
}

/// A message that says what is wrong (a route the builder refused, an
/// address that does not parse).
impl Cause for String {
    fn with(self, what: String) -> NetError {
        NetError::Refused(format!("{what}: {self}"))
    }
}

impl NetError {
    /// `e`, as the cause of a failure while doing `what`.
    pub fn ctx(what: impl Into<String>, e: impl Cause) -> NetError {
        e.with(what.into())
    }

    /// One error for many: `Ok` when there are none.
    pub fn all(mut errors: Vec<NetError>) -> Result<(), NetError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(NetError::Several(errors)),
        }
    }
}

/// A netlink failure, already worded for the operator.
pub type NlResult<T> = Result<T, NetError>;

/// ETH_P_ALL in network byte order, as tc wants it in `tcm_info`.
const ALL_PROTOCOLS: u16 = 0x0003u16.to_be();

/// A netlink connection in the daemon's own (host) namespace.
pub fn host() -> NlResult<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetError::ctx("cannot open netlink", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A netlink connection inside the network namespace of process `pid`:
/// the socket is made on a thread that has entered the namespace, and
/// driven by the calling runtime.
pub fn in_namespace_of(pid: i32) -> NlResult<Handle> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| NetError::ctx(format!("cannot open the network namespace of pid {pid}"), e))?;
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || -> NlResult<Handle> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetError::ctx(
                format!("cannot enter the network namespace of pid {pid}"),
                e,
            )
        })?;
        let _guard = rt.enter();
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::ctx("cannot open netlink", e))?;
        rt.spawn(conn);
        Ok(handle)
    })
    .join()
    .map_err(|_| {
        NetError::Refused(format!(
            "the thread entering the namespace of pid {pid} panicked"
        ))
    })?
}

/// The network namespace of the calling process (the host's, for outpostd).
pub fn own_namespace() -> NlResult<File> {
    File::open("/proc/self/ns/net").map_err(|e| NetError::ctx("cannot open /proc/self/ns/net", e))
}

/// The first answer to a link query; `None` when there is no such link.
async fn one_link(req: LinkGetRequest, what: &str) -> NlResult<Option<LinkMessage>> {
    match req.execute().try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(NetError::Refused(format!(
            "cannot look up interface {what}: {e}"
        ))),
    }
}

pub async fn link(h: &Handle, name: &str) -> NlResult<Option<LinkMessage>> {
    one_link(h.link().get().match_name(name.to_string()), name).await
}

pub async fn link_by_index(h: &Handle, index: u32) -> NlResult<Option<LinkMessage>> {
    one_link(h.link().get().match_index(index), &format!("#{index}")).await
}

pub async fn all_links(h: &Handle) -> NlResult<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::ctx("cannot list interfaces", e))
}

pub fn name_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub fn mtu_of(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub fn controller_of(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}

pub fn kind_of(l: &LinkMessage) -> Option<InfoKind> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

pub fn is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up)
}

pub fn is_promisc(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Promisc)
}

pub fn oper_state(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::OperState(s) => Some(match s {
                State::Up => "up".to_string(),
                State::Down => "down".to_string(),
                State::LowerLayerDown => "lower-layer-down".to_string(),
                State::Dormant => "dormant".to_string(),
                State::Unknown => "unknown".to_string(),
                other => format!("{other:?}").to_lowercase(),
            }),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The interface's 64-bit counters (zero when the kernel gave none).
pub fn counters(l: &LinkMessage) -> Stats64 {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some(*s),
            _ => None,
        })
        .unwrap_or_default()
}

pub async fn set(h: &Handle, msg: LinkMessage, what: &str) -> NlResult<()> {
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| NetError::ctx(what, e))
}

pub async fn add(h: &Handle, msg: LinkMessage, what: &str) -> NlResult<()> {
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetError::ctx(what, e))
}

/// Deletes the interface called `name` if there is one.
pub async fn delete_named(h: &Handle, name: &str) -> NlResult<bool> {
    match link(h, name).await? {
        Some(l) => {
            h.link()
                .del(l.header.index)
                .execute()
                .await
                .map_err(|e| NetError::ctx(format!("cannot delete interface {name}"), e))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Moves interface `index` into the namespace behind `ns`.
pub async fn move_to(h: &Handle, index: u32, ns: &File, what: &str) -> NlResult<()> {
    set(
        h,
        LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build(),
        what,
    )
    .await
}

/// An address on an interface: address, prefix length, IPv4 broadcast.
pub type Addr = (IpAddr, u8, Option<Ipv4Addr>);

/// The addresses of interface `index`, without the link-local IPv6 ones
/// the kernel makes by itself.
pub async fn addresses(h: &Handle, index: u32) -> NlResult<Vec<Addr>> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::ctx(format!("cannot list addresses of interface #{index}"), e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            let prefix = m.header.prefix_len;
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let brd = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Broadcast(b) => Some(*b),
                _ => None,
            });
            local.or(addr).map(|ip| (ip, prefix, brd))
        })
        .filter(|(ip, _, _)| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect())
}

/// The usual IPv4 broadcast address of `ip/prefix` (none for /31, /32).
pub fn default_broadcast(ip: IpAddr, prefix: u8) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) if prefix < 31 => Some(Ipv4Addr::from(u32::from(v4) | (u32::MAX >> prefix))),
        _ => None,
    }
}

pub async fn add_address(
    h: &Handle,
    index: u32,
    (ip, prefix, brd): Addr,
    on: &str,
) -> NlResult<()> {
    let mut req = h.address().add(index, ip, prefix);
    // rtnetlink adds the usual broadcast by itself; say exactly which.
    req.message_mut()
        .attributes
        .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
    if let Some(b) = brd {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Broadcast(b));
    }
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(NetError::Refused(format!(
            "cannot add address {ip}/{prefix} to {on}: {e}"
        ))),
    }
}

pub async fn add_route(
    h: &Handle,
    index: u32,
    to: IpAddr,
    prefix: u8,
    via: Option<IpAddr>,
    on: &str,
) -> NlResult<()> {
    let what = || match via {
        Some(v) => format!("route to {to}/{prefix} via {v} on {on}"),
        None => format!("route to {to}/{prefix} on {on}"),
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(to, prefix)
        .map_err(|e| NetError::ctx(what(), e.to_string()))?
        .output_interface(index);
    if let Some(v) = via {
        b = b
            .gateway(v)
            .map_err(|e| NetError::ctx(what(), e.to_string()))?;
    }
    h.route()
        .add(b.build())
        .execute()
        .await
        .map_err(|e| NetError::ctx(format!("cannot add {}", what()), e))
}

/// Sends a tc message and waits for the kernel's answer.
async fn tc_request(
    h: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut h = h.clone();
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut resp = h.request(req)?;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

fn clsact_message(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::CLSACT;
    m.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    m
}

/// Adds a clsact qdisc to `index`; returns false when it was there.
pub async fn add_clsact(h: &Handle, index: u32, on: &str) -> NlResult<bool> {
    match tc_request(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(clsact_message(index)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
        Err(e) => Err(NetError::Refused(format!(
            "cannot add a clsact qdisc to {on}: {e}"
        ))),
    }
}

pub async fn del_clsact(h: &Handle, index: u32, on: &str) -> NlResult<()> {
    match tc_request(
        h,
        RouteNetlinkMessage::DelQueueDiscipline(clsact_message(index)),
        0,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::EINVAL =>
        {
            Ok(())
        }
        Err(e) => Err(NetError::Refused(format!(
            "cannot remove the clsact qdisc of {on}: {e}"
        ))),
    }
}

/// Whether interface `index` has a clsact qdisc.
pub async fn has_clsact(h: &Handle, index: u32) -> NlResult<bool> {
    let q: Vec<_> = h
        .qdisc()
        .get()
        .index(index as i32)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::ctx(format!("cannot list qdiscs of #{index}"), e))?;
    Ok(q.iter().any(|m| {
        m.header.index == index as i32
            && m.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
    }))
}

/// Which clsact hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

fn filter_message(index: u32, hook: Hook, prio: u16) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle {
        major: 0xffff,
        minor: match hook {
            Hook::Ingress => TcHandle::MIN_INGRESS,
            Hook::Egress => TcHandle::MIN_EGRESS,
        },
    };
    m.header.info = ((prio as u32) << 16) | ALL_PROTOCOLS as u32;
    m
}

/// Attaches the drop-everything program (`prog_fd`) as a direct-action
/// cls_bpf filter at `hook` of interface `index`.
pub async fn add_drop_filter(
    h: &Handle,
    index: u32,
    hook: Hook,
    prio: u16,
    prog_fd: i32,
    on: &str,
) -> NlResult<()> {
    let mut m = filter_message(index, hook, prio);
    m.attributes.push(TcAttribute::Kind("bpf".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName("outpost-rx-only".into())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    tc_request(
        h,
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|e| {
        NetError::ctx(
            format!("cannot attach the receive-only drop filter ({hook:?}) to {on}"),
            e,
        )
    })
}

/// Copies every packet at `hook` of `index` to the egress of `to` with a
/// u32 `match u32 0 0` filter and a mirred egress mirror action.
pub async fn add_mirror_filter(
    h: &Handle,
    index: u32,
    hook: Hook,
    prio: u16,
    to: u32,
    on: &str,
) -> NlResult<()> {
    let mut m = filter_message(index, hook, prio);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Pipe;
    mirror.eaction = TcMirrorActionType::EgressMirror;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    tc_request(
        h,
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|e| {
        NetError::ctx(
            format!("cannot attach the mirror filter ({hook:?}) to {on}"),
            e,
        )
    })
}

/// Removes the filters of priority `prio` at `hook`, if any.
pub async fn del_filters(h: &Handle, index: u32, hook: Hook, prio: u16, on: &str) -> NlResult<()> {
    let mut m = filter_message(index, hook, prio);
    m.header.info = (prio as u32) << 16;
    match tc_request(h, RouteNetlinkMessage::DelTrafficFilter(m), 0).await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::EINVAL =>
        {
            Ok(())
        }
        Err(e) => Err(NetError::Refused(format!(
            "cannot remove tc filter {prio} ({hook:?}) from {on}: {e}"
        ))),
    }
}

/// How many filters sit at `hook` of `index`.
pub async fn filter_count(h: &Handle, index: u32, hook: Hook) -> NlResult<usize> {
    let mut f = h.traffic_filter(index as i32).get();
    f = match hook {
        Hook::Ingress => f.ingress(),
        Hook::Egress => f.egress(),
    };
    let v: Vec<_> = match f.execute().try_collect().await {
        Ok(v) => v,
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EINVAL => vec![],
        Err(e) => {
            return Err(NetError::Refused(format!(
                "cannot list tc filters of #{index}: {e}"
            )));
        }
    };
    // The kernel lists one header per filter plus one per chain element;
    // count the ones that carry a kind.
    Ok(v.iter()
        .filter(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(_)))
        })
        .count())
}
