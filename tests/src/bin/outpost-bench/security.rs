//! The security section: what running instruments unprivileged costs.
//!
//! - create+start -> running and re-adoption after `kill -9`, with each
//!   instrument in its own user namespace (idmapped image, tmpfs scratch,
//!   ext4 storage on a loop device) against the same daemon starting them
//!   privileged, as before (`--privileged-containers-for-benchmark`, a
//!   hidden flag for exactly this comparison);
//! - persistent storage write throughput (24 MiB and an fsync, by the
//!   in-container probe) against the same binary writing into a plain
//!   directory on the host, on the filesystem the state directory is on.

use std::process::Command;
use std::time::Instant;

use outpost_tests::{ImageFile, Sensor, unique};

use crate::{instrument, keep_first, ms, percentile, row, start_one_by_one};

/// Starts `starts` instruments one after another, then re-adopts the
/// first `idle` of them after `kill -9` five times; returns (start
/// latencies, re-adoption times), both in ms.
fn starts_and_adoption(
    img: &ImageFile,
    privileged: bool,
    starts: usize,
    idle: usize,
) -> (Vec<f64>, Vec<f64>) {
    let flags: &[&str] = if privileged {
        &["--privileged-containers-for-benchmark"]
    } else {
        &[]
    };
    let mut s = Sensor::new();
    s.import(img);
    s.write_sensor("");
    s.start(flags);
    let (names, lat) = start_one_by_one(&s, starts, "sec");
    let keep = keep_first(&s, &names, idle);
    let mut adopt = Vec::new();
    for _ in 0..5 {
        s.kill9();
        let t0 = Instant::now();
        s.start(flags);
        adopt.push(ms(t0.elapsed()));
        for n in &keep {
            assert_eq!(s.instrument(n).unwrap()["state"], "running");
        }
    }
    (lat, adopt)
}

/// MB/s the probe's `write-rate` reports.
fn rate(out: &std::process::Output) -> Option<f64> {
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    v["mb_per_s"].as_f64()
}

pub fn run(img: &ImageFile, starts: usize, idle: usize) {
    println!(
        "\n== security (user namespaces, bounded storage)\n{:<52} {:>9} {:>9}",
        "", "p50", "p99"
    );
    let (u_lat, u_adopt) = starts_and_adoption(img, false, starts, idle);
    let (p_lat, p_adopt) = starts_and_adoption(img, true, starts, idle);
    row("create+start -> running, own user namespace", &u_lat, "ms");
    row("  baseline: privileged (no user namespace)", &p_lat, "ms");
    row(
        &format!("re-adopt {idle} after kill -9, user namespaces"),
        &u_adopt,
        "ms",
    );
    row("  baseline: privileged", &p_adopt, "ms");
    println!(
        "{:<52} {:>9.2}x",
        "ratio: start p50, user namespace / privileged",
        percentile(&u_lat, 50.0) / percentile(&p_lat, 50.0)
    );

    // Storage throughput.
    let mut s = Sensor::new();
    s.import(img);
    let n = unique("dd");
    s.write_sensor(&instrument(&n));
    s.start(&[]);
    s.wait_running(&n);
    // The same static probe binary writes inside and on the host.
    let probe = s
        .state
        .join("images/example/0.1.0/rootfs/usr/bin/outpost-probe");
    let host_dir = s.dir.path().join("plain");
    std::fs::create_dir_all(&host_dir).unwrap();
    let (mut inside, mut host) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let out = s.attach(
            &n,
            &[
                "/usr/bin/outpost-probe",
                "write-rate",
                "/var/lib/instrument",
                "24",
            ],
        );
        inside.extend(rate(&out));
        let out = Command::new(&probe)
            .args(["write-rate", host_dir.to_str().unwrap(), "24"])
            .output()
            .expect("the probe on the host");
        host.extend(rate(&out));
    }
    row(
        "persistent storage write 24 MiB + fsync (ext4 image)",
        &inside,
        "MB/s",
    );
    row("  baseline: plain host directory, same disk", &host, "MB/s");
}
