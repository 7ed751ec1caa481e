//! One validation of a desired state for every way in: `outpostctl check`,
//! and the intake (the sensor file at start and on SIGHUP, changes over
//! D-Bus; later the fleet). A sensor spec is first checked alone
//! (`SensorSpec::parse_valid`), then every instrument whose image is
//! imported is checked against its manifest: interface roles and types,
//! and the config body against the image's JSON Schema.

use outpost_protocol::{Manifest, SensorSpec};

/// What checking a spec against the images found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Problems that refuse the spec, each naming the instrument, field
    /// and fix.
    pub problems: Vec<String>,
    /// Instruments whose image is not imported: checked alone only.
    pub unchecked: Vec<String>,
}

impl Checked {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The notes for images that are not imported yet.
    pub fn notes(&self) -> Vec<String> {
        self.unchecked
            .iter()
            .map(|n| format!("note: {n}: image not imported yet; its config is not checked"))
            .collect()
    }
}

/// Checks every instrument of `spec` against its image's manifest, looked
/// up with `manifest(image, version)`.
pub fn against_images<E>(
    spec: &SensorSpec,
    mut manifest: impl FnMut(&str, &str) -> Result<Option<Manifest>, E>,
) -> Result<Checked, E> {
    let mut out = Checked::default();
    let mut manifests = std::collections::BTreeMap::new();
    for ins in &spec.instruments {
        match manifest(&ins.image, &ins.version)? {
            Some(m) => {
                if let Err(e) = SensorSpec::validate_against(ins, &m) {
                    out.problems.push(e.to_string());
                }
                manifests.insert(ins.name.as_str(), m);
            }
            None => out.unchecked.push(format!(
                "instrument {} ({}:{})",
                ins.name, ins.image, ins.version
            )),
        }
    }
    // Artifact routes: the provider provides, every consumer consumes.
    for (i, r) in spec.artifacts.iter().enumerate() {
        if let Some(m) = manifests.get(r.from.as_str())
            && !m.artifacts.provides
        {
            out.problems.push(format!(
                "artifact[{i}].from: image {} of instrument {} does not provide artifacts (fix: route from a downloader)",
                m.name, r.from
            ));
        }
        for (k, to) in r.to.iter().enumerate() {
            if let Some(m) = manifests.get(to.as_str())
                && !m.artifacts.consumes.contains(&r.name)
            {
                out.problems.push(format!(
                    "artifact[{i}].to[{k}]: image {} of instrument {to} does not consume {:?} (fix: route it only to instruments whose image lists it in [artifacts] consumes)",
                    m.name, r.name
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "example"
version = "0.1.0"
entrypoint = ["/usr/bin/example"]
[config.schema]
type = "object"
properties.burst = { type = "integer", minimum = 1 }
"#;

    fn spec(burst: i64, image: &str) -> SensorSpec {
        SensorSpec::parse_valid(&format!(
            "[sensor]\nname = \"s\"\n[[instrument]]\nname = \"a\"\nimage = \"{image}\"\nversion = \"0.1.0\"\n[instrument.config]\nburst = {burst}\n"
        ))
        .unwrap()
    }

    fn lookup(image: &str, _v: &str) -> Result<Option<Manifest>, std::convert::Infallible> {
        Ok((image == "example").then(|| Manifest::parse_valid(MANIFEST).unwrap()))
    }

    #[test]
    fn a_config_against_the_schema_is_refused_with_the_instrument_named() {
        let c = against_images(&spec(-5, "example"), lookup).unwrap();
        assert!(!c.is_valid());
        assert!(c.problems[0].contains("\"a\""), "{:?}", c.problems);
        assert!(c.problems[0].contains("config"), "{:?}", c.problems);
        assert!(
            against_images(&spec(5, "example"), lookup)
                .unwrap()
                .is_valid()
        );
    }

    #[test]
    fn an_image_not_imported_is_noted_not_refused() {
        let c = against_images(&spec(-5, "other"), lookup).unwrap();
        assert!(c.is_valid());
        assert_eq!(c.unchecked.len(), 1);
        assert!(c.notes()[0].contains("not imported"));
    }

    #[test]
    fn artifacts_go_only_from_a_provider_to_consumers_of_them() {
        let manifests =
            |image: &str, _v: &str| -> Result<Option<Manifest>, std::convert::Infallible> {
                let extra = match image {
                    "downloader" => "[artifacts]\nprovides = true\n",
                    "beacon" => "[artifacts]\nconsumes = [\"escape-probe\"]\n",
                    _ => "",
                };
                Ok(Some(
                    Manifest::parse_valid(&format!(
                        "name = \"{image}\"\nversion = \"0.1.0\"\nentrypoint = [\"/x\"]\n{extra}"
                    ))
                    .unwrap(),
                ))
            };
        let spec = |from: &str, to: &str| {
            SensorSpec::parse_valid(&format!(
                "[sensor]\nname = \"s\"\n\
                 [[instrument]]\nname = \"dl\"\nimage = \"downloader\"\nversion = \"0.1.0\"\n\
                 [[instrument]]\nname = \"b\"\nimage = \"beacon\"\nversion = \"0.1.0\"\n\
                 [[instrument]]\nname = \"x\"\nimage = \"example\"\nversion = \"0.1.0\"\n\
                 [[artifact]]\nname = \"escape-probe\"\nfrom = \"{from}\"\nto = [\"{to}\"]\nsha256 = \"{}\"\n",
                "ab".repeat(32)
            ))
            .unwrap()
        };
        assert!(
            against_images(&spec("dl", "b"), manifests)
                .unwrap()
                .is_valid()
        );
        let c = against_images(&spec("x", "b"), manifests).unwrap();
        assert!(
            c.problems[0].contains("artifact[0].from"),
            "{:?}",
            c.problems
        );
        let c = against_images(&spec("dl", "x"), manifests).unwrap();
        assert!(
            c.problems[0].contains("does not consume \"escape-probe\""),
            "{:?}",
            c.problems
        );
    }
}
