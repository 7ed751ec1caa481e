//! The world of the artifact tests and benchmark: an "Internet" namespace
//! with a web server, the downloader on a bridge to it (its `uplink0`),
//! the beacon on a segment with no route there, and the platform between
//! them.
//!
//! ```text
//!  downloader ── uplink0 10.91.0.2 ── bridge ── 10.91.0.1 "Internet" (a Python web server)
//!  beacon ────── seg0    10.92.0.2 ── bridge (nothing else)
//! ```

use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime};

use outpost_protocol::artifacts::verify::Metadata;
use outpost_protocol::artifacts::verify::test_signer::Signer;
use serde_json::Value;
use sha2::Digest;

use crate::beacon::events_of;
use crate::hostnet::{HostNet, Spawned, ip};
use crate::{Sensor, image, unique};

pub const KEY: &str = "5e1f0c0ffee0ddba11ca7b0a710ad5e15e1f0c0ffee0ddba11ca7b0a710ad5e1";

pub fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The web root of the "Internet", where releases are published.
pub struct Releases {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    /// A key the downloader trusts and the sensor file's route does not
    /// (the platform's own check is what refuses its releases).
    pub downloader_only: Signer,
    /// Each publication is dated one second after the last, so a
    /// conditional GET never mistakes it for the one before.
    pub next_mtime: SystemTime,
}

impl Releases {
    pub fn write(&mut self, name: &str, bytes: &[u8]) {
        let p = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}"));
        fs::write(&tmp, bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(self.next_mtime)
            .unwrap();
        fs::rename(&tmp, p).unwrap();
    }

    /// Publishes `body` as version `v`, its metadata signed by `by`
    /// (default: the release key), after `tweak`.
    pub fn publish(
        &mut self,
        v: &str,
        body: &[u8],
        by: Option<&Signer>,
        tweak: impl Fn(&mut Metadata),
    ) {
        self.publish_with(v, body, by, tweak, false)
    }

    /// … with the metadata changed after it was signed, if `tamper`.
    pub fn publish_with(
        &mut self,
        v: &str,
        body: &[u8],
        by: Option<&Signer>,
        tweak: impl Fn(&mut Metadata),
        tamper: bool,
    ) {
        self.next_mtime += Duration::from_secs(1);
        self.write(&format!("probe-{v}"), body);
        let mut m = Metadata {
            name: "escape-probe".into(),
            version: v.into(),
            expires: humantime::format_rfc3339_seconds(
                SystemTime::now() + Duration::from_secs(3600),
            )
            .to_string(),
            sha256: sha(body),
            length: body.len() as u64,
            url: format!("probe-{v}"),
        };
        tweak(&mut m);
        let mut doc = serde_json::to_vec(&m).unwrap();
        let sig = by.unwrap_or(&self.signer).sign(&doc);
        if tamper {
            let at = doc.len() - 3;
            doc[at] ^= 1;
        }
        self.write("probe.json.minisig", sig.as_bytes());
        self.write("probe.json", &doc);
    }
}

/// The downloader's refusals of resource `resource`.
pub fn refusals_of(s: &Sensor, dl: &str, resource: &str) -> Vec<Value> {
    events_of(s, dl, "artifact-refused")
        .into_iter()
        .filter(|e| e["resource"] == resource)
        .collect()
}

pub fn refusals(s: &Sensor, dl: &str) -> Vec<Value> {
    refusals_of(s, dl, "escape-probe")
}

/// The "Internet"'s web server: files from `dir`, and two hostile paths:
/// `/trickle` sends a byte every 200 ms, `/away` redirects to another host.
const SERVER: &str = r#"
import http.server, sys, time
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                self.wfile.write(b"x"); self.wfile.flush(); time.sleep(0.2)
        elif self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://10.91.0.3:8080/probe-2.0.0")
            self.end_headers()
        else:
            super().do_GET()
    def log_message(self, *a):
        pass
h = lambda *a, **k: H(*a, directory=sys.argv[1], **k)
http.server.ThreadingHTTPServer(("10.91.0.1", 8080), h).serve_forever()
"#;

