//! Certificate pins: a certificate named by the sha256 of its DER bytes
//! (`sha256:<hex>`), as the beacon pins its home and a sensor pins its
//! fleet at enrollment.

/// `s` as a sha256 pin: 64 hex digits, after an optional "sha256:" and
/// with ':' between bytes allowed (as openssl prints fingerprints).
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .or_else(|| t.strip_prefix("sha256 Fingerprint="))
        .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(hex.to_ascii_lowercase(), &mut pin).ok()?;
    Some(pin)
}

/// How a pin is shown: "sha256:<hex>".
pub fn show_pin(pin: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(pin))
}

#[cfg(feature = "tls")]
mod verifier {
    use std::sync::{Arc, Mutex};

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use sha2::{Digest, Sha256};

    use super::show_pin;

    /// Accepts exactly the certificate whose sha256 is the pin, and remembers
    /// the one it saw otherwise. Handshake signatures are still verified, so a
    /// middlebox that replays home's certificate without its key fails.
    #[derive(Debug)]
    pub struct PinVerifier {
        pin: [u8; 32],
        seen: Mutex<Option<String>>,
        provider: Arc<CryptoProvider>,
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl PinVerifier {
        pub fn new(pin: [u8; 32]) -> PinVerifier {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            PinVerifier {
                pin,
                seen: Mutex::new(None),
                algorithms: provider.signature_verification_algorithms,
                provider,
            }
        }

        /// The crypto provider the verifier checks signatures with; build
        /// the client configuration on the same one.
        pub fn provider(&self) -> Arc<CryptoProvider> {
            self.provider.clone()
        }

        /// The fingerprint of a certificate that did not match, if one came.
        pub fn mismatch(&self) -> Option<String> {
            self.seen.lock().expect("lock").clone()
        }
    }

    impl ServerCertVerifier for PinVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if got == self.pin {
                Ok(ServerCertVerified::assertion())
            } else {
                *self.seen.lock().expect("lock") = Some(show_pin(&got));
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }
}

#[cfg(feature = "tls")]
pub use verifier::PinVerifier;

/// Makes ring the process's rustls crypto provider unless one is set.
/// reqwest, built with rustls and no provider of its own (as this
/// workspace builds it, for the fleet), needs one for every client it
/// builds, even one that only speaks plain HTTP.
#[cfg(feature = "tls")]
pub fn use_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_reads_in_our_form_and_in_openssls() {
        let p = [0xabu8; 32];
        let ours = show_pin(&p);
        assert!(ours.starts_with("sha256:abab"));
        assert_eq!(parse_pin(&ours), Some(p));
        let openssl = format!("SHA256 Fingerprint={}", vec!["AB"; 32].join(":"));
        assert_eq!(parse_pin(&openssl), Some(p));
        assert_eq!(parse_pin("sha256:abc"), None);
    }
}
