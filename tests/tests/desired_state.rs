//! The sensor file and the stored desired state, through a real outpostd.

use std::time::Duration;

use outpost_tests::{Sensor, example_image, unique};

#[test]
fn invalid_sensor_file_stops_a_first_start_with_a_clear_error() {
    let mut s = Sensor::new();
    s.write_sensor("[[instrument]]\nname = \"Bad Name\"\nimage = \"example\"\nversion = \"0.1.0\"\nprivileged = true\n");
    s.spawn(&[]);
    let st = s.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    let log = s.log_text();
    assert!(log.contains("privileged"), "{log}");
    assert!(log.contains("sensor file"), "{log}");

    // `outpostctl check` says the same without starting anything.
    let out = s.check();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("privileged"));
}

#[test]
fn a_bad_reload_keeps_the_previous_desired_state() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("keep");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n"
    ));
    s.start(&[]);
    let pid = s.wait_running(&name);
    let v1 = s.status()["desired_version"].clone();

    std::fs::write(&s.sensor_file, "this is [not toml").unwrap();
    s.reload();
    std::thread::sleep(Duration::from_millis(1500));
    let st = s.instrument(&name).unwrap();
    assert_eq!(st["state"], "running");
    assert_eq!(st["init_pid"], pid);
    assert_eq!(s.status()["desired_version"], v1);
    assert!(s.log_text().contains("keeping the previous desired state"));
}

#[test]
fn config_that_breaks_the_schema_is_refused_and_named() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("cfg");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\nconfig = {{ greeting = 42, colour = \"red\" }}\n"
    ));
    let out = s.check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config/greeting") || err.contains("greeting"),
        "{err}"
    );

    // The daemon checks it the same way: with no earlier desired state to
    // keep, it does not start, and says every problem.
    s.spawn(&[]);
    assert!(!s.wait_exit(Duration::from_secs(20)).success());
    let log = s.log_text();
    assert!(log.contains("greeting"), "{log}");
    assert!(log.contains("colour"), "{log}");
    assert!(!s.lxcpath().join(&name).exists(), "nothing was created");

    // Fixing the file brings it up.
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\nconfig = {{ greeting = \"hello\" }}\n"
    ));
    s.start(&[]);
    s.wait_running(&name);
    let out = s.check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn instrument_waits_for_its_image_then_starts() {
    let mut s = Sensor::new();
    let name = unique("wait");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n"
    ));
    s.start(&[]);
    let st = s.wait_for(&name, "pending", Duration::from_secs(20), |v| {
        v["state"] == "pending"
    });
    assert!(
        st["detail"].as_str().unwrap().contains("not imported"),
        "{st:#}"
    );
    // Imported while the daemon runs: picked up without a reload.
    s.import(&example_image());
    s.wait_running(&name);
}

#[test]
fn disabling_stops_and_enabling_starts_again() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("toggle");
    let spec = |enabled: bool| {
        format!(
            "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\nenabled = {enabled}\n"
        )
    };
    s.write_sensor(&spec(true));
    s.start(&[]);
    let pid = s.wait_running(&name);
    s.wait_boots(&name, 1);
    s.write_sensor(&spec(false));
    s.reload();
    s.wait_for(&name, "stopped", Duration::from_secs(20), |v| {
        v["state"] == "stopped"
    });
    assert!(!outpost_tests::alive(pid));
    assert!(!s.lxcpath().join(&name).exists());
    s.write_sensor(&spec(true));
    s.reload();
    s.wait_running(&name);
    assert_eq!(s.wait_boots(&name, 2).len(), 2);
    // Every change was stored as a new desired-state version.
    assert_eq!(s.status()["desired_version"], 3);
}

fn one(name: &str, enabled: bool, config: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\nenabled = {enabled}\n[instrument.config]\n{config}\n"
    )
}

