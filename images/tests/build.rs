//! Builds real images with the builder (prebuilt binaries, so no nested
//! cargo), on both bases, and checks the result by unpacking it as an
//! import would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use outpost_image::base::Base;
use outpost_image::builder::{BuildOptions, build};
use outpost_image::hash::sha256_bytes;

const BUSYBOX: &str = "/bin/busybox";

fn image_dir(dir: &Path) {
    fs::write(
        dir.join("manifest.toml"),
        "name = \"tool\"\nversion = \"1.0.0\"\nentrypoint = [\"/usr/bin/tool\", \"true\"]\n",
    )
    .unwrap();
    fs::write(
        dir.join("image.toml"),
        "[[binary]]\npackage = \"tool\"\nbin = \"tool\"\npath = \"/usr/bin/tool\"\n\n[[file]]\nsource = \"tool.conf\"\npath = \"/etc/tool/tool.conf\"\nmode = \"0600\"\n",
    )
    .unwrap();
    fs::write(dir.join("tool.conf"), "answer = 42\n").unwrap();
}

/// A small stand-in for an Alpine minirootfs: a root entry, a static
/// busybox, a link, a device node and a setuid file.
fn fake_minirootfs(path: &Path) -> String {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        if kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        if let Some(l) = link {
            tar.append_link(&mut h, name, l).unwrap();
        } else {
            tar.append_data(&mut h, name, data).unwrap();
        }
    };
    let bb = fs::read(BUSYBOX).unwrap();
    add("./", tar::EntryType::Directory, 0o755, b"", None);
    add("./bin/", tar::EntryType::Directory, 0o755, b"", None);
    add("./bin/busybox", tar::EntryType::Regular, 0o755, &bb, None);
    add(
        "./bin/sh",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("/bin/busybox"),
    );
    add("./bin/bbsuid", tar::EntryType::Regular, 0o4755, b"x", None);
    add("./etc/", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "./etc/alpine-release",
        tar::EntryType::Regular,
        0o644,
        b"3.20.0\n",
        None,
    );
    add("./dev/", tar::EntryType::Directory, 0o755, b"", None);
    add("./dev/null", tar::EntryType::Char, 0o666, b"", None);
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    fs::write(path, &bytes).unwrap();
    sha256_bytes(&bytes)
}

fn prebuilt(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::copy(BUSYBOX, dir.join("tool")).unwrap();
}

fn check_busybox() {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static (./run deps)"
    );
}

#[test]
fn builds_on_the_busybox_base_and_imports_cleanly() {
    check_busybox();
    let d = tempfile::tempdir().unwrap();
    image_dir(d.path());
    prebuilt(&d.path().join("bin"));
    let mut lines = Vec::new();
    let packed = build(
        &BuildOptions {
            image_dir: d.path().to_path_buf(),
            out_dir: d.path().join("out"),
            base: Base::default(),
            prebuilt: Some(d.path().join("bin")),
            workspace: None,
        },
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("[5/5]")),
        "progress: {lines:?}"
    );
    assert!(packed.archive.ends_with("tool-1.0.0.tar.gz"));
    let side = fs::read_to_string(&packed.sha256_file).unwrap();
    assert!(side.starts_with(&packed.sha256));

    let tree = d.path().join("tree");
    let u = outpost_image::unpack(
        &packed.archive,
        &packed.sha256,
        &tree,
        Default::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(u.manifest.name, "tool");
    // What the fleet reads of an upload: the same manifest, unpacked or not.
    let (m, text) = outpost_image::unpack::read_manifest(&packed.archive).unwrap();
    assert_eq!(m, u.manifest);
    assert_eq!(text, u.manifest_text);
    let not_an_image = d.path().join("base.tar.gz");
    fake_minirootfs(&not_an_image);
    let e = outpost_image::unpack::read_manifest(&not_an_image).unwrap_err();
    assert!(e.to_string().contains("no manifest.toml"), "{e}");
    let root = tree.join("rootfs");
    assert!(root.join("usr/bin/tool").is_file());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let conf = root.join("etc/tool/tool.conf");
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(root.join(".outpost/status").is_dir());
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );

    // The same inputs give the same archive.
    let again = build(
        &BuildOptions {
            image_dir: d.path().to_path_buf(),
            out_dir: d.path().join("out2"),
            base: Base::default(),
            prebuilt: Some(d.path().join("bin")),
            workspace: None,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again.sha256, packed.sha256, "builds are deterministic");
}

#[test]
fn builds_on_a_pinned_alpine_minirootfs() {
    check_busybox();
    let d = tempfile::tempdir().unwrap();
    image_dir(d.path());
    prebuilt(&d.path().join("bin"));
    let tarball = d.path().join("alpine-minirootfs.tar.gz");
    let sha = fake_minirootfs(&tarball);
    let mut lines = Vec::new();
    let packed = build(
        &BuildOptions {
            image_dir: d.path().to_path_buf(),
            out_dir: d.path().join("out"),
            base: Base::Alpine {
                tarball: tarball.clone(),
                sha256: sha.clone(),
            },
            prebuilt: Some(d.path().join("bin")),
            workspace: None,
        },
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("skipped dev/null")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stripped setuid/setgid from bin/bbsuid")),
        "{lines:?}"
    );

    let tree = d.path().join("tree");
    outpost_image::unpack(
        &packed.archive,
        &packed.sha256,
        &tree,
        Default::default(),
        |_| {},
    )
    .expect("an image built on Alpine imports");
    let root = tree.join("rootfs");
    assert_eq!(
        fs::read_to_string(root.join("etc/alpine-release")).unwrap(),
        "3.20.0\n"
    );
    assert!(root.join("usr/bin/tool").is_file());
    assert!(!root.join("dev/null").exists());
    assert_eq!(
        fs::metadata(root.join("bin/bbsuid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );

    // A tarball that does not match its pinned hash is refused.
    let err = build(
        &BuildOptions {
            image_dir: d.path().to_path_buf(),
            out_dir: d.path().join("out3"),
            base: Base::Alpine {
                tarball,
                sha256: "0".repeat(64),
            },
            prebuilt: Some(d.path().join("bin")),
            workspace: None,
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sha256") && err.contains(&sha), "{err}");
}

#[test]
fn a_dynamic_binary_is_refused() {
    let d = tempfile::tempdir().unwrap();
    image_dir(d.path());
    fs::create_dir_all(d.path().join("bin")).unwrap();
    fs::copy("/bin/ls", d.path().join("bin/tool")).unwrap();
    let err = build(
        &BuildOptions {
            image_dir: d.path().to_path_buf(),
            out_dir: d.path().join("out"),
            base: Base::default(),
            prebuilt: Some(d.path().join("bin")),
            workspace: None,
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("dynamically linked") && err.contains("crt-static"),
        "{err}"
    );
}
