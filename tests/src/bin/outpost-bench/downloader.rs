//! The downloader section:
//! - verified download throughput of a 200 MiB file over a namespace link
//!   (the downloader's own fetch, size cap, hashing, atomic store), against
//!   `curl` + `sha256sum` on the same file in the same run;
//! - the time from a signed probe release to the beacon running it, with a
//!   5 s check interval (downloader, platform, beacon), against the same
//!   beacon taking a binary dropped at its watched path.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_downloader::config::{Config, Resource};
use outpost_downloader::fetch::Client;
use outpost_downloader::store::Store;
use outpost_downloader::{Outcome, check};
use outpost_tests::hostnet::{HostNet, Spawned};

use crate::ms;

const SIZE: usize = 200 << 20;

pub fn run(rounds: usize) {
    println!(
        "\n== downloader (a {} MiB file over a veth into a namespace)",
        SIZE >> 20
    );
    let mut net = HostNet::default();
    let t = format!("{:05x}", rand::random::<u32>() & 0xf_ffff);
    let ns = format!("bdl{t}");
    net.netns(&ns);
    net.veth_into(&format!("bdh{t}"), "eth0", &ns, "10.93.0.2/24");
    outpost_tests::hostnet::ip(&["addr", "add", "10.93.0.1/24", "dev", &format!("bdh{t}")]);

    let www = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(www.path().join("big"), &body).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    drop(body);
    let _web = Spawned(
        Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8080"])
            .args(["--bind", "10.93.0.2", "--directory"])
            .arg(www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    );
    let url = "http://10.93.0.2:8080/big";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-r", "0-0", url])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "the web server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..rounds {
        // The downloader: fetch, cap, hash, store, verify.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let r: Resource = serde_json::from_value(serde_json::json!({
            "name": "big", "url": url, "verify": {"sha256": sha}, "max-size": "256MiB",
        }))
        .unwrap();
        let client = Client::new(&Config::default(), &r).unwrap();
        let t0 = Instant::now();
        let out = rt.block_on(check(&r, &client, &store, std::time::SystemTime::now()));
        let took = t0.elapsed();
        assert!(matches!(out, Outcome::Fetched { .. }), "{out:?}");
        ours.push(took);

        // curl + sha256sum, to a file on the same disk.
        let file = dir.path().join("curl");
        let t0 = Instant::now();
        let ok = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&file)
            .arg(url)
            .status()
            .is_ok_and(|s| s.success());
        let sum = Command::new("sha256sum").arg(&file).output().unwrap();
        let took = t0.elapsed();
        assert!(ok && String::from_utf8_lossy(&sum.stdout).starts_with(&sha));
        base.push(took);
    }
    let mibs = |d: &Duration| (SIZE >> 20) as f64 / d.as_secs_f64();
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, b) = (med(&mut ours), med(&mut base));
    println!("{:<52} {:>9} {:>9}", "", "MiB/s", "ms");
    println!(
        "{:<52} {:>9.0} {:>9.0}",
        "downloader: fetch + cap + sha256 + atomic store",
        mibs(&o),
        ms(o)
    );
    println!(
        "{:<52} {:>9.0} {:>9.0}",
        "curl + sha256sum (baseline)",
        mibs(&b),
        ms(b)
    );
    println!(
        "{:<52} {:>8.0}%",
        "downloader / baseline",
        100.0 * b.as_secs_f64() / o.as_secs_f64()
    );
}

/// From a release to the beacon running it, against a dropped binary.
pub fn update_latency(rounds: usize) {
    use outpost_tests::artifacts::{World, probe, sha};
    println!("\n== probe updates (downloader checks every 5 s; the beacon's probe every 1 s)");
    let World {
        mut rel,
        s,
        b,
        _web,
        _net,
        ..
    } = World::start_with(&[], "", "5s");
    let base = probe(&s, &b, "");
    let running = |bin: &[u8]| {
        let want = sha(bin);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let i = s.instrument(&b).unwrap_or_default();
            let p = &i["health_details"]["probe"];
            if p["sha256"] == want.as_str() && p["trial"] == false {
                return;
            }
            assert!(Instant::now() < deadline, "never ran the new probe: {i:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (mut released, mut dropped) = (Vec::new(), Vec::new());
    let watched = s.persist(&b).join("probe/escape-probe");
    // The baseline first: once an artifact came, the beacon watches the
    // artifact's path instead.
    for i in 0..rounds {
        let mut bin = base.clone();
        bin.extend_from_slice(format!("\0bench drop {i}").as_bytes());
        let tmp = watched.with_extension("new");
        std::fs::create_dir_all(watched.parent().unwrap()).unwrap();
        let t0 = Instant::now();
        std::fs::write(&tmp, &bin).unwrap();
        std::fs::rename(&tmp, &watched).unwrap();
        running(&bin);
        dropped.push(ms(t0.elapsed()));
    }
    for i in 0..rounds {
        let mut bin = base.clone();
        bin.extend_from_slice(format!("\0bench release {i}").as_bytes());
        let t0 = Instant::now();
        rel.publish(&format!("2.{i}.0"), &bin, None, |_| {});
        running(&bin);
        released.push(ms(t0.elapsed()));
    }
    println!("{:<52} {:>9} {:>9}", "", "p50", "p99");
    crate::row("signed release → the beacon runs it", &released, "ms");
    crate::row(
        "binary dropped at the watched path (baseline)",
        &dropped,
        "ms",
    );
}
