//! `images/<name>/image.toml`: what goes into an image besides its manifest.
//!
//! ```toml
//! [[binary]]
//! package = "example-instrument"   # workspace package
//! bin = "example-instrument"       # binary target in that package
//! path = "/usr/bin/example-instrument"
//!
//! [[file]]
//! source = "probe.toml"            # relative to the image folder
//! path = "/etc/beacon/probe.toml"
//! mode = "0644"
//! ```

use std::path::Path;

use serde::Deserialize;

/// The parsed `image.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default, rename = "binary")]
    pub binaries: Vec<Binary>,
    #[serde(default, rename = "file")]
    pub files: Vec<ExtraFile>,
}

/// A workspace binary, built statically.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    pub package: String,
    pub bin: String,
    /// Absolute destination inside the rootfs.
    pub path: String,
}

/// A file copied from the image folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    pub source: String,
    pub path: String,
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".into()
}

impl Recipe {
    /// Reads and checks `<dir>/image.toml`.
    pub fn load(dir: &Path) -> Result<Recipe, String> {
        let path = dir.join("image.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: Recipe = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, b) in r.binaries.iter().enumerate() {
            check_dest(&b.path).map_err(|e| format!("{}: binary[{i}].path {e}", path.display()))?;
        }
        for (i, f) in r.files.iter().enumerate() {
            check_dest(&f.path).map_err(|e| format!("{}: file[{i}].path {e}", path.display()))?;
            if f.source.starts_with('/') || f.source.split('/').any(|p| p == "..") {
                return Err(format!(
                    "{}: file[{i}].source {:?} must be a path inside the image folder",
                    path.display(),
                    f.source
                ));
            }
            f.mode_bits()
                .map_err(|e| format!("{}: file[{i}].mode {e}", path.display()))?;
        }
        Ok(r)
    }
}

impl ExtraFile {
    /// The mode as bits, refusing setuid/setgid.
    pub fn mode_bits(&self) -> Result<u32, String> {
        let m = u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .map_err(|_| format!("{:?} is not an octal mode like \"0644\"", self.mode))?;
        if m & !0o777 != 0 {
            return Err(format!(
                "{:?} has bits beyond 0777 (setuid/setgid are not allowed)",
                self.mode
            ));
        }
        Ok(m)
    }
}

fn check_dest(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") || p.ends_with('/') {
        return Err(format!(
            "{p:?} must be an absolute file path without '.' or '..'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_checks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("image.toml"),
            "[[binary]]\npackage = \"a\"\nbin = \"a\"\npath = \"/usr/bin/a\"\n",
        )
        .unwrap();
        let r = Recipe::load(d.path()).unwrap();
        assert_eq!(r.binaries[0].bin, "a");

        std::fs::write(
            d.path().join("image.toml"),
            "[[binary]]\npackage = \"a\"\nbin = \"a\"\npath = \"usr/bin/a\"\n",
        )
        .unwrap();
        assert!(
            Recipe::load(d.path())
                .unwrap_err()
                .contains("binary[0].path")
        );

        std::fs::write(
            d.path().join("image.toml"),
            "[[file]]\nsource = \"../x\"\npath = \"/etc/x\"\n",
        )
        .unwrap();
        assert!(
            Recipe::load(d.path())
                .unwrap_err()
                .contains("file[0].source")
        );
    }

    #[test]
    fn modes() {
        let f = |m: &str| ExtraFile {
            source: "x".into(),
            path: "/x".into(),
            mode: m.into(),
        };
        assert_eq!(f("0755").mode_bits(), Ok(0o755));
        assert!(f("4755").mode_bits().is_err());
        assert!(f("rwx").mode_bits().is_err());
    }
}
