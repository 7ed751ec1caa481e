//! Desired state from the fleet: pushes applied, refused, rolled back,
//! drift, and `confirm-within`.

use std::time::{Duration, Instant};

use outpost_tests::fleet::Fleet;
use outpost_tests::{example_image, unique};

use super::*;

pub(crate) fn put_desired(
    fleet: &Fleet,
    sensor: &str,
    toml: &str,
    reason: &str,
) -> std::process::Output {
    let file = fleet.dir.path().join(format!("{}.toml", unique("desired")));
    std::fs::write(&file, toml).unwrap();
    fleet.cli(&[
        "desired",
        "put",
        sensor,
        file.to_str().unwrap(),
        "--reason",
        reason,
    ])
}

pub(crate) fn rollout(fleet: &Fleet, sensor: &str) -> serde_json::Value {
    let o = fleet.cli(&["desired", "rollout", sensor]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub(crate) fn wait_rollout(
    fleet: &Fleet,
    sensor: &str,
    version: u64,
    state: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = rollout(fleet, sensor);
        if r["version"] == version && r["state"] == state {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout of version {version} never {state}: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn sensor_file(sensor: &str, instruments: &[(&str, &str)]) -> String {
    let mut t = format!("[sensor]\nname = \"{sensor}\"\n");
    for (name, image) in instruments {
        t.push_str(&format!(
            "\n[[instrument]]\nname = \"{name}\"\nimage = \"{image}\"\nversion = \"0.1.0\"\n"
        ));
    }
    t
}

#[test]
fn desired_state_from_the_fleet_is_applied_refused_with_reasons_and_reaches_a_sensor_that_was_away()
{
    let fleet = Fleet::start("1s");
    let (name, mut s) = enrolled(&fleet, &example_image());
    fleet.wait_sensor(&name, "online", Duration::from_secs(20), |v| {
        v["online"] == "online"
    });
    let local_before = s.status()["desired_version"].clone();

    // Refused at the fleet, every problem named: nothing stored or sent.
    let bad = put_desired(
        &fleet,
        &name,
        "[sensor]\nname = \"Bad Name\"\n\n[[instrument]]\nname = \"x\"\nimage = \"example\"\nversion = \"0.1.0\"\nrestart = \"sometimes\"\n",
        "broken",
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("400"), "{}", text(&bad));
    assert!(
        !fleet.cli(&["desired", "show", &name]).status.success(),
        "nothing stored"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.status()["desired_version"],
        local_before,
        "nothing reached the sensor"
    );

    // A good version: applied through the sensor's intake, source fleet.
    let a = unique("fl");
    let put = put_desired(
        &fleet,
        &name,
        &sensor_file(&name, &[(&a, "example")]),
        "add a",
    );
    assert!(put.status.success(), "{}", text(&put));
    let r = wait_rollout(&fleet, &name, 1, "applied");
    assert_eq!(r["instruments"][&a]["result"], "applied", "{r:#}");
    let local = r["local_version"].as_i64().unwrap();
    s.wait_for(&a, "running", Duration::from_secs(30), |v| {
        v["state"] == "running"
    });
    let hist: serde_json::Value =
        serde_json::from_slice(&s.ctl(&["--format", "json", "history"]).stdout).unwrap();
    let newest = &hist.as_array().unwrap()[0];
    assert_eq!(newest["version"], local, "{hist:#}");
    assert_eq!(newest["source"], "fleet", "{newest:#}");
    assert_eq!(newest["author"], "admin");
    assert_eq!(newest["reason"], "add a");

    // One the sensor refuses (a config its image's schema does not
    // allow; the fleet has no manifests until images go through it):
    // rejected with the reasons, and the previous version stays.
    let put = put_desired(
        &fleet,
        &name,
        &format!(
            "{}config = {{ greeting = 42 }}\n",
            sensor_file(&name, &[(&a, "example")])
        ),
        "a wrong greeting",
    );
    assert!(put.status.success(), "{}", text(&put));
    let r = wait_rollout(&fleet, &name, 2, "rejected");
    let problems = r["problems"].to_string();
    assert!(problems.contains("greeting"), "{r:#}");
    assert_eq!(s.status()["desired_version"], local);
    assert_eq!(s.instrument(&a).unwrap()["state"], "running");

    // One the instrument itself refuses (a heartbeat it cannot parse,
    // which the schema allows): stored by the sensor, rejected per
    // instrument with its reason, and the instrument keeps its config.
    let applied_before = s.instrument(&a).unwrap()["config_applied"].clone();
    let put = put_desired(
        &fleet,
        &name,
        &format!(
            "{}config = {{ heartbeat = \"soon\" }}\n",
            sensor_file(&name, &[(&a, "example")])
        ),
        "a heartbeat it cannot parse",
    );
    assert!(put.status.success(), "{}", text(&put));
    let r = wait_rollout(&fleet, &name, 3, "rejected");
    assert_eq!(r["instruments"][&a]["result"], "rejected", "{r:#}");
    let problems = r["problems"].to_string();
    assert!(
        problems.contains(&format!("instrument {a} refused")),
        "{r:#}"
    );
    assert!(problems.contains("soon"), "{r:#}");
    let ins = s.instrument(&a).unwrap();
    assert_eq!(ins["state"], "running");
    assert_eq!(ins["config_applied"], applied_before, "{ins:#}");

    // Away while the fleet changes it: it gets the newest when back.
    s.terminate();
    fleet.wait_sensor(&name, "offline", Duration::from_secs(20), |v| {
        v["online"] == "offline"
    });
    let b = unique("fl");
    let put = put_desired(
        &fleet,
        &name,
        &sensor_file(&name, &[(&a, "example"), (&b, "example")]),
        "add b",
    );
    assert!(put.status.success(), "{}", text(&put));
    assert_eq!(rollout(&fleet, &name)["state"], "pending");
    s.start(&[]);
    wait_rollout(&fleet, &name, 4, "applied");
    s.wait_for(&b, "running", Duration::from_secs(30), |v| {
        v["state"] == "running"
    });
    let hist = fleet.cli(&["desired", "history", &name]);
    let hist: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    let versions: Vec<u64> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let d = text(&fleet.cli(&["desired", "diff", &name, "1", "4"]));
    assert!(d.contains(&format!("+name = \"{b}\"")), "{d}");
    assert!(d.contains(&format!("{name} version 1")), "{d}");

    // A rollback is a new version with an old body, pushed like any.
    let rb = fleet.cli(&[
        "desired",
        "rollback",
        &name,
        "1",
        "--reason",
        "b misbehaves",
    ]);
    assert!(rb.status.success(), "{}", text(&rb));
    wait_rollout(&fleet, &name, 5, "applied");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.instrument(&b).is_some() {
        assert!(
            Instant::now() < deadline,
            "{b} was not removed by the rollback"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A local override is drift, and the fleet shows it as such.
    let local = s.dir.path().join("hotfix.toml");
    std::fs::write(
        &local,
        sensor_file(&name, &[(&a, "example"), (&b, "example")]),
    )
    .unwrap();
    let refused = s.ctl(&["apply", local.to_str().unwrap()]);
    assert!(
        !refused.status.success(),
        "fleet-managed: refused without --override"
    );
    let o = s.ctl(&[
        "apply",
        local.to_str().unwrap(),
        "--override",
        "--reason",
        "hotfix on site",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = fleet.wait_sensor(&name, "shows the drift", Duration::from_secs(20), |v| {
        v["last_heartbeat"]["drift"]["reason"] == "hotfix on site"
    });
    assert_eq!(v["last_heartbeat"]["drift"]["source"], "local", "{v:#}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet
        .events(&["--sensor", &name, "--kind", "config-drift"])
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no config-drift event");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_push_with_confirm_within_is_kept_when_the_link_holds_and_undone_when_it_does_not() {
    let mut fleet = Fleet::start("1s");
    let (name, s) = enrolled(&fleet, &example_image());
    let (a, b) = (unique("cw"), unique("cw"));
    let put = |fleet: &Fleet, toml: String, reason: &str| {
        let file = fleet.dir.path().join(format!("{}.toml", unique("cw")));
        std::fs::write(&file, toml).unwrap();
        let o = fleet.cli(&[
            "desired",
            "put",
            &name,
            file.to_str().unwrap(),
            "--reason",
            reason,
            "--confirm-within",
            "8s",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    // The link holds: kept, and only then acknowledged.
    put(&fleet, sensor_file(&name, &[(&a, "example")]), "add a");
    let r = wait_rollout(&fleet, &name, 1, "applied");
    let kept = r["local_version"].as_i64().unwrap();
    s.wait_for(&a, "running", Duration::from_secs(30), |v| {
        v["state"] == "running"
    });

    // The hub goes away right after the change: the sensor undoes it.
    put(
        &fleet,
        sensor_file(&name, &[(&a, "example"), (&b, "example")]),
        "add b",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.instrument(&b).is_none() {
        assert!(Instant::now() < deadline, "version 2 never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    fleet.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.instrument(&b).is_some() {
        assert!(Instant::now() < deadline, "{b} was not rolled back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let hist: serde_json::Value =
        serde_json::from_slice(&s.ctl(&["--format", "json", "history"]).stdout).unwrap();
    let newest = &hist.as_array().unwrap()[0];
    assert_eq!(newest["source"], "fleet", "{newest:#}");
    assert!(
        newest["reason"]
            .as_str()
            .unwrap()
            .contains("no healthy link"),
        "{newest:#}"
    );
    // Back, the fleet hears why.
    fleet.restart();
    let r = wait_rollout(&fleet, &name, 2, "rolled-back");
    assert!(
        r["problems"].to_string().contains("no healthy link"),
        "{r:#}"
    );
    assert!(r["local_version"].as_i64().unwrap() > kept, "{r:#}");
}
