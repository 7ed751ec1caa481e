//! Attacks from inside an instrument, as an attacker who owns one would
//! try them (busybox and the in-container probe, through `lxc-attach`),
//! and what the host and a bystander instrument see meanwhile.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use outpost_tests::{Sensor, alive, example_image, host_mounts_under, unique};
use serde_json::Value;

fn instrument(name: &str, extra: &str) -> String {
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\nrestart = \"on-failure\"\nbackoff = {{ initial = \"300ms\", max = \"1s\" }}\n{extra}\n"
    )
}

fn sh(s: &Sensor, name: &str, script: &str) -> Output {
    s.attach(name, &["/bin/sh", "-c", script])
}

fn text(o: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `argv` as host user `nobody` (as any local user could). It goes
/// through a shell: setpriv itself still holds root's capabilities when
/// it execs, which no local user has.
fn as_nobody(argv: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$0\" \"$@\""])
        .args(argv)
        .output()
        .expect("run setpriv (util-linux)")
}

/// The mount options of the host mount at `target`.
fn host_mount_options(target: &std::path::Path) -> String {
    let t = target.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(t.as_str()))
        .unwrap_or_else(|| panic!("{t} is not mounted"))
        .split(' ')
        .nth(5)
        .unwrap()
        .to_string()
}

fn probe_json(out: &Output) -> Value {
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn root_inside_is_an_unprivileged_host_id_and_a_setuid_copy_is_harmless() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("suid");
    s.write_sensor(&instrument(&name, ""));
    s.start(&[]);
    let pid = s.wait_running(&name);
    s.wait_boots(&name, 1);

    // Its user namespace maps its root to an id of its own, not the host's.
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let f: Vec<u64> = map.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(f.len(), 3, "one range: {map}");
    let base = f[1] as u32;
    assert_eq!((f[0], f[2]), (0, 65536), "{map}");
    assert!(base >= 1_000_000, "root inside is host id {base}");
    assert_eq!(s.instrument_uid(&name), base);

    // The attack: a setuid-root copy of a shell, kept in its storage, and
    // a file made by root in its root filesystem.
    let out = sh(
        &s,
        &name,
        "cp /bin/busybox /var/lib/instrument/s && chmod 4755 /var/lib/instrument/s && touch /made-by-root && id -u",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "root inside"
    );

    let copy = s.persist(&name).join("s");
    let m = fs::symlink_metadata(&copy).unwrap();
    assert_eq!(m.uid(), base, "setuid to its own id, not host root");
    assert_ne!(m.uid(), 0);
    let upper = s.state.join("instances").join(&name).join("scratch/upper");
    let made = fs::symlink_metadata(upper.join("made-by-root")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (base, base),
        "owned by the mapped id"
    );

    // Where it lies, no host user but root can reach it, and the mounts
    // it is on honour no setuid bit and no device.
    for dir in [
        "",
        "instances",
        "persist",
        "secrets",
        "logs",
        "containers",
        "images",
    ] {
        let d = s.state.join(dir);
        let mode = fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{}: others have no access", d.display());
        assert_eq!(mode & 0o700, 0o700, "{}", d.display());
    }
    let opts = host_mount_options(&s.persist(&name));
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{opts}");
    let out = as_nobody(&[copy.to_str().unwrap(), "id", "-u"]);
    assert!(!out.status.success(), "a host user ran it: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out)
    );
    let out = as_nobody(&["stat", copy.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));

    // Its bus key is its root's alone, and the image it runs from is
    // untouched.
    let key = fs::metadata(s.state.join(format!("secrets/{name}.nkey"))).unwrap();
    assert_eq!((key.uid(), key.mode() & 0o777), (base, 0o400));
    assert!(
        !s.state
            .join("images/example/0.1.0/rootfs/made-by-root")
            .exists()
    );
}

