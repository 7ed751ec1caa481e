//! `outpostctl config …`: an instrument's config, its history, diffs,
//! changes and rollbacks. Bodies are shown as TOML (as in the sensor
//! file), or JSON with `--format json`.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;

use super::{Format, Session, when};
use crate::db::ConfigVersion;
use crate::dbus::client::CallError;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// The current config (or version N).
    Show {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Every config version, newest first, with who made it and why.
    History { name: String },
    /// What changed from version A to version B.
    Diff { name: String, a: i64, b: i64 },
    /// Replaces the config with FILE (TOML or JSON; "-" reads stdin). It
    /// is checked against the image's schema before anything is stored.
    Set {
        name: String,
        file: PathBuf,
        #[arg(long = "override")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Opens the config in $EDITOR and sets what was saved.
    Edit {
        name: String,
        #[arg(long = "override")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Makes version N current again, as a new version.
    Rollback {
        name: String,
        version: i64,
        #[arg(long = "override")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// A body as TOML, or pretty JSON where TOML cannot say it.
pub fn render(body: &serde_json::Value, format: Format) -> String {
    let json = || serde_json::to_string_pretty(body).expect("a JSON value serializes") + "\n";
    match format {
        Format::Json => json(),
        Format::Table => toml::to_string_pretty(body).unwrap_or_else(|_| json()),
    }
}

/// A body read from TOML or JSON text.
pub fn parse_body(text: &str, what: &str) -> Result<serde_json::Value, CallError> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return Ok(v);
    }
    toml::from_str::<toml::Value>(text)
        .map_err(|e| {
            CallError::Invalid(format!(
                "{what} is neither JSON nor TOML: {e} (fix: write the config table's contents, \
                 like greeting = \"hi\")"
            ))
        })
        .and_then(|v| {
            serde_json::to_value(v).map_err(|e| CallError::Invalid(format!("{what}: {e}")))
        })
}

impl Session {
    async fn history(&self, name: &str) -> Result<Vec<ConfigVersion>, CallError> {
        let json = self
            .proxy
            .config_history(name)
            .await
            .map_err(|e| self.err(e))?;
        serde_json::from_str(&json)
            .map_err(|e| CallError::Failed(format!("an answer outpostctl cannot read: {e}")))
    }

    async fn version(&self, name: &str, v: Option<i64>) -> Result<ConfigVersion, CallError> {
        let h = self.history(name).await?;
        let found = match v {
            None => h.first(),
            Some(v) => h.iter().find(|c| c.version == v),
        };
        found.cloned().ok_or_else(|| {
            let have: Vec<String> = h.iter().map(|c| c.version.to_string()).collect();
            CallError::NotFound(format!(
                "instrument {name} has no config version {} (it has: {})",
                v.map(|v| v.to_string()).unwrap_or_else(|| "yet".into()),
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            ))
        })
    }

    async fn set(
        &self,
        name: &str,
        body: &serde_json::Value,
        force: bool,
        reason: String,
    ) -> Result<(), CallError> {
        let (version, changed) = self
            .proxy
            .set_config(name, &body.to_string(), force, &reason)
            .await
            .map_err(|e| self.err(e))?;
        if changed {
            println!("{name}: config stored as desired state version {version}");
        } else {
            println!("{name}: unchanged (desired state version {version})");
        }
        Ok(())
    }

    pub(super) async fn config(&self, cmd: ConfigCmd, format: Format) -> Result<(), CallError> {
        match cmd {
            ConfigCmd::Show { name, version } => {
                let c = self.version(&name, version).await?;
                print!("{}", render(&c.body, format));
            }
            ConfigCmd::History { name } => {
                let h = self.history(&name).await?;
                if format == Format::Json {
                    println!("{}", serde_json::to_string_pretty(&h).expect("serializes"));
                    return Ok(());
                }
                println!(
                    "{:>7} {:>7}  {:<20} {:<6} {:<24} REASON",
                    "VERSION", "DESIRED", "WHEN", "SOURCE", "AUTHOR"
                );
                for c in h {
                    println!(
                        "{:>7} {:>7}  {:<20} {:<6} {:<24} {}",
                        c.version,
                        c.desired_version,
                        when(c.created_at_ms),
                        c.source,
                        c.author,
                        c.reason
                    );
                }
            }
            ConfigCmd::Diff { name, a, b } => {
                let (va, vb) = (
                    self.version(&name, Some(a)).await?,
                    self.version(&name, Some(b)).await?,
                );
                let (ta, tb) = (render(&va.body, format), render(&vb.body, format));
                let diff = similar::TextDiff::from_lines(&ta, &tb);
                print!(
                    "{}",
                    diff.unified_diff()
                        .context_radius(3)
                        .header(&format!("{name} config {a}"), &format!("{name} config {b}"))
                );
            }
            ConfigCmd::Set {
                name,
                file,
                force,
                reason,
            } => {
                let text = if file.as_os_str() == "-" {
                    let mut t = String::new();
                    std::io::stdin()
                        .read_to_string(&mut t)
                        .map_err(|e| CallError::Invalid(format!("cannot read stdin: {e}")))?;
                    t
                } else {
                    std::fs::read_to_string(&file).map_err(|e| {
                        CallError::Invalid(format!("cannot read {}: {e}", file.display()))
                    })?
                };
                let body = parse_body(&text, &file.display().to_string())?;
                let reason =
                    reason.unwrap_or_else(|| format!("outpostctl config set {}", file.display()));
                self.set(&name, &body, force, reason).await?;
            }
            ConfigCmd::Edit {
                name,
                force,
                reason,
            } => {
                let current = self.version(&name, None).await?;
                let before = render(&current.body, Format::Table);
                let tmp = tempfile::Builder::new()
                    .prefix(&format!("outpost-{name}-"))
                    .suffix(".toml")
                    .tempfile()
                    .map_err(|e| CallError::Failed(format!("cannot make a temporary file: {e}")))?;
                std::fs::write(tmp.path(), &before).map_err(|e| {
                    CallError::Failed(format!("cannot write {}: {e}", tmp.path().display()))
                })?;
                let editor = std::env::var("VISUAL")
                    .or_else(|_| std::env::var("EDITOR"))
                    .unwrap_or_else(|_| "vi".into());
                let st = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("{editor} \"$1\""))
                    .arg("sh")
                    .arg(tmp.path())
                    .status()
                    .map_err(|e| CallError::Failed(format!("cannot run {editor}: {e}")))?;
                if !st.success() {
                    return Err(CallError::Failed(format!(
                        "{editor} exited with {st}; nothing was changed"
                    )));
                }
                let after = std::fs::read_to_string(tmp.path())
                    .map_err(|e| CallError::Failed(format!("cannot read the edit back: {e}")))?;
                if after == before {
                    println!("{name}: no change");
                    return Ok(());
                }
                let body = parse_body(&after, "the edited config")?;
                let reason = reason.unwrap_or_else(|| "outpostctl config edit".into());
                self.set(&name, &body, force, reason).await?;
            }
            ConfigCmd::Rollback {
                name,
                version,
                force,
                reason,
            } => {
                let (v, changed) = self
                    .proxy
                    .rollback_config(&name, version, force, &reason.unwrap_or_default())
                    .await
                    .map_err(|e| self.err(e))?;
                if changed {
                    println!(
                        "{name}: config version {version} is current again (desired state version {v})"
                    );
                } else {
                    println!(
                        "{name}: config version {version} is already current (desired state version {v})"
                    );
                }
            }
        }
        Ok(())
    }
}
