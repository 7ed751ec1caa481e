//! The network section: the time to apply and to remove each binding type,
//! through the same library calls outpostd makes (preflight + apply, then
//! undo), into the namespace of a stand-in for a container's init
//! (`unshare --net sleep`). Baseline in the same run: the bridge binding's
//! steps done by iproute2 commands (`ip link add … veth`, `ip link set
//! master/netns`, `ip -n … addr/link`), what a shell script would do.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use outpost_platform::network;
use outpost_protocol::bindings::Binding;
use outpost_tests::hostnet::{HostNet, ip, must};

use super::percentile;

/// The stand-in for a container's init; killed on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binding(toml_text: &str) -> Binding {
    toml::from_str(toml_text).expect("binding parses")
}

pub fn run(rounds: usize) {
    println!(
        "\n== network (apply = preflight + apply; remove = undo; {rounds} rounds)\n{:<52} {:>9} {:>9}",
        "", "p50", "p99"
    );
    let t = format!("{:05x}", rand::random::<u32>() & 0xf_ffff);
    let mut net = HostNet::default();
    let sleeper = Sleeper(
        Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare"),
    );
    let pid = sleeper.0.id() as i32;
    // Until unshare has exec'd sleep in its new namespace.
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&own)
        || std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            != "sleep"
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (phy, parent, source, br) = (
        format!("bphy{t}"),
        format!("bpar{t}"),
        format!("bsrc{t}"),
        format!("bbr{t}"),
    );
    for v in [&phy, &parent, &source] {
        net.stub(v);
        ip(&["link", "set", v, "up"]);
    }
    ip(&["link", "add", &br, "type", "bridge"]);
    net.links.push(br.clone());
    ip(&["link", "set", &br, "up"]);

    let cases = [
        (
            "phy",
            "cap0",
            binding(&format!(
                "type = \"phy\"\ndevice = \"{phy}\"\naddresses = [\"10.90.0.2/24\"]\n"
            )),
        ),
        (
            "bridge",
            "seg0",
            binding(&format!(
                "type = \"bridge\"\nbridge = \"{br}\"\naddresses = [\"10.91.0.2/24\"]\n"
            )),
        ),
        (
            "macvlan",
            "up0",
            binding(&format!(
                "type = \"macvlan\"\nparent = \"{parent}\"\naddresses = [\"10.92.0.2/24\"]\n"
            )),
        ),
        (
            "mirror",
            "mon0",
            binding(&format!("type = \"mirror\"\nsource = \"{source}\"\n")),
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instrument = format!("bench-net-{t}");
    for (kind, role, b) in cases {
        let mut map = BTreeMap::new();
        map.insert(role.to_string(), b);
        let (mut apply, mut remove) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = Instant::now();
            let records = rt
                .block_on(async {
                    let recs = network::preflight(&instrument, &map, &[]).await?;
                    network::apply(pid, &recs).await?;
                    Ok::<_, network::NetError>(recs)
                })
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            apply.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            rt.block_on(async {
                for r in &records {
                    network::undo(Some(pid), r).await?;
                }
                Ok::<_, network::NetError>(())
            })
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            remove.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{:<52} {:>7.2}ms {:>7.2}ms",
            format!("{kind}: apply"),
            percentile(&apply, 50.0),
            percentile(&apply, 99.0)
        );
        println!(
            "{:<52} {:>7.2}ms {:>7.2}ms",
            format!("{kind}: remove"),
            percentile(&remove, 50.0),
            percentile(&remove, 99.0)
        );
    }

    // Baseline: the bridge binding by iproute2 commands.
    let ns_path = format!("/proc/{pid}/ns/net");
    let (mut apply, mut remove) = (Vec::new(), Vec::new());
    let (he, pe) = (format!("bbh{t}"), format!("bbp{t}"));
    for _ in 0..rounds {
        let t0 = Instant::now();
        ip(&["link", "add", &he, "type", "veth", "peer", "name", &pe]);
        ip(&["link", "set", &he, "master", &br, "up"]);
        ip(&["link", "set", &pe, "netns", &ns_path]);
        let nsenter = |args: &[&str]| {
            must(
                Command::new("nsenter")
                    .arg(format!("--net={ns_path}"))
                    .arg("ip")
                    .args(args),
            );
        };
        nsenter(&["link", "set", &pe, "name", "seg9"]);
        nsenter(&["link", "set", "seg9", "up"]);
        nsenter(&["addr", "add", "10.93.0.2/24", "dev", "seg9"]);
        apply.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        ip(&["link", "del", &he]);
        remove.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{:<52} {:>7.2}ms {:>7.2}ms",
        "baseline bridge by iproute2 commands: apply",
        percentile(&apply, 50.0),
        percentile(&apply, 99.0)
    );
    println!(
        "{:<52} {:>7.2}ms {:>7.2}ms",
        "baseline bridge by iproute2 commands: remove",
        percentile(&remove, 50.0),
        percentile(&remove, 99.0)
    );
}
