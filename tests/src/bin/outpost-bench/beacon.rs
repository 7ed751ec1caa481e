//! The beacon section: what the beacon costs per attempt and per line.
//!
//! - `parse_line` throughput on probe lines, against decoding the same
//!   lines into an untyped `serde_json::Value` (the floor for any JSON
//!   line parser);
//! - one attempt per channel against a real `beacon-home` on loopback,
//!   p50/p99 in microseconds, against a bare TCP connect to the same home (what any
//!   reachability check pays);
//! - `escape-probe`'s resident memory after some rounds at 200 ms.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_beacon::config::{DnsTarget, ProbeConfig};
use outpost_protocol::beacon::{Channel, parse_line};
use outpost_tests::hostnet::Spawned;
use outpost_tests::workspace_bin;

use crate::{row, rss_kib};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(rounds: usize) {
    println!("\n== beacon ==");
    parse();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let at = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let _home = Spawned(
        Command::new(workspace_bin("beacon-home"))
            .args([
                "--key",
                KEY,
                "--tcp",
                &at(0),
                "--udp",
                &at(1),
                "--http",
                &at(2),
            ])
            .args(["--dns", &at(3), "--zone", "canary.bench"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start beacon-home"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(at(0)).is_err() {
        assert!(Instant::now() < deadline, "beacon-home did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = ProbeConfig {
        interval: Some("1s".into()),
        key: Some(KEY.into()),
        tcp: vec![at(0)],
        udp: vec![at(1)],
        http: vec![format!("http://{}/canary", at(2))],
        dns: vec![DnsTarget {
            name: "canary.bench".into(),
            resolvers: vec![at(3)],
        }],
        ..Default::default()
    };
    let plan = Arc::new(config.plan().expect("bench config"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut per: std::collections::BTreeMap<Channel, Vec<f64>> = Default::default();
    for _ in 0..rounds {
        rt.block_on(outpost_beacon::probe::round(&plan, |a| {
            assert!(a.is_proven_escape(), "not proven on loopback: {a:?}");
            per.entry(a.channel)
                .or_default()
                .push(a.latency_ms * 1000.0);
        }));
    }
    for (c, v) in &per {
        row(&format!("attempt {c} to beacon-home, proven"), v, "us");
    }
    let mut connect = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        drop(TcpStream::connect(at(0)).unwrap());
        connect.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    row(
        "baseline: bare TCP connect to the same home",
        &connect,
        "us",
    );

    let mut probe = Spawned(
        Command::new(workspace_bin("escape-probe"))
            .args([
                "--key",
                KEY,
                "--interval",
                "200ms",
                "--tcp",
                &at(0),
                "--udp",
                &at(1),
            ])
            .args(["--http", &format!("http://{}/canary", at(2))])
            .args(["--dns", &format!("canary.bench@{}", at(3))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start escape-probe"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (rss, hwm) = rss_kib(probe.0.id() as i32);
    println!(
        "{:<52} {:>9} KiB (peak {hwm} KiB, after 15 rounds of 4 attempts)",
        "escape-probe resident memory", rss
    );
    let _ = probe.0.kill();
}

fn parse() {
    let lines: Vec<String> = (0..100_000)
        .map(|i| {
            let (outcome, level) = if i % 10 == 0 { ("escaped", "proven") } else { ("blocked", "none") };
            format!(
                r#"{{"ts":"2026-11-26T10:00:{:02}.{:03}Z","channel":"tcp","target":"203.0.113.{}:7000","outcome":"{outcome}","latency_ms":{}.5,"evidence":{{"level":"{level}","detail":"no answer within the 2s timeout"}}}}"#,
                i % 60,
                i % 1000,
                i % 250,
                i % 900
            )
        })
        .collect();
    let t0 = Instant::now();
    for l in &lines {
        parse_line(l).expect("a valid line");
    }
    let typed = t0.elapsed();
    let t0 = Instant::now();
    for l in &lines {
        let _: serde_json::Value = serde_json::from_str(l).unwrap();
    }
    let untyped = t0.elapsed();
    let rate = |d: Duration| lines.len() as f64 / d.as_secs_f64() / 1000.0;
    println!(
        "{:<52} {:>9.0} k lines/s",
        "parse_line (checked attempts)",
        rate(typed)
    );
    println!(
        "{:<52} {:>9.0} k lines/s",
        "baseline: serde_json::Value, unchecked",
        rate(untyped)
    );
}
