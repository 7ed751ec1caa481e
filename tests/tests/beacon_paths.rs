//! The beacon's other ways out, end to end, in namespaces this test makes:
//! a proxy on the router (tinyproxy, no IP forwarding), a TLS-intercepting
//! middlebox (nftables DNAT to a stand-in with its own certificate) in
//! front of an HTTPS canary, and an IPv6 default route that only a router
//! advertisement gives the segment.
//!
//! ```text
//!  beacon ── seg0 10.79.0.2, fd79::2 ─┐
//!                                  bridge ── router 10.79.0.1, fd79::1 | 10.80.0.1, fd80::1 ── outside 10.80.0.2, fd80::2 (home)
//!          tinyproxy 10.79.0.1:3128 (started for a while), interceptor 10.79.0.1:8443
//! ```

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::beacon::{
    details, escapes, events_of, health, home, home_pin, target, wait_until,
};
use outpost_tests::hostnet::{HostNet, Spawned, ip, must, sysctl_in};
use outpost_tests::{Sensor, image, unique};
use serde_json::Value;

const KEY: &str = "7a3e0c0ffee0ddba11ca7b0a710ad5e15e1f0c0ffee0ddba11ca7b0a710ad5e1";

fn tag() -> String {
    format!("{:05x}", rand::random::<u32>() & 0xf_ffff)
}

fn detail(v: &Value) -> String {
    v["evidence"]["detail"].as_str().unwrap_or("").to_string()
}

/// tinyproxy in `ns`, listening on `listen`:3128, in the foreground.
fn tinyproxy(ns: &str, listen: &str, dir: &std::path::Path) -> Spawned {
    let conf = dir.join("tinyproxy.conf");
    fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort 3128\nListen {listen}\nTimeout 10\n\
             MaxClients 32\nAllow 10.79.0.0/24\nDisableViaHeader Yes\nLogLevel Warning\n"
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "tinyproxy", "-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .expect("start tinyproxy (Debian package tinyproxy)");
    Spawned(child)
}

/// One router advertisement from `ns`'s `dev`: "I am a default router"
/// for 600 s, no prefixes. Sent with a raw ICMPv6 socket, hop limit 255,
/// to all nodes, as radvd would.
fn advertise(ns: &str, dev: &str) {
    let script = format!(
        "import socket, struct\n\
         i = socket.if_nametoindex('{dev}')\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, i)\n\
         s.sendto(struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 600, 0, 0), ('ff02::1', 0, 0, i))\n"
    );
    must(Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]));
}

fn nft(ns: &str, script: &str) {
    must(Command::new("ip").args(["netns", "exec", ns, "nft", script]));
}

