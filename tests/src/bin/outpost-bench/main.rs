//! `outpost-bench`: prints figures for the platform foundation, each next to
//! a baseline measured in the same run. It asserts nothing about time.
//!
//! - image import time (`outpostctl image import` into a running outpostd,
//!   whole command: hash, unpack, place; removed again between imports);
//! - instrument create+start to running, p50/p99 over N starts through a
//!   real outpostd, timed from its own log (start → running);
//! - baseline: raw `lxc-start -d` and `lxc-attach -- /bin/true` on the same
//!   image rootfs (an overlay, as outpostd uses);
//! - re-adopt time after `kill -9` of outpostd with 10 instruments;
//! - outpostd RSS with 0 and with 10 idle instruments.
//!
//! The bus section (`bus`):
//! - health round trip p50/p99 and CPU per check with 20 instruments
//!   checked at 1 Hz, against an exec-based check (`lxc-attach -- /bin/true`,
//!   what Docker/LXD health checks do);
//! - event publish throughput from inside a container through the proxy,
//!   against the same SDK publishing directly on the host;
//! - instrument start to first healthy reply, p50.
//!
//! The network section (`network`): apply and remove time of each
//! interface binding type, against iproute2 commands (see `net.rs`).
//!
//! The beacon section (`beacon`): probe-line parsing, one attempt per
//! channel against beacon-home, and the probe's memory (see `beacon.rs`).
//!
//! The security section (`security`): start and re-adoption time with
//! user namespaces against privileged containers, and persistent storage
//! throughput against a plain host directory (see `security.rs`).
//!
//! The downloader section (`downloader`): verified download throughput
//! against curl + sha256sum (see `downloader.rs`).
//!
//! The fleet section (`fleet`): a sensor simulator against a real fleet
//! (see `fleet.rs`).
//!
//! Usage: `outpost-bench [foundation] [bus] [network] [beacon] [security] [api] [fleet] [downloader] [--starts N] [--instruments N] [--sensors N] [--enrolled N]`
//! (run by `./run bench`; every section by default).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_tests::{Sensor, example_image, unique};

mod api;
mod beacon;
mod bus;
mod downloader;
mod fleet;
mod net;
mod security;

pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[idx]
}

