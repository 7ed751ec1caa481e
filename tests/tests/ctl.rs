//! `outpostctl` against a real outpostd over the sensor's private
//! dbus-daemon (with the repository's bus policy): status, apply, bad
//! input, which change wins across restarts, and who may read or change
//! what.

use std::process::Output;
use std::time::Duration;

use outpost_tests::dbus::DBus;
use outpost_tests::{Sensor, example_image, unique};
use serde_json::Value;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn names(st: &Value) -> Vec<String> {
    let mut v: Vec<String> = st["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn instrument(name: &str) -> String {
    format!("[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n")
}

/// A sensor file outside the daemon's, for `outpostctl apply`.
fn file(s: &Sensor, name: &str, body: &str) -> String {
    let p = s.dir.path().join(name);
    std::fs::write(&p, format!("[sensor]\nname = \"test\"\n\n{body}")).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn outpostctl_applies_and_the_stored_state_wins_over_an_unchanged_file() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let (a, b, c) = (unique("ctl-a"), unique("ctl-b"), unique("ctl-c"));
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_running(&a);

    let st = s.status();
    assert_eq!(st["desired_version"], 1, "{st:#}");
    assert_eq!(names(&st), vec![a.clone()]);
    assert!(st["daemon_pid"].as_u64().is_some(), "{st:#}");
    let table = ok(s.ctl(&["status"]));
    assert!(
        table.contains("desired state: version 1") && table.contains(&a),
        "{table}"
    );

    // A local change: validated, stored as version 2, and acted on.
    let both = file(
        &s,
        "both.toml",
        &format!("{}\n{}", instrument(&a), instrument(&b)),
    );
    let out = ok(s.ctl(&["apply", &both, "--reason", "add b"]));
    assert!(out.contains("applied: desired state version 2"), "{out}");
    s.wait_running(&b);
    let out = ok(s.ctl(&["apply", &both]));
    assert!(out.contains("unchanged"), "{out}");

    // Bad input: every problem named, nothing stored, nothing stopped.
    let bad = file(
        &s,
        "bad.toml",
        &format!(
            "{}\n[[instrument]]\nname = \"Bad Name\"\nimage = \"example\"\nversion = \"9.9.9\"\n",
            instrument(&a)
        ),
    );
    let out = s.ctl(&["apply", &bad]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("Bad Name") && err.contains("nothing was changed"),
        "{err}"
    );
    let st = s.status();
    assert_eq!(st["desired_version"], 2, "{st:#}");
    assert_eq!(names(&st), {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });
    assert!(
        st["refused"]["problems"].to_string().contains("Bad Name"),
        "{st:#}"
    );

    // A restart with the sensor file unchanged keeps the local change.
    s.terminate();
    s.start(&[]);
    s.wait_running(&b);
    let st = s.status();
    assert_eq!(st["desired_version"], 2, "{st:#}");

    // A sensor file edited while outpostd was down is applied at start.
    s.terminate();
    s.write_sensor(&instrument(&c));
    s.start(&[]);
    s.wait_running(&c);
    let st = s.status();
    assert_eq!(st["desired_version"], 3, "{st:#}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while names(&s.status()) != vec![c.clone()] {
        assert!(
            std::time::Instant::now() < deadline,
            "a and b were not removed: {:#}",
            s.status()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGHUP applies the file explicitly, over a local change.
    ok(s.ctl(&["apply", &both]));
    assert_eq!(s.status()["desired_version"], 4);
    s.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.status()["desired_version"] != 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not apply the file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.write_sensor("");
    s.reload();
}

#[test]
fn outpostctl_reads_need_a_group_and_changes_need_outpost_admin() {
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    let nobody = 65534;
    // The callers below read their file themselves.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let empty = file(&s, "empty.toml", "");

    // No group: the bus's policy refuses before outpostd sees the call.
    let out = s.bus.ctl_as(nobody, &[], &["status"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("outpost"),
        "{}",
        text(&out)
    );

    // Group outpost: reads, but no changes; outpostd names the rule.
    let out = s
        .bus
        .ctl_as(nobody, &["outpost"], &["status", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = s
        .bus
        .ctl_as(nobody, &["outpost"], &["apply", &empty, "--reason", "x"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changing the sensor needs root or membership in group outpost-admin")
            && err.contains("uid 65534"),
        "{err}"
    );

    // Group outpost-admin: changes too, recorded as its author.
    std::fs::write(
        s.dir.path().join("empty.toml"),
        "[sensor]\nname = \"renamed\"\n",
    )
    .unwrap();
    let out = s.bus.ctl_as(nobody, &["outpost-admin"], &["apply", &empty]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));

    // Nobody serves the name once outpostd is gone: "unreachable".
    s.terminate();
    let out = s.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
}

#[test]
fn outpostctl_config_history_diff_rollback_and_start_stop_restart() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-cfg");
    s.write_sensor(&format!(
        "{}config = {{ greeting = \"hello\" }}\n",
        instrument(&a)
    ));
    s.start(&[]);
    let pid = s.wait_running(&a);

    let shown = ok(s.ctl(&["config", "show", &a]));
    assert_eq!(shown.trim(), "greeting = \"hello\"", "{shown}");

    // set: checked against the image's schema first; a bad body stores
    // nothing and names the field.
    let bad = file(&s, "bad-config.toml", "");
    std::fs::write(&bad, "greeting = 42\ncolour = \"red\"\n").unwrap();
    let out = s.ctl(&["config", "set", &a, &bad]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greeting") && err.contains("colour"), "{err}");
    let good = file(&s, "good-config.toml", "");
    std::fs::write(&good, "greeting = \"bonjour\"\nburst = 3\n").unwrap();
    let out = ok(s.ctl(&["config", "set", &a, &good, "--reason", "french"]));
    assert!(out.contains("desired state version 2"), "{out}");
    s.wait_for(&a, "config 2 applied", Duration::from_secs(20), |i| {
        i["config_applied"] == 2
    });

    // history: both versions, newest first, with origin and reason.
    let h: Value =
        serde_json::from_str(&ok(s.ctl(&["config", "history", &a, "--format", "json"]))).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(
        (h[0]["version"].as_i64(), h[0]["source"].as_str()),
        (Some(2), Some("local"))
    );
    assert_eq!(h[0]["reason"], "french");
    assert!(
        h[0]["author"].as_str().unwrap().starts_with("uid 0 via :"),
        "{h:#?}"
    );
    assert_eq!(
        (h[1]["version"].as_i64(), h[1]["source"].as_str()),
        (Some(1), Some("file"))
    );
    let table = ok(s.ctl(&["config", "history", &a]));
    assert!(
        table.contains("french") && table.contains("VERSION"),
        "{table}"
    );

    // diff of the two.
    let d = ok(s.ctl(&["config", "diff", &a, "1", "2"]));
    assert!(
        d.contains("-greeting = \"hello\"")
            && d.contains("+greeting = \"bonjour\"")
            && d.contains("+burst = 3"),
        "{d}"
    );

    // rollback: a new version (3) with version 1's body.
    let out = ok(s.ctl(&["config", "rollback", &a, "1"]));
    assert!(out.contains("desired state version 3"), "{out}");
    let shown = ok(s.ctl(&["config", "show", &a]));
    assert_eq!(shown.trim(), "greeting = \"hello\"", "{shown}");
    let h: Value =
        serde_json::from_str(&ok(s.ctl(&["config", "history", &a, "--format", "json"]))).unwrap();
    assert_eq!(h[0]["version"], 3);
    assert_eq!(h[0]["reason"], "rollback to config version 1");
    let out = s.ctl(&["config", "rollback", &a, "9"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no config version 9 (it has: 3, 2, 1)"),
        "{}",
        text(&out)
    );
    let out = s.ctl(&["config", "show", "no-such"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));

    // restart: a new init, the desired state unchanged.
    ok(s.ctl(&["restart", &a]));
    let again = s.wait_running(&a);
    assert_ne!(again, pid, "restart kept the same container");
    let st = s.status();
    assert_eq!(st["desired_version"], 3, "{st:#}");

    // stop and start: the desired state's enabled, and the container.
    let out = ok(s.ctl(&["stop", &a]));
    assert!(out.contains("disabled (desired state version 4)"), "{out}");
    s.wait_for(&a, "stopped", Duration::from_secs(20), |i| {
        i["state"] == "stopped"
    });
    let out = ok(s.ctl(&["stop", &a]));
    assert!(out.contains("already disabled"), "{out}");
    ok(s.ctl(&["start", &a]));
    s.wait_running(&a);
    let list = ok(s.ctl(&["instruments"]));
    assert!(list.contains(&a) && list.contains("running"), "{list}");
    let out = s.ctl(&["restart", "no-such"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&a),
        "the error lists the instruments there are: {}",
        text(&out)
    );
}

/// `busctl` on the test's bus.
fn busctl(bus: &DBus, args: &[&str]) -> Output {
    std::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(args)
        .output()
        .expect("run busctl (Debian package systemd)")
}

#[test]
fn each_instrument_is_a_d_bus_object_whose_properties_signal_changes() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-obj");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    let pid = s.wait_running(&a);
    let path = format!("/org/outpost/Sensor1/instrument/{}", a.replace('-', "_"));
    let prop = |name: &str| {
        ok(busctl(
            &s.bus,
            &[
                "get-property",
                "org.outpost.Sensor1",
                &path,
                "org.outpost.Instrument1",
                name,
            ],
        ))
        .trim()
        .to_string()
    };
    // The object appears once the daemon's snapshot has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !busctl(&s.bus, &["introspect", "org.outpost.Sensor1", &path])
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "no object at {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let intro = ok(busctl(
        &s.bus,
        &["introspect", "org.outpost.Sensor1", &path],
    ));
    for member in [
        ".State",
        ".Health",
        ".HealthDetail",
        ".AppliedConfigVersion",
        ".DesiredConfigVersion",
        ".Pid",
        ".Restarts",
        ".Restart",
        ".Start",
        ".Stop",
        ".ConfigHistory",
        ".SetConfig",
        ".RollbackConfig",
        ".Retention",
        ".Logs",
    ] {
        assert!(intro.contains(member), "{member} missing:\n{intro}");
    }
    let root = ok(busctl(
        &s.bus,
        &["introspect", "org.outpost.Sensor1", "/org/outpost/Sensor1"],
    ));
    for member in [
        ".Status",
        ".Apply",
        ".ConfigHistory",
        ".SetConfig",
        ".RollbackConfig",
        ".SetEnabled",
        ".Restart",
        ".Changed",
    ] {
        assert!(root.contains(member), "{member} missing:\n{root}");
    }
    // Properties follow the daemon's snapshot within 250 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while prop("State") != "s \"running\"" {
        assert!(
            std::time::Instant::now() < deadline,
            "State is {}",
            prop("State")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(prop("Pid"), format!("u {pid}"));
    assert_eq!(prop("DesiredConfigVersion"), "x 1");

    // Its config and console log through its own object.
    let call = |method: &str, sig: &str, args: &[&str]| {
        // `--`: a negative offset is an argument, not an option.
        let mut a = vec![
            "call",
            "--",
            "org.outpost.Sensor1",
            path.as_str(),
            "org.outpost.Instrument1",
            method,
        ];
        if !sig.is_empty() {
            a.push(sig);
        }
        a.extend_from_slice(args);
        busctl(&s.bus, &a)
    };
    let out = ok(call(
        "SetConfig",
        "sbs",
        &[r#"{"greeting":"via object"}"#, "false", "test"],
    ));
    assert_eq!(out.trim(), "xb 2 true", "{out}");
    let bad = call("SetConfig", "sbs", &[r#"{"greeting":5}"#, "false", "test"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("greeting"),
        "{}",
        text(&bad)
    );
    let hist = ok(call("ConfigHistory", "", &[]));
    assert!(hist.contains("via object"), "{hist}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = ok(call("Logs", "x", &["-65536"]));
        if log.contains("heartbeat") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat in {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Changes are signalled.
    let log = s.dir.path().join("monitor.log");
    let _monitor = outpost_tests::hostnet::Spawned(
        std::process::Command::new("dbus-monitor")
            .arg("--address")
            .arg(&s.bus.address)
            .arg("type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'")
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run dbus-monitor"),
    );
    std::thread::sleep(Duration::from_millis(500));
    // A reader may not stop it: the daemon names the rule.
    let out = s.bus.ctl_as(65534, &["outpost"], &["stop", &a]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    let out = ok(busctl(
        &s.bus,
        &[
            "call",
            "org.outpost.Sensor1",
            &path,
            "org.outpost.Instrument1",
            "Stop",
        ],
    ));
    assert_eq!(out.trim(), "x 3", "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while prop("State") != "s \"stopped\"" {
        assert!(
            std::time::Instant::now() < deadline,
            "State did not become stopped: {}",
            prop("State")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(prop("Pid"), "u 0");
    std::thread::sleep(Duration::from_millis(500));
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains("PropertiesChanged")
            && seen.contains("\"State\"")
            && seen.contains("\"stopped\""),
        "{seen}"
    );
    ok(busctl(
        &s.bus,
        &[
            "call",
            "org.outpost.Sensor1",
            &path,
            "org.outpost.Instrument1",
            "Start",
        ],
    ));
    s.wait_running(&a);

    // The object goes with the instrument.
    s.write_sensor("");
    s.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while busctl(&s.bus, &["introspect", "org.outpost.Sensor1", &path])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} stayed after removal"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_fleet_managed_sensor_refuses_local_changes_unless_overridden_as_drift() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-fleet");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_running(&a);
    s.terminate();
    // What enrollment with a fleet does to the state (the fleet issue adds
    // the command): mark the sensor fleet-managed.
    {
        let db = rusqlite::Connection::open(s.state.join("outpostd.db")).unwrap();
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('fleet-managed', '1')",
            [],
        )
        .unwrap();
    }
    // The sensor file changed while down: refused at start (the stored
    // version stays), the daemon runs on.
    s.write_sensor(&format!(
        "{}config = {{ greeting = \"file\" }}\n",
        instrument(&a)
    ));
    s.start(&[]);
    let st = s.status();
    assert_eq!(st["desired_version"], 1, "{st:#}");
    assert_eq!(st["fleet_managed"], true, "{st:#}");
    assert!(
        s.log_text().contains("managed by a fleet"),
        "the refused file is not logged"
    );
    assert!(ok(s.ctl(&["status"])).contains("managed by a fleet"));

    let out = s.ctl(&["stop", &a]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--override"),
        "{}",
        text(&out)
    );
    assert_eq!(s.status()["desired_version"], 1);

    let out = ok(s.ctl(&["stop", &a, "--override", "--reason", "maintenance window"]));
    assert!(out.contains("disabled (desired state version 2)"), "{out}");
    let h: Value = serde_json::from_str(&ok(s.ctl(&["history", "--format", "json"]))).unwrap();
    assert_eq!(h[0]["version"], 2);
    assert_eq!(h[0]["drift"], true, "{h:#}");
    assert_eq!(h[0]["reason"], "maintenance window");
    assert_eq!(h[1]["drift"], false, "{h:#}");
    let table = ok(s.ctl(&["history"]));
    assert!(
        table.contains("yes") && table.contains("maintenance window"),
        "{table}"
    );
    s.wait_for(&a, "stopped", Duration::from_secs(20), |i| {
        i["state"] == "stopped"
    });
}

/// The versions in the database, read directly: (desired versions, config
/// versions of `name`).
fn versions(s: &Sensor, name: &str) -> (i64, i64) {
    let db = rusqlite::Connection::open(s.state.join("outpostd.db")).unwrap();
    let desired: i64 = db
        .query_row("SELECT COUNT(*) FROM desired_state", [], |r| r.get(0))
        .unwrap();
    let config: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM config_versions WHERE instrument = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap();
    (desired, config)
}

#[test]
fn a_crash_in_the_middle_of_an_apply_leaves_the_old_or_the_new_version_whole() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-crash");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_running(&a);
    s.terminate();
    let body = file(&s, "config.toml", "");
    for (point, want) in [
        ("desired-before-commit", (1, 1)),
        ("desired-after-commit", (2, 2)),
    ] {
        s.start_env(&[], &[("OUTPOST_FAILPOINT", point)]);
        std::fs::write(&body, format!("greeting = \"{point}\"\n")).unwrap();
        let out = s.ctl(&["config", "set", &a, &body]);
        assert!(
            !out.status.success(),
            "{point}: the daemon answered: {}",
            text(&out)
        );
        s.wait_exit(Duration::from_secs(10));
        assert_eq!(versions(&s, &a), want, "{point}");
        // The next start finds a whole state and runs on it.
        s.start(&[]);
        let shown = ok(s.ctl(&["config", "show", &a]));
        if point == "desired-after-commit" {
            assert!(shown.contains(point), "{shown}");
        } else {
            assert!(!shown.contains(point), "{shown}");
        }
        s.terminate();
    }
}

#[test]
fn two_clients_changing_one_instrument_at_once_both_get_an_answer_in_order() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-race");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_running(&a);
    let files: Vec<String> = (0..2)
        .map(|i| {
            let f = file(&s, &format!("c{i}.toml"), "");
            std::fs::write(&f, format!("greeting = \"client {i}\"\n")).unwrap();
            f
        })
        .collect();
    let outs: Vec<Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = files
            .iter()
            .map(|f| {
                let s = &s;
                let a = &a;
                sc.spawn(move || s.ctl(&["config", "set", a, f]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut versions: Vec<String> = outs.into_iter().map(ok).collect();
    versions.sort();
    assert!(
        versions[0].contains("version 2") && versions[1].contains("version 3"),
        "{versions:?}"
    );
    let h: Value =
        serde_json::from_str(&ok(s.ctl(&["config", "history", &a, "--format", "json"]))).unwrap();
    let bodies: Vec<String> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"]["greeting"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(bodies.len(), 3, "{h:#}");
    assert!(
        bodies[..2].contains(&"client 0".to_string())
            && bodies[..2].contains(&"client 1".to_string()),
        "{bodies:?}"
    );
}

#[test]
fn outpostctl_imports_lists_and_removes_images_and_shows_logs() {
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    let img = example_image();
    let archive = img.archive.to_str().unwrap();
    assert!(ok(s.ctl(&["image", "list"])).contains("no images imported"));

    // A wrong hash: refused before anything is unpacked.
    let wrong = "0".repeat(64);
    let out = s.ctl(&["image", "import", archive, "--sha256", &wrong]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256"),
        "{}",
        text(&out)
    );
    let listed: Value =
        serde_json::from_str(&ok(s.ctl(&["image", "list", "--format", "json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed:#}");

    // The right one, with progress on stderr.
    let out = s.ctl(&["image", "import", archive, "--sha256", &img.sha256]);
    let stdout = ok(out.clone());
    assert!(stdout.contains("imported example:0.1.0"), "{stdout}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("verifying sha256: 100%"), "{progress}");
    let again = ok(s.ctl(&["image", "import", archive, "--sha256", &img.sha256]));
    assert!(again.contains("already imported"), "{again}");

    // An admin who is not root imports only what they can read: outpostd
    // reads the descriptor outpostctl opened, never a path as root.
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = shared.path().join("root-only.tar.gz");
    std::fs::copy(&img.archive, &secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.bus.ctl_as(
        65534,
        &["outpost-admin"],
        &[
            "image",
            "import",
            secret.to_str().unwrap(),
            "--sha256",
            &img.sha256,
        ],
    );
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.bus.ctl_as(
        65534,
        &["outpost-admin"],
        &[
            "image",
            "import",
            secret.to_str().unwrap(),
            "--sha256",
            &img.sha256,
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already imported"),
        "{}",
        text(&out)
    );
    assert!(ok(s.ctl(&["image", "list"])).contains("example"));

    // In use: refused, naming the user; the instrument's log is readable.
    let a = unique("ctl-img");
    let f = file(&s, "with-a.toml", &instrument(&a));
    ok(s.ctl(&["apply", &f]));
    s.wait_running(&a);
    let out = s.ctl(&["image", "rm", "example", "0.1.0"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&a),
        "{}",
        text(&out)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = ok(s.ctl(&["logs", &a]));
        if log.contains("example-instrument") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no log yet: {log:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = s.ctl(&["logs", "never-started"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));

    // Unused: removed; gone: "no such image".
    let empty = file(&s, "empty.toml", "");
    ok(s.ctl(&["apply", &empty]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !names(&s.status()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{a} not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(s.ctl(&["image", "rm", "example", "0.1.0"]));
    assert!(ok(s.ctl(&["image", "list"])).contains("no images imported"));
    let out = s.ctl(&["image", "rm", "example", "0.1.0"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
}

#[test]
fn outpostctl_reads_events_by_instrument_and_kind_and_follows() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let (a, b) = (unique("ctl-ev-a"), unique("ctl-ev-b"));
    s.write_sensor(&format!("{}\n{}", instrument(&a), instrument(&b)));
    s.start(&[]);
    s.wait_running(&a);
    s.wait_running(&b);
    let events = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["events", "--format", "json"];
        all.extend_from_slice(args);
        ok(s.ctl(&all))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let boots = loop {
        let v = events(&["--instrument", &a, "--kind", "boot"]);
        if !v.is_empty() {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no boot event of {a}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        boots
            .iter()
            .all(|e| e["envelope"]["instrument"] == a.as_str() && e["envelope"]["kind"] == "boot"),
        "{boots:#?}"
    );
    // Everything, in stream order; --since goes on from a sequence.
    let all = events(&[]);
    assert!(
        all.iter()
            .any(|e| e["envelope"]["instrument"] == b.as_str()),
        "{all:#?}"
    );
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let last = *seqs.last().unwrap();
    let tail = events(&["--since", &last.to_string()]);
    assert_eq!(tail.first().map(|e| e["seq"].as_u64().unwrap()), Some(last));

    // --follow prints what comes later: a restart's boot event.
    let log = s.dir.path().join("follow.log");
    let _follow = outpost_tests::hostnet::Spawned(
        std::process::Command::new(outpost_tests::dbus::outpostctl_bin())
            .args([
                "--bus",
                &s.bus.address,
                "events",
                "--follow",
                "--instrument",
                &a,
            ])
            .args(["--since", &(last + 1).to_string()])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    ok(s.ctl(&["restart", &a]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("boot")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "--follow printed no new boot event"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = s.ctl(&["events", "--instrument", "Not A Name"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
}

#[test]
fn outpostctl_runs_retention_and_purges_a_removed_instrument() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-keep");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_for(&a, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    let persist = s.persist(&a);
    let old = persist.join("old.log");
    std::fs::write(&old, vec![b'x'; 1000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86400))
        .unwrap();
    s.give_to_instrument(&a, &old);

    let out = ok(s.ctl(&["retention", "run", &a]));
    assert!(
        out.contains(&format!("{a}: ok (removed 1 items (1000 bytes)")),
        "{out}"
    );
    assert!(!old.exists());
    let out = s.ctl(&["retention", "run", "no-such"]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));

    // Purge: refused while wanted; after removal, its data goes.
    let out = s.ctl(&["purge", &a]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still in the desired state"),
        "{}",
        text(&out)
    );
    ok(s.ctl(&["stop", &a]));
    let empty = file(&s, "empty.toml", "");
    ok(s.ctl(&["apply", &empty]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !names(&s.status()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{a} not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ok(s.ctl(&["purge", &a]));
    assert!(out.contains("purged") && out.contains("host ids"), "{out}");
    assert!(!s.persist_image(&a).exists());
    let out = ok(s.ctl(&["purge", &a]));
    assert!(out.contains("has no stored data"), "{out}");
}

/// `GET /metrics` on 127.0.0.1:`port`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_are_served_on_loopback_only_unless_allowed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-metrics");
    s.write_sensor(&instrument(&a));
    s.start(&["--metrics", &format!("127.0.0.1:{port}")]);
    s.wait_for(&a, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = scrape(port);
        if t.contains("outpost_health_check_round_trip_seconds{") {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    for line in [
        format!("outpost_instrument_state{{instrument=\"{a}\",state=\"running\"}} 1"),
        format!("outpost_instrument_health{{instrument=\"{a}\",health=\"ok\"}} 1"),
        format!("outpost_instrument_restarts_total{{instrument=\"{a}\"}} 0"),
        "outpost_desired_state_version 1".to_string(),
        // The SDK keeps one connection through the proxy; none refused.
        format!("outpost_bus_connections_open{{instrument=\"{a}\"}} 1"),
        format!("outpost_bus_connections_total{{instrument=\"{a}\",which=\"refused\"}} 0"),
        format!("outpost_instrument_events_total{{instrument=\"{a}\",which=\"dropped\"}} 0"),
        // Retention is scheduled hourly: no run yet.
        format!("outpost_retention_runs_total{{instrument=\"{a}\",outcome=\"violated\"}} 0"),
    ] {
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    s.terminate();

    // Another host's address: refused at start, with the fix.
    let mut t = Sensor::new();
    t.write_sensor("");
    t.spawn(&["--metrics", &format!("0.0.0.0:{port}")]);
    let st = t.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    let log = t.log_text();
    assert!(log.contains("--metrics-allow-remote"), "{log}");
}

#[test]
fn outpostctl_status_watch_prints_each_change() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ctl-watch");
    s.write_sensor(&instrument(&a));
    s.start(&[]);
    s.wait_running(&a);
    let log = s.dir.path().join("watch.jsonl");
    let _watch = outpost_tests::hostnet::Spawned(
        std::process::Command::new(outpost_tests::dbus::outpostctl_bin())
            .args([
                "--bus",
                &s.bus.address,
                "status",
                "--watch",
                "--format",
                "json",
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    ok(s.ctl(&["stop", &a]));
    let stopped = |l: &str| {
        serde_json::from_str::<Value>(l).ok().is_some_and(|v| {
            v["instruments"].as_array().is_some_and(|i| {
                i.iter()
                    .any(|i| i["name"] == a.as_str() && i["state"] == "stopped")
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(stopped)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "--watch printed no stopped state:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(
        lines >= 2,
        "one line per change, and the first at once: {lines}"
    );
}
