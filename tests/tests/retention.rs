//! Retention enforced by the platform, with proof: the sensor's schedule
//! asks each instrument to delete what is older than its period, the
//! platform walks the storage itself, records every run and raises
//! `retention-failed` (no answer) and `retention-violated` (old data left,
//! admitted by the instrument or found by the platform). Real outpostd,
//! real containers, a private dbus-daemon and `outpostctl`.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use outpost_tests::{Sensor, example_image, unique};
use serde_json::Value;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn instrument(name: &str, retention: Option<&str>, mode: &str) -> String {
    let r = retention
        .map(|r| format!("retention = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "[[instrument]]\nname = \"{name}\"\nimage = \"example\"\nversion = \"0.1.0\"\n{r}config = {{ retention = \"{mode}\" }}\n"
    )
}

/// Two files of 1000 bytes, two days old, written as the instrument.
fn plant_old_files(s: &Sensor, name: &str) {
    let persist = s.persist(name);
    std::fs::create_dir_all(persist.join("captures")).unwrap();
    for rel in ["captures/a.pcap", "old.log"] {
        let p = persist.join(rel);
        std::fs::write(&p, vec![b'x'; 1000]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(2 * 86400))
            .unwrap();
    }
    std::fs::write(persist.join("fresh.log"), b"new").unwrap();
    for rel in ["captures", "old.log", "fresh.log"] {
        s.give_to_instrument(name, &persist.join(rel));
    }
}

fn retention_status(s: &Sensor) -> Value {
    serde_json::from_str(&ok(s.ctl(&["retention", "status", "--format", "json"]))).unwrap()
}

/// Waits until `pred` holds for an instrument's retention state.
fn wait_retention(s: &Sensor, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = retention_status(s)[name].clone();
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "retention of {name} never showed {what}; last: {last:#}\n{}",
        s.log_text()
    );
}

