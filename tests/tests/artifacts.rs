//! New probe binaries reach the beacon end to end: an "Internet" namespace
//! with a web server this test starts, the downloader on a bridge to it
//! (its `uplink0`), the beacon on a segment with no route there, and the
//! platform between them.
//!
//! ```text
//!  downloader ── uplink0 10.91.0.2 ── bridge ── 10.91.0.1 "Internet" (python3 http.server)
//!  beacon ────── seg0    10.92.0.2 ── bridge (nothing else)
//! ```

use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime};

use outpost_protocol::artifacts::verify::Metadata;
use outpost_protocol::artifacts::verify::test_signer::Signer;
use outpost_tests::beacon::{events_of, wait_until};
use outpost_tests::hostnet::{HostNet, Spawned, ip};
use outpost_tests::{Sensor, image, unique};
use serde_json::Value;
use sha2::Digest;

const KEY: &str = "5e1f0c0ffee0ddba11ca7b0a710ad5e15e1f0c0ffee0ddba11ca7b0a710ad5e1";

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The web root of the "Internet", where releases are published.
struct Releases {
    dir: tempfile::TempDir,
    signer: Signer,
    /// Each publication is dated one second after the last, so a
    /// conditional GET never mistakes it for the one before.
    next_mtime: SystemTime,
}

