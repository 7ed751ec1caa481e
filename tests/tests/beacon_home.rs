//! `beacon-home` against what a hostile or unlucky peer does: a reply it
//! cannot route back (one packet used to end it, and every escape then
//! read as blocked), garbage on every channel, a flood of half-open
//! connections and oversized HTTP heads. Home keeps proving a real
//! probe's attempts throughout, and its stats line counts what happened.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_tests::hostnet::{HostNet, Spawned, ip, sysctl_in};
use outpost_tests::workspace_bin;
use serde_json::Value;

const KEY: &str = "5e1f0c0ffee0ddba11ca7b0a710ad5e15e1f0c0ffee0ddba11ca7b0a710ad5e1";

fn tag() -> String {
    format!("{:05x}", rand::random::<u32>() & 0xf_ffff)
}

/// A free port on 127.0.0.1 (TCP and UDP alike, as far as anyone knows).
fn free_port() -> u16 {
    let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    t.local_addr().unwrap().port()
}

/// One probe round; the attempts it printed.
fn probe_round(ns: Option<&str>, args: &[&str]) -> Vec<Value> {
    probe_round_env(ns, args, &[])
}

/// [`probe_round`] with extra environment variables.
fn probe_round_env(ns: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .arg(workspace_bin("escape-probe"));
            c
        }
        None => Command::new(workspace_bin("escape-probe")),
    };
    let out = cmd
        .args([
            "--key",
            KEY,
            "--once",
            "--interval",
            "3s",
            "--timeout",
            "1s",
        ])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run escape-probe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn outcomes(attempts: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = attempts
        .iter()
        .map(|a| {
            (
                a["channel"].as_str().unwrap_or_default().to_string(),
                a["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The last stats line home printed on stderr (in `log`).
fn last_stats(log: &std::path::Path) -> Value {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("stats").is_some())
        .unwrap_or(Value::Null)
}

fn wait_stats(log: &std::path::Path, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = last_stats(log);
        if pred(&s["stats"]) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no stats line with {what}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive(child: &mut std::process::Child) -> bool {
    child.try_wait().map(|s| s.is_none()).unwrap_or(false)
}

#[test]
fn a_reply_home_cannot_route_back_does_not_blind_it() {
    // seg 10.7x.0.2 ── router ── outside 10.8x.0.2 (home); the router
    // forwards, but outside has no route back to the segment at first: a
    // one-way leak.
    let mut net = HostNet::default();
    let t = tag();
    let (seg, router, outside) = (format!("hs{t}"), format!("hr{t}"), format!("ho{t}"));
    for n in [&seg, &router, &outside] {
        net.netns(n);
    }
    let b = 64 + (rand::random::<u8>() % 64);
    let seg_net = format!("10.{b}.0");
    let out_net = format!("10.{}.0", b + 64);
    net.veth_between(
        &seg,
        "s0",
        &format!("{seg_net}.2/24"),
        &router,
        "r0",
        &format!("{seg_net}.1/24"),
    );
    net.veth_between(
        &router,
        "r1",
        &format!("{out_net}.1/24"),
        &outside,
        "o0",
        &format!("{out_net}.2/24"),
    );
    ip(&[
        "-n",
        &seg,
        "route",
        "add",
        "default",
        "via",
        &format!("{seg_net}.1"),
    ]);
    sysctl_in(&router, "net.ipv4.ip_forward=1");

    let dir = tempfile::tempdir().unwrap();
    let err_log = dir.path().join("home.err");
    let home_addr = format!("{out_net}.2");
    let mut home = Spawned(
        Command::new("ip")
            .args(["netns", "exec", &outside])
            .arg(workspace_bin("beacon-home"))
            .args(["--key", KEY, "--stats-every", "1s"])
            .args(["--udp", &format!("{home_addr}:7001")])
            .args(["--tcp", &format!("{home_addr}:7000")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_log).unwrap())
            .spawn()
            .expect("start beacon-home"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let canaries = [
        "--udp".to_string(),
        format!("{home_addr}:7001"),
        "--tcp".to_string(),
        format!("{home_addr}:7000"),
    ];
    let args: Vec<&str> = canaries.iter().map(String::as_str).collect();

    // The hello arrives; home's reply has no way back.
    let first = probe_round(Some(&seg), &args);
    assert_eq!(
        outcomes(&first),
        vec![
            ("tcp".to_string(), "blocked".to_string()),
            ("udp".to_string(), "blocked".to_string())
        ],
        "{first:?}"
    );
    let st = wait_stats(&err_log, "a udp error", |s| {
        s["udp"]["errors"].as_u64() >= Some(1)
    });
    assert!(alive(&mut home.0), "home ended after one unroutable reply");
    assert!(st["stats"]["udp"]["hellos"].as_u64() >= Some(1), "{st}");

    // Once the way back exists, the same home proves both channels.
    ip(&[
        "-n",
        &outside,
        "route",
        "add",
        &format!("{seg_net}.0/24"),
        "via",
        &format!("{out_net}.1"),
    ]);
    let second = probe_round(Some(&seg), &args);
    assert_eq!(
        outcomes(&second),
        vec![
            ("tcp".to_string(), "escaped".to_string()),
            ("udp".to_string(), "escaped".to_string())
        ],
        "{second:?}"
    );
    wait_stats(&err_log, "proofs", |s| {
        s["udp"]["proofs"].as_u64() >= Some(1) && s["tcp"]["proofs"].as_u64() >= Some(1)
    });
}

#[test]
fn garbage_half_open_floods_and_oversized_heads_are_counted_and_never_stop_home() {
    let (tcp, udp, http, dns) = (free_port(), free_port(), free_port(), free_port());
    let https = free_port();
    let dir = tempfile::tempdir().unwrap();
    let err_log = dir.path().join("home.err");
    let at = |p: u16| format!("127.0.0.1:{p}");
    let (cert, cert_key) = (dir.path().join("home.crt"), dir.path().join("home.key"));
    let pin = outpost_tests::beacon::home_pin(&cert, &cert_key);
    let mut home = Spawned(
        Command::new(workspace_bin("beacon-home"))
            .args(["--key", KEY, "--stats-every", "1s", "--zone", "canary.test"])
            .args(["--https", &at(https)])
            .arg("--cert")
            .arg(&cert)
            .arg("--cert-key")
            .arg(&cert_key)
            .args([
                "--tcp",
                &at(tcp),
                "--udp",
                &at(udp),
                "--http",
                &at(http),
                "--dns",
                &at(dns),
            ])
            .args(["--max-connections", "256", "--max-per-source", "32"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_log).unwrap())
            .spawn()
            .expect("start beacon-home"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let probe_args = [
        "--tcp".to_string(),
        at(tcp),
        "--udp".to_string(),
        at(udp),
        "--http".to_string(),
        format!("http://{}/canary", at(http)),
        "--dns".to_string(),
        format!("canary.test@{}", at(dns)),
        "--https".to_string(),
        format!("https://{}/canary={pin}", at(https)),
    ];
    let args: Vec<&str> = probe_args.iter().map(String::as_str).collect();
    let all_escaped =
        |round: &[Value]| round.len() == 5 && round.iter().all(|a| a["outcome"] == "escaped");

    // Garbage on every channel.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 300)).map(|j| (j * 7 + i) as u8).collect();
        let _ = u.send_to(&junk, at(udp));
        let _ = u.send_to(&junk, at(dns));
    }
    for port in [tcp, http, https] {
        for _ in 0..20 {
            if let Ok(mut s) = TcpStream::connect(at(port)) {
                let _ = s.write_all(b"\x00\xffGARBAGE\r\n\r\n");
                // Until home has dealt with it: a flood from this address
                // is the other part of the test.
                let _ = s.set_read_timeout(Some(Duration::from_secs(6)));
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
    }
    // Oversized HTTP heads get a 431 and nothing else.
    for _ in 0..5 {
        let mut s = TcpStream::connect(at(http)).unwrap();
        let head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
        let _ = s.write_all(head.as_bytes());
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
    // 1000 half-open connections from another source address, held.
    let mut held = Vec::new();
    for _ in 0..1000 {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        if sock
            .connect_timeout(
                &at(tcp).parse::<SocketAddr>().unwrap().into(),
                Duration::from_secs(1),
            )
            .is_ok()
        {
            held.push(sock);
        }
    }
    // Throughout, a real probe is proven on every channel.
    let round = probe_round(None, &args);
    assert!(all_escaped(&round), "{round:#?}");
    assert!(alive(&mut home.0));
    let st = wait_stats(&err_log, "the flood counted", |s| {
        s["tcp"]["refused"].as_u64() >= Some(900)
            && s["udp"]["refused"].as_u64() >= Some(100)
            && s["dns"]["refused"].as_u64() >= Some(100)
            && s["http"]["refused"].as_u64() >= Some(20)
            && s["https"]["errors"].as_u64() >= Some(20)
    });
    eprintln!("home after the flood: {st}");
    drop(held);
    // And after it, too.
    std::thread::sleep(Duration::from_secs(1));
    let round = probe_round(None, &args);
    assert!(all_escaped(&round), "{round:#?}");
    assert!(alive(&mut home.0));
}

#[test]
fn a_stray_proxy_variable_does_not_stop_the_direct_http_path() {
    let http = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _home = Spawned(
        Command::new(workspace_bin("beacon-home"))
            .args(["--key", KEY, "--http", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("home.err")).unwrap())
            .spawn()
            .expect("start beacon-home"),
    );
    std::thread::sleep(Duration::from_millis(300));
    // Nothing listens on the "proxy": a probe that used it would see the
    // attempt refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let round = probe_round_env(
        None,
        &["--http", &format!("http://127.0.0.1:{http}/canary")],
        &[
            ("http_proxy", dead.as_str()),
            ("HTTP_PROXY", dead.as_str()),
            ("all_proxy", dead.as_str()),
        ],
    );
    assert_eq!(round.len(), 1, "{round:?}");
    assert_eq!(round[0]["outcome"], "escaped", "{round:?}");
}
