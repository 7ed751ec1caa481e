//! A fleet for the tests: a real `outpost-fleet run` with its own state
//! directory, its embedded hub nats-server and its HTTPS API on free
//! 127.0.0.1 ports, in its own process group (so its nats-server goes with
//! it on drop, also when a test fails).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::workspace_bin;

pub fn fleet_bin() -> PathBuf {
    workspace_bin("outpost-fleet")
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub struct Fleet {
    /// Its own directory (log; the state too unless given).
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub url: String,
    pub hub_port: u16,
    api_port: u16,
    heartbeat: String,
    extra: Vec<String>,
    /// `OUTPOST_LOG` for it.
    log_filter: String,
    log: PathBuf,
    child: Option<Child>,
}

/// A sensor's one-time enrollment, as `outpost-fleet sensor add` prints it.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub token: String,
    pub fingerprint: String,
}

impl Fleet {
    /// Starts a fleet whose sensors heartbeat every `heartbeat`.
    pub fn start(heartbeat: &str) -> Fleet {
        Fleet::start_with(heartbeat, &[])
    }

    /// … with more `outpost-fleet run` options.
    pub fn start_with(heartbeat: &str, extra: &[&str]) -> Fleet {
        Fleet::start_in(None, heartbeat, extra)
    }

    /// One more instance of the fleet whose state (keys, certificates) is
    /// in `state`, on the hub `cluster`.
    pub fn join(state: &Path, cluster: &HubCluster, heartbeat: &str) -> Fleet {
        let mut extra = vec!["--replicas".to_string(), "3".to_string()];
        for u in cluster.urls() {
            extra.push("--nats-url".into());
            extra.push(u);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Fleet::start_in(Some(state), heartbeat, &extra)
    }

    fn start_in(state: Option<&Path>, heartbeat: &str, extra: &[&str]) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("outpost-fleet-")
            .tempdir()
            .expect("temp dir");
        let state = state
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state"));
        let log = dir.path().join("fleet.log");
        let mut f = Fleet {
            state,
            url: String::new(),
            hub_port: free_port(),
            api_port: free_port(),
            heartbeat: heartbeat.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_filter: "info,outpost_fleet=debug".into(),
            log,
            child: None,
            dir,
        };
        f.spawn();
        f
    }

    /// A fleet that logs warnings only (for the benchmark, where a debug
    /// line per heartbeat would be what is measured).
    pub fn start_quiet(heartbeat: &str, extra: &[&str]) -> Fleet {
        let mut f = Fleet::start_with(heartbeat, extra);
        f.stop();
        f.log_filter = "warn".into();
        f.spawn();
        f
    }

    /// The `outpost-fleet` process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the whole fleet, its hub included (SIGTERM to its group).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pg = Pid::from_raw(c.id() as i32);
            let _ = killpg(pg, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Starts it again on the same state and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let (api_port, heartbeat) = (self.api_port, self.heartbeat.clone());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let before = self.log_text().matches("outpost-fleet serves").count();
        let child = Command::new(fleet_bin())
            .arg("--state")
            .arg(&self.state)
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--hub-listen", &format!("127.0.0.1:{}", self.hub_port)])
            .args(["--heartbeat-every", heartbeat.as_str()])
            .args(&self.extra)
            .env("OUTPOST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn outpost-fleet");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log_text().matches("outpost-fleet serves").count() <= before {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("outpost-fleet exited at start ({st})\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "outpost-fleet not serving within 60s\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.url = format!("https://127.0.0.1:{api_port}");
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The fleet's CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.state.join("tls/ca.pem")
    }

    /// Runs the `outpost-fleet` CLI on this fleet's state directory and
    /// this instance's API.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(fleet_bin())
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env_remove("OUTPOST_FLEET_TOKEN")
            .env("OUTPOST_FLEET_URL", &self.url)
            .output()
            .expect("run outpost-fleet")
    }

    /// `outpost-fleet sensor add NAME [extra]`, which must work.
    pub fn add_sensor(&self, name: &str, extra: &[&str]) -> Enrollment {
        let mut args = vec!["sensor", "add", name];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "sensor add {name}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {k} in: {text}"))
        };
        Enrollment {
            token: field("token:"),
            fingerprint: field("fingerprint:"),
        }
    }

    /// `GET /api/v1/sensors/NAME` as JSON (through the CLI).
    pub fn sensor(&self, name: &str) -> Value {
        let out = self.cli(&["sensor", "show", name]);
        assert!(
            out.status.success(),
            "sensor show {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("sensor show prints JSON")
    }

    /// Waits until `f` holds for sensor `name`'s view at the fleet.
    pub fn wait_sensor(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.sensor(name);
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "sensor {name} never {what}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Credentials of the fleet's own service user (everything in the
    /// fleet account), to watch the hub from the test.
    pub fn service_creds(&self) -> String {
        outpost_fleet::hub::keys::FleetKeys::load_or_make(&self.state.join("keys"))
            .expect("the fleet's keys")
            .service_creds()
    }

    /// Every stored event matching `filter` (`--sensor X`, …), read
    /// through the API page by page.
    pub fn events(&self, filter: &[&str]) -> Vec<Value> {
        self.try_events(filter)
            .unwrap_or_else(|e| panic!("events: {e}"))
    }

    /// Waits until the fleet has at least `n` events matching `filter`.
    pub fn wait_events(&self, filter: &[&str], n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.events(filter);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet has {} events of {filter:?}, not {n}: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`Fleet::events`], or the fleet's answer when it could not (a hub
    /// cluster electing a leader answers 503 for a moment).
    pub fn try_events(&self, filter: &[&str]) -> Result<Vec<Value>, String> {
        let mut args = vec!["events", "--limit", "1000000"];
        args.extend_from_slice(filter);
        let out = self.cli(&args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event line"))
            .collect())
    }

    /// Follows `/api/v1/events/stream?<query>` with curl (a real HTTP
    /// client reading server-sent events); each `data:` line's JSON goes
    /// to the receiver. The reader ends with the returned child.
    pub fn follow_events(&self, query: &str) -> (Child, std::sync::mpsc::Receiver<Value>) {
        use std::io::BufRead;
        let token = fs::read_to_string(self.state.join("admin.token")).expect("admin token");
        let mut child = Command::new("curl")
            .args(["-sSN", "--max-time", "120", "--cacert"])
            .arg(self.ca())
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{}/api/v1/events/stream?{query}", self.url))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl (Debian package curl)");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(d) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str(d.trim())
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        (child, rx)
    }

    pub fn hub_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.hub_port)
    }
}

