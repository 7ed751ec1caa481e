//! The fleet's signing keys (nkey seeds): the operator, the system
//! account, the fleet account and its signing key. Made on first run into
//! `<state>/keys`, mode 0600. Every `outpost-fleet` instance of one fleet
//! uses the same keys (copy the directory, or give `--keys`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

use super::jwt;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not an nkey seed of the right kind ({why}) (fix: restore it from a backup, or start a new fleet with an empty state directory)"
    )]
    Bad { path: PathBuf, why: String },
}

/// The fleet's keys.
pub struct FleetKeys {
    pub operator: KeyPair,
    pub system: KeyPair,
    pub account: KeyPair,
    /// Signs sensor and service users, so the account key itself can stay
    /// offline in a larger set-up.
    pub signing: KeyPair,
}

impl FleetKeys {
    /// Loads the keys in `dir`, making the missing ones.
    pub fn load_or_make(dir: &Path) -> Result<FleetKeys, KeyError> {
        fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            path: dir.into(),
            source,
        })?;
        Ok(FleetKeys {
            operator: seed(dir, "operator", 'O', KeyPair::new_operator)?,
            system: seed(dir, "system-account", 'A', KeyPair::new_account)?,
            account: seed(dir, "fleet-account", 'A', KeyPair::new_account)?,
            signing: seed(dir, "fleet-signing", 'A', KeyPair::new_account)?,
        })
    }

    pub fn operator_jwt(&self) -> String {
        jwt::operator(&self.operator, "outpost-fleet", &self.system.public_key())
    }

    pub fn system_jwt(&self) -> String {
        jwt::account(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            &[],
            false,
            &BTreeMap::new(),
        )
    }

    /// The fleet account's JWT with the given revocations.
    pub fn account_jwt(&self, revoked: &BTreeMap<String, i64>) -> String {
        jwt::account(
            &self.operator,
            &self.account.public_key(),
            "FLEET",
            &[self.signing.public_key()],
            true,
            revoked,
        )
    }

    /// Credentials for the fleet's own service user (everything in the
    /// fleet account). A fresh user key each time.
    pub fn service_creds(&self) -> String {
        let u = KeyPair::new_user();
        let j = jwt::user(
            &self.signing,
            &self.account.public_key(),
            &u.public_key(),
            "outpost-fleet",
            &jwt::Permissions::default(),
        );
        outpost_protocol::files::nats_creds(&j, &u.seed().expect("new key has a seed"))
    }

    /// Credentials for a system-account user (pushes account updates).
    pub fn system_creds(&self) -> String {
        let u = KeyPair::new_user();
        let j = jwt::user(
            &self.system,
            &self.system.public_key(),
            &u.public_key(),
            "outpost-fleet-sys",
            &jwt::Permissions::default(),
        );
        outpost_protocol::files::nats_creds(&j, &u.seed().expect("new key has a seed"))
    }

    /// A sensor's user JWT for its own public key: publish only under
    /// `fleet.in.<sensor>`, subscribe only under `fleet.sensor.<sensor>`
    /// and its own inbox.
    pub fn sensor_jwt(&self, sensor: &str, public_key: &str) -> String {
        use outpost_protocol::fleet as f;
        let perms = jwt::Permissions {
            publish: vec![format!("{}.>", f::sensor_in(sensor))],
            subscribe: vec![
                format!("{}.>", f::sensor_out(sensor)),
                format!("{}.>", f::inbox_prefix(sensor)),
            ],
        };
        jwt::user(
            &self.signing,
            &self.account.public_key(),
            public_key,
            sensor,
            &perms,
        )
    }
}

fn seed(dir: &Path, name: &str, prefix: char, make: fn() -> KeyPair) -> Result<KeyPair, KeyError> {
    let path = dir.join(format!("{name}.nk"));
    match fs::read_to_string(&path) {
        Ok(text) => {
            let kp = KeyPair::from_seed(text.trim()).map_err(|e| KeyError::Bad {
                path: path.clone(),
                why: e.to_string(),
            })?;
            if !kp.public_key().starts_with(prefix) {
                return Err(KeyError::Bad {
                    path,
                    why: format!("its public key does not start with {prefix}"),
                });
            }
            Ok(kp)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = make();
            crate::tls::write_private(&path, kp.seed().expect("seed").as_bytes()).map_err(|e| {
                KeyError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            Ok(kp)
        }
        Err(source) => Err(KeyError::Io { path, source }),
    }
}
