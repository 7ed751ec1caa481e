//! Home's TLS certificate for HTTPS canaries: given as PEM files, or made
//! once (self-signed) and kept in those files, so that its pin, which
//! every probe is configured with, survives restarts.
//!
//! The probe trusts no CA: it pins the sha256 of this certificate, as
//! [`pin_of`] computes it and `beacon-home` prints it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// A server config and the pin of its certificate.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub pin: [u8; 32],
    /// Whether the pair was made (and written) just now.
    pub made: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM {what} ({detail})", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "only one of the certificate {} and the key {} exists: give both, or neither to have \
         beacon-home make a self-signed pair there",
        cert.display(),
        key.display()
    )]
    Half { cert: PathBuf, key: PathBuf },
    #[error("cannot make a self-signed certificate: {0}")]
    Make(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate and key are not usable together: {0}")]
    Config(#[from] rustls::Error),
}

/// The sha256 of a certificate (DER): what the probe's `pin` holds.
pub fn pin_of(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// A server config presenting `cert`.
pub fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

/// A new self-signed certificate for `names` (IP addresses or DNS
/// names), with its PKCS#8 key.
pub fn self_signed(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let mut names = names.to_vec();
    names.push("beacon-home".into());
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Make(e.to_string()))?;
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    Ok((ck.cert.der().clone(), key.into()))
}

/// The pair at `cert` and `key`, or, when neither exists, a self-signed
/// one for `names` written there (the key 0600).
pub fn load_or_make(cert: &Path, key: &Path, names: &[String]) -> Result<Tls, TlsError> {
    let (made, c, k) = match (cert.exists(), key.exists()) {
        (true, true) => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|source| TlsError::Read {
                    path: p.into(),
                    source,
                })
            };
            let c = CertificateDer::from_pem_slice(&read(cert)?).map_err(|e| TlsError::Pem {
                path: cert.into(),
                what: "certificate",
                detail: e.to_string(),
            })?;
            let k = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
                path: key.into(),
                what: "private key",
                detail: e.to_string(),
            })?;
            (false, c, k)
        }
        (false, false) => {
            let (c, k) = self_signed(names)?;
            write_pem(key, "PRIVATE KEY", k.secret_der(), 0o600)?;
            write_pem(cert, "CERTIFICATE", c.as_ref(), 0o644)?;
            (true, c, k)
        }
        _ => {
            return Err(TlsError::Half {
                cert: cert.into(),
                key: key.into(),
            });
        }
    };
    let pin = pin_of(&c);
    Ok(Tls {
        config: server_config(c, k)?,
        pin,
        made,
    })
}

/// Writes `der` as PEM to a new file at `path` with `mode`.
fn write_pem(path: &Path, label: &str, der: &[u8], mode: u32) -> Result<(), TlsError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    let err = |source| TlsError::Write {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(pem.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_pair_is_kept_and_its_pin_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("home.crt"), dir.path().join("home.key"));
        let first = load_or_make(&c, &k, &["127.0.0.1".into()]).unwrap();
        assert!(first.made);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is readable by others");
        let again = load_or_make(&c, &k, &["127.0.0.1".into()]).unwrap();
        assert!(!again.made);
        assert_eq!(again.pin, first.pin);
        // Half a pair is refused with both paths named.
        std::fs::remove_file(&k).unwrap();
        let e = load_or_make(&c, &k, &[]).err().unwrap().to_string();
        assert!(e.contains("home.crt") && e.contains("home.key"), "{e}");
        // Not PEM: named.
        std::fs::write(&k, "garbage").unwrap();
        let e = load_or_make(&c, &k, &[]).err().unwrap().to_string();
        assert!(e.contains("no PEM private key"), "{e}");
    }
}