fn events(s: &Sensor, kind: &str) -> Vec<Value> {
    ok(s.ctl(&["events", "--kind", kind, "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_schedule_deletes_old_data_and_proves_it_and_every_failure_is_an_event() {
    let mut s = Sensor::new();
    s.import(&example_image());
    let good = unique("ret-good");
    let keeper = unique("ret-keep");
    let liar = unique("ret-lie");
    let mute = unique("ret-mute");
    let off = unique("ret-off");
    std::fs::write(
        &s.sensor_file,
        format!(
            "[sensor]\nname = \"test\"\nretention-every = \"2s\"\n\n{}{}{}{}{}",
            instrument(&good, Some("1d"), "delete"),
            instrument(&keeper, Some("1d"), "keep"),
            instrument(&liar, Some("1d"), "lie"),
            instrument(&mute, Some("1d"), "silent"),
            instrument(&off, Some("off"), "delete"),
        ),
    )
    .unwrap();
    s.start(&[]);
    // Each runs its retention mode (config) before its data is planted.
    for n in [&good, &keeper, &liar, &mute, &off] {
        s.wait_for(n, "healthy with its config", Duration::from_secs(30), |v| {
            v["health"] == "ok"
                && v["config_applied"].is_i64()
                && v["config_applied"] == v["config_version"]
        });
        s.wait_boots(n, 1);
    }
    for n in [&good, &keeper, &liar, &off] {
        plant_old_files(&s, n);
    }

    // The instrument that deletes: its old files go on the schedule, the
    // fresh one stays, and the record says what went.
    let st = wait_retention(&s, &good, "a run that removed the old files", |v| {
        v["last"]["outcome"] == "ok" && !s.persist(&good).join("old.log").exists()
    });
    assert_eq!(st["policy"], "1day", "{st:#}");
    assert_eq!(st["every_s"], 2);
    let p = s.persist(&good);
    assert!(!p.join("captures/a.pcap").exists());
    assert!(!p.join("captures").exists(), "emptied directories go too");
    assert!(p.join("fresh.log").exists());
    let hist: Vec<Value> = serde_json::from_str(&ok(s.ctl(&[
        "retention",
        "history",
        &good,
        "--format",
        "json",
    ])))
    .unwrap();
    let removing = hist
        .iter()
        .find(|r| r["items"] == 2)
        .unwrap_or_else(|| panic!("no run removed the 2 files: {hist:#?}"));
    assert_eq!(removing["bytes"], 2000);
    assert_eq!(removing["trigger"], "schedule");
    assert_eq!(removing["outcome"], "ok");
    assert!(
        removing["oldest_found_ms"].as_i64().unwrap() > removing["cutoff_ms"].as_i64().unwrap(),
        "the platform's walk found nothing older than the cutoff: {removing:#}"
    );

    // One that keeps its data and says so: violated, seen by itself.
    let st = wait_retention(&s, &keeper, "violated", |v| {
        v["last"]["outcome"] == "violated"
    });
    assert!(
        st["last"]["message"]
            .as_str()
            .unwrap()
            .contains("the instrument reports"),
        "{st:#}"
    );
    assert!(s.persist(&keeper).join("old.log").exists());

    // One that keeps its data and claims it is gone: the platform's own
    // walk finds it.
    let st = wait_retention(&s, &liar, "violated", |v| {
        v["last"]["outcome"] == "violated"
    });
    assert!(
        st["last"]["message"]
            .as_str()
            .unwrap()
            .contains("the platform found"),
        "{st:#}"
    );

    // One that never answers: failed after the manifest's timeout (3 s).
    let st = wait_retention(&s, &mute, "failed", |v| v["last"]["outcome"] == "failed");
    assert!(
        st["last"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{st:#}"
    );

    // Retention off: never asked, its old files stay.
    let st = retention_status(&s)[&off].clone();
    assert_eq!(st["policy"], "off");
    assert!(st["last"].is_null(), "{st:#}");
    assert!(st["next_due_ms"].is_null(), "{st:#}");
    assert!(s.persist(&off).join("old.log").exists());

    // Each failure is an event on the sensor's stream, naming who and why.
    let violated = events(&s, "retention-violated");
    let seen_by = |n: &str| {
        violated
            .iter()
            .find(|e| e["envelope"]["payload"]["instrument"] == n)
            .map(|e| {
                e["envelope"]["payload"]["seen_by"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
    };
    assert_eq!(
        seen_by(&keeper).as_deref(),
        Some("instrument"),
        "{violated:#?}"
    );
    assert_eq!(seen_by(&liar).as_deref(), Some("platform"), "{violated:#?}");
    assert_eq!(seen_by(&good), None, "{violated:#?}");
    let failed = events(&s, "retention-failed");
    assert!(
        failed
            .iter()
            .any(|e| e["envelope"]["payload"]["instrument"] == mute.as_str()
                && e["envelope"]["payload"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("no answer")),
        "{failed:#?}"
    );

    // An operator's run answers the verdict, and fails the command when
    // the data is still there.
    let out = ok(s.ctl(&["retention", "run", &good]));
    assert!(out.contains(&format!("{good}: ok")), "{out}");
    let o = s.ctl(&["retention", "run", &liar]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the platform found"),
        "{}",
        text(&o)
    );
    // A one-off run with a longer period than the data's age leaves it
    // alone and holds.
    let out = ok(s.ctl(&["retention", "run", &keeper, "--older-than", "30d"]));
    assert!(out.contains(&format!("{keeper}: ok")), "{out}");
    // Off means off unless a period is given.
    let o = s.ctl(&["retention", "run", &off]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("retention off"),
        "{}",
        text(&o)
    );
    let o = s.ctl(&["retention", "run", "no-such"]);
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));

    // The table says the same.
    let table = ok(s.ctl(&["retention", "status"]));
    for n in [&good, &keeper, &liar, &mute, &off] {
        assert!(table.contains(n.as_str()), "{table}");
    }
    assert!(
        table.contains("violated") && table.contains("failed"),
        "{table}"
    );

    // The record outlives the daemon.
    s.terminate();
    s.start(&[]);
    let st = retention_status(&s);
    assert_eq!(st[&liar]["last"]["outcome"], "violated", "{st:#}");
    assert!(st[&mute]["last"]["outcome"] == "failed", "{st:#}");
}

#[test]
fn a_malformed_retention_setting_is_refused_whole_and_the_default_is_the_images_period() {
    // Which settings each image allows is unit-tested in the protocol
    // crate; here a real apply refuses a malformed one and stores nothing.
    let mut s = Sensor::new();
    s.import(&example_image());
    let a = unique("ret-bad");
    s.write_sensor(&instrument(&a, None, "delete"));
    s.start(&[]);
    s.wait_running(&a);
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[sensor]\nname = \"test\"\n\n{}",
            instrument(&a, Some("forever"), "delete")
        ),
    )
    .unwrap();
    let o = s.ctl(&["apply", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("neither \"off\" nor a period"), "{err}");
    let st = ok(s.ctl(&["retention", "status", "--format", "json"]));
    let st: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(
        st[&a]["policy"], "7days",
        "the image's default period: {st:#}"
    );
    let hist = ok(s.ctl(&["history", "--format", "json"]));
    let hist: Value = serde_json::from_str(&hist).unwrap();
    assert_eq!(
        hist.as_array().unwrap().len(),
        1,
        "nothing stored: {hist:#}"
    );
}