/// A raw NATS client on the hub with `creds`, trusting `ca`.
pub async fn hub_client(url: &str, ca: &Path, creds: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .credentials(creds)
        .map_err(|e| e.to_string())?
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The nats-server for hub clusters: `OUTPOST_HUB_NATS_SERVER` (`./run`
/// fetches a pinned one; Debian 12's 2.9.10 loses a fleet instance's
/// JetStream requests after a node dies).
pub fn hub_nats_server() -> PathBuf {
    let p = std::env::var_os("OUTPOST_HUB_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/tools/nats-server-2.15.1"));
    assert!(
        p.exists(),
        "{} is missing: run `./run deps` (or set OUTPOST_HUB_NATS_SERVER)",
        p.display()
    );
    p
}

/// A hub cluster of real nats-servers on 127.0.0.1, configured by
/// `outpost-fleet hub-config` to trust the fleet whose state is `state`.
pub struct HubCluster {
    pub ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl HubCluster {
    pub fn start(state: &Path, n: usize) -> HubCluster {
        let dir = tempfile::Builder::new()
            .prefix("outpost-hub-")
            .tempdir()
            .expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut configs = Vec::new();
        for i in 0..n {
            let node_dir = dir.path().join(format!("n{i}"));
            let mut args = vec![
                "hub-config".to_string(),
                "--node".into(),
                format!("n{i}"),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--cluster-listen".into(),
                format!("127.0.0.1:{}", routes[i]),
                "--dir".into(),
                node_dir.display().to_string(),
            ];
            for (j, r) in routes.iter().enumerate() {
                if j != i {
                    args.push("--route".into());
                    args.push(format!("nats-route://127.0.0.1:{r}"));
                }
            }
            let out = Command::new(fleet_bin())
                .arg("--state")
                .arg(state)
                .args(&args)
                .output()
                .expect("outpost-fleet hub-config");
            assert!(
                out.status.success(),
                "hub-config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let conf = dir.path().join(format!("n{i}.conf"));
            fs::write(&conf, &out.stdout).unwrap();
            configs.push(conf);
        }
        let mut c = HubCluster {
            ports,
            nodes: (0..n).map(|_| None).collect(),
            configs,
            _dir: dir,
        };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    pub fn start_node(&mut self, i: usize) {
        let log = fs::File::create(self.configs[i].with_extension("log")).unwrap();
        let child = Command::new(hub_nats_server())
            .arg("-c")
            .arg(&self.configs[i])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server");
        self.nodes[i] = Some(child);
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The end of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for c in &self.configs {
            let t = fs::read_to_string(c.with_extension("log")).unwrap_or_default();
            out.push_str(&format!(
                "--- {}:\n{}\n",
                c.display(),
                &t[t.len().saturating_sub(3000)..]
            ));
        }
        out
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("tls://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for HubCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
