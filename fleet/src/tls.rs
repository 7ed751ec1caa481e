//! The fleet's TLS: a private certificate authority and one server
//! certificate it signs, used by the hub (NATS) and the HTTPS API alike.
//! Generated into the state directory on first run unless given.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// Where the certificate files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the fleet's certificates: {0}")]
    Make(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate in it (fix: give a PEM file)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key in it (fix: give a PEM key file)")]
    NoKey { path: PathBuf },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl TlsFiles {
    /// The generated files under `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// Makes a CA and a server certificate for `names` (DNS names or IP
    /// addresses) into `dir`, unless they are there already.
    pub fn ensure(dir: &Path, names: &[String]) -> Result<TlsFiles, TlsError> {
        let files = TlsFiles::in_dir(dir);
        if files.ca.exists() && files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let make = |e: rcgen::Error| TlsError::Make(e.to_string());
        let ca_key = KeyPair::generate().map_err(make)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(make)?;
        ca.distinguished_name
            .push(DnType::CommonName, "outpost fleet CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(make)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(make)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(make)?;
        p.distinguished_name
            .push(DnType::CommonName, "outpost fleet");
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into().map_err(make)?),
                });
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuer).map_err(make)?;

        write_private(&files.key, key.serialize_pem().as_bytes())?;
        fs::write(&files.cert, format!("{}{}", cert.pem(), ca_cert.pem()))
            .map_err(io(&files.cert))?;
        fs::write(&files.ca, ca_cert.pem()).map_err(io(&files.ca))?;
        Ok(files)
    }

    /// The sha256 pin of the server certificate (`sha256:…`), which an
    /// operator hands to a sensor with its enrollment token.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        let chain = self.chain()?;
        Ok(pin_of(chain[0].as_ref()))
    }

    fn chain(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
        let pem = fs::read(&self.cert).map_err(io(&self.cert))?;
        let certs: Vec<_> = rustls_pemfile_certs(&pem);
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        Ok(certs)
    }

    /// The HTTPS server's rustls configuration (TLS 1.2 and 1.3 only).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|_| TlsError::NoKey {
            path: self.key.clone(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain()?, key)?;
        Ok(Arc::new(cfg))
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn pin_of(der: &[u8]) -> String {
    outpost_protocol::pin::show_pin(&Sha256::digest(der).into())
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    outpost_protocol::files::write_private(path, bytes).map_err(io(path))
}
