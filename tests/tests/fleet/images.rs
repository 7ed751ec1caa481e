//! Images through the fleet: uploaded once, checked against at every push
//! (a config the image's schema refuses never leaves the fleet), fetched
//! by the sensors whose desired state names them, verified and imported,
//! and refused to a sensor that was not given them.

use std::time::Duration;

use outpost_tests::fleet::Fleet;
use outpost_tests::{Sensor, example_image, unique};

use super::desired::{put_desired, rollout, sensor_file, wait_rollout};
use super::{enrolled_with, text};

/// A running sensor with no image at all, enrolled in `fleet`.
fn bare_sensor(fleet: &Fleet) -> (String, Sensor) {
    enrolled_with(fleet, None)
}

#[test]
fn an_image_pushed_to_the_fleet_reaches_the_sensors_that_need_it_and_only_them() {
    let img = example_image();
    let fleet = Fleet::start("1s");
    let (name, s) = bare_sensor(&fleet);
    let (other, o) = bare_sensor(&fleet);

    // Upload: new once, the same archive again is no change, a file that
    // is not an image is refused with the reason.
    let up = fleet.cli(&["image", "push", img.archive.to_str().unwrap()]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains("example 0.1.0 uploaded"),
        "{}",
        text(&up)
    );
    assert!(text(&up).contains(&img.sha256), "{}", text(&up));
    let again = fleet.cli(&["image", "push", img.archive.to_str().unwrap()]);
    assert!(
        text(&again).contains("already at the fleet"),
        "{}",
        text(&again)
    );
    let junk = fleet.dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"this is not an image archive").unwrap();
    let bad = fleet.cli(&["image", "push", junk.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("400"), "{}", text(&bad));
    assert!(text(&bad).contains("gzip"), "{}", text(&bad));
    let list = fleet.cli(&["image", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["sha256"], img.sha256.as_str());
    assert_eq!(list[0]["uploaded_by"], "admin");

    // A config the image's schema refuses is refused at the fleet, naming
    // the instrument and the field; nothing is stored or sent.
    let a = unique("img");
    let wrong = format!(
        "{}config = {{ greeting = 42 }}\n",
        sensor_file(&name, &[(&a, "example")])
    );
    let put = put_desired(&fleet, &name, &wrong, "a wrong greeting");
    assert!(!put.status.success(), "{}", text(&put));
    let why = text(&put);
    assert!(why.contains("400"), "{why}");
    assert!(why.contains(&format!("instruments[0] ({a})")), "{why}");
    assert!(why.contains("greeting"), "{why}");
    let hist = fleet.cli(&["desired", "history", &name]);
    let hist: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(hist.as_array().map(Vec::len), Some(0), "{hist:#}");

    // A good one: the sensor, which has no image, fetches it from the
    // fleet, verifies and imports it, and runs the instrument.
    let put = put_desired(
        &fleet,
        &name,
        &sensor_file(&name, &[(&a, "example")]),
        "run a",
    );
    assert!(put.status.success(), "{}", text(&put));
    let shown: serde_json::Value =
        serde_json::from_slice(&fleet.cli(&["desired", "show", &name]).stdout).unwrap();
    assert_eq!(
        shown["images"][0]["sha256"],
        img.sha256.as_str(),
        "{shown:#}"
    );
    wait_rollout(&fleet, &name, 1, "applied");
    s.wait_for(&a, "running", Duration::from_secs(60), |v| {
        v["state"] == "running"
    });
    let images = s.ctl(&["--format", "json", "image", "list"]);
    let images: serde_json::Value = serde_json::from_slice(&images.stdout).unwrap();
    let here = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "example")
        .unwrap_or_else(|| panic!("no example image on the sensor: {images:#}"));
    assert_eq!(here["sha256"], img.sha256.as_str());
    let downloads = s.state.join("fleet/downloads");
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a fetch left {left:?}");

    // Another sensor's credentials cannot fetch it: its desired state does
    // not name it.
    let creds = std::fs::read_to_string(o.state.join("fleet/sensor.creds")).unwrap();
    let url = fleet.hub_url();
    let ca = o.state.join("fleet/hub-ca.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        let c = async_nats::ConnectOptions::new()
            .credentials(&creds)
            .unwrap()
            .add_root_certificates(ca)
            .require_tls(true)
            .custom_inbox_prefix(format!("_INBOX.{other}"))
            .connect(url.as_str())
            .await
            .unwrap();
        let req = serde_json::json!({ "name": "example", "version": "0.1.0", "offset": 0 });
        c.request(
            format!("fleet.in.{other}.image"),
            serde_json::to_vec(&req).unwrap().into(),
        )
        .await
        .unwrap()
    });
    let refused = answer
        .headers
        .as_ref()
        .and_then(|h| h.get("Outpost-Error"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(answer.payload.is_empty());
    assert!(
        refused.contains(&format!("not in sensor {other}'s desired state")),
        "{refused:?}"
    );
    assert_eq!(rollout(&fleet, &name)["state"], "applied");
}

/// The example image again as version 0.2.0, with `extra` added to its
/// manifest (packed as outpost-image packs).
fn example_with(dir: &std::path::Path, extra: &str) -> outpost_tests::ImageFile {
    let img = example_image();
    let tree = dir.join("tree");
    let u = outpost_image::unpack(&img.archive, &img.sha256, &tree, Default::default(), |_| {})
        .unwrap();
    let text = u
        .manifest_text
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"");
    let m = outpost_protocol::Manifest::parse_valid(&format!("{text}\n{extra}")).unwrap();
    let packed = outpost_image::pack(&tree.join("rootfs"), &m, &dir.join("out")).unwrap();
    outpost_tests::ImageFile {
        archive: packed.archive,
        sha256: packed.sha256,
    }
}

