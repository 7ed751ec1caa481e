//! What the fleet keeps of its sensors: crash reports, health history,
//! and how long it keeps them.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn a_crash_reaches_the_fleet_as_a_report_with_the_log_tail_unless_the_sensor_says_no() {
    use outpost_tests::archive::variant;
    let fleet = Fleet::start("1s");
    let dir = tempfile::tempdir().unwrap();
    let crashy = variant(&example_image(), dir.path(), |m| {
        m.name = "crashy".into();
        m.entrypoint = vec![
            "/usr/bin/example-instrument".into(),
            "--exit-after".into(),
            "500ms".into(),
            "--exit-code".into(),
            "3".into(),
        ];
    });
    let (name, _s) = enrolled(&fleet, &crashy);
    let (a, b) = (unique("crash"), unique("crash"));
    let with = |extra: &str, names: &[&str]| {
        let mut t = format!("[sensor]\nname = \"{name}\"\n{extra}\n");
        for n in names {
            t.push_str(&format!(
                "\n[[instrument]]\nname = \"{n}\"\nimage = \"crashy\"\nversion = \"0.1.0\"\nrestart = \"never\"\n"
            ));
        }
        t
    };
    // A live feed of this sensor's crash reports, opened before the crash.
    let (mut feed, live) = fleet.follow_events(&format!("sensor={name}&kind=crash-report"));
    let put = put_desired(&fleet, &name, &with("", &[&a]), "a crashy one");
    assert!(put.status.success(), "{}", text(&put));
    let report = |inst: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let ev = fleet.events(&[
                "--sensor",
                &name,
                "--instrument",
                "outpostd",
                "--kind",
                "crash-report",
            ]);
            if let Some(r) = ev
                .into_iter()
                .find(|e| e["envelope"]["payload"]["instrument"] == inst)
            {
                return r["envelope"]["payload"].clone();
            }
            assert!(Instant::now() < deadline, "no crash report for {inst}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let r = report(&a);
    assert_eq!(r["exit_code"], 3, "{r:#}");
    assert_eq!(r["image"], "crashy");
    assert_eq!(r["version"], "0.1.0");
    assert_eq!(r["restarts"], 0);
    let lines = r["log_tail"].as_array().expect("the log tail is sent");
    assert!(!lines.is_empty() && lines.len() <= 50, "{r:#}");
    let first = live
        .recv_timeout(Duration::from_secs(30))
        .expect("the live feed shows the crash report");
    let _ = feed.kill();
    let _ = feed.wait();
    assert_eq!(first["kind"], "crash-report", "{first:#}");
    assert_eq!(first["envelope"]["payload"]["instrument"], a.as_str());

    // The sensor says no: the next report has no log.
    let put = put_desired(
        &fleet,
        &name,
        &with("crash-report-logs = false", &[&a, &b]),
        "no logs to the fleet",
    );
    assert!(put.status.success(), "{}", text(&put));
    let r = report(&b);
    assert_eq!(r["exit_code"], 3, "{r:#}");
    assert!(r["log_tail"].is_null(), "{r:#}");
}

#[test]
fn the_fleets_retention_is_shown_enforced_by_the_hub_and_a_change_outlives_a_restart() {
    let mut fleet = Fleet::start("1s");
    let show = |f: &Fleet| -> serde_json::Value {
        let o = f.cli(&["retention"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = show(&fleet);
    assert_eq!(v["events_seconds"], 90 * 24 * 3600, "{v:#}");
    assert!(v["enforced_by"].as_str().unwrap().contains("FLEET_EVENTS"));
    let bad = fleet.cli(&["retention", "--events", "soon"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("events"), "{}", text(&bad));
    let o = fleet.cli(&["retention", "--events", "30days"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(show(&fleet)["events_seconds"], 30 * 24 * 3600);
    fleet.restart();
    assert_eq!(
        show(&fleet)["events_seconds"],
        30 * 24 * 3600,
        "kept across a restart"
    );
}

#[test]
fn an_instruments_health_changes_are_kept_at_the_fleet_in_order() {
    let fleet = Fleet::start("1s");
    let (name, s) = enrolled(&fleet, &example_image());
    let inst = unique("hl");
    let with = |health: &str| {
        format!(
            "{}config = {{ health = \"{health}\" }}\n",
            sensor_file(&name, &[(&inst, "example")])
        )
    };
    assert!(
        put_desired(&fleet, &name, &with("degraded"), "degrade")
            .status
            .success()
    );
    s.wait_for(&inst, "degraded", Duration::from_secs(30), |v| {
        v["health"] == "degraded"
    });
    assert!(
        put_desired(&fleet, &name, &with("ok"), "heal")
            .status
            .success()
    );
    s.wait_for(&inst, "ok", Duration::from_secs(30), |v| {
        v["health"] == "ok"
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let healths = loop {
        let o = fleet.cli(&["health", &name, &inst]);
        assert!(o.status.success(), "{}", text(&o));
        let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let healths: Vec<String> = h
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["health"].as_str().unwrap().to_string())
            .collect();
        let d = healths.iter().position(|x| x == "degraded");
        if d.is_some_and(|d| healths[d..].iter().any(|x| x == "ok")) {
            break healths;
        }
        assert!(
            Instant::now() < deadline,
            "no degraded then ok: {healths:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Changes only: no two neighbours the same.
    let o = fleet.cli(&["health", &name, &inst]);
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for w in h.as_array().unwrap().windows(2) {
        assert!(
            w[0]["health"] != w[1]["health"]
                || w[0]["state"] != w[1]["state"]
                || w[0]["message"] != w[1]["message"],
            "a repeated entry: {h:#}"
        );
    }
    assert!(healths.len() >= 2);
    let list: serde_json::Value =
        serde_json::from_slice(&fleet.cli(&["sensor", "show", &name]).stdout).unwrap();
    assert!(
        list["last_heartbeat"]["instruments"]
            .to_string()
            .contains(&inst)
    );
}
