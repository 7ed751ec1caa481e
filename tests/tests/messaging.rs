//! The sensor's bus with a real nats-server and real containers: health,
//! config delivery, events, permissions, the loopback proxy, and a
//! nats-server that dies under load.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outpost_tests::archive::variant;
use outpost_tests::dbus::outpostctl_bin;
use outpost_tests::{ImageFile, Sensor, alive, entrypoint_pid, example_image, unique};
use serde_json::Value;

/// The example image with 1 s health checks (timeout 500 ms), and the
/// given permissions.
fn quick_image(dir: &std::path::Path, name: &str, read: &[&str], call: &[&str]) -> ImageFile {
    variant(&example_image(), dir, |m| {
        m.name = name.into();
        m.health.interval = Duration::from_secs(1);
        m.health.timeout = Duration::from_millis(500);
        m.permissions.read_events = read.iter().map(|s| s.to_string()).collect();
        m.permissions.call = call.iter().map(|s| s.to_string()).collect();
    })
}

fn instrument(name: &str, image: &str, extra: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"{image}\"\nversion = \"0.1.0\"\n{extra}\n"
    )
}

fn pid_of(v: &Value) -> i64 {
    v["init_pid"].as_i64().unwrap_or(-1)
}

#[test]
fn health_is_ok_then_degraded_and_an_unresponsive_instrument_is_restarted() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    s.import(&quick_image(dir.path(), "quick", &[], &[]));
    let name = unique("health");
    let spec = |health: &str| {
        instrument(
            &name,
            "quick",
            &format!(
                "health-failures = 2\nbackoff = {{ initial = \"200ms\" }}\nconfig = {{ health = \"{health}\" }}"
            ),
        )
    };
    s.write_sensor(&spec("ok"));
    s.start(&[]);
    // The instrument's own details come with its reply.
    let st = s.wait_for(
        &name,
        "healthy after boot 1",
        Duration::from_secs(20),
        |v| v["health"] == "ok" && v["health_details"]["boot"] == 1,
    );
    let pid = pid_of(&st);
    assert_eq!(st["health_details"]["sdk"]["events"]["dropped"], 0);

    // Degraded is reported, and is no reason to restart.
    s.write_sensor(&spec("degraded"));
    s.reload();
    let st = s.wait_for(&name, "degraded", Duration::from_secs(20), |v| {
        v["health"] == "degraded"
    });
    assert_eq!(pid_of(&st), pid, "a config change needs no restart");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pid_of(&s.instrument(&name).unwrap()), pid);

    // Freeze the instrument: it stops answering, becomes unresponsive, and
    // after two failed checks in a row it is restarted.
    let entry = entrypoint_pid(pid as i32);
    kill(Pid::from_raw(entry), Signal::SIGSTOP).unwrap();
    s.wait_for(&name, "unresponsive", Duration::from_secs(20), |v| {
        v["health"] == "unresponsive"
    });
    let st = s.wait_for(
        &name,
        "restarted and healthy",
        Duration::from_secs(40),
        |v| pid_of(v) != pid && v["health"] != "unresponsive" && v["state"] == "running",
    );
    assert_eq!(st["restarts"], 1);
    let why = st["last_exit"]["detail"].as_str().unwrap();
    assert!(why.contains("2 failed health checks"), "{why}");

    // Every transition is a platform event in EVENTS.
    let transitions: Vec<(String, String)> = s
        .events(Some("outpostd"))
        .into_iter()
        .filter(|e| e.kind == "health" && e.payload["instrument"] == name.as_str())
        .map(|e| {
            (
                e.payload["from"].as_str().unwrap().to_string(),
                e.payload["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("starting", "ok"),
        ("ok", "degraded"),
        ("degraded", "unresponsive"),
    ] {
        assert!(
            transitions.contains(&(want.0.to_string(), want.1.to_string())),
            "missing {want:?} in {transitions:?}"
        );
    }
    // The history is kept in SQLite.
    let db = rusqlite::Connection::open(s.state.join("outpostd.db")).unwrap();
    let (checks, unresponsive): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(state = 'unresponsive') FROM health_checks WHERE instrument = ?1",
            [&name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        checks >= 5 && unresponsive >= 2,
        "{checks} checks, {unresponsive} unresponsive"
    );
}

#[test]
fn config_is_applied_live_and_a_rejected_version_keeps_the_previous_one() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("cfg");
    let spec = |cfg: &str| instrument(&name, "example", &format!("config = {{ {cfg} }}"));
    s.write_sensor(&spec("greeting = \"one\""));
    s.start(&[]);
    let st = s.wait_for(&name, "config 1 applied", Duration::from_secs(20), |v| {
        v["config_applied"] == 1 && v["health_message"].as_str().unwrap_or("").contains("one")
    });
    let pid = pid_of(&st);

    // Valid for the schema, refused by the instrument: recorded with the
    // reason, and the instrument keeps running on version 1.
    s.write_sensor(&spec("greeting = \"two\", heartbeat = \"soon\""));
    s.reload();
    let st = s.wait_for(&name, "config 2 rejected", Duration::from_secs(20), |v| {
        v["config_rejected"]["version"] == 2
    });
    let reason = st["config_rejected"]["reason"].as_str().unwrap();
    assert!(reason.contains("heartbeat \"soon\""), "{reason}");
    assert_eq!(st["config_applied"], 1);
    assert_eq!(st["config_version"], 2);
    assert_eq!(pid_of(&st), pid);
    std::thread::sleep(Duration::from_millis(2500));
    let st = s.instrument(&name).unwrap();
    assert!(
        st["health_message"].as_str().unwrap().contains("one"),
        "still on config 1: {st:#}"
    );

    // A good version 3 is applied, still without a restart.
    s.write_sensor(&spec("greeting = \"three\""));
    s.reload();
    let st = s.wait_for(&name, "config 3 applied", Duration::from_secs(20), |v| {
        v["config_applied"] == 3
    });
    assert_eq!(pid_of(&st), pid);
    assert_eq!(st["config_rejected"], Value::Null);
    assert_eq!(s.wait_boots(&name, 1).len(), 1, "never restarted");

    // The results are platform events and are in the database.
    let results: Vec<(u64, bool)> = s
        .events(Some("outpostd"))
        .into_iter()
        .filter(|e| e.kind == "config" && e.payload["instrument"] == name.as_str())
        .map(|e| {
            (
                e.payload["version"].as_u64().unwrap(),
                e.payload["applied"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(results, vec![(1, true), (2, false), (3, true)]);
}

#[test]
fn events_from_inside_land_in_events_with_a_valid_envelope() {
    let mut s = Sensor::new();
    s.import(&example_image());
    s.write_sensor("");
    s.start(&[]);
    // Follow the stream before the instrument exists.
    let mut follow = Command::new(outpostctl_bin())
        .arg("--bus")
        .arg(s.bus_address())
        .args(["events", "--follow", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut errors = follow.stderr.take().unwrap();
    let lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });

    let name = unique("events");
    s.write_sensor(&instrument(&name, "example", ""));
    s.reload();
    s.wait_running(&name);
    let deadline = Instant::now() + Duration::from_secs(20);
    let boot = loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => l,
            Err(e) => {
                let _ = follow.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut errors, &mut err);
                panic!("the followed stream ended or stalled ({e}) before the boot event: {err}");
            }
        };
        let e = serde_json::from_str::<outpost_platform::dbus::events::Event>(&line)
            .expect("an event with a valid envelope")
            .envelope;
        if e.instrument == name && e.kind == "boot" {
            break e;
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(boot.v, 1);
    assert_eq!(boot.sensor, "test");
    assert_eq!(boot.schema, "example.boot/1");
    assert_eq!(boot.payload["boot"], 1);
    assert!(outpost_protocol::envelope::is_ulid(&boot.id));
    let sent = boot.time().unwrap();
    assert!(sent.elapsed().unwrap() < Duration::from_secs(60));

    // From inside, through the SDK, with the instrument's identity.
    let out = s.attach(
        &name,
        &["/usr/bin/outpost-probe", "nats", "event", "from-probe"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mine: Vec<_> = s
        .events(Some(&name))
        .into_iter()
        .filter(|e| e.kind == "from-probe")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].instrument, name);
    assert_eq!(mine[0].payload["from"], "probe");
}

fn probe(s: &Sensor, name: &str, args: &[&str]) -> (i32, Value) {
    let mut argv = vec!["/usr/bin/outpost-probe"];
    argv.extend_from_slice(args);
    let out = s.attach(name, &argv);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "probe {args:?} printed {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn permissions_are_enforced_by_nats_server_and_reported_by_the_sdk() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    let a = unique("alice");
    let b = unique("bob");
    let c = unique("carol");
    // alice may read bob's events and call bob; nothing about carol.
    s.import(&quick_image(dir.path(), "alice-img", &[&b], &[&b]));
    s.import(&example_image());
    s.write_sensor(&format!(
        "{}{}{}",
        instrument(&a, "alice-img", ""),
        instrument(&b, "example", ""),
        instrument(&c, "example", "")
    ));
    s.start(&[]);
    for n in [&a, &b, &c] {
        s.wait_for(n, "healthy", Duration::from_secs(30), |v| {
            v["health"] == "ok"
        });
    }
    let denied = |args: &[&str]| {
        let (code, v) = probe(&s, &a, args);
        assert_eq!(code, 3, "{args:?} should be refused: {v}");
        assert_eq!(v["denied"], true, "{v}");
        let err = v["error"].as_str().unwrap();
        assert!(
            err.contains("nats-server refused") && err.contains(&a),
            "{err}"
        );
    };
    let allowed = |args: &[&str]| {
        let (code, v) = probe(&s, &a, args);
        assert_eq!(v["denied"], false, "{args:?} should be allowed: {v}");
        code
    };

    // Publishing as another instrument.
    denied(&["nats", "publish", &format!("outpost.events.{b}.forged")]);
    assert_eq!(
        allowed(&["nats", "publish", &format!("outpost.events.{a}.mine")]),
        0
    );
    // Subscribing to another's subjects, and reading another's replies.
    denied(&["nats", "subscribe", &format!("outpost.i.{b}.>")]);
    denied(&["nats", "subscribe", &format!("_INBOX.{b}.>")]);
    denied(&["nats", "subscribe", "_INBOX.>"]);
    denied(&["nats", "subscribe", &format!("outpost.events.{c}.>")]);
    assert_eq!(
        allowed(&["nats", "subscribe", &format!("outpost.events.{b}.>")]),
        0
    );
    // Requests: the platform's subjects are not for instruments; RPC to an
    // allowed peer goes out (bob serves no RPC, so nobody answers).
    denied(&["nats", "request", &format!("outpost.i.{b}.health")]);
    denied(&["nats", "request", &format!("outpost.i.{c}.rpc.anything")]);
    let code = allowed(&["nats", "request", &format!("outpost.i.{b}.rpc.anything")]);
    assert_eq!(code, 1, "allowed but unanswered");

    // The forged event never reached the stream.
    assert!(
        s.events(Some(&b)).iter().all(|e| e.kind != "forged"),
        "a refused publish must not be stored"
    );
}

#[test]
fn the_loopback_proxy_is_the_only_way_to_the_host() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("iso");
    s.write_sensor(&instrument(&name, "example", ""));
    s.start(&[]);
    s.wait_for(&name, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    // A listener on the host's loopback that the test made.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();

    let (code, v) = probe(&s, &name, &["connect", &format!("127.0.0.1:{port}")]);
    assert_eq!(
        code, 1,
        "the host's 127.0.0.1:{port} must not be reachable: {v}"
    );
    let nats = s.nats_port();
    let (code, v) = probe(&s, &name, &["connect", &format!("127.0.0.1:{nats}")]);
    assert_eq!(code, 1, "nor nats-server directly: {v}");
    let (code, v) = probe(&s, &name, &["connect", "127.0.0.1:4222"]);
    assert_eq!(code, 0, "the proxy answers inside: {v}");
    host.set_nonblocking(true).unwrap();
    assert!(host.accept().is_err(), "nothing reached the host listener");
}

#[test]
fn killing_nats_server_during_10000_events_loses_none() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("burst");
    s.write_sensor(&instrument(&name, "example", ""));
    s.start(&[]);
    let st = s.wait_for(&name, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    let entry = entrypoint_pid(pid_of(&st) as i32);
    let nats = s.nats_pid().expect("nats-server runs");

    // The burst starts, and nats-server dies under it.
    kill(Pid::from_raw(entry), Signal::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    kill(Pid::from_raw(nats), Signal::SIGKILL).unwrap();

    // outpostd restarts it; the instrument reconnects and sends the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let restarted = loop {
        if let Some(p) = s.nats_pid()
            && p != nats
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server was not restarted\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(alive(restarted));
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let ev = s.events(Some(&name));
        if let Some(d) = ev.iter().find(|e| e.kind == "burst-done") {
            break (d.clone(), ev);
        }
        assert!(
            Instant::now() < deadline,
            "the burst never finished\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (summary, events) = done;
    assert_eq!(summary.payload["count"], 10_000);
    assert_eq!(summary.payload["dropped"], 0);
    let mut seen = vec![false; 10_001];
    let mut ticks = 0;
    for e in events.iter().filter(|e| e.kind == "tick") {
        let n = e.payload["n"].as_u64().unwrap() as usize;
        assert!(!seen[n], "tick {n} stored twice");
        seen[n] = true;
        ticks += 1;
    }
    assert_eq!(ticks, 10_000, "every event arrives, once");
    // The instrument did live through the outage: it connected again.
    let st = s.wait_for(&name, "reconnected", Duration::from_secs(20), |v| {
        v["health_details"]["sdk"]["connections"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    eprintln!("sdk after the outage: {}", st["health_details"]["sdk"]);
}

#[test]
fn retention_deletes_old_files_through_the_sdk_default_handler() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("keep");
    s.write_sensor(&instrument(&name, "example", ""));
    s.start(&[]);
    s.wait_for(&name, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    s.wait_boots(&name, 1);
    let persist = s.persist(&name);
    std::fs::create_dir_all(persist.join("captures/2020")).unwrap();
    let old = [
        persist.join("captures/2020/a.pcap"),
        persist.join("old.log"),
    ];
    for p in &old {
        std::fs::write(p, vec![b'x'; 1000]).unwrap();
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86400))
            .unwrap();
    }
    std::fs::write(persist.join("fresh.log"), b"new").unwrap();
    for p in ["captures", "old.log", "fresh.log"] {
        s.give_to_instrument(&name, &persist.join(p));
    }

    // The manifest's default period (7 days).
    let out = s.ctl(&["retention", "run", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed 2 items (2000 bytes)"), "{said}");
    assert!(old.iter().all(|p| !p.exists()));
    assert!(
        !persist.join("captures").exists(),
        "emptied directories go too"
    );
    assert!(persist.join("fresh.log").exists());
    assert!(persist.join("boots.jsonl").exists());
}

#[test]
fn instruments_answer_the_nats_micro_service_verbs_by_name() {
    // Each instrument is alone in its nats account, so the platform asks
    // each by name (`$SRV.PING.<name>`, `$SRV.INFO.<name>`: `nats micro
    // info <name>` works from the platform's account); a plain `$SRV.PING`
    // reaches no instrument, and no instrument can see another's.
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("svc");
    let b = unique("svc");
    s.write_sensor(&format!(
        "{}{}",
        instrument(&a, "example", ""),
        instrument(&b, "example", "")
    ));
    s.start(&[]);
    for n in [&a, &b] {
        s.wait_for(n, "healthy", Duration::from_secs(20), |v| {
            v["health"] == "ok"
        });
    }
    let seed = std::fs::read_to_string(s.state.join("secrets/outpostd.nkey")).unwrap();
    let port = s.nats_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = outpost_platform::messaging::bus::connect_platform_client(port, &seed, "test")
            .await
            .unwrap();
        for n in [&a, &b] {
            for verb in ["PING", "INFO"] {
                let m = client
                    .request(format!("$SRV.{verb}.{n}"), "".into())
                    .await
                    .unwrap_or_else(|e| panic!("$SRV.{verb}.{n}: {e}"));
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["name"], n.as_str(), "{v}");
            }
        }
    });
    // From inside, the other instrument's verbs are not there.
    let out = s.attach(
        &a,
        &[
            "/usr/bin/outpost-probe",
            "nats",
            "request",
            &format!("$SRV.PING.{b}"),
        ],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false, "{r}");
}