#[test]
fn beacon_proves_proxy_and_ipv6_leaks_and_sees_through_tls_interception() {
    let mut net = HostNet::default();
    let t = tag();
    let br = format!("tbp{t}");
    let router = format!("trp{t}");
    let outside = format!("top{t}");
    net.links.push(br.clone());
    net.netns(&router);
    net.netns(&outside);
    for ns in [&router, &outside] {
        // Addresses usable at once (no duplicate detection wait).
        sysctl_in(ns, "net.ipv6.conf.all.accept_dad=0");
        sysctl_in(ns, "net.ipv6.conf.default.accept_dad=0");
    }
    net.veth_between(
        &router,
        "eth1",
        "10.80.0.1/24",
        &outside,
        "eth0",
        "10.80.0.2/24",
    );
    ip(&[
        "-n",
        &router,
        "addr",
        "add",
        "fd80::1/64",
        "dev",
        "eth1",
        "nodad",
    ]);
    ip(&[
        "-n",
        &outside,
        "addr",
        "add",
        "fd80::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    for route in [["10.79.0.0/24", "10.80.0.1"], ["fd79::/64", "fd80::1"]] {
        ip(&["-n", &outside, "route", "add", route[0], "via", route[1]]);
    }
    // IPv4 is not forwarded (until the interception part); IPv6 is, but
    // the beacon has no IPv6 route off its segment.
    sysctl_in(&router, "net.ipv4.ip_forward=0");
    sysctl_in(&router, "net.ipv6.conf.all.forwarding=1");

    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_key) = (dir.path().join("home.crt"), dir.path().join("home.key"));
    let pin = home_pin(&cert, &cert_key);
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    let _home = home(
        &outside,
        KEY,
        &[
            "--tcp",
            "10.80.0.2:7000",
            "--tcp",
            "[fd80::2]:7000",
            "--http",
            "10.80.0.2:8080",
            "--https",
            "10.80.0.2:8443",
            "--cert",
            cert.to_str().unwrap(),
            "--cert-key",
            cert_key.to_str().unwrap(),
        ],
        &dir.path().join("home.jsonl"),
    );

    let mut s = Sensor::new();
    s.import(&image("beacon"));
    let name = unique("beacon");
    s.write_sensor(&format!(
        r#"
[[instrument]]
name = "{name}"
image = "beacon"
version = "0.1.0"

[instrument.interfaces.seg0]
type = "bridge"
bridge = "{br}"
create = true
addresses = ["10.79.0.2/24", "fd79::2/64"]
routes = [{{ to = "0.0.0.0/0", via = "10.79.0.1" }}]

[instrument.config]
window = "3s"
summary = "30s"

[instrument.config.probe]
interval = "1s"
timeout = "800ms"
key = "{KEY}"
tcp = ["10.80.0.2:7000", "[fd80::2]:7000"]
icmp = ["fd80::2"]
http = ["http://10.80.0.2:8080/canary"]
https = [{{ url = "https://10.80.0.2:8443/canary", pin = "{pin}" }}]
proxies = ["http://10.79.0.1:3128"]
"#
    ));
    s.start(&[]);
    s.wait_running(&name);
    let rport = format!("trq{t}");
    ip(&[
        "link", "add", &rport, "type", "veth", "peer", "name", "eth0", "netns", &router,
    ]);
    net.links.push(rport.clone());
    ip(&["-n", &router, "addr", "add", "10.79.0.1/24", "dev", "eth0"]);
    ip(&[
        "-n",
        &router,
        "addr",
        "add",
        "fd79::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    ip(&["-n", &router, "link", "set", "eth0", "up"]);
    ip(&["link", "set", &rport, "master", &br, "up"]);
    let _interceptor = home(
        &router,
        KEY,
        &["--https", "10.79.0.1:8443"],
        &dir.path().join("interceptor.jsonl"),
    );

    // Sealed: every path blocked, for its own reason.
    let via = " via http://10.79.0.1:3128";
    let d = s.wait_for(&name, "a sealed round", Duration::from_secs(20), |i| {
        let d = &i["health_details"];
        i["health"] == "ok"
            && d["targets"]
                .as_object()
                .is_some_and(|t| t.len() == 1 + 2 + 1 + 1 + 1 + 1 + 2)
            && d["interface_state"]["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "fd79::2/64"))
    })["health_details"]
        .clone();
    assert!(escapes(&s, &name).is_empty(), "escapes while sealed: {d:#}");
    let v6 = target(&d, "icmp fd80::2");
    assert_eq!(v6["outcome"], "blocked", "{d:#}");
    assert!(detail(&v6).contains("network unreachable"), "{v6}");
    let proxied = target(&d, &format!("http-proxy http://10.80.0.2:8080/canary{via}"));
    assert_eq!(proxied["outcome"], "blocked", "{d:#}");
    assert!(detail(&proxied).contains("refused"), "{proxied}");
    let routes = d["interface_state"]["routes"].to_string();
    assert!(routes.contains("default via 10.79.0.1"), "{d:#}");
    assert!(!routes.contains("default via fe80"), "{d:#}");

    // A proxy-only leak: the router forwards nothing, but a proxy on it
    // reaches outside.
    let proxy = tinyproxy(&router, "10.79.0.1", dir.path());
    let want = [
        ("http-proxy", format!("http://10.80.0.2:8080/canary{via}")),
        ("http-proxy", format!("https://10.80.0.2:8443/canary{via}")),
        ("connect", format!("10.80.0.2:7000{via}")),
        ("connect", format!("[fd80::2]:7000{via}")),
    ];
    let found = wait_until("escapes through the proxy", Duration::from_secs(15), || {
        let e = escapes(&s, &name);
        want.iter()
            .all(|(c, t)| {
                e.iter()
                    .any(|a| a["channel"] == *c && a["target"] == t.as_str())
            })
            .then_some(e)
    });
    for a in &found {
        assert_eq!(a["evidence"]["level"], "proven", "{a}");
        assert!(
            a["target"].as_str().unwrap().ends_with(via),
            "a direct path escaped with only the proxy open: {a}"
        );
    }
    let d = details(&s, &name);
    assert_eq!(
        target(&d, "http http://10.80.0.2:8080/canary")["outcome"],
        "blocked",
        "{d:#}"
    );
    drop(proxy);

    // Forwarding on, and a middlebox that intercepts TLS to port 8443: the
    // direct HTTP canary escapes, the HTTPS one is blocked with the pin
    // mismatch named, though the interceptor relays a valid proof.
    let table = format!("outpost_test_{t}");
    nft(
        &router,
        &format!(
            "add table ip {table}\n\
             add chain ip {table} pre {{ type nat hook prerouting priority -100; }}\n\
             add rule ip {table} pre iifname \"eth0\" tcp dport 8443 dnat to 10.79.0.1:8443\n"
        ),
    );
    sysctl_in(&router, "net.ipv4.ip_forward=1");
    let intercepted = wait_until(
        "the intercepted https attempt",
        Duration::from_secs(15),
        || {
            let d = details(&s, &name);
            let h = target(&d, "https https://10.80.0.2:8443/canary");
            let escaped_http = escapes(&s, &name)
                .iter()
                .any(|a| a["channel"] == "http" && a["target"] == "http://10.80.0.2:8080/canary");
            (escaped_http && detail(&h).contains("does not match the pin")).then_some(h)
        },
    );
    eprintln!("intercepted: {}", detail(&intercepted));
    assert_eq!(intercepted["outcome"], "blocked", "{intercepted}");
    assert!(detail(&intercepted).contains(&pin), "{intercepted}");
    assert!(
        !escapes(&s, &name).iter().any(|a| a["channel"] == "https"),
        "the interceptor's relayed proof counted as an https escape"
    );
    // The middlebox gone: the same canary escapes, proven.
    nft(&router, &format!("delete table ip {table}"));
    wait_until("an https escape", Duration::from_secs(10), || {
        escapes(&s, &name)
            .into_iter()
            .find(|a| a["channel"] == "https" && a["evidence"]["level"] == "proven")
    });
    sysctl_in(&router, "net.ipv4.ip_forward=0");

    // A router advertisement gives the segment an IPv6 default route
    // nobody configured: the beacon reports the change, and escapes over
    // IPv6.
    advertise(&router, "eth0");
    let change = wait_until(
        "an interface-changed event",
        Duration::from_secs(10),
        || {
            events_of(&s, &name, "interface-changed")
                .into_iter()
                .find(|e| e["added"].to_string().contains("default via fe80::"))
        },
    );
    eprintln!("interface-changed: {change}");
    assert_eq!(change["interface"], "seg0", "{change}");
    let v6 = wait_until("IPv6 escapes", Duration::from_secs(10), || {
        let e = escapes(&s, &name);
        let icmp = e
            .iter()
            .find(|a| a["channel"] == "icmp" && a["target"] == "fd80::2")?
            .clone();
        let tcp = e
            .iter()
            .find(|a| a["channel"] == "tcp" && a["target"] == "[fd80::2]:7000")?
            .clone();
        Some((icmp, tcp))
    });
    assert_eq!(v6.0["evidence"]["level"], "reachable", "{}", v6.0);
    assert_eq!(v6.1["evidence"]["level"], "proven", "{}", v6.1);
    let d = details(&s, &name);
    assert!(
        d["interface_state"]["routes"]
            .to_string()
            .contains("default via fe80::"),
        "{d:#}"
    );
    assert_eq!(health(&s, &name), "ok", "{d:#}");

    ip(&["link", "del", &rport]);
    s.write_sensor("");
    s.reload();
    wait_until("the beacon removed", Duration::from_secs(30), || {
        s.instrument(&name).is_none().then_some(())
    });
}
