//! The beacon end to end, in namespaces this test makes: a segment bridge
//! (made by outpostd) with the beacon on it, a router namespace between
//! the segment and an "outside" namespace where `beacon-home` runs. The
//! router forwards only while the test opens a leak.
//!
//! ```text
//!  beacon ── seg0 10.79.0.2 ─┐
//!                         bridge ── router 10.79.0.1 | 10.80.0.1 ── outside 10.80.0.2 (home)
//!          impostor 10.79.0.1:7000 (home with another key), nothing on 10.79.0.1:7009
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outpost_tests::beacon::{details, escapes, events_of, health, home, target, wait_until};
use outpost_tests::hostnet::{HostNet, ip, must, sysctl_in};
use outpost_tests::{Sensor, children, entrypoint_pid, image, unique, workspace_bin};
use serde_json::Value;

const KEY: &str = "5e1f0c0ffee0ddba11ca7b0a710ad5e15e1f0c0ffee0ddba11ca7b0a710ad5e1";
const OTHER_KEY: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

fn tag() -> String {
    format!("{:05x}", rand::random::<u32>() & 0xf_ffff)
}

/// The host pid of the running escape-probe: the beacon's child.
fn probe_pid(init: i32) -> Option<i32> {
    let beacon = entrypoint_pid(init);
    children(beacon).into_iter().find(|p| {
        fs::read_to_string(format!("/proc/{p}/cmdline"))
            .map(|c| c.contains("--config"))
            .unwrap_or(false)
    })
}

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
}

