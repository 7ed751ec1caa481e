//! Image import through `outpostctl image import` into a running
//! outpostd: good images go in, bad ones are refused with an error that
//! names the problem, and a refused import leaves nothing behind.

use std::fs;
use std::path::Path;

use outpost_tests::archive::RawArchive;
use outpost_tests::{ImageFile, Sensor, example_image};

/// A sensor with no instruments whose outpostd runs.
fn running() -> Sensor {
    let mut s = Sensor::new();
    s.write_sensor("");
    s.start(&[]);
    s
}

fn import(s: &Sensor, img: &ImageFile) -> (bool, String) {
    let out = s.ctl(&[
        "image",
        "import",
        img.archive.to_str().unwrap(),
        "--sha256",
        &img.sha256,
    ]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Everything under `<state>/images`, relative.
fn image_tree(s: &Sensor) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = fs::read_dir(d) {
            for e in entries.flatten() {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    walk(base, &e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    let base = s.state.join("images");
    walk(&base, &base, &mut out);
    out.sort();
    out
}

fn refused(s: &Sensor, img: &ImageFile, want: &[&str]) {
    let (ok, msg) = import(s, img);
    assert!(!ok, "import of a bad image succeeded: {msg}");
    for w in want {
        assert!(msg.contains(w), "error should mention {w:?}: {msg}");
    }
    assert_eq!(
        image_tree(s),
        Vec::<String>::new(),
        "nothing may be left behind"
    );
    let out = s.ctl(&["image", "list", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn good_image_imports_once_and_lists() {
    let s = running();
    let img = example_image();
    let (ok, msg) = import(&s, &img);
    assert!(ok, "{msg}");
    assert!(msg.contains("imported example:0.1.0"), "{msg}");
    assert!(
        msg.contains("verifying sha256: 100%"),
        "progress is shown: {msg}"
    );
    let (ok, msg) = import(&s, &img);
    assert!(ok && msg.contains("already imported"), "{msg}");
    let out = s.ctl(&["image", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("example") && list.contains("0.1.0"), "{list}");
    assert!(
        s.state
            .join("images/example/0.1.0/rootfs/usr/bin/example-instrument")
            .exists()
    );

    // Without --sha256, the .sha256 file beside the archive is used.
    let s2 = running();
    let out = s2.ctl(&["image", "import", img.archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Removal of an unused image removes its tree.
    let out = s.ctl(&["image", "rm", "example", "0.1.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(image_tree(&s), Vec::<String>::new());
}

#[test]
fn wrong_hash_is_refused_before_anything_is_written() {
    let s = running();
    let mut img = example_image();
    let real = img.sha256.clone();
    img.sha256 = "0".repeat(64);
    refused(&s, &img, &["sha256", &real, "expected", "fix:"]);
    // A malformed hash is refused too.
    let out = s.ctl(&[
        "image",
        "import",
        img.archive.to_str().unwrap(),
        "--sha256",
        "abc",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

#[test]
fn same_version_with_other_content_is_a_conflict() {
    let s = running();
    let d = tempfile::tempdir().unwrap();
    let a = RawArchive::minimal("thing").write(&d.path().join("a.tar.gz"));
    let mut b = RawArchive::minimal("thing");
    b.file("rootfs/extra", 0o644, b"x");
    let b = b.write(&d.path().join("b.tar.gz"));
    assert!(import(&s, &a).0);
    let (ok, msg) = import(&s, &b);
    assert!(!ok);
    assert!(
        msg.contains("immutable") && msg.contains("new version"),
        "{msg}"
    );
}

#[test]
fn malicious_and_broken_archives_are_refused_and_leave_nothing() {
    let s = running();
    let d = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut case = |build: &dyn Fn(&mut RawArchive), want: &[&str]| {
        n += 1;
        let mut a = RawArchive::minimal("bad");
        build(&mut a);
        let img = a.write(&d.path().join(format!("bad-{n}.tar.gz")));
        refused(&s, &img, want);
    };
    case(
        &|a| {
            a.file("rootfs/../../../tmp/escaped", 0o644, b"x");
        },
        &["rootfs/../../../tmp/escaped", "'..'"],
    );
    case(
        &|a| {
            a.file("/etc/evil", 0o644, b"x");
        },
        &["/etc/evil", "absolute"],
    );
    case(
        &|a| {
            a.symlink("rootfs/etc-link", "../../../../etc");
        },
        &["rootfs/etc-link", "leaves the image"],
    );
    case(
        &|a| {
            a.symlink("rootfs/abs-link", "/../../etc/shadow");
        },
        &["rootfs/abs-link", "leaves the image"],
    );
    case(
        &|a| {
            a.hardlink("rootfs/shadow", "/etc/shadow");
        },
        &["rootfs/shadow", "hard link"],
    );
    case(
        &|a| {
            a.char_device("rootfs/dev-null");
        },
        &["rootfs/dev-null", "device node"],
    );
    case(
        &|a| {
            a.file("rootfs/bin/su", 0o4755, b"x");
        },
        &["rootfs/bin/su", "setuid"],
    );
    case(
        &|a| {
            a.symlink("rootfs/sub", "bin");
            a.file("rootfs/sub/through-link", 0o644, b"x");
        },
        &["rootfs/sub/through-link", "not a directory"],
    );
    case(
        &|a| {
            a.file("elsewhere.txt", 0o644, b"x");
        },
        &["elsewhere.txt", "outside manifest.toml and rootfs/"],
    );
    case(
        &|a| {
            a.file("rootfs/bin/run", 0o755, b"again");
        },
        &["rootfs/bin/run", "appears twice"],
    );

    // A manifest with an unknown field.
    let mut a = RawArchive::new();
    a.file(
        "manifest.toml",
        0o644,
        b"name = \"bad\"\nversion = \"1.0.0\"\nentrypoint = [\"/bin/run\"]\nprivileged = true\n",
    );
    a.file("rootfs/bin/run", 0o755, b"x");
    refused(
        &s,
        &a.write(&d.path().join("m1.tar.gz")),
        &["manifest.toml", "privileged"],
    );
    // A manifest that parses but is invalid: every problem is named.
    let mut a = RawArchive::new();
    a.file(
        "manifest.toml",
        0o644,
        b"name = \"Bad\"\nversion = \"x\"\nentrypoint = [\"/bin/run\"]\ncapabilities = [\"sys_admin\"]\n",
    );
    a.file("rootfs/bin/run", 0o755, b"x");
    refused(
        &s,
        &a.write(&d.path().join("m2.tar.gz")),
        &["name:", "version:", "capabilities[0]", "sys_admin"],
    );
    // No manifest at all.
    let mut a = RawArchive::new();
    a.file("rootfs/bin/run", 0o755, b"x");
    refused(
        &s,
        &a.write(&d.path().join("m3.tar.gz")),
        &["no manifest.toml"],
    );
    // The entrypoint is not in the image.
    let mut a = RawArchive::new();
    a.file(
        "manifest.toml",
        0o644,
        b"name = \"bad\"\nversion = \"1.0.0\"\nentrypoint = [\"/bin/missing\"]\n",
    );
    a.dir("rootfs/", 0o755);
    refused(
        &s,
        &a.write(&d.path().join("m4.tar.gz")),
        &["/bin/missing", "not in the image"],
    );
    // Not an archive at all.
    let junk = d.path().join("junk.tar.gz");
    fs::write(&junk, b"this is not gzip").unwrap();
    let img = ImageFile {
        archive: junk.clone(),
        sha256: outpost_image::hash::sha256_bytes(b"this is not gzip"),
    };
    refused(&s, &img, &["not a gzip-compressed tar"]);
}

#[test]
fn a_truncated_archive_is_called_truncated() {
    let s = running();
    let d = tempfile::tempdir().unwrap();
    let good = example_image();
    let bytes = fs::read(&good.archive).unwrap();
    // Its own hash matches (it was cut before it was hashed), so only the
    // unpacking can tell.
    let cut = d.path().join("example-0.1.0.tar.gz");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let sha = outpost_image::hash::sha256_bytes(&bytes[..bytes.len() / 2]);
    let img = ImageFile {
        archive: cut,
        sha256: sha,
    };
    refused(
        &s,
        &img,
        &["truncated or corrupt", "copy or download it again"],
    );
}
