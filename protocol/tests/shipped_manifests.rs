//! Every image this repository ships has a manifest the platform accepts.

#[test]
fn every_shipped_manifest_is_valid() {
    let images = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    let mut seen = 0;
    for dir in std::fs::read_dir(&images).unwrap().flatten() {
        let m = dir.path().join("manifest.toml");
        if !m.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&m).unwrap();
        if let Err(e) = outpost_protocol::Manifest::parse_valid(&text) {
            panic!("{}: {e}", m.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "only {seen} manifests under {}",
        images.display()
    );
}
