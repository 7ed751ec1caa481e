//! nkey identities: one per instrument and one for the platform.
//!
//! The seed (the secret) is a file, mode 0600, under `<state>/secrets/`;
//! nats-server's config holds only public keys. The instrument gets its
//! seed bind-mounted read-only at `/.outpost/nats.nkey`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

/// Key store failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("nkey file {path}: {detail}")]
    File { path: PathBuf, detail: String },
}

/// Seeds under one directory.
#[derive(Debug, Clone)]
pub struct Keys {
    dir: PathBuf,
}

impl Keys {
    pub fn new(dir: &Path) -> Keys {
        Keys {
            dir: dir.to_path_buf(),
        }
    }

    /// The seed file of `name`.
    pub fn seed_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.nkey"))
    }

    /// The public key of `name`, creating its identity on first use.
    pub fn ensure(&self, name: &str) -> Result<String, KeyError> {
        let path = self.seed_path(name);
        let err = |detail: String| KeyError::File {
            path: path.clone(),
            detail,
        };
        if let Ok(seed) = fs::read_to_string(&path) {
            let kp =
                KeyPair::from_seed(seed.trim()).map_err(|e| err(format!("invalid seed: {e}")))?;
            return Ok(kp.public_key());
        }
        fs::create_dir_all(&self.dir).map_err(|e| err(e.to_string()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
        let kp = KeyPair::new_user();
        let seed = kp.seed().map_err(|e| err(e.to_string()))?;
        outpost_protocol::files::write_private(&path, seed.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        Ok(kp.public_key())
    }

    /// Forgets `name`'s identity.
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.seed_path(name));
    }

    /// The seed of `name`, for connecting as it.
    pub fn seed(&self, name: &str) -> Result<String, KeyError> {
        let path = self.seed_path(name);
        fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| KeyError::File {
                path,
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_and_private() {
        let d = tempfile::tempdir().unwrap();
        let keys = Keys::new(&d.path().join("secrets"));
        let a = keys.ensure("beacon").unwrap();
        assert!(a.starts_with('U'));
        assert_eq!(keys.ensure("beacon").unwrap(), a, "stable across calls");
        assert_ne!(keys.ensure("ids").unwrap(), a);
        let mode = fs::metadata(keys.seed_path("beacon"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keys.seed("beacon").unwrap().starts_with("SU"));
        keys.remove("beacon");
        assert!(keys.seed("beacon").is_err());
    }
}