pub(crate) fn row(what: &str, v: &[f64], unit: &str) {
    println!(
        "{what:<52} {:>9.1} {:>9.1} {unit:<3} n={}",
        percentile(v, 50.0),
        percentile(v, 99.0),
        v.len()
    );
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn instrument(name: &str) -> String {
    format!("[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n")
}

/// Milliseconds between the first log line of each instrument holding
/// `from` and the first holding `to`, from outpostd's own timestamps.
pub(crate) fn log_latencies(log: &str, names: &[String], from: &str, to: &str) -> Vec<f64> {
    let ts = |line: &str| -> Option<f64> {
        // 2026-11-24T11:28:02.612510Z
        let t = line.split_whitespace().next()?;
        let time = t.split('T').nth(1)?.trim_end_matches('Z');
        let mut it = time.split(':');
        let h: f64 = it.next()?.parse().ok()?;
        let m: f64 = it.next()?.parse().ok()?;
        let s: f64 = it.next()?.parse().ok()?;
        Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
    };
    let mut out = Vec::new();
    for n in names {
        let tag = format!("instrument=\"{n}\"");
        let start = log
            .lines()
            .find(|l| l.contains(&tag) && l.contains(from))
            .and_then(ts);
        let run = log
            .lines()
            .find(|l| l.contains(&tag) && l.contains(to))
            .and_then(ts);
        if let (Some(a), Some(b)) = (start, run) {
            out.push(b - a);
        }
    }
    out
}

/// Adds `n` instruments to a running sensor one at a time, each started
/// before the next; returns their names and create+start -> running
/// times from outpostd's log.
pub(crate) fn start_one_by_one(s: &Sensor, n: usize, prefix: &str) -> (Vec<String>, Vec<f64>) {
    let mut names = Vec::new();
    let mut body = String::new();
    for _ in 0..n {
        let name = unique(prefix);
        body.push_str(&instrument(&name));
        s.write_sensor(&body);
        s.reload();
        s.wait_running(&name);
        names.push(name);
    }
    let lat = log_latencies(
        &s.log_text(),
        &names,
        "state=\"starting\"",
        "state=\"running\"",
    );
    (names, lat)
}

/// Takes every instrument but the first `n` of `names` out of the desired
/// state and waits until outpostd removed them; returns the ones kept.
pub(crate) fn keep_first(s: &Sensor, names: &[String], n: usize) -> Vec<String> {
    let keep: Vec<String> = names.iter().take(n).cloned().collect();
    s.write_sensor(&keep.iter().map(|n| instrument(n)).collect::<String>());
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.status()["instruments"].as_array().map_or(0, |a| a.len()) != keep.len() {
        assert!(Instant::now() < deadline, "extra instruments not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    keep
}

pub(crate) fn rss_kib(pid: i32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub(crate) fn lxc(args: &[&str], lxcpath: &Path) -> Duration {
    let t0 = Instant::now();
    let st = Command::new(args[0])
        .arg("-P")
        .arg(lxcpath)
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("lxc command");
    assert!(st.success(), "{args:?} failed");
    t0.elapsed()
}

fn main() {
    let mut starts = 20usize;
    let mut idle = 10usize;
    let (mut fleet_sensors, mut fleet_enrolled) = (10_000usize, 2_000usize);
    let mut sections = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "foundation" | "bus" | "network" | "beacon" | "security" | "api" | "fleet"
            | "downloader" => sections.push(a),
            "--sensors" => {
                fleet_sensors = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--sensors N")
            }
            "--enrolled" => {
                fleet_enrolled = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--enrolled N")
            }
            "--starts" => {
                starts = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--starts N")
            }
            "--instruments" => {
                idle = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--instruments N")
            }
            _ => {
                eprintln!(
                    "usage: outpost-bench [foundation] [bus] [network] [beacon] [security] [api] [fleet] [downloader] [--starts N] [--instruments N] [--sensors N] [--enrolled N]"
                );
                std::process::exit(2);
            }
        }
    }
    if sections.is_empty() {
        sections = vec![
            "foundation".into(),
            "bus".into(),
            "network".into(),
            "beacon".into(),
            "security".into(),
            "api".into(),
            "fleet".into(),
            "downloader".into(),
        ];
    }
    let img = example_image();
    let size = fs::metadata(&img.archive).map(|m| m.len()).unwrap_or(0);
    println!(
        "outpost-bench: {} cores, image {} ({:.1} MiB)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        img.archive.display(),
        size as f64 / 1048576.0
    );
    if sections.iter().any(|s| s == "foundation") {
        foundation(&img, starts, idle);
    }
    if sections.iter().any(|s| s == "bus") {
        bus::run(&img, starts);
    }
    if sections.iter().any(|s| s == "network") {
        net::run(starts);
    }
    if sections.iter().any(|s| s == "beacon") {
        beacon::run(starts * 5);
    }
    if sections.iter().any(|s| s == "security") {
        security::run(&img, starts, idle);
    }
    if sections.iter().any(|s| s == "api") {
        api::run(&img, starts);
    }
    if sections.iter().any(|s| s == "downloader") {
        downloader::run(5);
        downloader::update_latency(5);
    }
    if sections.iter().any(|s| s == "fleet") {
        fleet::run(fleet_sensors, fleet_enrolled.min(fleet_sensors));
    }
}

fn foundation(img: &outpost_tests::ImageFile, starts: usize, idle: usize) {
    let img = img.clone();
    println!("\n== foundation\n{:<52} {:>9} {:>9}", "", "p50", "p99");

    // Image import, through outpostctl into a running outpostd.
    let mut import = Vec::new();
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    for _ in 0..5 {
        let t0 = Instant::now();
        s.import(&img);
        import.push(ms(t0.elapsed()));
        let out = s.ctl(&["image", "rm", "example", "0.1.0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(s);
    row(
        "image import (outpostctl: verify + unpack, whole command)",
        &import,
        "ms",
    );

    // Create+start through outpostd.
    let mut s = Sensor::new();
    s.import(&img);
    s.write_sensor("");
    s.start(&[]);
    let (rss0, _) = rss_kib(s.daemon_pid().unwrap());
    let (names, lat) = start_one_by_one(&s, starts, "bench");
    row(
        "instrument create+start -> running (outpostd log)",
        &lat,
        "ms",
    );

    // Baseline on the same rootfs.
    let lower = s.state.join("images/example/0.1.0/rootfs");
    let base = tempfile::tempdir().unwrap();
    let lxcpath = base.path().join("lxc");
    fs::create_dir_all(&lxcpath).unwrap();
    let (mut b_start, mut b_attach, mut b_both) = (Vec::new(), Vec::new(), Vec::new());
    let mut base_names = Vec::new();
    for _ in 0..starts {
        let n = unique("raw");
        let dir = lxcpath.join(&n);
        fs::create_dir_all(dir.join("upper")).unwrap();
        fs::write(
            dir.join("config"),
            format!(
                "lxc.uts.name = {n}\nlxc.rootfs.path = overlay:{}:{}\nlxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\nlxc.mount.auto = proc:mixed sys:ro\nlxc.autodev = 1\nlxc.init.cmd = /bin/sleep 3600\n",
                lower.display(),
                dir.join("upper").display()
            ),
        )
        .unwrap();
        let a = lxc(&["lxc-start", "-n", &n, "-d"], &lxcpath);
        let b = lxc(&["lxc-attach", "-n", &n, "--", "/bin/true"], &lxcpath);
        b_start.push(ms(a));
        b_attach.push(ms(b));
        b_both.push(ms(a + b));
        base_names.push(n);
    }
    // The same, with the config outpostd generates (seccomp, cgroup
    // limits, device list, mounts, console log), to separate the cost of
    // the hardening from outpostd's own.
    let template = fs::read_to_string(s.lxcpath().join(&names[0]).join("config")).unwrap();
    let mut b_full = Vec::new();
    for _ in 0..starts {
        let n = unique("rawcfg");
        let dir = lxcpath.join(&n);
        fs::create_dir_all(dir.join("upper")).unwrap();
        // The tree outpostd built for the first instrument serves as the
        // root of these (liblxc only bind-mounts it).
        let cfg = template
            .replace(
                &format!("lxc.uts.name = {}", names[0]),
                &format!("lxc.uts.name = {n}"),
            )
            .replace("/console.log\n", &format!("/console-{n}.log\n"))
            .replace("/lxc.log\n", &format!("/lxc-{n}.log\n"));
        fs::write(dir.join("config"), cfg).unwrap();
        let a = lxc(
            &[
                "lxc-start",
                "-n",
                &n,
                "-d",
                "--",
                "/.outpost/init",
                "--",
                "/usr/bin/example-instrument",
            ],
            &lxcpath,
        );
        b_full.push(ms(a));
        base_names.push(n);
    }
    row(
        "baseline: lxc-start -d (same rootfs, overlay)",
        &b_start,
        "ms",
    );
    row(
        "baseline: lxc-start -d with outpostd's config",
        &b_full,
        "ms",
    );
    row("baseline: lxc-attach -- /bin/true", &b_attach, "ms");
    row(
        "baseline: lxc-start -d + lxc-attach -- /bin/true",
        &b_both,
        "ms",
    );
    for n in &base_names {
        let _ = Command::new("lxc-stop")
            .arg("-P")
            .arg(&lxcpath)
            .args(["-n", n, "-k"])
            .status();
        outpost_platform::runtime::lxc::remove_cgroups(n);
    }
    println!(
        "{:<52} {:>9.2}x",
        "ratio: outpostd start p50 / plain lxc-start p50",
        percentile(&lat, 50.0) / percentile(&b_start, 50.0)
    );
    println!(
        "{:<52} {:>9.2}x",
        "ratio: outpostd start p50 / lxc-start (its config) p50",
        percentile(&lat, 50.0) / percentile(&b_full, 50.0)
    );

    // Keep `idle` instruments, then measure RSS and re-adoption.
    let keep = keep_first(&s, &names, idle);
    std::thread::sleep(Duration::from_secs(3));
    let (rss, hwm) = rss_kib(s.daemon_pid().unwrap());

    let mut adopt_wall = Vec::new();
    let mut adopt_self = Vec::new();
    for _ in 0..5 {
        s.kill9();
        let before = s.log_text().matches("outpostd ready").count();
        let t0 = Instant::now();
        s.start(&[]);
        adopt_wall.push(ms(t0.elapsed()));
        let log = s.log_text();
        let line = log
            .lines()
            .filter(|l| l.contains("outpostd ready"))
            .nth(before)
            .unwrap_or("");
        if let Some(v) = line
            .split("elapsed_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            adopt_self.push(v);
        }
        for n in &keep {
            assert_eq!(s.instrument(n).unwrap()["state"], "running");
        }
    }
    row(
        &format!("re-adopt {idle} instruments after kill -9 (spawn -> ready)"),
        &adopt_wall,
        "ms",
    );
    row("  same, outpostd's own start-up time", &adopt_self, "ms");
    println!(
        "{:<52} {:>9} KiB",
        "outpostd RSS, no instruments (baseline)", rss0
    );
    println!(
        "{:<52} {:>9} KiB (peak {hwm} KiB)",
        format!("outpostd RSS, {idle} idle instruments"),
        rss
    );
    s.write_sensor("");
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.status()["instruments"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
