//! Harness for Outpost's end-to-end tests: real `outpostd` processes on
//! real liblxc containers, each in its own temporary state directory and
//! with its own private dbus-daemon, operated with `outpostctl` as an
//! operator would, with unique instrument names, cleaned up in `Drop` also
//! when a test fails.
//!
//! Binaries and images come from the shared build (`./run build`):
//! - `OUTPOSTD` (default `target/debug/outpostd`; `outpostctl` is the one
//!   next to it),
//! - `OUTPOST_INIT` (default the static `outpost-init` under
//!   `target/<host>/release/`),
//! - `OUTPOST_TEST_IMAGES` (default `target/images`), holding
//!   `example-0.1.0.tar.gz` and its `.sha256`.

pub mod archive;
pub mod artifacts;
pub mod beacon;
pub mod dbus;
pub mod fleet;
pub mod hostnet;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outpost_platform::db::Db;
use outpost_platform::images::ImageStore;
use outpost_platform::paths::StateDir;
use serde_json::Value;

use crate::dbus::{DBus, outpostctl_bin};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple")
}

/// The `outpostd` binary under test.
pub fn outpostd_bin() -> PathBuf {
    let p = env_or("OUTPOSTD", workspace().join("target/debug/outpostd"));
    assert!(
        p.exists(),
        "{} is missing: run `./run build` first",
        p.display()
    );
    p
}

/// A binary of this workspace's debug build (next to `outpostd`), such as
/// `beacon-home` or `escape-probe`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = outpostd_bin().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: run `./run build` first",
        p.display()
    );
    p
}

/// The static `outpost-init`.
pub fn init_bin() -> PathBuf {
    let p = env_or(
        "OUTPOST_INIT",
        workspace().join(format!("target/{}/release/outpost-init", host_triple())),
    );
    assert!(
        p.exists(),
        "{} is missing: run `./run build` first",
        p.display()
    );
    p
}

/// Folder of built test images.
pub fn images_dir() -> PathBuf {
    env_or("OUTPOST_TEST_IMAGES", workspace().join("target/images"))
}

/// An image archive and its sha256.
#[derive(Debug, Clone)]
pub struct ImageFile {
    pub archive: PathBuf,
    pub sha256: String,
}

/// The example image built by `./run build`.
pub fn example_image() -> ImageFile {
    image("example")
}

/// A built test image, `images/<name>` at version 0.1.0.
pub fn image(name: &str) -> ImageFile {
    let archive = images_dir().join(format!("{name}-0.1.0.tar.gz"));
    let side = images_dir().join(format!("{name}-0.1.0.tar.gz.sha256"));
    let sha = fs::read_to_string(&side)
        .unwrap_or_else(|e| panic!("{}: {e}: run `./run build` first", side.display()));
    ImageFile {
        archive,
        sha256: sha.split_whitespace().next().unwrap().to_string(),
    }
}

/// A unique, valid instrument name: `<prefix>-<6 hex>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// One sensor: a state directory, a sensor file, its own dbus-daemon and
/// (while started) an `outpostd run` process serving on that bus.
pub struct Sensor {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub sensor_file: PathBuf,
    /// The sensor's private bus: `outpostd run --dbus` serves on it (unless
    /// the test passes its own `--dbus`) and [`Sensor::ctl`] talks to it.
    pub bus: DBus,
    /// The bus a test gave with its own `--dbus`, while its daemon runs.
    own_bus: Option<String>,
    daemon: Option<Child>,
    log: PathBuf,
}

impl Default for Sensor {
    fn default() -> Self {
        Self::new()
    }
}

impl Sensor {
    pub fn new() -> Sensor {
        let dir = tempfile::Builder::new()
            .prefix("outpost-test-")
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        let sensor_file = dir.path().join("sensor.toml");
        let log = dir.path().join("outpostd.log");
        Sensor {
            dir,
            state,
            sensor_file,
            bus: DBus::start(),
            own_bus: None,
            daemon: None,
            log,
        }
    }

