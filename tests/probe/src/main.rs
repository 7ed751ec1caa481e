//! `outpost-probe`: run inside a container (by `lxc-attach` in the tests),
//! it prints one JSON document describing what the container really gives:
//!
//! - `processes`: for PID 1 (outpost-init), the entrypoint (PID 1's first
//!   child) and the probe itself: capability masks (hex, as in
//!   `/proc/PID/status`), `NoNewPrivs`, `Seccomp` and the command line;
//! - `mounts`: every mount point with its type and options;
//! - `cgroup`: the memory, pids and cpu limits as the container sees them
//!   (cgroup v1 or v2 file contents, verbatim);
//! - `interfaces`: the network interfaces present;
//! - `env`: the `OUTPOST_*` variables of the entrypoint.
//!
//! The host side decodes and asserts; the probe only reports.
//!
//! With arguments it tries one thing with the instrument's own identity
//! and prints the outcome as JSON (see `actions.rs`):
//! `nats publish|subscribe|request <subject>`, `nats event <kind>`,
//! `connect <host:port>`; and what an attacker would try (see `abuse.rs`):
//! `userns`, `connect-many <n> <seconds>`.

mod abuse;
mod actions;

use std::fs;

use serde_json::{Map, Value, json};

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn status(pid: &str) -> Value {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut m = Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':')
            && matches!(
                k,
                "Name"
                    | "CapInh"
                    | "CapPrm"
                    | "CapEff"
                    | "CapBnd"
                    | "CapAmb"
                    | "NoNewPrivs"
                    | "Seccomp"
            )
        {
            m.insert(k.to_string(), Value::String(v.trim().to_string()));
        }
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<Value> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| Value::String(String::from_utf8_lossy(a).into_owned()))
        .collect();
    m.insert("cmdline".into(), Value::Array(args));
    m.insert("pid".into(), Value::String(pid.to_string()));
    Value::Object(m)
}

/// The first child of PID 1 that is not this probe: the entrypoint.
fn entrypoint_pid() -> Option<String> {
    let me = std::process::id().to_string();
    let children = read("/proc/1/task/1/children")?;
    children
        .split_whitespace()
        .find(|p| *p != me)
        .map(str::to_string)
}

fn mounts() -> Value {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let list: Vec<Value> = text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split_whitespace().collect();
            let r: Vec<&str> = right.split_whitespace().collect();
            Some(json!({
                "target": l.get(4)?,
                "options": l.get(5)?,
                "fstype": r.first()?,
                "source": r.get(1).copied().unwrap_or(""),
                "super_options": r.get(2).copied().unwrap_or(""),
            }))
        })
        .collect();
    Value::Array(list)
}

fn cgroup() -> Value {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        json!({
            "version": 2,
            "memory": read("/sys/fs/cgroup/memory.max"),
            "pids": read("/sys/fs/cgroup/pids.max"),
            "cpu": read("/sys/fs/cgroup/cpu.max"),
        })
    } else {
        let quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
        let period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
        json!({
            "version": 1,
            "memory": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "pids": read("/sys/fs/cgroup/pids/pids.max"),
            "cpu": match (quota, period) { (Some(q), Some(p)) => Some(format!("{q} {p}")), _ => None },
        })
    }
}

fn interfaces() -> Value {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    json!(names)
}

fn env_of(pid: &str) -> Value {
    let raw = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let mut m = Map::new();
    for kv in raw.split(|b| *b == 0) {
        let kv = String::from_utf8_lossy(kv);
        if let Some((k, v)) = kv.split_once('=')
            && k.starts_with("OUTPOST_")
        {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(m)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        std::process::exit(actions::run(&args));
    }
    let entry = entrypoint_pid();
    let report = json!({
        "processes": {
            "init": status("1"),
            "entrypoint": entry.as_deref().map(status),
            "probe": status("self"),
        },
        "env": entry.as_deref().map(env_of),
        "mounts": mounts(),
        "cgroup": cgroup(),
        "interfaces": interfaces(),
        "hostname": read("/proc/sys/kernel/hostname"),
    });
    println!("{report}");
}
