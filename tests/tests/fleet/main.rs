//! The fleet end to end: a real `outpost-fleet` with its embedded hub,
//! real `outpostd` sensors enrolling with `outpostctl fleet enroll`,
//! heartbeats, per-sensor permissions tried with a raw NATS client, and
//! revocation.

use std::time::Duration;

use std::time::Instant;

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outpost_tests::fleet::{Fleet, HubCluster, hub_client};
use outpost_tests::{Sensor, entrypoint_pid, example_image, unique};

mod desired;
mod watching;
use desired::{put_desired, sensor_file};
mod api;
mod images;

pub(crate) fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(4000)..]
}

pub(crate) fn enroll(
    s: &Sensor,
    url: &str,
    token: &str,
    fingerprint: &str,
) -> std::process::Output {
    s.ctl(&[
        "fleet",
        "enroll",
        url,
        "--token",
        token,
        "--fingerprint",
        fingerprint,
    ])
}

pub(crate) fn link(s: &Sensor) -> serde_json::Value {
    let o = s.ctl(&["--format", "json", "fleet", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub(crate) fn wait_link(s: &Sensor, state: &str, timeout: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let l = link(s);
        if l["state"] == state {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "link never {state}: {l:#}\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running sensor with `img` imported, enrolled in `fleet` (its link
/// up); its name at the fleet.
pub(crate) fn enrolled(fleet: &Fleet, img: &outpost_tests::ImageFile) -> (String, Sensor) {
    enrolled_with(fleet, Some(img))
}

/// … with `img` imported, if any.
pub(crate) fn enrolled_with(
    fleet: &Fleet,
    img: Option<&outpost_tests::ImageFile>,
) -> (String, Sensor) {
    let name = unique("edge");
    let e = fleet.add_sensor(&name, &[]);
    let mut s = Sensor::new();
    if let Some(img) = img {
        s.import(img);
    }
    s.write_sensor("");
    s.start(&[]);
    let ok = enroll(&s, &fleet.url, &e.token, &e.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    wait_link(&s, "up", Duration::from_secs(20));
    (name, s)
}

/// A running sensor with one healthy example instrument (the one the
/// outage tests make burst), its name, and its status.
fn burst_sensor() -> (Sensor, String, serde_json::Value) {
    let mut s = Sensor::new();
    s.import(&example_image());
    let inst = unique("burst");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{inst}\"\nimage = \"example\"\nversion = \"0.1.0\"\n"
    ));
    s.start(&[]);
    let st = s.wait_for(&inst, "healthy", Duration::from_secs(30), |v| {
        v["health"] == "ok"
    });
    (s, inst, st)
}

pub(crate) fn started_sensor() -> Sensor {
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    s
}

#[test]
fn sensors_enroll_once_each_heartbeat_and_cannot_touch_each_others_subjects() {
    let fleet = Fleet::start("1s");
    let (na, nb, nc) = (unique("edge"), unique("edge"), unique("edge"));
    let ea = fleet.add_sensor(&na, &[]);
    let eb = fleet.add_sensor(&nb, &[]);
    let ec = fleet.add_sensor(&nc, &["--ttl", "1s"]);
    // A name is taken once.
    let again = fleet.cli(&["sensor", "add", &na]);
    assert!(!again.status.success());
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    let a = started_sensor();
    // A forged token, a wrong pin: refused, nothing stored.
    let forged = enroll(&a, &fleet.url, "oet_0000", &ea.fingerprint);
    assert!(!forged.status.success());
    assert!(
        text(&forged).contains("unknown to this fleet"),
        "{}",
        text(&forged)
    );
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let pinned = enroll(&a, &fleet.url, &ea.token, &wrong_pin);
    assert!(!pinned.status.success());
    assert!(
        text(&pinned).contains("presented certificate") && text(&pinned).contains(&ea.fingerprint),
        "{}",
        text(&pinned)
    );
    assert_eq!(link(&a)["state"], "none", "nothing stored after a refusal");
    // The right one works (the pin was not used up by the refusal).
    let ok = enroll(&a, &fleet.url, &ea.token, &ea.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!("enrolled as {na}")),
        "{}",
        text(&ok)
    );

    let b = started_sensor();
    let reused = enroll(&b, &fleet.url, &ea.token, &ea.fingerprint);
    assert!(!reused.status.success());
    assert!(text(&reused).contains("used already"), "{}", text(&reused));
    std::thread::sleep(Duration::from_millis(1500));
    let expired = enroll(&b, &fleet.url, &ec.token, &ec.fingerprint);
    assert!(!expired.status.success());
    assert!(text(&expired).contains("expired"), "{}", text(&expired));
    let ok = enroll(&b, &fleet.url, &eb.token, &eb.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    // Enrolled once: a second enrollment is refused on the sensor.
    let twice = enroll(&b, &fleet.url, &eb.token, &eb.fingerprint);
    assert!(
        text(&twice).contains("enrolled already"),
        "{}",
        text(&twice)
    );

    // Both links come up and the fleet hears both.
    wait_link(&a, "up", Duration::from_secs(20));
    wait_link(&b, "up", Duration::from_secs(20));
    for (s, n) in [(&a, &na), (&b, &nb)] {
        let v = fleet.wait_sensor(n, "online", Duration::from_secs(20), |v| {
            v["online"] == "online"
        });
        assert_eq!(v["last_heartbeat"]["sensor"], n.as_str());
        assert_eq!(v["last_heartbeat"]["fleet_managed"], true);
        assert!(v["public_key"].as_str().unwrap().starts_with('U'));
        let st = s.status();
        assert_eq!(st["fleet_managed"], true);
        assert_eq!(st["fleet"]["state"], "up");
        let table = text(&s.ctl(&["status"]));
        assert!(table.contains("fleet link: up"), "{table}");
    }
    let c = fleet.sensor(&nc);
    assert_eq!(c["online"], "never");
    let m = text(&fleet.cli(&["metrics"]));
    assert!(
        m.contains("outpost_fleet_sensors{state=\"online\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("outpost_fleet_sensors{state=\"never\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "outpost_fleet_sensor_backlog_events{{sensor=\"{na}\"}}"
        )),
        "{m}"
    );

    // Sensor A's own credentials, in a raw NATS client: its own subjects
    // work, B's do not, in either direction.
    let creds_a = std::fs::read_to_string(a.state.join("fleet/sensor.creds")).unwrap();
    let ca = a.state.join("fleet/hub-ca.pem");
    let url = fleet.hub_url();
    let service = fleet.service_creds();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = hub_client(&url, &fleet.ca(), &service).await.unwrap();
        let mut seen = admin.subscribe("fleet.in.>").await.unwrap();
        admin.flush().await.unwrap();
        let raw = hub_client(&url, &ca, &creds_a).await.unwrap();
        raw.publish(format!("fleet.in.{nb}.heartbeat"), "forged".into())
            .await
            .unwrap();
        raw.publish(format!("fleet.in.{na}.probe"), "mine".into())
            .await
            .unwrap();
        raw.flush().await.unwrap();
        // Only A's own publication arrives (heartbeats aside).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, seen.next()).await {
            if m.payload.as_ref() == b"forged" || m.payload.as_ref() == b"mine" {
                got.push(m.subject.to_string());
            }
        }
        assert_eq!(got, vec![format!("fleet.in.{na}.probe")]);

        let raw = hub_client(&url, &ca, &creds_a).await.unwrap();
        let mut other = raw.subscribe(format!("fleet.sensor.{nb}.>")).await.unwrap();
        let mut own = raw.subscribe(format!("fleet.sensor.{na}.>")).await.unwrap();
        raw.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin
            .publish(format!("fleet.sensor.{nb}.desired"), "for b".into())
            .await
            .unwrap();
        admin
            .publish(format!("fleet.sensor.{na}.desired"), "for a".into())
            .await
            .unwrap();
        admin.flush().await.unwrap();
        let mine = tokio::time::timeout(Duration::from_secs(3), own.next())
            .await
            .expect("its own subject reaches A")
            .unwrap();
        assert_eq!(mine.payload.as_ref(), b"for a");
        let leaked = tokio::time::timeout(Duration::from_secs(1), other.next()).await;
        assert!(
            !matches!(leaked, Ok(Some(_))),
            "A read B's subject: {leaked:?}"
        );
    });
}

#[test]
fn a_revoked_sensor_is_cut_off_within_seconds_and_cannot_come_back() {
    let fleet = Fleet::start("1s");
    let name = unique("edge");
    let e = fleet.add_sensor(&name, &[]);
    let s = started_sensor();
    let ok = enroll(&s, &fleet.url, &e.token, &e.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    wait_link(&s, "up", Duration::from_secs(20));
    fleet.wait_sensor(&name, "online", Duration::from_secs(20), |v| {
        v["online"] == "online"
    });

    let t0 = std::time::Instant::now();
    let out = fleet.cli(&["sensor", "revoke", &name]);
    assert!(out.status.success(), "{}", text(&out));
    let l = wait_link(&s, "refused", Duration::from_secs(10));
    println!("link refused {:?} after the revocation", t0.elapsed());
    assert!(l["detail"].as_str().unwrap().contains("revoked"), "{l:#}");
    let v = fleet.sensor(&name);
    assert!(v["revoked_at_ms"].is_i64(), "{v:#}");
    assert_eq!(v["online"], "offline");
    assert_eq!(v["online_detail"], "revoked");

    // Its credentials no longer open a connection.
    let creds = std::fs::read_to_string(s.state.join("fleet/sensor.creds")).unwrap();
    let ca = s.state.join("fleet/hub-ca.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(hub_client(&fleet.hub_url(), &ca, &creds));
    assert!(r.is_err(), "a revoked sensor connected");
    // And the fleet restarting does not bring it back.
    let status = text(&s.ctl(&["status"]));
    assert!(status.contains("fleet link: refused"), "{status}");
}

/// Waits until the link has forwarded everything (its backlog, as the
/// heartbeat loop last counted it, is empty).
fn wait_backlog_empty(s: &Sensor, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let l = link(s);
        if l["state"] == "up" && l["backlog"]["events"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backlog never empty: {l:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn events_outlive_a_minute_without_the_hub_once_each_in_order_and_a_late_resend_adds_none() {
    let mut fleet = Fleet::start_with("1s", &["--duplicate-window", "1s"]);
    let sensor = unique("edge");
    let e = fleet.add_sensor(&sensor, &[]);
    let (s, inst, st) = burst_sensor();
    let ok = enroll(&s, &fleet.url, &e.token, &e.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    wait_link(&s, "up", Duration::from_secs(20));

    // The hub goes away; the instrument publishes 10,000 events.
    fleet.stop();
    let down = Instant::now();
    let entry = entrypoint_pid(st["init_pid"].as_i64().unwrap() as i32);
    kill(Pid::from_raw(entry), Signal::SIGUSR1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.events(Some(&inst)).iter().any(|e| e.kind == "burst-done") {
        assert!(Instant::now() < deadline, "the burst never finished");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The sensor says so: the link is down and the events wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    let l = loop {
        let l = link(&s);
        if l["state"] != "up" && l["backlog"]["events"].as_u64().unwrap_or(0) >= 10_001 {
            break l;
        }
        assert!(Instant::now() < deadline, "the backlog never showed: {l:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(l["backlog"]["bytes"].as_u64().unwrap() > 0, "{l:#}");
    let table = text(&s.ctl(&["status"]));
    assert!(
        table.contains("fleet link: down") || table.contains("fleet link: connecting"),
        "{table}"
    );
    if let Some(rest) = Duration::from_secs(60).checked_sub(down.elapsed()) {
        std::thread::sleep(rest);
    }
    fleet.restart();

    let tick_filter = [
        "--sensor",
        sensor.as_str(),
        "--instrument",
        inst.as_str(),
        "--kind",
        "tick",
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = fleet.events(&["--sensor", &sensor, "--kind", "burst-done"]);
        if !done.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet never got the burst");
        std::thread::sleep(Duration::from_secs(1));
    }
    let check = |ticks: &[serde_json::Value]| {
        assert_eq!(ticks.len(), 10_000, "every event arrives, once");
        let mut last_n = 0;
        let mut last_local = 0;
        for t in ticks {
            let n = t["envelope"]["payload"]["n"].as_u64().unwrap();
            let local = t["local_seq"].as_u64().unwrap();
            assert!(n > last_n, "tick {n} after {last_n}: out of order or twice");
            assert!(local > last_local);
            last_n = n;
            last_local = local;
        }
    };
    check(&fleet.events(&tick_filter));
    wait_backlog_empty(&s, Duration::from_secs(30));

    // Long after the duplicate window, everything is sent again.
    std::thread::sleep(Duration::from_secs(2));
    let resend = s.ctl(&["fleet", "resend", "--from", "1"]);
    assert!(resend.status.success(), "{}", text(&resend));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The re-send went through: the fleet answered that it had them.
        let l = link(&s);
        if l["events_already_stored"].as_u64().unwrap_or(0) >= 10_001 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the re-send never went through: {l:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_backlog_empty(&s, Duration::from_secs(60));
    check(&fleet.events(&tick_filter));
    let all = fleet.events(&["--sensor", &sensor]);
    let mut locals: Vec<u64> = all
        .iter()
        .map(|e| e["local_seq"].as_u64().unwrap())
        .collect();
    let n = locals.len();
    locals.dedup();
    assert_eq!(locals.len(), n, "a local event stored twice");
}

#[test]
fn a_silent_sensor_is_offline_after_three_missed_heartbeats_and_online_again_with_events() {
    let fleet = Fleet::start("1s");
    let name = unique("edge");
    let e = fleet.add_sensor(&name, &[]);
    let mut s = started_sensor();
    let ok = enroll(&s, &fleet.url, &e.token, &e.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    fleet.wait_sensor(&name, "online", Duration::from_secs(20), |v| {
        v["online"] == "online"
    });
    s.terminate();
    let v = fleet.wait_sensor(&name, "offline", Duration::from_secs(20), |v| {
        v["online"] == "offline"
    });
    let detail = v["online_detail"].as_str().unwrap();
    assert!(
        detail.starts_with("offline: last heartbeat") && detail.contains("threshold 3 s"),
        "{detail}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let offline = loop {
        let ev = fleet.events(&["--sensor", &name, "--kind", "sensor-offline"]);
        if !ev.is_empty() {
            break ev;
        }
        assert!(Instant::now() < deadline, "no sensor-offline event");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(offline.len(), 1, "raised once: {offline:#?}");
    assert_eq!(offline[0]["instrument"], "outpost-fleet");
    assert!(
        offline[0]["envelope"]["payload"]["detail"]
            .as_str()
            .unwrap()
            .contains("threshold 3 s")
    );

    s.start(&[]);
    fleet.wait_sensor(&name, "online again", Duration::from_secs(30), |v| {
        v["online"] == "online"
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet
        .events(&["--sensor", &name, "--kind", "sensor-online"])
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no sensor-online event");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Still one offline event: a silence is raised once.
    assert_eq!(
        fleet
            .events(&["--sensor", &name, "--kind", "sensor-offline"])
            .len(),
        1
    );
}

#[test]
fn two_fleet_instances_on_a_three_node_hub_serve_one_fleet_and_a_dead_node_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fleet-state");
    let mut hub = HubCluster::start(&state, 3);
    let one = Fleet::join(&state, &hub, "1s");
    let two = Fleet::join(&state, &hub, "1s");

    // Added through one instance, enrolled through the other.
    let name = unique("edge");
    let e = one.add_sensor(&name, &[]);
    let (s, inst, st) = burst_sensor();
    let ok = enroll(&s, &two.url, &e.token, &e.fingerprint);
    assert!(ok.status.success(), "{}", text(&ok));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state.join("fleet/link.json")).unwrap()).unwrap();
    assert_eq!(cfg["hub_urls"].as_array().unwrap().len(), 3, "{cfg:#}");
    wait_link(&s, "up", Duration::from_secs(30));
    // Either instance answers, from the same state.
    for f in [&one, &two] {
        f.wait_sensor(&name, "online", Duration::from_secs(30), |v| {
            v["online"] == "online" && v["public_key"].is_string()
        });
    }

    // Either instance reads the events.
    for f in [&one, &two] {
        f.events(&["--sensor", &name]);
    }
    // 10,000 events, and a hub node dies while they are forwarded.
    let entry = entrypoint_pid(st["init_pid"].as_i64().unwrap() as i32);
    kill(Pid::from_raw(entry), Signal::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    hub.kill_node(0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while two
        .try_events(&["--sensor", &name, "--kind", "burst-done"])
        .map_or(true, |e| e.is_empty())
    {
        if Instant::now() > deadline {
            let log = s.log_text();
            panic!(
                "the fleet never got the burst\n{}\n--- fleet one:\n{}\n--- fleet two:\n{}",
                &log[log.len().saturating_sub(6000)..],
                tail(&one.log_text()),
                tail(&two.log_text())
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for f in [&one, &two] {
        let filter = ["--sensor", &name, "--instrument", &inst, "--kind", "tick"];
        // A 503 while the cluster fails over is an answer to retry.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ticks = loop {
            match f.try_events(&filter) {
                Ok(t) => break t,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => panic!(
                    "{e}\n{}\n{}",
                    f.log_text()
                        .lines()
                        .filter(|l| !l.contains("DEBUG"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    hub.logs()
                ),
            }
        };
        assert_eq!(
            ticks.len(),
            10_000,
            "every event, once, from either instance"
        );
        let mut last = 0;
        for t in &ticks {
            let n = t["envelope"]["payload"]["n"].as_u64().unwrap();
            assert!(n > last, "tick {n} after {last}");
            last = n;
        }
    }
}
