//! `outpostctl` against a real outpostd over a private dbus-daemon (with
//! the repository's bus policy): status, apply, bad input, which change
//! wins across restarts, and who may read or change what.

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

fn status(bus: &DBus) -> Value {
    serde_json::from_str(&ok(bus.ctl(&["status", "--format", "json"]))).unwrap()
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
    let bus = DBus::start();
    let mut s = Sensor::new();
    s.import(&example_image());
    let (a, b, c) = (unique("ctl-a"), unique("ctl-b"), unique("ctl-c"));
    s.write_sensor(&instrument(&a));
    s.start(&["--dbus", &bus.address]);
    s.wait_running(&a);

    let st = status(&bus);
    assert_eq!(st["desired_version"], 1, "{st:#}");
    assert_eq!(names(&st), vec![a.clone()]);
    assert!(st["daemon_pid"].as_u64().is_some(), "{st:#}");
    let table = ok(bus.ctl(&["status"]));
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
    let out = ok(bus.ctl(&["apply", &both, "--reason", "add b"]));
    assert!(out.contains("applied: desired state version 2"), "{out}");
    s.wait_running(&b);
    let out = ok(bus.ctl(&["apply", &both]));
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
    let out = bus.ctl(&["apply", &bad]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("Bad Name") && err.contains("nothing was changed"),
        "{err}"
    );
    let st = status(&bus);
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
    s.start(&["--dbus", &bus.address]);
    s.wait_running(&b);
    let st = status(&bus);
    assert_eq!(st["desired_version"], 2, "{st:#}");

    // A sensor file edited while outpostd was down is applied at start.
    s.terminate();
    s.write_sensor(&instrument(&c));
    s.start(&["--dbus", &bus.address]);
    s.wait_running(&c);
    let st = status(&bus);
    assert_eq!(st["desired_version"], 3, "{st:#}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while names(&status(&bus)) != vec![c.clone()] {
        assert!(
            std::time::Instant::now() < deadline,
            "a and b were not removed: {:#}",
            status(&bus)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGHUP applies the file explicitly, over a local change.
    ok(bus.ctl(&["apply", &both]));
    assert_eq!(status(&bus)["desired_version"], 4);
    s.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&bus)["desired_version"] != 5 {
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
    let bus = DBus::start();
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&["--dbus", &bus.address]);
    let nobody = 65534;
    // The callers below read their file themselves.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let empty = file(&s, "empty.toml", "");

    // No group: the bus's policy refuses before outpostd sees the call.
    let out = bus.ctl_as(nobody, &[], &["status"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("outpost"),
        "{}",
        text(&out)
    );

    // Group outpost: reads, but no changes; outpostd names the rule.
    let out = bus.ctl_as(nobody, &["outpost"], &["status", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bus.ctl_as(nobody, &["outpost"], &["apply", &empty, "--reason", "x"]);
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
    let out = bus.ctl_as(nobody, &["outpost-admin"], &["apply", &empty]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));

    // Nobody serves the name once outpostd is gone: "unreachable".
    s.terminate();
    let out = bus.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
}