#[test]
fn a_hostile_exit_record_never_stalls_supervision_and_is_not_believed() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let fifo = unique("fifo");
    let link = unique("link");
    let huge = unique("huge");
    let bystander = unique("by");
    s.write_sensor(&format!(
        "{}{}{}{}",
        instrument(&fifo, ""),
        instrument(&link, ""),
        instrument(&huge, ""),
        instrument(&bystander, "")
    ));
    s.start(&[]);
    let by_pid = s.wait_running(&bystander);
    for n in [&fifo, &link, &huge] {
        s.wait_running(n);
    }
    s.wait_boots(&bystander, 1);
    // A host file an attacker would like outpostd to read back to it.
    let secret = s.dir.path().join("host-secret.json");
    fs::write(&secret, r#"{"code":0,"error":"HOST-SECRET-CONTENT"}"#).unwrap();

    // Each keeps outpost-init from writing its record (a directory where
    // its temporary file goes), puts something hostile where the record
    // is read, and crashes.
    let block = "mkdir /.outpost/status/.exit.json.tmp && rm -f /.outpost/status/exit.json";
    let kill = "kill -9 $(pidof example-instrument)";
    let out = sh(
        &s,
        &fifo,
        &format!("{block} && mkfifo /.outpost/status/exit.json"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sh(
        &s,
        &link,
        &format!(
            "{block} && ln -s {} /.outpost/status/exit.json",
            secret.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    // (The shell that crashes its instrument is ended with it.)
    for n in [&fifo, &link] {
        sh(&s, n, kill);
    }
    // The status directory is a small tmpfs: the write stops at its size.
    let out = sh(
        &s,
        &huge,
        &format!(
            "{block}; dd if=/dev/zero of=/.outpost/status/exit.json bs=1024 count=4096 2>&1; {kill}"
        ),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No space left on device"),
        "{}",
        text(&out)
    );
    // Meanwhile a bystander crashes too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(outpost_tests::entrypoint_pid(by_pid)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The bystander is restarted within its back-off, as if nothing else
    // happened.
    let t0 = Instant::now();
    let st = s.wait_for(&bystander, "restarted", Duration::from_secs(20), |v| {
        v["state"] == "running" && v["init_pid"].as_i64().is_some_and(|p| p != by_pid as i64)
    });
    assert_eq!(st["last_exit"]["signal_name"], "SIGKILL");
    eprintln!("bystander restarted {:?} after its crash", t0.elapsed());

    // The attackers' records are called what they are, and none of the
    // host file's content reached the status.
    for (n, why) in [
        (&fifo, "FIFO"),
        (&link, "symbolic link"),
        (&huge, "more than"),
    ] {
        let st = s.wait_for(
            n,
            "restarted after its crash",
            Duration::from_secs(20),
            |v| {
                v["last_exit"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("unreadable exit record"))
            },
        );
        let detail = st["last_exit"]["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{n}: {detail}");
        assert!(!st.to_string().contains("HOST-SECRET-CONTENT"), "{st:#}");
        s.wait_for(n, "running again", Duration::from_secs(20), |v| {
            v["state"] == "running"
        });
    }
    // And SIGHUP is still served at once.
    s.write_sensor(&format!(
        "{}{}{}",
        instrument(&fifo, ""),
        instrument(&link, ""),
        instrument(&huge, ""),
    ));
    s.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.instrument(&bystander).is_some() {
        assert!(Instant::now() < deadline, "the reload was not served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nested_user_namespaces_are_refused() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("nest");
    s.write_sensor(&instrument(&name, ""));
    s.start(&[]);
    s.wait_running(&name);
    let out = s.attach(&name, &["/usr/bin/outpost-probe", "userns"]);
    let r = probe_json(&out);
    assert_eq!(
        r["unshare_newuser"], "EPERM: Operation not permitted",
        "{r:#}"
    );
    assert!(r.get("tmpfs").is_none());
    // busybox's unshare (unshare(2)) too.
    let out = sh(&s, &name, "unshare -U -r id -u");
    assert!(!out.status.success(), "{}", text(&out));
    // Threads and processes are still made as usual (clone3 falls back to
    // clone, which is only refused with CLONE_NEWUSER).
    let out = sh(&s, &name, "(sleep 0.1 & wait) && echo forked");
    assert!(out.status.success(), "{}", text(&out));
}

fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn two_thousand_bus_connections_are_capped_and_give_their_descriptors_back() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let attacker = unique("conns");
    let bystander = unique("by");
    s.write_sensor(&format!(
        "{}{}",
        instrument(&attacker, ""),
        instrument(&bystander, "")
    ));
    s.start(&["--max-bus-connections", "16"]);
    let by_pid = s.wait_running(&bystander);
    s.wait_running(&attacker);
    for n in [&attacker, &bystander] {
        s.wait_for(n, "healthy", Duration::from_secs(20), |v| {
            v["health"] == "ok"
        });
    }
    let daemon = s.daemon_pid().unwrap();
    let before = open_fds(daemon);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let s = &s;
        let attacker = &attacker;
        scope.spawn(move || {
            let out = s.attach(
                attacker,
                &["/usr/bin/outpost-probe", "connect-many", "2000", "4"],
            );
            tx.send(out).unwrap();
        });
        let mut peak = before;
        let out = loop {
            peak = peak.max(open_fds(daemon));
            if let Ok(out) = rx.try_recv() {
                break out;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let r = probe_json(&out);
        eprintln!("outpostd descriptors: {before} before, {peak} at most; probe: {r}");
        assert_eq!(
            r["opened"].as_u64().unwrap() + r["failed"].as_u64().unwrap(),
            2000
        );
        assert!(
            r["still_open"].as_u64().unwrap() <= 16,
            "more than the cap stayed spliced: {r}"
        );
        assert!(
            peak < before + 100,
            "outpostd went from {before} to {peak} descriptors"
        );
    });

    // Its descriptors come back once the attacker's connections are gone,
    // and the bystander never noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(daemon) > before + 4 {
        assert!(
            Instant::now() < deadline,
            "descriptors not released: {} (was {before})",
            open_fds(daemon)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = s.instrument(&bystander).unwrap();
    assert_eq!(st["init_pid"], by_pid);
    assert_eq!(st["health"], "ok", "{st:#}");
    assert!(s.log_text().contains("bus connection refused"));
}

#[test]
fn persistent_storage_filled_past_its_size_is_enospc_and_an_event_and_nothing_else() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("fill");
    let bystander = unique("by");
    s.write_sensor(&format!(
        "{}{}",
        instrument(&name, ""),
        instrument(&bystander, "")
    ));
    s.start(&[]);
    s.wait_running(&name);
    let by_pid = s.wait_running(&bystander);
    s.wait_boots(&name, 1);
    let host_free = || {
        nix::sys::statvfs::statvfs(&s.state)
            .map(|v| v.blocks_available() * v.fragment_size())
            .unwrap()
    };
    let free_before = host_free();

    // The manifest gives it 32 MiB; it writes 200.
    let out = sh(
        &s,
        &name,
        "dd if=/dev/zero of=/var/lib/instrument/fill bs=1048576 count=200 2>&1; df -k /var/lib/instrument",
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("No space left on device"), "{}", text(&out));
    let written = fs::metadata(s.persist(&name).join("fill")).unwrap().len();
    assert!(
        ((32 << 20)..(48 << 20)).contains(&written),
        "{written} bytes written into 32 MiB"
    );
    // Inside, df shows its own storage, not the host's disk.
    let df_kb = outpost_tests::df_size_kib(&said);
    assert!(df_kb < 64 * 1024, "df inside shows {df_kb} KiB");
    let used = free_before.saturating_sub(host_free());
    assert!(used < 64 << 20, "the host's disk lost {used} bytes");

    // A storage-full event, and the status says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let full = s
            .events(Some("outpostd"))
            .into_iter()
            .find(|e| e.kind == "storage-full" && e.payload["instrument"] == name.as_str());
        if let Some(e) = full {
            assert!(e.payload["size_bytes"].as_u64().unwrap() >= 32 << 20);
            break;
        }
        assert!(Instant::now() < deadline, "no storage-full event");
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = s.instrument(&name).unwrap();
    assert_eq!(st["storage_full"], true, "{st:#}");
    let table = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(table.contains("persistent storage full"), "{table}");

    // Nothing else on the sensor noticed; deleting makes room again.
    let by = s.instrument(&bystander).unwrap();
    assert_eq!(
        (by["init_pid"].clone(), by["health"].clone()),
        (by_pid.into(), "ok".into())
    );
    let out = sh(&s, &name, "rm /var/lib/instrument/fill");
    assert!(out.status.success(), "{}", text(&out));
    s.wait_for(&name, "with room again", Duration::from_secs(20), |v| {
        v["storage_full"] == false
    });
}

#[test]
fn a_fork_bomb_and_a_memory_hog_stay_inside_their_limits() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let bomb = unique("bomb");
    let hog = unique("hog");
    let bystander = unique("by");
    s.write_sensor(&format!(
        "{}{}{}",
        instrument(&bomb, "limits = { pids = 40 }"),
        instrument(&hog, "limits = { memory = \"48MiB\" }"),
        instrument(&bystander, "")
    ));
    s.start(&[]);
    for n in [&bomb, &hog] {
        s.wait_running(n);
    }
    let by_pid = s.wait_running(&bystander);
    s.wait_for(&bystander, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });

    // The bomb runs into its pids limit; the hog is killed by its memory
    // limit long before 1 GiB.
    let out = sh(&s, &bomb, "b() { b | b & }; b; sleep 3; echo survived");
    eprintln!("fork bomb: {}", text(&out));
    let out = s.attach(&hog, &["/usr/bin/outpost-probe", "hog", "1024"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !said.contains("\"done\":true"),
        "1 GiB fit in 48 MiB: {said}"
    );
    assert!(!out.status.success(), "{}", text(&out));

    // The host still makes processes, outpostd is fine, and so is the
    // bystander.
    assert!(Command::new("true").status().unwrap().success());
    assert!(alive(s.daemon_pid().unwrap()));
    std::thread::sleep(Duration::from_secs(3));
    let by = s.instrument(&bystander).unwrap();
    assert_eq!(by["init_pid"], by_pid);
    assert_eq!(by["health"], "ok", "{by:#}");
    assert!(!host_mounts_under(&s.state).is_empty());
}

#[test]
fn nats_server_itself_caps_an_instruments_connections() {
    // Past the proxy (as if it had a bug): the instrument's own identity,
    // straight to nats-server, gets at most its account's limit.
    let mut s = Sensor::new();
    s.import(&example_image());
    let name = unique("acct");
    s.write_sensor(&instrument(&name, ""));
    s.start(&["--max-bus-connections", "4"]);
    s.wait_for(&name, "healthy", Duration::from_secs(20), |v| {
        v["health"] == "ok"
    });
    let seed = fs::read_to_string(s.state.join(format!("secrets/{name}.nkey"))).unwrap();
    let url = format!("nats://127.0.0.1:{}", s.nats_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ok, refused) = rt.block_on(async {
        let mut held = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..8 {
            match async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
                .max_reconnects(Some(0))
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str())
                .await
            {
                Ok(c) => {
                    // A refused login may show only after CONNECT.
                    let alive = tokio::time::timeout(Duration::from_secs(2), c.flush())
                        .await
                        .is_ok_and(|r| r.is_ok());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if alive && c.connection_state() == async_nats::connection::State::Connected {
                        held.push(c);
                    } else {
                        refused.push("closed after CONNECT".to_string());
                    }
                }
                Err(e) => refused.push(e.to_string()),
            }
        }
        (held.len(), refused)
    });
    // Its instrument holds one connection already.
    assert!(ok <= 3, "{ok} more connections accepted past a limit of 4");
    assert!(!refused.is_empty());
    assert!(
        s.state
            .join("nats/nats-server.log")
            .exists()
            .then(|| fs::read_to_string(s.state.join("nats/nats-server.log")).unwrap())
            .unwrap()
            .contains("maximum account active connections exceeded"),
        "{refused:?}"
    );
    // The instrument itself never noticed.
    let st = s.instrument(&name).unwrap();
    assert_eq!(st["health"], "ok", "{st:#}");
}

#[test]
fn outpostd_raises_its_open_file_limit_and_says_so() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // As under systemd's default: a soft limit of 1024 (this test runs in
    // a process of its own).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).unwrap();
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", s.daemon_pid().unwrap())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 1024, "{limits}");
    assert!(
        s.log_text().contains("open-file limit raised"),
        "{}",
        s.log_text()
    );
}
