//! Interface bindings on real netlink: every test makes its own veth
//! pairs, bridges and namespaces (unique names, removed also when it
//! fails) and never touches the host's own interfaces.

use std::process::Command;
use std::time::Duration;

use outpost_platform::network::names;
use outpost_tests::hostnet::{HostNet, ip, ip_ok};
use outpost_tests::{Sensor, image, unique};
use serde_json::Value;

fn tc(args: &[&str]) -> String {
    let out = Command::new("tc").args(args).output().expect("run tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Short unique suffix for interface names (15 characters at most).
fn tag() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

fn instrument(name: &str, image: &str, binding: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"{image}\"\nversion = \"0.1.0\"\n{binding}\n"
    )
}

/// What `ip` says of a host interface: its link line and its addresses.
fn host_view(dev: &str) -> String {
    // Duplicate address detection may still run on a fresh link-local
    // address; that is the kernel's doing, not ours.
    format!(
        "{}{}",
        ip(&["-d", "-o", "link", "show", "dev", dev]),
        ip(&["-o", "addr", "show", "dev", dev])
    )
    .replace(" tentative", "")
}

/// Host interfaces outpostd would have made for `instrument`'s `role`.
fn leftovers(instrument: &str, role: &str) -> Vec<String> {
    let (host_end, peer, _) = names(instrument, role);
    [host_end, peer]
        .into_iter()
        .filter(|n| ip_ok(&["link", "show", "dev", n]))
        .collect()
}

fn iface(s: &Sensor, name: &str, role: &str) -> Value {
    let st = s.status();
    st["interfaces"][name]
        .as_array()
        .and_then(|v| v.iter().find(|i| i["role"] == role).cloned())
        .unwrap_or_else(|| panic!("no interface {role} in the status of {name}: {st:#}"))
}

fn ping(s: &Sensor, name: &str, addr: &str) -> bool {
    let out = s.attach(name, &["ping", "-c", "1", "-W", "2", addr]);
    out.status.success()
}

fn remove_all(s: &Sensor) {
    s.write_sensor("");
    s.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.status()["instruments"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "instruments not removed: {:#}",
            s.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn phy_goes_in_and_comes_back_exactly_also_across_an_outpostd_crash() {
    let mut net = HostNet::default();
    let dev = format!("tphy{}", tag());
    net.stub(&dev);
    ip(&["link", "set", &dev, "mtu", "1400"]);
    ip(&["addr", "add", "198.51.100.7/24", "dev", &dev]);
    ip(&["link", "set", &dev, "up"]);
    let before = host_view(&dev);

    let mut s = Sensor::new();
    s.import(&image("net-phy"));
    let name = unique("phy");
    s.write_sensor(&instrument(
        &name,
        "net-phy",
        &format!(
            "[instrument.interfaces.cap0]\ntype = \"phy\"\ndevice = \"{dev}\"\naddresses = [\"10.77.0.2/24\"]\nroutes = [{{ to = \"10.177.0.0/16\", via = \"10.77.0.1\" }}]\nmtu = 1300\n"
        ),
    ));
    s.start(&[]);
    let pid = s.wait_running(&name);
    assert!(
        !ip_ok(&["link", "show", "dev", &dev]),
        "{dev} is still on the host"
    );
    let link = String::from_utf8_lossy(&s.attach(&name, &["ip", "link", "show", "cap0"]).stdout)
        .into_owned();
    assert!(link.contains("mtu 1300") && link.contains(",UP"), "{link}");
    let addr = String::from_utf8_lossy(&s.attach(&name, &["ip", "addr", "show", "cap0"]).stdout)
        .into_owned();
    assert!(addr.contains("10.77.0.2/24"), "{addr}");
    let routes = String::from_utf8_lossy(&s.attach(&name, &["ip", "route"]).stdout).into_owned();
    assert!(
        routes.contains("10.177.0.0/16 via 10.77.0.1 dev cap0"),
        "{routes}"
    );
    let i = iface(&s, &name, "cap0");
    assert_eq!(i["kind"], "phy");
    assert_eq!(i["up"], true);

    // outpostd dies; the binding stays and is kept by the next one.
    s.kill9();
    assert!(!ip_ok(&["link", "show", "dev", &dev]));
    s.start(&[]);
    assert_eq!(s.wait_running(&name), pid, "re-adopted, not restarted");
    assert!(
        s.attach(&name, &["ip", "link", "show", "cap0"])
            .status
            .success()
    );

    remove_all(&s);
    assert_eq!(host_view(&dev), before, "{dev} came back changed");
}

#[test]
fn two_instruments_on_one_bridge_reach_each_other_and_the_segment() {
    let mut net = HostNet::default();
    let t = tag();
    let br = format!("tbr{t}");
    let seg = format!("tseg{t}");
    net.links.push(br.clone()); // outpostd makes it; removed here if a test step fails
    net.netns(&seg);

    let mut s = Sensor::new();
    s.import(&image("net-bridge"));
    let a = unique("bra");
    let b = unique("brb");
    let bind = |addr: &str| {
        format!(
            "[instrument.interfaces.seg0]\ntype = \"bridge\"\nbridge = \"{br}\"\ncreate = true\naddresses = [\"{addr}\"]\n"
        )
    };
    s.write_sensor(&format!(
        "{}{}",
        instrument(&a, "net-bridge", &bind("10.78.0.2/24")),
        instrument(&b, "net-bridge", &bind("10.78.0.3/24"))
    ));
    s.start(&[]);
    let pid_a = s.wait_running(&a);
    s.wait_running(&b);
    let detail = ip(&["-d", "link", "show", "dev", &br]);
    assert!(detail.contains("bridge"), "{detail}");
    // The segment host: a namespace on the same bridge.
    let seg_host = format!("tsh{t}");
    net.veth_into(&seg_host, "eth0", &seg, "10.78.0.10/24");
    ip(&["link", "set", &seg_host, "master", &br]);

    assert!(ping(&s, &a, "10.78.0.3"), "a cannot reach b");
    assert!(ping(&s, &b, "10.78.0.2"), "b cannot reach a");
    assert!(
        ping(&s, &a, "10.78.0.10"),
        "a cannot reach the segment host"
    );
    let i = iface(&s, &a, "seg0");
    assert!(i["tx_packets"].as_u64().unwrap() > 0, "{i}");

    s.kill9();
    s.start(&[]);
    assert_eq!(s.wait_running(&a), pid_a);
    assert!(
        ping(&s, &a, "10.78.0.3"),
        "the binding did not survive the crash"
    );

    // The bridge outpostd made goes with its last port.
    ip(&["link", "del", &seg_host]);
    remove_all(&s);
    assert!(leftovers(&a, "seg0").is_empty() && leftovers(&b, "seg0").is_empty());
    assert!(
        !ip_ok(&["link", "show", "dev", &br]),
        "bridge {br} left behind"
    );
}

#[test]
fn macvlan_reaches_the_parents_network() {
    let mut net = HostNet::default();
    let t = tag();
    let ns = format!("tmv{t}");
    let parent = format!("tmvp{t}");
    net.netns(&ns);
    net.veth_into(&parent, "eth0", &ns, "10.79.0.10/24");
    let before = host_view(&parent);

    let mut s = Sensor::new();
    s.import(&image("net-macvlan"));
    let name = unique("mv");
    s.write_sensor(&instrument(
        &name,
        "net-macvlan",
        &format!(
            "[instrument.interfaces.up0]\ntype = \"macvlan\"\nparent = \"{parent}\"\nmode = \"bridge\"\naddresses = [\"10.79.0.2/24\"]\n"
        ),
    ));
    s.start(&[]);
    s.wait_running(&name);
    assert!(
        ping(&s, &name, "10.79.0.10"),
        "macvlan cannot reach its parent's network"
    );
    remove_all(&s);
    assert!(leftovers(&name, "up0").is_empty());
    assert_eq!(host_view(&parent), before);
}

#[test]
fn mirror_sees_a_copy_and_what_the_instrument_sends_goes_nowhere() {
    let mut net = HostNet::default();
    let t = tag();
    let ns = format!("tmr{t}");
    let src = format!("tmrs{t}");
    net.netns(&ns);
    net.veth_into(&src, "eth0", &ns, "10.80.0.2/24");
    ip(&["addr", "add", "10.80.0.1/24", "dev", &src]);
    let before = format!(
        "{}{}{}",
        host_view(&src),
        tc(&["qdisc", "show", "dev", &src]),
        tc(&["filter", "show", "dev", &src, "ingress"])
    );

    let mut s = Sensor::new();
    s.import(&image("net-mirror"));
    let name = unique("mirror");
    s.write_sensor(&instrument(
        &name,
        "net-mirror",
        &format!("[instrument.interfaces.mon0]\ntype = \"mirror\"\nsource = \"{src}\"\n"),
    ));
    s.start(&[]);
    s.wait_running(&name);
    let (host_end, _, _) = names(&name, "mon0");
    let rx0 = iface(&s, &name, "mon0")["rx_packets"].as_u64().unwrap();

    // 20 echo requests and 20 replies cross the source.
    let out = Command::new("busybox")
        .args(["ping", "-c", "20", "-i", "0.01", "-W", "1", "10.80.0.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the source network itself does not work"
    );
    let i = iface(&s, &name, "mon0");
    let copies = i["rx_packets"].as_u64().unwrap() - rx0;
    assert!(copies >= 40, "the mirror saw {copies} packets of 40: {i}");

    // The instrument tries to send: to all nodes, link-local.
    let _ = s.attach(
        &name,
        &["ping6", "-c", "3", "-W", "1", "-I", "mon0", "ff02::1"],
    );
    let stats: Value = serde_json::from_str(&ip(&["-s", "-j", "link", "show", "dev", &host_end]))
        .expect("ip -j prints JSON");
    let host_rx = &stats[0]["stats64"]["rx"]["packets"];
    assert_eq!(
        host_rx, 0,
        "a packet from inside reached the host end: {stats}"
    );
    let i = iface(&s, &name, "mon0");
    assert_eq!(i["tx_packets"], 0, "a packet left the instrument: {i}");

    remove_all(&s);
    assert!(leftovers(&name, "mon0").is_empty());
    let after = format!(
        "{}{}{}",
        host_view(&src),
        tc(&["qdisc", "show", "dev", &src]),
        tc(&["filter", "show", "dev", &src, "ingress"])
    );
    assert_eq!(after, before, "the source was not restored");
}

/// Starts one instrument with `binding` and waits until it is refused.
fn refused(img: &str, role: &str, binding: &str) -> (String, String) {
    let mut s = Sensor::new();
    s.import(&image(img));
    let name = unique("bad");
    s.write_sensor(&instrument(
        &name,
        img,
        &format!("[instrument.interfaces.{role}]\n{binding}"),
    ));
    s.start(&[]);
    let v = s.wait_for(&name, "refused", Duration::from_secs(20), |v| {
        v["last_exit"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("could not start"))
    });
    assert!(v["init_pid"].is_null(), "it runs: {v:#}");
    let detail = v["last_exit"]["detail"].as_str().unwrap().to_string();
    let left = leftovers(&name, role);
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(s);
    (name, detail)
}

#[test]
fn bad_bindings_leave_the_instrument_unstarted_and_nothing_behind() {
    let mut net = HostNet::default();
    let t = tag();

    let missing = format!("tnx{t}");
    let (_, d) = refused(
        "net-phy",
        "cap0",
        &format!("type = \"phy\"\ndevice = \"{missing}\"\n"),
    );
    assert!(d.contains(&missing) && d.contains("does not exist"), "{d}");

    let not_bridge = format!("tnb{t}");
    net.stub(&not_bridge);
    let (_, d) = refused(
        "net-bridge",
        "seg0",
        &format!("type = \"bridge\"\nbridge = \"{not_bridge}\"\ncreate = true\n"),
    );
    assert!(d.contains("is not a bridge"), "{d}");

    let absent = format!("tab{t}");
    let (_, d) = refused(
        "net-bridge",
        "seg0",
        &format!("type = \"bridge\"\nbridge = \"{absent}\"\n"),
    );
    assert!(
        d.contains("does not exist") && d.contains("create = true"),
        "{d}"
    );
    assert!(!ip_ok(&["link", "show", "dev", &absent]));

    // A gateway the kernel cannot reach fails half-way: the bridge, the
    // veth pair and the interface inside are all rolled back.
    let br = format!("tbr{t}");
    net.links.push(br.clone());
    let (_, d) = refused(
        "net-bridge",
        "seg0",
        &format!(
            "type = \"bridge\"\nbridge = \"{br}\"\ncreate = true\naddresses = [\"10.81.0.2/24\"]\nroutes = [{{ to = \"10.0.0.0/8\", via = \"192.0.2.1\" }}]\n"
        ),
    );
    assert!(d.contains("cannot add route"), "{d}");
    assert!(
        !ip_ok(&["link", "show", "dev", &br]),
        "bridge {br} left behind"
    );

    // The same interface bound twice is refused before anything runs.
    let dev = format!("tdup{t}");
    net.stub(&dev);
    let s = Sensor::new();
    s.import(&image("net-phy"));
    let bind = format!("[instrument.interfaces.cap0]\ntype = \"phy\"\ndevice = \"{dev}\"\n");
    s.write_sensor(&format!(
        "{}{}",
        instrument(&unique("one"), "net-phy", &bind),
        instrument(&unique("two"), "net-phy", &bind)
    ));
    let out = s.check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a double binding was accepted");
    assert!(
        err.contains(&format!("host interface \"{dev}\" is already")),
        "{err}"
    );
}