#[test]
fn events_that_do_not_match_their_images_schema_are_kept_marked_and_counted() {
    let fleet = Fleet::start("1s");
    let (name, s) = bare_sensor(&fleet);
    // Ticks may count to 3; a burst of 5 sends two that do not match.
    let img = example_with(
        fleet.dir.path(),
        "[events.tick]\nschema = { type = \"object\", required = [\"n\", \"of\"], properties.n = { type = \"integer\", maximum = 3 } }\n\n\
         [events.boot]\nschema = { type = \"object\", required = [\"boot\"] }\n",
    );
    let up = fleet.cli(&["image", "push", img.archive.to_str().unwrap()]);
    assert!(up.status.success(), "{}", text(&up));
    let a = unique("sig");
    let file = sensor_file(&name, &[(&a, "example")]).replace("0.1.0", "0.2.0");
    let put = put_desired(
        &fleet,
        &name,
        &format!("{file}config = {{ burst = 5 }}\n"),
        "burst",
    );
    assert!(put.status.success(), "{}", text(&put));
    wait_rollout(&fleet, &name, 1, "applied");

    let ticks = fleet.wait_events(
        &["--sensor", &name, "--kind", "tick"],
        5,
        Duration::from_secs(60),
    );
    let marked: Vec<u64> = ticks
        .iter()
        .filter(|e| e["invalid"].is_string())
        .map(|e| e["envelope"]["payload"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(marked, [4, 5], "{ticks:#?}");
    let why = ticks[3]["invalid"].as_str().unwrap();
    assert!(why.contains("payload/n"), "{why}");
    assert!(why.contains("example 0.2.0"), "{why}");
    let boot = fleet.wait_events(
        &["--sensor", &name, "--kind", "boot"],
        1,
        Duration::from_secs(10),
    );
    assert!(boot[0].get("invalid").is_none(), "{boot:#?}");

    // Asked for, only the marked ones; and counted per instrument.
    let only = fleet.cli(&["events", "--sensor", &name, "--invalid"]);
    let only: Vec<serde_json::Value> = String::from_utf8_lossy(&only.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(only.len(), 2, "{only:#?}");
    let metrics = text(&fleet.cli(&["metrics"]));
    let line =
        format!("outpost_fleet_events_invalid_total{{sensor=\"{name}\",instrument=\"{a}\"}} 2");
    assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    drop(s);
}
