//! Crash soak: `kill -9` of outpostd at random moments while the desired
//! state keeps changing (configs, instruments disabled and enabled,
//! instruments added and removed), each time followed by a restart of
//! outpostd. After every restart the sensor must settle to exactly what
//! the desired state says, and the soak counts what went wrong:
//!
//! - lost: an enabled instrument that does not run;
//! - duplicated: an instrument with more than one container init;
//! - needlessly restarted: a running instrument whose definition did not
//!   change but whose init is another process after the restart;
//! - leftovers: container definitions, instance trees or mounts of
//!   instruments that should not have one;
//! - config not delivered: a running instrument that does not run the
//!   config version the desired state has.
//!
//! CI runs 10 kills; `./run soak` runs 100 (`OUTPOST_SOAK_KILLS`). The
//! seed is printed (`OUTPOST_SOAK_SEED` repeats a run).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Duration, Instant};

use outpost_tests::{Sensor, example_image, unique};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

#[derive(Clone, Debug)]
struct Ins {
    name: String,
    enabled: bool,
    greeting: String,
}

fn sensor_file(all: &[Ins]) -> String {
    all.iter()
        .map(|i| {
            format!(
                "[[instrument]]\nname = \"{}\"\nimage = \"example\"\nversion = \"0.1.0\"\nenabled = {}\nrestart = \"always\"\n[instrument.config]\ngreeting = \"{}\"\n",
                i.name, i.enabled, i.greeting
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Init processes of each instrument's container on the host (their
/// environment names the instrument).
fn inits() -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmd.starts_with(b"/.outpost/init\0") {
            continue;
        }
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(name) = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"OUTPOST_INSTRUMENT="))
        {
            out.entry(String::from_utf8_lossy(name).into_owned())
                .or_default()
                .push(pid);
        }
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    lost: u32,
    duplicated: u32,
    needlessly_restarted: u32,
    leftovers: u32,
    config_not_delivered: u32,
}

/// Waits until the sensor shows what `want` says (or the time is up) and
/// counts what does not match.
fn settle(
    s: &Sensor,
    want: &[Ins],
    ours: &BTreeSet<String>,
    c: &mut Counts,
    log: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = |st: &Value| {
        want.iter().all(|i| {
            let Some(v) = st["instruments"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == i.name.as_str()))
            else {
                return false;
            };
            if !i.enabled {
                return v["state"] == "stopped";
            }
            v["state"] == "running"
                && v["health"] == "ok"
                && v["config_applied"].is_i64()
                && v["config_applied"] == v["config_version"]
                && v["health_message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&i.greeting))
        }) && st["instruments"]
            .as_array()
            .is_some_and(|a| a.len() == want.len())
    };
    let mut st = s.status();
    while !settled(&st) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        st = s.status();
    }
    let running = inits();
    for i in want {
        let v = st["instruments"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == i.name.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        let n = running.get(&i.name).map_or(0, Vec::len);
        if i.enabled && (n == 0 || v["state"] != "running") {
            c.lost += 1;
            log.push(format!("lost {}: {v}", i.name));
        }
        if n > 1 {
            c.duplicated += 1;
            log.push(format!(
                "duplicated {}: inits {:?}",
                i.name, running[&i.name]
            ));
        }
        if i.enabled
            && n == 1
            && !(v["config_applied"] == v["config_version"]
                && v["health_message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&i.greeting)))
        {
            c.config_not_delivered += 1;
            log.push(format!("config not delivered to {}: {v}", i.name));
        }
    }
    // Nothing of an instrument that should not run is left.
    let should_run: BTreeSet<&str> = want
        .iter()
        .filter(|i| i.enabled)
        .map(|i| i.name.as_str())
        .collect();
    for name in ours {
        if should_run.contains(name.as_str()) {
            continue;
        }
        let mut left = Vec::new();
        if running.contains_key(name) {
            left.push("a running init".to_string());
        }
        if s.lxcpath().join(name).exists() {
            left.push("a container definition".into());
        }
        let tree = s.state.join("instances").join(name);
        if tree.exists() {
            left.push("an instance tree".into());
        }
        let mounts = outpost_platform::runtime::rootfs::mounts_below(&tree);
        if !mounts.is_empty() {
            left.push(format!("{} mounts", mounts.len()));
        }
        if !left.is_empty() {
            c.leftovers += 1;
            log.push(format!("leftovers of {name}: {}", left.join(", ")));
        }
    }
    for e in fs::read_dir(s.lxcpath()).unwrap().flatten() {
        let extra: Vec<String> = fs::read_dir(e.path())
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|f| f != "config" && f != "seccomp")
            .collect();
        if !extra.is_empty() {
            c.leftovers += 1;
            log.push(format!(
                "leftover files in {}: {extra:?}",
                e.path().display()
            ));
        }
    }
}

#[test]
fn crash_soak() {
    let kills: u32 = std::env::var("OUTPOST_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("OUTPOST_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash soak: {kills} kills, seed {seed} (OUTPOST_SOAK_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut s = Sensor::new();
    s.import(&example_image());
    let mut all: Vec<Ins> = (0..3)
        .map(|_| Ins {
            name: unique("soak"),
            enabled: true,
            greeting: "g0".into(),
        })
        .collect();
    let mut ours: BTreeSet<String> = all.iter().map(|i| i.name.clone()).collect();
    s.write_sensor(&sensor_file(&all));
    s.start(&[]);
    let mut c = Counts::default();
    let mut log = Vec::new();
    settle(&s, &all, &ours, &mut c, &mut log);
    let t0 = Instant::now();

    for round in 1..=kills {
        let before = inits();
        // One random change to the desired state.
        let i = rng.random_range(0..all.len());
        let mut touched = all[i].name.clone();
        let what = match rng.random_range(0..5) {
            0 | 1 => {
                all[i].greeting = format!("g{round}");
                "config"
            }
            2 => {
                all[i].enabled = !all[i].enabled;
                "enabled"
            }
            3 if all.len() > 2 => {
                all.remove(i);
                "removed"
            }
            _ => {
                let n = Ins {
                    name: unique("soak"),
                    enabled: true,
                    greeting: format!("g{round}"),
                };
                ours.insert(n.name.clone());
                touched = n.name.clone();
                all.push(n);
                "added"
            }
        };
        s.write_sensor(&sensor_file(&all));
        s.reload();
        // The kill lands anywhere in what the change set off.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        s.kill9();
        s.start(&[]);
        settle(&s, &all, &ours, &mut c, &mut log);
        // A running instrument whose definition stayed keeps its process.
        let after = inits();
        for ins in all.iter().filter(|x| x.enabled) {
            let changed = ins.name == touched && what != "config";
            if changed {
                continue;
            }
            if let (Some(b), Some(a)) = (before.get(&ins.name), after.get(&ins.name))
                && b != a
            {
                c.needlessly_restarted += 1;
                log.push(format!(
                    "round {round}: {} restarted ({b:?} -> {a:?}) though only {touched} changed ({what})",
                    ins.name
                ));
            }
        }
        eprintln!("round {round}/{kills}: {what} {touched}; {c:?}");
    }
    eprintln!(
        "crash soak done: {kills} kills in {:.0?}\n  lost: {}\n  duplicated: {}\n  needlessly restarted: {}\n  leftovers: {}\n  config not delivered: {}",
        t0.elapsed(),
        c.lost,
        c.duplicated,
        c.needlessly_restarted,
        c.leftovers,
        c.config_not_delivered
    );
    for l in &log {
        eprintln!("  {l}");
    }
    assert!(
        c.lost + c.duplicated + c.needlessly_restarted + c.leftovers + c.config_not_delivered == 0,
        "{c:?} (seed {seed})\n{}\n--- outpostd log ---\n{}",
        log.join("\n"),
        s.log_text()
    );
}
