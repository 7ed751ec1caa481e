//! Instruments in real liblxc containers: what they get, how they stop,
//! how they are restarted, and how they survive outpostd's own crash.

use std::fs;
use std::time::{Duration, Instant};

use outpost_protocol::manifest::KNOWN_CAPABILITIES;
use outpost_tests::archive::variant;
use outpost_tests::{
    Sensor, alive, cgroup_dirs, entrypoint_pid, example_image, host_mounts_under, unique,
};
use serde_json::Value;

fn cap_names(hex: &str) -> Vec<&'static str> {
    let mask = u64::from_str_radix(hex, 16).expect("hex capability mask");
    KNOWN_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn instrument(name: &str, extra: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n{extra}\n"
    )
}

fn probe(s: &Sensor, name: &str) -> Value {
    let out = s.attach(name, &["/usr/bin/outpost-probe"]);
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe prints JSON")
}

fn mount<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["target"] == target)
        .unwrap_or_else(|| panic!("no mount at {target} in {:#}", report["mounts"]))
}

#[test]
fn instrument_runs_with_exactly_its_capabilities_limits_and_mounts() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("probe");
    s.write_sensor(&instrument(
        &name,
        "limits = { memory = \"48MiB\", pids = 40 }\nconfig = { greeting = \"hi\" }",
    ));
    s.start(&[]);
    let init_pid = s.wait_running(&name);
    let r = probe(&s, &name);

    // Capabilities: the manifest keeps net_raw and kill, nothing else, in
    // the init and in the instrument itself.
    for who in ["init", "entrypoint"] {
        let p = &r["processes"][who];
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                cap_names(p[set].as_str().unwrap()),
                vec!["kill", "net_raw"],
                "{who} {set}"
            );
        }
        assert_eq!(p["CapAmb"], "0000000000000000", "{who}");
        assert_eq!(p["NoNewPrivs"], "1", "{who} must have no_new_privs");
        assert_eq!(p["Seccomp"], "2", "{who} must run under a seccomp filter");
    }
    assert_eq!(
        r["processes"]["entrypoint"]["cmdline"][0],
        "/usr/bin/example-instrument"
    );

    // Limits: the sensor file's overrides over the manifest's.
    assert_eq!(r["cgroup"]["memory"], (48u64 << 20).to_string());
    assert_eq!(r["cgroup"]["pids"], "40");
    assert_eq!(r["cgroup"]["cpu"], "50000 100000", "manifest cpu = 0.5");

    // Mounts.
    let root = mount(&r, "/");
    assert_eq!(root["fstype"], "overlay");
    // Its lower layer is the shared image, idmapped to the instrument's ids.
    let lower = s.state.join("images/example/0.1.0/rootfs");
    let lower_mount = s.state.join("instances").join(&name).join("lower");
    assert!(
        root["super_options"]
            .as_str()
            .unwrap()
            .contains(&format!("lowerdir={}", lower_mount.display())),
        "{root:#}"
    );
    let persist = mount(&r, "/var/lib/instrument");
    assert!(persist["options"].as_str().unwrap().starts_with("rw"));
    let transient = mount(&r, "/run/instrument");
    assert_eq!(transient["fstype"], "tmpfs");
    assert!(
        transient["super_options"]
            .as_str()
            .unwrap()
            .contains("size=4096k"),
        "manifest transient = 4MiB: {transient:#}"
    );
    assert!(
        mount(&r, "/.outpost/init")["options"]
            .as_str()
            .unwrap()
            .starts_with("ro")
    );

    // Network: loopback only.
    assert_eq!(r["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(r["env"]["OUTPOST_INSTRUMENT"], name.as_str());
    assert_eq!(r["env"]["OUTPOST_SENSOR"], "test");
    assert_eq!(r["hostname"], name.as_str());

    // The image is shared and read-only: a write inside lands in the
    // instrument's upper dir, never in the image.
    let passwd = fs::read(lower.join("etc/passwd")).unwrap();
    let out = s.attach(&name, &["/bin/sh", "-c", "echo evil >> /etc/passwd"]);
    assert!(out.status.success());
    assert_eq!(fs::read(lower.join("etc/passwd")).unwrap(), passwd);
    // The instrument's own output reached its log (it prints the line
    // after it recorded the boot, and the LXC monitor writes it a moment
    // later).
    s.wait_boots(&name, 1);
    let console = s.state.join(format!("logs/{name}/console.log"));
    let said = format!("example-instrument {name}: boot 1 started");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = fs::read_to_string(&console).unwrap();
        if log.contains(&said) {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(init_pid));
}

#[test]
fn removing_an_instrument_leaves_no_container_mount_cgroup_or_directory() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("rm");
    s.write_sensor(&instrument(&name, ""));
    s.start(&[]);
    let init_pid = s.wait_running(&name);
    let entry = entrypoint_pid(init_pid);
    s.wait_boots(&name, 1);
    assert!(
        !cgroup_dirs(&name).is_empty(),
        "a running container has cgroups"
    );

    s.write_sensor("");
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.instrument(&name).is_some() {
        assert!(Instant::now() < deadline, "not removed:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(init_pid) && !alive(entry), "its processes are gone");
    assert!(!s.lxcpath().join(&name).exists(), "no container definition");
    assert!(
        !s.state.join("instances").join(&name).exists(),
        "no instance dir"
    );
    assert_eq!(
        host_mounts_under(&s.state),
        Vec::<String>::new(),
        "no mounts"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroup_dirs(&name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "cgroups left: {:?}",
            cgroup_dirs(&name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its log ends with the clean stop it was asked for.
    let log = fs::read_to_string(s.state.join(format!("logs/{name}/console.log"))).unwrap();
    assert!(
        log.contains("SIGTERM received; stopping"),
        "console log:\n{log}\n--- outpostd log ---\n{}",
        s.log_text()
    );

    // Persistent data stays (in its image) until an explicit purge.
    assert!(s.persist_image(&name).is_file());
    assert!(!s.persist(&name).exists(), "unmounted with the container");
    let out = s.ctl(&["purge", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s.persist_image(&name).exists());
    assert!(!s.state.join("logs").join(&name).exists());

    // SIGTERM: outpostd exits cleanly.
    assert!(s.terminate().success());
}

#[test]
fn purge_is_refused_while_the_instrument_exists() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("keep");
    s.write_sensor(&instrument(&name, ""));
    s.start(&[]);
    s.wait_running(&name);
    s.wait_boots(&name, 1);
    let out = s.ctl(&["purge", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still in the desired state"), "{err}");
    assert!(s.persist(&name).join("boots.jsonl").exists());
}

#[test]
fn restart_policies_act_on_a_real_crash() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let restarts = unique("onfail");
    let stays = unique("never");
    s.write_sensor(&format!(
        "{}{}",
        instrument(
            &restarts,
            "restart = \"on-failure\"\nbackoff = { initial = \"200ms\" }"
        ),
        instrument(&stays, "restart = \"never\"")
    ));
    s.start(&[]);
    let first = s.wait_running(&restarts);
    let never_pid = s.wait_running(&stays);
    s.wait_boots(&restarts, 1);
    s.wait_boots(&stays, 1);

    // Kill the instruments' own processes, as a crash would.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entrypoint_pid(first)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entrypoint_pid(never_pid)),
        nix::sys::signal::Signal::SIGABRT,
    )
    .unwrap();

    let st = s.wait_for(&restarts, "restarted", Duration::from_secs(20), |v| {
        v["state"] == "running" && v["init_pid"].as_i64().is_some_and(|p| p != first as i64)
    });
    assert_eq!(st["restarts"], 1);
    assert_eq!(st["last_exit"]["signal"], 9);
    assert_eq!(st["last_exit"]["signal_name"], "SIGKILL");
    assert_eq!(s.wait_boots(&restarts, 2).len(), 2, "started twice");

    let st = s.wait_for(&stays, "crashed", Duration::from_secs(20), |v| {
        v["state"] == "crashed"
    });
    assert_eq!(st["last_exit"]["signal_name"], "SIGABRT");
    assert!(
        st["detail"]
            .as_str()
            .unwrap()
            .contains("restart policy never"),
        "{st:#}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let st = s.instrument(&stays).unwrap();
    assert_eq!(st["state"], "crashed", "policy never leaves it down");
    assert_eq!(s.boots(&stays).len(), 1);
    assert!(
        !s.lxcpath().join(&stays).exists(),
        "a crashed container is not left defined"
    );
}

#[test]
fn clean_exit_is_restarted_only_under_always() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    // A variant that exits 0 by itself after 300ms.
    let img = variant(&example_image(), dir.path(), |m| {
        m.name = "quitter".into();
        m.entrypoint = vec![
            "/usr/bin/example-instrument".into(),
            "--exit-after".into(),
            "300ms".into(),
            "--exit-code".into(),
            "0".into(),
        ];
    });
    s.import(&img);
    let always = unique("always");
    let onfail = unique("clean");
    let q = |n: &str, policy: &str| {
        format!(
            "[[instrument]]\nname = \"{n}\"\nimage = \"quitter\"\nversion = \"0.1.0\"\nrestart = \"{policy}\"\nbackoff = {{ initial = \"100ms\", max = \"200ms\" }}\n"
        )
    };
    s.write_sensor(&format!(
        "{}{}",
        q(&always, "always"),
        q(&onfail, "on-failure")
    ));
    s.start(&[]);
    s.wait_for(&always, "restarted twice", Duration::from_secs(30), |v| {
        v["restarts"].as_u64().unwrap_or(0) >= 2
    });
    let st = s.wait_for(&onfail, "exited", Duration::from_secs(30), |v| {
        v["state"] == "exited"
    });
    assert_eq!(st["last_exit"]["code"], 0);
    assert_eq!(st["restarts"], 0);
}

#[test]
fn crash_loop_is_reported_and_retried_forever() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    let img = variant(&example_image(), dir.path(), |m| {
        m.name = "crasher".into();
        m.entrypoint = vec![
            "/usr/bin/example-instrument".into(),
            "--exit-after".into(),
            "100ms".into(),
            "--exit-code".into(),
            "3".into(),
        ];
    });
    s.import(&img);
    let name = unique("loop");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"crasher\"\nversion = \"0.1.0\"\nbackoff = {{ initial = \"100ms\", max = \"400ms\", crash-loop-after = 3 }}\n"
    ));
    s.start(&[]);
    let st = s.wait_for(&name, "crash-looping", Duration::from_secs(30), |v| {
        v["state"] == "crash-looping"
    });
    assert_eq!(st["last_exit"]["code"], 3);
    assert!(
        st["detail"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{st:#}"
    );
    let seen = st["restarts"].as_u64().unwrap();
    // It keeps being retried at the capped back-off.
    s.wait_for(&name, "retried again", Duration::from_secs(30), |v| {
        v["restarts"].as_u64().unwrap_or(0) >= seen + 3 && v["state"] == "crash-looping"
    });
    let exits = fs::read_to_string(s.state.join(format!("logs/{name}/console.log"))).unwrap();
    assert!(
        exits.matches("exiting with status 3").count() >= 4,
        "{exits}"
    );
}

#[test]
fn instruments_survive_kill_9_of_outpostd_and_are_readopted_not_restarted() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("adopt");
    let b = unique("adopt");
    let c = unique("gone");
    s.write_sensor(&format!(
        "{}{}{}",
        instrument(&a, ""),
        instrument(&b, ""),
        instrument(&c, "backoff = { initial = \"100ms\" }")
    ));
    s.start(&[]);
    let pa = s.wait_running(&a);
    let pb = s.wait_running(&b);
    let pc = s.wait_running(&c);
    for n in [&a, &b, &c] {
        s.wait_boots(n, 1);
    }

    s.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(pa) && alive(pb) && alive(pc),
        "instruments outlive outpostd"
    );
    let out = s.ctl(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(69),
        "status says outpostd is not there: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // While outpostd is down, one instrument crashes.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entrypoint_pid(pc)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    s.start(&[]);
    for (n, pid) in [(&a, pa), (&b, pb)] {
        let st = s.wait_for(n, "re-adopted", Duration::from_secs(20), |v| {
            v["detail"].as_str().unwrap_or("").contains("adopted")
        });
        assert_eq!(st["state"], "running");
        assert_eq!(st["init_pid"], pid, "same init pid: not restarted");
        assert_eq!(st["restarts"], 0);
        assert_eq!(s.boots(n).len(), 1, "the instrument did not start again");
    }
    // The one that died meanwhile is noticed and restarted by its policy.
    let st = s.wait_for(&c, "restarted", Duration::from_secs(20), |v| {
        v["state"] == "running" && v["init_pid"].as_i64().is_some_and(|p| p != pc as i64)
    });
    assert_eq!(st["last_exit"]["signal_name"], "SIGKILL");
    assert!(s.log_text().contains("re-adopted running instrument"));

    // SIGTERM leaves them running by default...
    assert!(s.terminate().success());
    assert!(alive(pa) && alive(pb));
    // ...and --stop-on-exit stops them.
    s.start(&["--stop-on-exit"]);
    s.wait_for(&a, "re-adopted", Duration::from_secs(20), |v| {
        v["state"] == "running" && v["init_pid"] == pa
    });
    assert!(s.terminate().success());
    assert!(!alive(pa) && !alive(pb));
    assert_eq!(s.recorded(&a).unwrap()["state"], "stopped");
    assert!(!s.lxcpath().join(&a).exists());
}

#[test]
fn persistent_data_survives_restart_and_upgrade_and_transient_does_not() {
    let mut s = Sensor::new();
    let base = example_image();
    s.import(&base);
    let name = unique("store");
    s.write_sensor(&instrument(&name, "backoff = { initial = \"100ms\" }"));
    s.start(&[]);
    let p1 = s.wait_running(&name);
    let wait_boots = |n: usize| {
        s.wait_boots(&name, n);
    };
    wait_boots(1);
    let out = s.attach(
        &name,
        &["/bin/sh", "-c", "echo kept > /var/lib/instrument/data && echo lost > /run/instrument/scratch && echo lost > /tmp/rootfs-change"],
    );
    assert!(out.status.success());

    // Restart (after a crash).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entrypoint_pid(p1)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p2 = s.wait_for(&name, "restarted", Duration::from_secs(20), |v| {
        v["state"] == "running" && v["init_pid"].as_i64().is_some_and(|p| p != p1 as i64)
    })["init_pid"]
        .as_i64()
        .unwrap() as i32;
    wait_boots(2);
    let boots = s.boots(&name);
    assert_eq!(boots[0]["transient_held"], serde_json::json!([]));
    assert_eq!(
        boots[1]["transient_held"],
        serde_json::json!([]),
        "/run/instrument must be empty at every start (boot 1 left boot-1 and scratch there)"
    );
    let out = s.attach(&name, &["/bin/cat", "/var/lib/instrument/data"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    let out = s.attach(&name, &["/bin/ls", "/tmp"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rootfs-change"));

    // Upgrade to a new image version that asks for more persistent
    // storage: the container is recreated, the storage grows and keeps its
    // data.
    let dir = tempfile::tempdir().unwrap();
    let v2 = variant(&base, dir.path(), |m| {
        m.version = "0.2.0".into();
        m.storage.persistent = bytesize::ByteSize::mib(96);
    });
    s.import(&v2);
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.2.0\"\n"
    ));
    s.reload();
    let st = s.wait_for(&name, "upgraded", Duration::from_secs(30), |v| {
        v["state"] == "running"
            && v["version"] == "0.2.0"
            && v["init_pid"].as_i64().is_some_and(|p| p != p2 as i64)
    });
    assert_eq!(st["restarts"], 1, "an upgrade is not a restart");
    wait_boots(3);
    let out = s.attach(&name, &["/bin/cat", "/var/lib/instrument/data"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    let out = s.attach(&name, &["/bin/df", "-k", "/var/lib/instrument"]);
    let df = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        outpost_tests::df_size_kib(&df) >= 96 * 1024,
        "grown to 96 MiB: {df}"
    );
    assert!(s.log_text().contains("growing persistent storage"));
    let r = probe(&s, &name);
    assert_eq!(r["env"]["OUTPOST_IMAGE"], "example:0.2.0");

    // The old version is no longer in use and can go; the new one cannot.
    let out = s.ctl(&["image", "rm", "example", "0.1.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ctl(&["image", "rm", "example", "0.2.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn a_crash_mid_operation_leaves_nothing_half_made() {
    let mut s = Sensor::new();
    let img = example_image();
    // outpostd dies after unpacking an import, before placing it.
    s.write_sensor("");
    s.start_env(&[], &[("OUTPOST_FAILPOINT", "import-after-unpack")]);
    let out = s.ctl(&[
        "image",
        "import",
        img.archive.to_str().unwrap(),
        "--sha256",
        &img.sha256,
    ]);
    assert!(!out.status.success());
    assert!(!s.wait_exit(Duration::from_secs(10)).success());
    let staging: Vec<_> = fs::read_dir(s.state.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .collect();
    assert_eq!(staging.len(), 1, "the crash left its staging directory");
    s.import(&img);

    // outpostd dies after defining a container and building its tree
    // (mounts and all), before starting it.
    let name = unique("half");
    s.write_sensor(&instrument(&name, ""));
    s.spawn_env(&[], &[("OUTPOST_FAILPOINT", "after-rootfs")]);
    assert!(!s.wait_exit(Duration::from_secs(20)).success());
    assert!(
        s.lxcpath().join(&name).join("config").exists(),
        "half-made container"
    );
    let tree = s.state.join("instances").join(&name);
    assert!(tree.exists());
    assert!(
        host_mounts_under(&tree).len() >= 4,
        "image, overlay, storage and binds: {:?}",
        host_mounts_under(&tree)
    );

    // The next start clears both and starts the instrument cleanly.
    s.start(&[]);
    s.wait_running(&name);
    assert!(
        s.log_text()
            .contains("never started (half made by a crash)"),
        "{}",
        s.log_text()
    );
    assert!(
        s.log_text()
            .contains("removed what an interrupted image import left")
    );
    let left: Vec<_> = fs::read_dir(s.state.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staging left: {left:?}");
    assert_eq!(s.wait_boots(&name, 1).len(), 1);
    // The leftover tree was taken apart, not mounted over.
    let points: Vec<String> = host_mounts_under(&tree)
        .iter()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    let mut unique_points = points.clone();
    unique_points.sort();
    unique_points.dedup();
    assert_eq!(points.len(), unique_points.len(), "{points:#?}");
}

#[test]
fn console_log_is_rotated_by_size() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    let img = variant(&example_image(), dir.path(), |m| {
        m.name = "chatty".into();
        m.entrypoint = vec![
            "/usr/bin/example-instrument".into(),
            "--heartbeat".into(),
            "2ms".into(),
        ];
    });
    s.import(&img);
    let name = unique("chatty");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"chatty\"\nversion = \"0.1.0\"\n"
    ));
    s.start(&["--console-log-size", "8192"]);
    s.wait_running(&name);
    let logs = s.state.join("logs").join(&name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs.join("console.log.1").exists() {
        assert!(Instant::now() < deadline, "console.log was never rotated");
        std::thread::sleep(Duration::from_millis(100));
    }
    for f in ["console.log", "console.log.1"] {
        let len = fs::metadata(logs.join(f)).unwrap().len();
        assert!(len <= 8192, "{f} is {len} bytes, over the 8192 limit");
    }
    // Lines are intact and byte-exact (raw console: no \r).
    let out = s.ctl(&["logs", &name]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("heartbeat"), "{text}");
    assert!(!text.contains('\r'));
}

#[test]
fn an_entrypoint_that_cannot_run_is_reported_by_name() {
    let mut s = Sensor::new();
    let dir = tempfile::tempdir().unwrap();
    let img = outpost_tests::archive::variant_with(
        &example_image(),
        dir.path(),
        |m| {
            m.name = "broken".into();
            m.entrypoint = vec!["/usr/bin/broken".into()];
        },
        &[("/usr/bin/broken", 0o755, b"#!/nonexistent/interpreter\n")],
    );
    s.import(&img);
    let name = unique("broken");
    s.write_sensor(&format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"broken\"\nversion = \"0.1.0\"\nbackoff = {{ initial = \"200ms\" }}\n"
    ));
    s.start(&[]);
    let st = s.wait_for(&name, "failing", Duration::from_secs(20), |v| {
        v["last_exit"]["code"] == 127
    });
    let detail = st["last_exit"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot start") && detail.contains("/usr/bin/broken"),
        "{detail}"
    );
    assert!(
        ["backoff", "starting", "running", "crash-looping"]
            .contains(&st["state"].as_str().unwrap()),
        "it is retried: {st:#}"
    );
}