    /// The bus the daemon serves on.
    pub fn bus_address(&self) -> &str {
        self.own_bus.as_deref().unwrap_or(&self.bus.address)
    }

    /// Runs `outpostctl --bus <the daemon's bus> <args>` as root and
    /// returns its output.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(outpostctl_bin())
            .arg("--bus")
            .arg(self.bus_address())
            .args(args)
            .output()
            .expect("run outpostctl")
    }

    /// `outpostctl check <sensor file> --state-dir <state>`: offline, from
    /// the state directory.
    pub fn check(&self) -> Output {
        self.ctl(&[
            "check",
            self.sensor_file.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
        ])
    }

    /// Imports an image; panics with the reason if it fails. While outpostd
    /// runs, through `outpostctl image import`; before it is started (a
    /// test's set-up), with the platform's image store directly, as
    /// outpostd's `ImportImage` does, creating the state directory.
    pub fn import(&self, img: &ImageFile) {
        if self.daemon.is_some() {
            let out = self.ctl(&[
                "image",
                "import",
                img.archive.to_str().unwrap(),
                "--sha256",
                &img.sha256,
            ]);
            assert!(
                out.status.success(),
                "import of {} failed: {}",
                img.archive.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        outpost_platform::paths::create_private_dir(&self.state).expect("state directory");
        let st = StateDir::new(&self.state);
        let db = Db::open(&st.db()).expect("state database");
        if let Err(e) = ImageStore::new(&st).import(&db, &img.archive, &img.sha256, |_| {}) {
            panic!("import of {} failed: {e}", img.archive.display());
        }
    }

    /// Writes the sensor file: `[sensor] name = "test"` plus `body`.
    pub fn write_sensor(&self, body: &str) {
        fs::write(
            &self.sensor_file,
            format!("[sensor]\nname = \"test\"\n\n{body}"),
        )
        .expect("write sensor file");
    }

    /// Starts `outpostd run` on this sensor and waits until it is ready
    /// (it has adopted or started what it should).
    pub fn start(&mut self, extra: &[&str]) {
        self.start_env(extra, &[]);
    }

    /// [`Sensor::start`] with extra environment variables.
    pub fn start_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let before = self.log_text().matches("outpostd ready").count();
        self.spawn_env(extra, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log_text().matches("outpostd ready").count() <= before {
            if let Some(c) = self.daemon.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("outpostd exited at start ({st})\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "outpostd not ready within 30s\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `outpostd run` without waiting for it.
    pub fn spawn(&mut self, extra: &[&str]) {
        self.spawn_env(extra, &[]);
    }

    /// [`Sensor::spawn`] with extra environment variables.
    pub fn spawn_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already started");
        // Never the host's bus: the sensor's own, unless the test passes
        // its own `--dbus`.
        self.own_bus = extra
            .iter()
            .position(|a| *a == "--dbus")
            .map(|i| extra.get(i + 1).expect("--dbus takes a value").to_string());
        let own_bus = ["--dbus", &self.bus.address];
        let bus: &[&str] = if self.own_bus.is_some() {
            &[]
        } else {
            &own_bus
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(outpostd_bin())
            .arg("--state-dir")
            .arg(&self.state)
            .arg("run")
            .arg("--sensor-file")
            .arg(&self.sensor_file)
            .arg("--init")
            .arg(init_bin())
            .args([
                "--reconcile-every",
                "500ms",
                "--stop-grace",
                "3s",
                "--nats-port",
                "0",
            ])
            .args(bus)
            .args(extra)
            .env("OUTPOST_LOG", "info,outpost_platform=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn outpostd");
        self.daemon = Some(child);
    }

    /// The daemon's PID while started.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|c| c.id() as i32)
    }

    /// Sends SIGHUP: re-read the sensor file.
    pub fn reload(&self) {
        let pid = self.daemon_pid().expect("daemon started");
        kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP");
    }

    /// `kill -9` of the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to the daemon; waits for it and returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.daemon.take().expect("daemon started");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "outpostd did not exit within 30s of SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the daemon to exit on its own (e.g. on a bad sensor file).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.daemon.take().expect("daemon started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("outpostd kept running\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `outpostctl status --format json` (outpostd's `StatusReport`).
    pub fn status(&self) -> Value {
        let out = self.ctl(&["status", "--format", "json"]);
        assert!(
            out.status.success(),
            "outpostctl status failed: {}\n--- outpostd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    /// What outpostd last recorded about an instrument in its state
    /// database, for when no outpostd runs to answer `status` (the same
    /// fields as an instrument in [`Sensor::status`]).
    pub fn recorded(&self, name: &str) -> Option<Value> {
        assert!(self.daemon.is_none(), "outpostd runs: ask it (status)");
        let db = Db::open(&StateDir::new(&self.state).db()).expect("state database");
        db.status(name)
            .expect("read the recorded status")
            .map(|s| serde_json::to_value(s).expect("serializes"))
    }

    /// The status of one instrument.
    pub fn instrument(&self, name: &str) -> Option<Value> {
        self.status()["instruments"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
    }

    /// Polls the instrument's status until `pred` holds; panics with the
    /// daemon log on timeout.
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let of = |st: &Value| {
            st["instruments"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == name))
                .cloned()
        };
        let st = self.wait_status(&format!("instrument {name} {what}"), timeout, |st| {
            of(st).is_some_and(|i| pred(&i))
        });
        of(&st).expect("found above")
    }

    /// Polls the whole status until `pred` holds; panics with the daemon
    /// log on timeout.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            last = self.status();
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the sensor never showed {what} within {timeout:?}; last status: {last:#}\n--- outpostd log ---\n{}",
            self.log_text()
        );
    }

    /// Waits until the instrument is `running`; returns its init pid.
    pub fn wait_running(&self, name: &str) -> i32 {
        let s = self.wait_for(name, "running", Duration::from_secs(30), |s| {
            s["state"] == "running" && s["init_pid"].is_i64()
        });
        s["init_pid"].as_i64().unwrap() as i32
    }

    pub fn lxcpath(&self) -> PathBuf {
        self.state.join("containers")
    }

    /// An instrument's persistent storage, as mounted on the host while its
    /// container exists.
    pub fn persist(&self, name: &str) -> PathBuf {
        self.state.join("instances").join(name).join("persist")
    }

    /// The ext4 image that holds an instrument's persistent storage.
    pub fn persist_image(&self, name: &str) -> PathBuf {
        self.state.join("persist").join(format!("{name}.ext4"))
    }

    /// The host uid of an instrument's root (the owner of its persistent
    /// storage).
    pub fn instrument_uid(&self, name: &str) -> u32 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.persist(name))
            .unwrap_or_else(|e| panic!("persistent storage of {name}: {e}"))
            .uid()
    }

    /// Hands `path` (and what is below it) to the instrument's root, as if
    /// the instrument had written it.
    pub fn give_to_instrument(&self, name: &str, path: &Path) {
        let uid = self.instrument_uid(name);
        fn walk(p: &Path, uid: u32) {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid)).expect("chown");
            if fs::symlink_metadata(p).unwrap().is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    walk(&e.unwrap().path(), uid);
                }
            }
        }
        walk(path, uid);
    }

    /// Runs a command inside a running instrument with `lxc-attach`.
    pub fn attach(&self, name: &str, argv: &[&str]) -> Output {
        Command::new("lxc-attach")
            .arg("-P")
            .arg(self.lxcpath())
            .args(["-n", name, "--"])
            .args(argv)
            .output()
            .expect("run lxc-attach")
    }

    /// The pid of this sensor's nats-server, if it runs.
    pub fn nats_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.state.join("nats/nats-server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// The port of this sensor's nats-server.
    pub fn nats_port(&self) -> u16 {
        fs::read_to_string(self.state.join("nats/port"))
            .expect("nats port file")
            .trim()
            .parse()
            .expect("port")
    }

    /// `outpostctl events --format json [--instrument NAME]`: the
    /// envelopes, oldest first. Asked again for up to 15 s while the stream
    /// cannot be read (outpostd restarts its nats-server when instruments
    /// come or go).
    pub fn events(&self, instrument: Option<&str>) -> Vec<outpost_protocol::Envelope> {
        let mut args = vec!["events", "--format", "json"];
        if let Some(i) = instrument {
            args.extend(["--instrument", i]);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let out = loop {
            let out = self.ctl(&args);
            if out.status.success() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            out.status.success(),
            "outpostctl events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<outpost_platform::dbus::events::Event>(l)
                    .unwrap_or_else(|e| panic!("not an event {l}: {e}"))
                    .envelope
            })
            .collect()
    }

    /// A file of an instrument's persistent storage: read where it is
    /// mounted while the container exists, else out of its ext4 image with
    /// `debugfs` (which reads an image without mounting it).
    pub fn persist_file(&self, name: &str, rel: &str) -> Option<Vec<u8>> {
        let mounted = self.persist(name);
        if mounted.is_dir() {
            return fs::read(mounted.join(rel)).ok();
        }
        let image = self.persist_image(name);
        if !image.is_file() {
            return None;
        }
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat /{rel}")])
            .arg(&image)
            .output()
            .expect("run debugfs (e2fsprogs)");
        (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
    }

    /// The `boots.jsonl` records the example instrument kept (whole lines
    /// only: one it is writing right now is not a record yet).
    pub fn boots(&self, name: &str) -> Vec<Value> {
        self.persist_file(name, "boots.jsonl")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).expect("boot record is JSON"))
            .collect()
    }

    /// Waits until the example instrument recorded `n` boots (it records a
    /// boot once its SDK set-up is done, a moment after the container
    /// runs), then returns the records.
    pub fn wait_boots(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let b = self.boots(name);
            if b.len() >= n {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "{name} recorded {} boots, not {n}\n{}",
                b.len(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and removes every container under this sensor (used by Drop,
    /// and by tests that need a clean host after killing outpostd).
    pub fn force_cleanup(&mut self) {
        self.kill9();
        if let Some(pid) = self.nats_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // A daemon killed while it restarted nats-server may have left a
        // new one that had not written its pid file yet: find it by its
        // config path.
        let conf = self.state.join("nats/nats-server.conf");
        let conf = conf.to_string_lossy();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("nats-server") && cmd.contains(conf.as_ref()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let names: Vec<String> = fs::read_dir(self.lxcpath())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for n in &names {
            let _ = Command::new("lxc-stop")
                .arg("-P")
                .arg(self.lxcpath())
                .args(["-n", n, "-k"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            outpost_platform::runtime::lxc::remove_cgroups(n);
        }
        // Instruments' trees (images, overlays, storage, tmpfs) are mounts
        // under the state directory; the loop devices go with the last
        // mount of their image.
        for m in outpost_platform::runtime::rootfs::mounts_below(&self.state) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.force_cleanup();
    }
}

/// The cgroup directories liblxc made for container `name`, at the root of
/// every hierarchy. Deliberately simpler than outpostd's own search, so a
/// test checks outpostd's cleanup with an independent look.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
            for kind in ["payload", "monitor"] {
                let d = Path::new(f[1]).join(format!("lxc.{kind}.{name}"));
                if d.exists() {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The host PID of the entrypoint: the first child of the container init.
pub fn entrypoint_pid(init_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
            .unwrap_or_default();
        if let Some(p) = children.split_whitespace().next() {
            return p.parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "init {init_pid} has no child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host PIDs of every child of `pid`, from all its threads.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<i32> = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The size in KiB that `df -k` printed for its (last) filesystem.
pub fn df_size_kib(df_output: &str) -> u64 {
    df_output
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("not df -k output: {df_output}"))
}

/// Every mount on the host whose source, target or options mention `path`.
pub fn host_mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_string)
        .collect()
}