#[test]
fn sighup_refuses_a_config_against_the_schema_and_a_fixed_file_clears_the_refusal() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("hup");
    s.write_sensor(&one(&name, true, "burst = 5"));
    s.start(&[]);
    let pid = s.wait_running(&name);
    let v1 = s.status()["desired_version"].clone();

    // What `check` refuses, SIGHUP refuses: the previous version stays.
    s.write_sensor(&one(&name, true, "burst = -5"));
    let out = s.check();
    assert!(!out.status.success());
    s.reload();
    let st = s.wait_status("the refusal", Duration::from_secs(10), |st| {
        st["refused"].is_object()
    });
    assert_eq!(st["desired_version"], v1, "no new version was stored");
    let problems = st["refused"]["problems"].to_string();
    assert!(problems.contains("burst"), "{problems}");
    let text = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("refused") && text.contains("burst"), "{text}");
    let ins = s.instrument(&name).unwrap();
    assert_eq!(ins["state"], "running");
    assert_eq!(ins["init_pid"], pid, "not restarted, not failed");

    // A valid file is applied and the refusal is gone.
    s.write_sensor(&one(&name, true, "burst = 7"));
    s.reload();
    let st = s.wait_status("the fixed file", Duration::from_secs(10), |st| {
        st["refused"].is_null() && st["desired_version"] != v1
    });
    let ins = st["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap()
        .clone();
    assert!(
        !ins["detail"].as_str().unwrap().contains("refused"),
        "{ins:#}"
    );
    let text = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(!text.contains("refused"), "{text}");
}

#[test]
fn an_instrument_adopted_after_a_crash_during_its_start_gets_its_config() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("adopt");
    let config = "greeting = \"from-the-desired-state\"";
    s.write_sensor(&one(&name, true, config));
    s.start(&[]);
    s.wait_for(&name, "config applied", Duration::from_secs(20), |v| {
        v["config_applied"] == 1
    });
    // Disabled, then enabled again by a daemon that dies right after the
    // container started, before it could push the config.
    s.write_sensor(&one(&name, false, config));
    s.reload();
    s.wait_for(&name, "stopped", Duration::from_secs(20), |v| {
        v["state"] == "stopped"
    });
    s.kill9();
    s.write_sensor(&one(&name, true, config));
    s.spawn_env(&[], &[("OUTPOST_FAILPOINT", "after-start")]);
    assert!(!s.wait_exit(Duration::from_secs(30)).success());

    // The next daemon adopts it and, told by its health reply that it runs
    // no config, gives it version 1.
    s.start(&[]);
    let st = s.wait_for(
        &name,
        "running with its config",
        Duration::from_secs(30),
        |v| {
            v["state"] == "running"
                && v["config_applied"] == 1
                && v["health_message"]
                    .as_str()
                    .is_some_and(|m| m.contains("from-the-desired-state"))
        },
    );
    assert!(
        s.log_text().contains("re-adopted") || s.log_text().contains("adopted"),
        "{}",
        s.log_text()
    );
    assert_eq!(st["config_version"], 1);
}

#[test]
fn operator_commands_are_outpostctls_and_none_creates_a_state_directory() {
    // outpostd has only `run`: the commands it had are refused, and make
    // nothing.
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-such-state");
    for args in [
        vec!["status"],
        vec!["check", "sensor.toml"],
        vec!["events"],
        vec!["image", "list"],
        vec!["logs", "x"],
        vec!["purge", "x"],
        vec!["retention", "x"],
    ] {
        let out = std::process::Command::new(outpost_tests::outpostd_bin())
            .arg("--state-dir")
            .arg(&missing)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains("unrecognized subcommand"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // outpostctl's go through outpostd: without one they say so and how to
    // fix it, and touch no state directory.
    let s = Sensor::new();
    for args in [
        vec!["status"],
        vec!["events"],
        vec!["image", "list"],
        vec!["logs", "x"],
        vec!["purge", "x"],
        vec!["retention", "run", "x"],
    ] {
        let out = s.ctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {err}");
        assert!(
            err.contains("cannot reach outpostd") && err.contains("fix:"),
            "{args:?}: {err}"
        );
        assert!(!s.state.exists(), "{args:?} created {}", s.state.display());
    }
}

#[test]
fn check_on_the_sensor_verifies_bound_host_interfaces_and_says_when_it_could_not() {
    let s = Sensor::new();
    s.import(&outpost_tests::image("net-phy"));
    s.write_sensor(
        "[[instrument]]\nname = \"phy1\"\nimage = \"net-phy\"\nversion = \"0.1.0\"\n[instrument.interfaces.cap0]\ntype = \"phy\"\ndevice = \"opnosuch0\"\n",
    );
    let out = s.check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing interface passed");
    assert!(
        err.contains("opnosuch0") && err.contains("does not exist"),
        "{err}"
    );

    // Elsewhere (no state directory) it checks the file alone and says so.
    let elsewhere = s.dir.path().join("elsewhere");
    let out = s.ctl(&[
        "check",
        s.sensor_file.to_str().unwrap(),
        "--state-dir",
        elsewhere.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("not checked"), "{said}");
    assert!(!s.dir.path().join("elsewhere").exists());
}
