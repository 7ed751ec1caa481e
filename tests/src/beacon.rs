//! What the beacon's end-to-end tests share: home in a namespace, and
//! reading the beacon's health details and events.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::hostnet::Spawned;
use crate::{Sensor, workspace_bin};

/// The pin of the HTTPS certificate at `cert` and `key` (made there when
/// neither exists), as `beacon-home --print-pin` prints it.
pub fn home_pin(cert: &std::path::Path, key: &std::path::Path) -> String {
    crate::hostnet::must(
        Command::new(workspace_bin("beacon-home"))
            .arg("--cert")
            .arg(cert)
            .arg("--cert-key")
            .arg(key)
            .arg("--print-pin"),
    )
    .trim()
    .to_string()
}

/// `beacon-home` in namespace `ns`.
pub fn home(ns: &str, key: &str, args: &[&str], log: &std::path::Path) -> Spawned {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(workspace_bin("beacon-home"))
        .args(["--key", key, "--log"])
        .arg(log)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start beacon-home");
    Spawned(child)
}

pub fn details(s: &Sensor, name: &str) -> Value {
    s.instrument(name)
        .map(|i| i["health_details"].clone())
        .unwrap_or(Value::Null)
}

/// The latest attempt on `channel target`, from the health details.
pub fn target(d: &Value, key: &str) -> Value {
    d["targets"][key].clone()
}

pub fn escapes(s: &Sensor, name: &str) -> Vec<Value> {
    events_of(s, name, "escape")
}

pub fn events_of(s: &Sensor, name: &str, kind: &str) -> Vec<Value> {
    s.events(Some(name))
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.payload)
        .collect()
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The instrument's health ("ok", "degraded", …), or "" before it has one.
pub fn health(s: &Sensor, name: &str) -> String {
    s.instrument(name)
        .and_then(|i| i["health"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