impl Releases {
    fn write(&mut self, name: &str, bytes: &[u8]) {
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
    fn publish(
        &mut self,
        v: &str,
        body: &[u8],
        by: Option<&Signer>,
        tweak: impl Fn(&mut Metadata),
    ) {
        self.publish_with(v, body, by, tweak, false)
    }

    /// … with the metadata changed after it was signed, if `tamper`.
    fn publish_with(
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
fn refusals_of(s: &Sensor, dl: &str, resource: &str) -> Vec<Value> {
    events_of(s, dl, "artifact-refused")
        .into_iter()
        .filter(|e| e["resource"] == resource)
        .collect()
}

fn refusals(s: &Sensor, dl: &str) -> Vec<Value> {
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
struct World {
    rel: Releases,
    s: Sensor,
    dl: String,
    b: String,
    _web: Spawned,
    _net: HostNet,
}

impl World {
    /// … with outpostd started with `env`.
    fn start(env: &[(&str, &str)]) -> World {
        World::start_with(env, "")
    }

    /// … with more downloader resources (TOML inline tables).
    fn start_with(env: &[(&str, &str)], more: &str) -> World {
        let mut net = HostNet::default();
        let t = format!("{:05x}", rand::random::<u32>() & 0xf_ffff);
        let (up, seg, inet) = (format!("tup{t}"), format!("tsg{t}"), format!("tin{t}"));
        net.links.push(up.clone());
        net.links.push(seg.clone());
        net.netns(&inet);

        let rel = Releases {
            dir: tempfile::tempdir().unwrap(),
            signer: Signer::new(),
            next_mtime: SystemTime::now(),
        };
        let public = rel.signer.public().text.clone();

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
    resources = [{{ name = "escape-probe", url = "http://10.91.0.1:8080/probe.json", every = "1s", verify = {{ keys = ["{public}"] }} }}{more}]

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
fn probe(s: &Sensor, b: &str, marker: &str) -> Vec<u8> {
    s.wait_for(b, "healthy", Duration::from_secs(20), |i| {
        i["health"] == "ok"
    });
    let mut v = s.attach(b, &["cat", "/usr/bin/escape-probe"]).stdout;
    assert!(v.len() > 100_000, "could not read the shipped probe");
    v.extend_from_slice(marker.as_bytes());
    v
}

#[test]
fn a_signed_probe_reaches_the_beacon_verified_twice_and_every_forgery_is_refused_by_name() {
    let World {
        mut rel,
        s,
        dl,
        b,
        _web,
        _net,
    } = World::start(&[]);
    // A new probe: the shipped one with a marker (it still runs).
    let v2 = probe(&s, &b, "\0outpost artifact test 2.0.0");
    let v2_sha = sha(&v2);
    rel.publish("2.0.0", &v2, None, |_| {});

    // Fetched and verified by the downloader, verified again and installed
    // by the platform, and run by the beacon.
    let fetched = wait_until("artifact-fetched", Duration::from_secs(30), || {
        events_of(&s, &dl, "artifact-fetched")
            .into_iter()
            .find(|e| e["version"] == "2.0.0")
    });
    assert_eq!(fetched["sha256"], v2_sha.as_str(), "{fetched}");
    let installed = wait_until("artifact-installed", Duration::from_secs(15), || {
        events_of(&s, "outpostd", "artifact-installed")
            .into_iter()
            .find(|e| e["version"] == "2.0.0")
    });
    assert_eq!(installed["consumers"][0], b.as_str(), "{installed}");
    s.wait_for(&b, "running the new probe", Duration::from_secs(30), |i| {
        let p = &i["health_details"]["probe"];
        i["health"] == "ok" && p["sha256"] == v2_sha.as_str() && p["trial"] == false
    });
    assert!(
        events_of(&s, &b, "probe-updated")
            .iter()
            .any(|e| e["sha256"] == v2_sha.as_str())
    );
    // The beacon reads it and cannot write it.
    let w = s.attach(
        &b,
        &["sh", "-c", "echo x > /run/artifacts/escape-probe/2.0.0"],
    );
    assert!(!w.status.success(), "the consumer could write its artifact");

    // Forgeries, each refused at the downloader with its reason, and
    // nothing new installed.
    let forged = Signer::new();
    type Publish<'a> = Box<dyn Fn(&mut Releases) + 'a>;
    let cases: Vec<(&str, Publish)> = vec![
        (
            "unknown-key",
            Box::new(|r: &mut Releases| r.publish("3.0.0", b"evil", Some(&forged), |_| {})),
        ),
        (
            "rollback",
            Box::new(|r: &mut Releases| r.publish("1.9.0", b"old but signed", None, |_| {})),
        ),
        (
            "expired",
            Box::new(|r: &mut Releases| {
                r.publish("3.0.0", b"frozen", None, |m| {
                    m.expires = humantime::format_rfc3339_seconds(
                        SystemTime::now() - Duration::from_secs(60),
                    )
                    .to_string()
                })
            }),
        ),
        (
            "hash",
            Box::new(|r: &mut Releases| {
                r.publish("3.0.0", b"tampered", None, |m| m.sha256 = "ab".repeat(32))
            }),
        ),
    ];
    for (reason, publish) in cases {
        let before = refusals(&s, &dl).len();
        publish(&mut rel);
        let got = wait_until(reason, Duration::from_secs(20), || {
            refusals(&s, &dl).into_iter().nth(before)
        });
        assert_eq!(got["reason"], reason, "{got}");
    }
    // Metadata changed after it was signed.
    let before = refusals(&s, &dl).len();
    rel.publish_with("3.0.0", b"probe 3", None, |_| {}, true);
    let got = wait_until("signature", Duration::from_secs(20), || {
        refusals(&s, &dl).into_iter().nth(before)
    });
    assert!(
        ["signature", "metadata"].contains(&got["reason"].as_str().unwrap()),
        "{got}"
    );
    let installs = events_of(&s, "outpostd", "artifact-installed");
    assert_eq!(installs.len(), 1, "{installs:#?}");

    // A signed version that prints nothing: installed, tried, rolled back
    // by the beacon to the good one, and not tried again.
    let silent = b"#!/bin/sh\nexec sleep 1000\n".to_vec();
    rel.publish("4.0.0", &silent, None, |_| {});
    let rollback = wait_until("probe-rollback", Duration::from_secs(40), || {
        events_of(&s, &b, "probe-rollback")
            .into_iter()
            .find(|e| e["rejected_sha256"] == sha(&silent).as_str())
    });
    assert_eq!(rollback["running_sha256"], v2_sha.as_str(), "{rollback}");
    s.wait_for(
        &b,
        "on the good probe again",
        Duration::from_secs(15),
        |i| i["health"] == "ok" && i["health_details"]["probe"]["sha256"] == v2_sha.as_str(),
    );
    std::thread::sleep(Duration::from_secs(5));
    let rollbacks = events_of(&s, &b, "probe-rollback")
        .into_iter()
        .filter(|e| e["rejected_sha256"] == sha(&silent).as_str())
        .count();
    assert_eq!(rollbacks, 1, "the silent probe was tried again");
}

#[test]
fn a_crash_of_outpostd_mid_install_leaves_no_partial_artifact_and_the_install_resumes() {
    let World {
        mut rel,
        mut s,
        dl,
        b,
        _web,
        _net,
    } = World::start(&[("OUTPOST_FAILPOINT", "artifact-mid-install")]);
    let v2 = probe(&s, &b, "\0outpost artifact crash test 2.0.0");
    rel.publish("2.0.0", &v2, None, |_| {});
    // outpostd dies with the copy under its temporary name.
    assert!(!s.wait_exit(Duration::from_secs(60)).success());
    let dir = s.state.join("artifacts").join(&b).join("escape-probe");
    assert!(
        dir.join(".2.0.0.tmp").exists(),
        "it did not die mid-install"
    );
    assert!(!dir.join("2.0.0").exists());

    // Started again: the half copy is gone, the announcement is heard
    // again, and the whole artifact is installed and run.
    s.start(&[]);
    assert!(!dir.join(".2.0.0.tmp").exists(), "a partial file was left");
    let installed = wait_until(
        "the install after the crash",
        Duration::from_secs(90),
        || {
            events_of(&s, "outpostd", "artifact-installed")
                .into_iter()
                .find(|e| e["version"] == "2.0.0")
        },
    );
    assert_eq!(installed["sha256"], sha(&v2).as_str(), "{installed}");
    assert_eq!(fs::read(dir.join("2.0.0")).unwrap(), v2);
    s.wait_for(&b, "running the new probe", Duration::from_secs(30), |i| {
        i["health_details"]["probe"]["sha256"] == sha(&v2).as_str()
    });
    let _ = &dl;
}

#[test]
fn endless_slow_and_redirected_downloads_and_a_climbing_name_are_refused_by_name() {
    let big = "ab".repeat(32);
    let more = format!(
        r#", {{ name = "endless", url = "http://10.91.0.1:8080/big", every = "1s", max-size = "1MiB", verify = {{ sha256 = "{big}" }} }},
    {{ name = "slow", url = "http://10.91.0.1:8080/trickle", every = "1s", min-rate = 10000, verify = {{ sha256 = "{big}" }} }},
    {{ name = "elsewhere", url = "http://10.91.0.1:8080/away", every = "1s", verify = {{ sha256 = "{big}" }} }}"#
    );
    let World {
        mut rel,
        s,
        dl,
        b,
        _web,
        _net,
    } = World::start_with(&[], &more);
    rel.write("big", &vec![7u8; 2 << 20]);
    for (resource, reason, within) in [
        ("endless", "too-large", 20),
        ("elsewhere", "redirect", 20),
        // The minimum rate applies after the first 10 s.
        ("slow", "too-slow", 40),
    ] {
        let got = wait_until(reason, Duration::from_secs(within), || {
            refusals_of(&s, &dl, resource).into_iter().next()
        });
        assert_eq!(got["reason"], reason, "{got}");
    }
    let h = s.instrument(&dl).unwrap();
    assert_eq!(h["health"], "degraded", "{h:#}");
    assert!(
        h["health_message"]
            .as_str()
            .unwrap()
            .contains("endless: refused (too-large"),
        "{h:#}"
    );
    // A resource name that climbs out of the downloader's storage never
    // reaches it: the sensor file is refused, naming the field.
    let file = s.dir.path().join("climb.toml");
    let text = fs::read_to_string(&s.sensor_file).unwrap().replacen(
        "name = \"endless\"",
        "name = \"../etc\"",
        1,
    );
    fs::write(&file, text).unwrap();
    let out = s.ctl(&["apply", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("resources/3/name")
            || why.contains("resources[3].name")
            || why.contains("../etc"),
        "{why}"
    );
    assert!(events_of(&s, "outpostd", "artifact-installed").is_empty());
    let _ = &b;
}