/// The namespaces, the web server, and a sensor running the downloader
/// and the beacon with the route between them.
pub struct World {
    pub rel: Releases,
    pub s: Sensor,
    pub dl: String,
    pub b: String,
    pub _web: Spawned,
    pub _net: HostNet,
}

impl World {
    /// … with outpostd started with `env`.
    pub fn start(env: &[(&str, &str)]) -> World {
        World::start_with(env, "", "1s")
    }

    /// … with more downloader resources (TOML inline tables).
    pub fn start_with(env: &[(&str, &str)], more: &str, every: &str) -> World {
        let mut net = HostNet::default();
        let t = format!("{:05x}", rand::random::<u32>() & 0xf_ffff);
        let (up, seg, inet) = (format!("tup{t}"), format!("tsg{t}"), format!("tin{t}"));
        net.links.push(up.clone());
        net.links.push(seg.clone());
        net.netns(&inet);

        let rel = Releases {
            dir: tempfile::tempdir().unwrap(),
            signer: Signer::new(),
            downloader_only: Signer::new(),
            next_mtime: SystemTime::now(),
        };
        let public = rel.signer.public().text.clone();
        let second = rel.downloader_only.public().text.clone();

        let mut s = Sensor::new();
        s.import(&image("downloader"));
        s.import(&image("beacon"));
        let (dl, b) = (unique("dl"), unique("beacon"));
        s.write_sensor(&format!(
            r#"
    [[instrument]]
    name = "{dl}"
    image = "downloader"
    version = "0.1.0"

    [instrument.interfaces.uplink0]
    type = "bridge"
    bridge = "{up}"
    create = true
    addresses = ["10.91.0.2/24"]

    [instrument.config]
    resources = [{{ name = "escape-probe", url = "http://10.91.0.1:8080/probe.json", every = "{every}", verify = {{ keys = ["{public}", "{second}"] }} }}{more}]

    [[instrument]]
    name = "{b}"
    image = "beacon"
    version = "0.1.0"

    [instrument.interfaces.seg0]
    type = "bridge"
    bridge = "{seg}"
    create = true
    addresses = ["10.92.0.2/24"]

    [instrument.config]
    update = "escape-probe"
    update_window = "4s"

    [instrument.config.probe]
    interval = "1s"
    timeout = "800ms"
    key = "{KEY}"
    tcp = ["10.92.0.1:7009"]

    [[artifact]]
    name = "escape-probe"
    from = "{dl}"
    to = ["{b}"]
    keys = ["{public}"]
    "#
        ));
        s.start_env(&[], env);
        s.wait_running(&dl);
        s.wait_running(&b);
        // The Internet's side of the uplink, once outpostd made the bridge.
        let port = format!("tip{t}");
        ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &inet,
        ]);
        net.links.push(port.clone());
        ip(&["-n", &inet, "addr", "add", "10.91.0.1/24", "dev", "eth0"]);
        ip(&["-n", &inet, "addr", "add", "10.91.0.3/24", "dev", "eth0"]);
        ip(&["-n", &inet, "link", "set", "eth0", "up"]);
        ip(&["link", "set", &port, "master", &up, "up"]);
        let script = rel.dir.path().join(".server.py");
        fs::write(&script, SERVER).unwrap();
        let web = Spawned(
            Command::new("ip")
                .args(["netns", "exec", &inet, "python3"])
                .arg(&script)
                .arg(rel.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 http.server"),
        );
        World {
            rel,
            s,
            dl,
            b,
            _web: web,
            _net: net,
        }
    }
}

/// The shipped probe of beacon `b` with `marker` appended (it still runs).
pub fn probe(s: &Sensor, b: &str, marker: &str) -> Vec<u8> {
    s.wait_for(b, "healthy", Duration::from_secs(20), |i| {
        i["health"] == "ok"
    });
    let mut v = s.attach(b, &["cat", "/usr/bin/escape-probe"]).stdout;
    assert!(v.len() > 100_000, "could not read the shipped probe");
    v.extend_from_slice(marker.as_bytes());
    v
}
