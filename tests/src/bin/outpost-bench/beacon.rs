//! The beacon section: what the beacon costs per attempt and per line.
//!
//! - `parse_line` throughput on probe lines, against decoding the same
//!   lines into an untyped `serde_json::Value` (the floor for any JSON
//!   line parser);
//! - one attempt per channel against a real `beacon-home` on loopback
//!   (HTTPS with its pinned certificate, ICMP and ICMPv6 echo, and the
//!   HTTP, HTTPS and TCP canaries again through a real tinyproxy),
//!   p50/p99 in microseconds, against a bare TCP connect to the same home
//!   (what any reachability check pays);
//! - `escape-probe`'s resident memory after some rounds at 200 ms.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_beacon::config::{DnsTarget, HttpsCanary, ProbeConfig};
use outpost_protocol::beacon::{Channel, Outcome, parse_line};
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
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let at = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_key) = (dir.path().join("home.crt"), dir.path().join("home.key"));
    let pin = outpost_tests::beacon::home_pin(&cert, &cert_key);
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
                "--https",
                &at(4),
            ])
            .arg("--cert")
            .arg(&cert)
            .arg("--cert-key")
            .arg(&cert_key)
            .args(["--dns", &at(3), "--zone", "canary.bench"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start beacon-home"),
    );
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {}\nListen 127.0.0.1\nAllow 127.0.0.1\n\
             MaxClients 64\nDisableViaHeader Yes\nLogLevel Warning\n",
            ports[5]
        ),
    )
    .unwrap();
    let _proxy = Spawned(
        Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy (Debian package tinyproxy)"),
    );
    for i in [0, 4, 5] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(at(i)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen", at(i));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let config = ProbeConfig {
        interval: Some("1s".into()),
        key: Some(KEY.into()),
        tcp: vec![at(0)],
        udp: vec![at(1)],
        http: vec![format!("http://{}/canary", at(2))],
        https: vec![HttpsCanary {
            url: format!("https://{}/canary", at(4)),
            pin,
        }],
        icmp: vec!["127.0.0.1".into(), "::1".into()],
        proxies: vec![format!("http://{}", at(5))],
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
    let mut per: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..rounds {
        rt.block_on(outpost_beacon::probe::round(&plan, |a| {
            let what = match a.channel {
                Channel::Icmp if a.target.contains(':') => "icmp (v6), reachable".to_string(),
                Channel::Icmp => "icmp (v4), reachable".to_string(),
                Channel::HttpProxy if a.target.starts_with("https:") => {
                    "http-proxy (https canary), proven".to_string()
                }
                Channel::HttpProxy => "http-proxy (http canary), proven".to_string(),
                c => format!("{c}, proven"),
            };
            assert!(
                a.is_proven_escape()
                    || (a.channel == Channel::Icmp && a.outcome == Outcome::Escaped),
                "no escape on loopback: {a:?}"
            );
            per.entry(what).or_default().push(a.latency_ms * 1000.0);
        }));
    }
    for (what, v) in &per {
        row(&format!("attempt {what}"), v, "us");
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