/// Writes a file the way an operator should: to a temporary name, then a
/// rename, so the beacon never reads half of it.
fn drop_binary(path: &std::path::Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("new");
    fs::write(&tmp, bytes).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn beacon_stays_quiet_while_sealed_alerts_on_a_leak_and_keeps_its_probe_alive() {
    let mut net = HostNet::default();
    let t = tag();
    let br = format!("tbs{t}");
    let router = format!("trt{t}");
    let outside = format!("tou{t}");
    net.links.push(br.clone());
    net.netns(&router);
    net.netns(&outside);
    net.veth_between(
        &router,
        "eth1",
        "10.80.0.1/24",
        &outside,
        "eth0",
        "10.80.0.2/24",
    );
    sysctl_in(&router, "net.ipv4.ip_forward=0");

    let logs = tempfile::tempdir().unwrap();
    let home_log = logs.path().join("home.jsonl");
    let _home = home(
        &outside,
        KEY,
        &[
            "--tcp",
            "10.80.0.2:7000",
            "--udp",
            "10.80.0.2:7001",
            "--http",
            "10.80.0.2:8080",
            "--dns",
            "10.80.0.2:5353",
            "--zone",
            "canary.test",
        ],
        &home_log,
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
addresses = ["10.79.0.2/24"]
routes = [{{ to = "0.0.0.0/0", via = "10.79.0.1" }}]

[instrument.config]
window = "3s"
summary = "4s"
update_window = "4s"

[instrument.config.probe]
interval = "1s"
timeout = "800ms"
key = "{KEY}"
tcp = ["10.80.0.2:7000", "10.79.0.1:7000", "10.79.0.1:7009"]
udp = ["10.80.0.2:7001"]
icmp = ["10.80.0.2"]
http = ["http://10.80.0.2:8080/canary"]
dns = [{{ name = "canary.test", resolvers = ["10.80.0.2:5353"] }}]
"#
    ));
    s.start(&[]);
    let init = s.wait_running(&name);
    // The router's side of the segment, once outpostd made the bridge; an
    // impostor (home with another key) on the router.
    let rport = format!("trs{t}");
    ip(&[
        "link", "add", &rport, "type", "veth", "peer", "name", "eth0", "netns", &router,
    ]);
    net.links.push(rport.clone());
    ip(&["-n", &router, "addr", "add", "10.79.0.1/24", "dev", "eth0"]);
    ip(&["-n", &router, "link", "set", "eth0", "up"]);
    ip(&["link", "set", &rport, "master", &br, "up"]);
    let _impostor = home(
        &router,
        OTHER_KEY,
        &["--tcp", "10.79.0.1:7000"],
        &logs.path().join("impostor.jsonl"),
    );

    // Sealed: several intervals, every attempt blocked, health ok.
    s.wait_for(&name, "healthy", Duration::from_secs(20), |i| {
        i["health"] == "ok"
    });
    std::thread::sleep(Duration::from_secs(4));
    let d = details(&s, &name);
    assert_eq!(health(&s, &name), "ok", "{d:#}");
    assert_eq!(d["counts"]["escaped"], 0, "{d:#}");
    assert!(d["counts"]["blocked"].as_u64().unwrap() >= 8, "{d:#}");
    assert!(escapes(&s, &name).is_empty(), "escape alerts while sealed");
    let impostor = target(&d, "tcp 10.79.0.1:7000");
    assert_eq!(impostor["outcome"], "blocked", "{d:#}");
    assert!(
        impostor["evidence"]["detail"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{impostor}"
    );
    let rst = target(&d, "tcp 10.79.0.1:7009");
    assert!(
        rst["evidence"]["detail"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{rst}"
    );
    assert!(
        fs::read_to_string(&home_log).unwrap_or_default().is_empty(),
        "home heard from the segment while sealed"
    );

    // Open a leak: the router forwards and the outside routes back.
    ip(&[
        "-n",
        &outside,
        "route",
        "add",
        "10.79.0.0/24",
        "via",
        "10.80.0.1",
    ]);
    sysctl_in(&router, "net.ipv4.ip_forward=1");
    let opened = Instant::now();
    let alert = wait_until("an escape alert", Duration::from_secs(1 + 6), || {
        escapes(&s, &name)
            .into_iter()
            .find(|e| e["channel"] == "tcp" && e["target"] == "10.80.0.2:7000")
    });
    eprintln!(
        "first tcp escape alert {:?} after the leak opened",
        opened.elapsed()
    );
    assert_eq!(alert["evidence"]["level"], "proven", "{alert}");
    // Every channel escapes; ICMP only at the weaker level.
    let all = wait_until("alerts on every channel", Duration::from_secs(8), || {
        let e = escapes(&s, &name);
        let has = |c: &str| e.iter().any(|a| a["channel"] == c);
        ["tcp", "udp", "dns", "http", "icmp"]
            .iter()
            .all(|c| has(c))
            .then_some(e)
    });
    let icmp = all.iter().find(|a| a["channel"] == "icmp").unwrap();
    assert_eq!(icmp["evidence"]["level"], "reachable", "{icmp}");
    for a in all.iter().filter(|a| a["channel"] != "icmp") {
        assert_eq!(a["evidence"]["level"], "proven", "{a}");
    }
    assert!(
        !all.iter().any(|a| a["target"] == "10.79.0.1:7000"),
        "the impostor counted as an escape"
    );
    let records = fs::read_to_string(&home_log).unwrap();
    assert!(
        records.contains("\"source\":\"10.79.0.2:"),
        "home did not record the beacon's address: {records}"
    );
    // Still escaping: a summary, and the rate limit holds alerts back.
    let summary = wait_until("a still-escaping summary", Duration::from_secs(10), || {
        events_of(&s, &name, "escape-summary").into_iter().next()
    });
    assert!(
        summary["escapes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["count"].as_u64().unwrap() >= 2),
        "{summary}"
    );
    // The rate limit: consecutive alerts on one channel and target are a
    // window (3s) apart, and say how many escapes they held back.
    let tcp: Vec<Value> = wait_until("a second tcp alert", Duration::from_secs(8), || {
        let v: Vec<Value> = escapes(&s, &name)
            .into_iter()
            .filter(|a| a["channel"] == "tcp" && a["target"] == "10.80.0.2:7000")
            .collect();
        (v.len() >= 2).then_some(v)
    });
    let at = |a: &Value| humantime::parse_rfc3339_weak(a["ts"].as_str().unwrap()).unwrap();
    for w in tcp.windows(2) {
        let gap = at(&w[1]).duration_since(at(&w[0])).unwrap();
        assert!(
            gap >= Duration::from_millis(2500),
            "alerts {gap:?} apart: {tcp:#?}"
        );
        assert!(w[1]["suppressed"].as_u64().unwrap() >= 1, "{tcp:#?}");
    }

    // Close it: the alerts stop.
    sysctl_in(&router, "net.ipv4.ip_forward=0");
    std::thread::sleep(Duration::from_secs(2));
    let before = escapes(&s, &name).len();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        escapes(&s, &name).len(),
        before,
        "alerts went on after the leak closed"
    );
    let d = details(&s, &name);
    assert_eq!(
        target(&d, "tcp 10.80.0.2:7000")["outcome"],
        "blocked",
        "{d:#}"
    );

    // Kill the probe: it is restarted.
    let probe = wait_until("the probe process", Duration::from_secs(5), || {
        probe_pid(init)
    });
    signal(probe, Signal::SIGKILL);
    let again = wait_until("a new probe process", Duration::from_secs(10), || {
        probe_pid(init).filter(|p| *p != probe)
    });
    s.wait_for(
        &name,
        "ok after the restart",
        Duration::from_secs(10),
        |i| i["health"] == "ok" && i["health_details"]["restarts"].as_u64() >= Some(1),
    );

    // Freeze it: health fails; thaw it: health comes back.
    signal(again, Signal::SIGSTOP);
    let frozen = s.wait_for(
        &name,
        "degraded while frozen",
        Duration::from_secs(10),
        |i| i["health"] == "degraded",
    );
    assert!(
        frozen["health_message"]
            .as_str()
            .unwrap_or("")
            .contains("printed no attempt"),
        "{frozen:#}"
    );
    // While it is silent the beacon says so with an event (its supervisor
    // notices within a tick; thawing first could end the silence before).
    wait_until("a probe-silent event", Duration::from_secs(10), || {
        (!events_of(&s, &name, "probe-silent").is_empty()).then_some(())
    });
    signal(again, Signal::SIGCONT);
    s.wait_for(&name, "ok after SIGCONT", Duration::from_secs(10), |i| {
        i["health"] == "ok"
    });
    assert_eq!(
        probe_pid(init),
        Some(again),
        "the thawed probe was replaced instead"
    );

    // A new good binary: the probe restarts on it and keeps it.
    let shipped = s.attach(&name, &["cat", "/usr/bin/escape-probe"]).stdout;
    assert!(shipped.len() > 100_000, "could not read the shipped probe");
    let mut v2 = shipped.clone();
    v2.extend_from_slice(b"\0outpost test build 2");
    let v2_sha = sha256_hex(&v2);
    let watched = s.persist(&name).join("probe/escape-probe");
    drop_binary(&watched, &v2);
    s.wait_for(
        &name,
        "running the new probe",
        Duration::from_secs(15),
        |i| {
            let p = &i["health_details"]["probe"];
            i["health"] == "ok" && p["sha256"] == v2_sha.as_str() && p["trial"] == false
        },
    );
    assert!(
        events_of(&s, &name, "probe-updated")
            .iter()
            .any(|e| e["sha256"] == v2_sha.as_str())
    );

    // A broken one (prints nothing): rolled back to the good one.
    let broken = b"#!/bin/sh\nexec sleep 1000\n".to_vec();
    let broken_sha = sha256_hex(&broken);
    drop_binary(&watched, &broken);
    let rollback = wait_until("a rollback", Duration::from_secs(15), || {
        events_of(&s, &name, "probe-rollback")
            .into_iter()
            .find(|e| e["rejected_sha256"] == broken_sha.as_str())
    });
    assert_eq!(rollback["running_sha256"], v2_sha.as_str(), "{rollback}");
    s.wait_for(
        &name,
        "ok on the good probe again",
        Duration::from_secs(10),
        |i| i["health"] == "ok" && i["health_details"]["probe"]["sha256"] == v2_sha.as_str(),
    );
    // One that is not even a program: rolled back at once, with the reason.
    let garbage = b"not a program\n".to_vec();
    let garbage_sha = sha256_hex(&garbage);
    drop_binary(&watched, &garbage);
    let rollback = wait_until(
        "a rollback of a non-program",
        Duration::from_secs(10),
        || {
            events_of(&s, &name, "probe-rollback")
                .into_iter()
                .find(|e| e["rejected_sha256"] == garbage_sha.as_str())
        },
    );
    // exec refuses it (ENOEXEC); the reason says so.
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("cannot start escape-probe"),
        "{rollback}"
    );
    s.wait_for(
        &name,
        "ok after the non-program",
        Duration::from_secs(10),
        |i| i["health"] == "ok" && i["health_details"]["probe"]["sha256"] == v2_sha.as_str(),
    );

    // The interface goes down: degraded, with the reason.
    let nsenter = |args: &[&str]| {
        must(
            Command::new("nsenter")
                .args(["-t", &init.to_string(), "-n", "ip"])
                .args(args),
        );
    };
    nsenter(&["link", "set", "seg0", "down"]);
    let down = s.wait_for(&name, "degraded", Duration::from_secs(10), |i| {
        i["health"] == "degraded"
    });
    assert!(
        down["health_message"]
            .as_str()
            .unwrap()
            .contains("seg0 is down"),
        "{down:#}"
    );
    nsenter(&["link", "set", "seg0", "up"]);
    nsenter(&["route", "replace", "default", "via", "10.79.0.1"]);
    s.wait_for(&name, "ok with seg0 up", Duration::from_secs(10), |i| {
        i["health"] == "ok"
    });

    assert_eq!(
        s.wait_running(&name),
        init,
        "the probe's troubles restarted the whole instrument"
    );
    ip(&["link", "del", &rport]);
    s.write_sensor("");
    s.reload();
    wait_until("the beacon removed", Duration::from_secs(30), || {
        s.instrument(&name).is_none().then_some(())
    });
}

#[test]
fn escape_probe_refuses_bad_settings_with_the_field_named() {
    let probe = workspace_bin("escape-probe");
    for (args, want) in [
        (vec!["--tcp", "10.0.0.1:7"], "no key"),
        (vec!["--key", KEY], "no canary targets"),
        (vec!["--key", KEY, "--tcp", "canary.example:7"], "tcp[0]"),
        (
            vec!["--key", KEY, "--tcp", "10.0.0.1:7", "--interval", "soon"],
            "interval \"soon\"",
        ),
        (vec!["--key", "abc", "--tcp", "10.0.0.1:7"], "key"),
        (
            vec!["--key", KEY, "--dns", "canary.example"],
            "zone@resolver",
        ),
    ] {
        let out = Command::new(&probe).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
}
