//! The fleet's API against its own OpenAPI document: schemathesis (a
//! property-based tester, from PyPI) generates requests from the document,
//! valid and invalid, and checks every answer: no 5xx, status codes, bodies
//! and headers as documented, invalid input refused, auth required where
//! the document says so.

use std::path::PathBuf;
use std::process::Command;

use outpost_tests::example_image;
use outpost_tests::fleet::Fleet;

use super::desired::{put_desired, sensor_file};
use super::{enrolled, text};

fn schemathesis() -> PathBuf {
    let p = std::env::var_os("OUTPOST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            outpost_tests::workspace().join("target/tools/schemathesis-4.32.5/bin/st")
        });
    assert!(
        p.exists(),
        "{} is missing: ./run test installs schemathesis from PyPI",
        p.display()
    );
    p
}

#[test]
fn the_api_answers_as_its_openapi_document_says_to_generated_requests() {
    let fleet = Fleet::start("1s");
    // Something to find: a sensor with desired state, an image.
    let (name, _s) = enrolled(&fleet, &example_image());
    let put = put_desired(&fleet, &name, &sensor_file(&name, &[]), "for the fuzzer");
    assert!(put.status.success(), "{}", text(&put));
    let up = fleet.cli(&["image", "push", example_image().archive.to_str().unwrap()]);
    assert!(up.status.success(), "{}", text(&up));

    let token = std::fs::read_to_string(fleet.state.join("admin.token")).unwrap();
    let out = Command::new(schemathesis())
        .current_dir(fleet.dir.path())
        .args(["run", &format!("{}/api/v1/openapi.json", fleet.url)])
        .arg("--tls-verify")
        .arg(fleet.ca())
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        // Every check but "a request the schema allows is accepted": a
        // token, a key or an archive can be well-formed and still wrong.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // One worker: hypothesis's lambda introspection is not thread-safe
        // ("AST constructor recursion depth mismatch" with two, once in CI).
        .args([
            "--max-time",
            "60",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ])
        .args(["--no-color", "--seed", "1"])
        .output()
        .expect("schemathesis runs");
    let report = text(&out);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
}
