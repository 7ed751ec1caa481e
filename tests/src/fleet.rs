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
            log,
            child: None,
            dir,
        };
        f.spawn();
        f
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
            .env("OUTPOST_LOG", "info,outpost_fleet=debug")
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
