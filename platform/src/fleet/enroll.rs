//! Enrollment: the sensor makes its own key pair, trades a one-time token
//! and its public key for hub credentials at the fleet's API (whose
//! certificate it pins), and keeps them in `<state>/fleet/`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::files::write_private;
use outpost_protocol::fleet::{EnrollRequest, EnrollResponse, sensor_name_problem};
use outpost_protocol::pin::{PinVerifier, parse_pin};

use super::{LinkConfig, LinkFiles};
use crate::db::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Input(String),
    #[error(
        "this sensor is enrolled already, as {sensor} at {fleet} (fix: `outpostctl fleet leave` first to enroll elsewhere)"
    )]
    Already { sensor: String, fleet: String },
    #[error(
        "the fleet at {url} presented certificate {seen}, not the {pinned} you gave; nothing was sent (fix: check the fingerprint with the fleet's operator)"
    )]
    PinMismatch {
        url: String,
        seen: String,
        pinned: String,
    },
    #[error("cannot reach the fleet at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the fleet refused the enrollment ({status}): {why}")]
    Refused { status: u16, why: String },
    #[error("the fleet's answer is not usable: {0}")]
    BadAnswer(String),
    #[error("cannot store the fleet credentials in {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Enrolls this sensor (state in `state_root`) at the fleet at `url`.
pub async fn enroll(
    state_root: &Path,
    url: &str,
    token: &str,
    fingerprint: &str,
) -> Result<LinkConfig, EnrollError> {
    let files = LinkFiles::new(state_root);
    if let Ok(Some(c)) = files.load() {
        return Err(EnrollError::Already {
            sensor: c.sensor,
            fleet: c.fleet_url,
        });
    }
    let base = url.trim().trim_end_matches('/').to_string();
    if !base.starts_with("https://") {
        return Err(EnrollError::Input(format!(
            "fleet URL {base:?} is not https:// (fix: give the fleet's API URL, e.g. https://fleet.example:8443)"
        )));
    }
    let pin = parse_pin(fingerprint).ok_or_else(|| {
        EnrollError::Input(format!(
            "fingerprint {fingerprint:?} is not a sha256 pin (fix: copy the sha256:… that `outpost-fleet sensor add` printed)"
        ))
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(EnrollError::Input(
            "the enrollment token is empty (fix: pass --token from `outpost-fleet sensor add`)"
                .into(),
        ));
    }
    let key = nkeys::KeyPair::new_user();
    let verifier = Arc::new(PinVerifier::new(pin));
    let tls = rustls::ClientConfig::builder_with_provider(verifier.provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| EnrollError::Input(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| EnrollError::Input(e.to_string()))?;
    let req = EnrollRequest {
        token: token.to_string(),
        public_key: key.public_key(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let resp = http
        .post(format!("{base}/api/v1/enroll"))
        .json(&req)
        .send()
        .await
        .map_err(|e| match verifier.mismatch() {
            Some(seen) => EnrollError::PinMismatch {
                url: base.clone(),
                seen,
                pinned: outpost_protocol::pin::show_pin(&pin),
            },
            None => EnrollError::Unreachable {
                url: base.clone(),
                why: error_chain(&e),
            },
        })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| EnrollError::Unreachable {
        url: base.clone(),
        why: e.to_string(),
    })?;
    if !status.is_success() {
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        return Err(EnrollError::Refused {
            status: status.as_u16(),
            why,
        });
    }
    let answer: EnrollResponse =
        serde_json::from_slice(&body).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    check(&answer, &key.public_key())?;
    let cfg = LinkConfig {
        sensor: answer.sensor.clone(),
        fleet_url: base,
        fingerprint: outpost_protocol::pin::show_pin(&pin),
        hub_urls: answer.hub_urls.clone(),
        heartbeat_every: answer.heartbeat_every,
        enrolled_at_ms: now_ms(),
    };
    store(&files, &cfg, &answer, &key)?;
    Ok(cfg)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The fleet's answer is checked before anything is stored: a sensor
/// name we can use, hub URLs over TLS, a JWT for our own key, a CA.
fn check(a: &EnrollResponse, our_key: &str) -> Result<(), EnrollError> {
    let bad = |s: String| Err(EnrollError::BadAnswer(s));
    if let Some(p) = sensor_name_problem(&a.sensor) {
        return bad(format!("sensor name {p}"));
    }
    if a.hub_urls.is_empty() || a.hub_urls.iter().any(|u| !u.starts_with("tls://")) {
        return bad(format!("hub URLs {:?} are not all tls://", a.hub_urls));
    }
    let claims = a
        .user_jwt
        .split('.')
        .nth(1)
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match claims {
        Some(c) if c["sub"] == our_key => {}
        _ => return bad("the user JWT is not for this sensor's key".into()),
    }
    if !a.hub_ca_pem.contains("BEGIN CERTIFICATE") {
        return bad("no hub CA certificate".into());
    }
    if a.heartbeat_every < Duration::from_secs(1) {
        return bad(format!("heartbeat every {:?}", a.heartbeat_every));
    }
    Ok(())
}

fn store(
    files: &LinkFiles,
    cfg: &LinkConfig,
    a: &EnrollResponse,
    key: &nkeys::KeyPair,
) -> Result<(), EnrollError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EnrollError::Store { path, source }
    };
    crate::paths::create_private_dir(&files.dir).map_err(err(&files.dir))?;
    let seed = key.seed().map_err(|e| EnrollError::Store {
        path: files.creds(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let creds = outpost_protocol::files::nats_creds(&a.user_jwt, &seed);
    write_private(&files.creds(), creds.as_bytes()).map_err(err(&files.creds()))?;
    write_private(&files.ca(), a.hub_ca_pem.as_bytes()).map_err(err(&files.ca()))?;
    let json = serde_json::to_vec_pretty(cfg).expect("serializes");
    // Last: the commit point of the enrollment.
    write_private(&files.config(), &json).map_err(err(&files.config()))
}
