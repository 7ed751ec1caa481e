//! The interface snapshot: formatting, diffs, the tracker, and real reads.

use super::route::*;
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
                RouteAttribute::Destination(RouteAddress::Inet("203.0.113.0".parse().expect("v4"))),
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
