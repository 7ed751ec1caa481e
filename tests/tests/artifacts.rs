//! New probe binaries reach the beacon end to end, through the downloader
//! and the platform, in the namespaces of [`outpost_tests::artifacts`].

use std::fs;
use std::time::{Duration, SystemTime};

use outpost_protocol::artifacts::verify::test_signer::Signer;
use outpost_tests::artifacts::{Releases, World, probe, refusals, refusals_of, sha};
use outpost_tests::beacon::{events_of, wait_until};

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

    // Signed by a key the downloader trusts and the sensor file's route
    // does not: the downloader takes it, the platform refuses it by name,
    // and the beacon never sees it.
    let v35 = probe(&s, &b, "\0outpost artifact test 3.5.0");
    let by = std::mem::replace(&mut rel.downloader_only, Signer::new());
    rel.publish("3.5.0", &v35, Some(&by), |_| {});
    wait_until("artifact-fetched 3.5.0", Duration::from_secs(20), || {
        events_of(&s, &dl, "artifact-fetched")
            .into_iter()
            .find(|e| e["version"] == "3.5.0")
    });
    let refused = wait_until("the platform's refusal", Duration::from_secs(20), || {
        events_of(&s, "outpostd", "artifact-refused")
            .into_iter()
            .find(|e| e["version"] == "3.5.0")
    });
    assert_eq!(refused["reason"], "unknown-key", "{refused}");
    assert_eq!(refused["provider"], dl.as_str(), "{refused}");
    assert!(
        !s.state
            .join("artifacts")
            .join(&b)
            .join("escape-probe/3.5.0")
            .exists()
    );
    assert_eq!(
        s.instrument(&b).unwrap()["health_details"]["probe"]["sha256"],
        v2_sha.as_str()
    );

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
    } = World::start_with(&[], &more, "1s");
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
