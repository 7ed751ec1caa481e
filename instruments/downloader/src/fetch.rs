//! HTTP for the downloader: rustls with the system's roots (plus an
//! optional CA), no proxy from the environment, redirects only within the
//! resource's origin (or to origins it allows), conditional GET, a cap on
//! the size enforced while the body streams, a total timeout and a
//! minimum transfer rate (slow retrieval).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, Resource, origin_of};
use crate::verify::Refusal;

/// Why a fetch did not bring a body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server or what it sent is refused for good reason.
    #[error("{0}")]
    Refused(Refusal),
    /// The network, the server's status, the local disk: try again later.
    #[error("{0}")]
    Failed(String),
}

/// What a previous answer said, for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A body written to a file.
#[derive(Debug)]
pub struct Body {
    pub sha256: String,
    pub length: u64,
    pub validators: Validators,
}

/// A redirect the policy refused (found again in the error's sources).
#[derive(Debug)]
struct RedirectRefused {
    to: String,
    origin: String,
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect to {} refused", self.to)
    }
}

impl std::error::Error for RedirectRefused {}

/// An HTTP client for one resource.
pub struct Client {
    http: reqwest::Client,
    /// The minimum rate applies after this long.
    pub grace: Duration,
    min_rate: u64,
    timeout: Duration,
}

impl Client {
    pub fn new(cfg: &Config, r: &Resource) -> Result<Client, String> {
        let origin = origin_of(&r.url).ok_or_else(|| format!("{}: not an http(s) URL", r.url))?;
        let allowed: Vec<String> = r
            .allow_redirects_to
            .iter()
            .filter_map(|o| origin_of(o))
            .collect();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let to = origin_of(attempt.url().as_str()).unwrap_or_default();
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if to == origin || allowed.contains(&to) {
                attempt.follow()
            } else {
                let refused = RedirectRefused {
                    to: attempt.url().to_string(),
                    origin: origin.clone(),
                };
                attempt.error(refused)
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(pem) = &cfg.extra_ca {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| format!("extra-ca: {e}"))?;
                roots.add(c).map_err(|e| format!("extra-ca: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(policy)
            .connect_timeout(Duration::from_secs(15))
            .no_proxy()
            .user_agent(concat!("outpost-downloader/", env!("CARGO_PKG_VERSION")));
        if let Some(p) = &cfg.proxy {
            b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy {p:?}: {e}"))?);
        }
        Ok(Client {
            http: b.build().map_err(|e| e.to_string())?,
            grace: Duration::from_secs(10),
            min_rate: r.min_rate,
            timeout: r.timeout,
        })
    }

    fn failed(url: &str, e: reqwest::Error) -> FetchError {
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if let Some(r) = s.downcast_ref::<RedirectRefused>() {
                return FetchError::Refused(Refusal::Redirect {
                    to: r.to.clone(),
                    origin: r.origin.clone(),
                });
            }
            src = s.source();
        }
        FetchError::Failed(format!("{url}: {e}"))
    }

    /// A small document (metadata, a signature) into memory, unless it
    /// did not change since `validators` (then `None`).
    pub async fn small(
        &self,
        url: &str,
        limit: u64,
        validators: Option<&Validators>,
    ) -> Result<Option<(Vec<u8>, Validators)>, FetchError> {
        let r = conditional(self.http.get(url), validators)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| Self::failed(url, e))?;
        if r.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let validators = validators_of(&r);
        if !r.status().is_success() {
            return Err(FetchError::Failed(format!("{url}: HTTP {}", r.status())));
        }
        let mut out = Vec::new();
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Self::failed(url, e))?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > limit {
                return Err(FetchError::Refused(Refusal::TooLarge { limit }));
            }
        }
        Ok(Some((out, validators)))
    }

    /// The body of `url` into `dest`, unless it did not change since
    /// `validators` (then `None`). At most `limit` bytes.
    pub async fn to_file(
        &self,
        url: &str,
        validators: Option<&Validators>,
        limit: u64,
        dest: &Path,
    ) -> Result<Option<Body>, FetchError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let req = conditional(self.http.get(url), validators);
        let r = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| FetchError::Failed(format!("{url}: no answer within {:?}", self.timeout)))?
            .map_err(|e| Self::failed(url, e))?;
        if r.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(FetchError::Failed(format!("{url}: HTTP {}", r.status())));
        }
        if let Some(n) = r.content_length()
            && n > limit
        {
            return Err(FetchError::Refused(Refusal::TooLarge { limit }));
        }
        let validators = validators_of(&r);
        let io = |e: std::io::Error| FetchError::Failed(format!("{}: {e}", dest.display()));
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hash = Sha256::new();
        let mut length = 0u64;
        let mut body = r.bytes_stream();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                chunk = body.next() => {
                    let Some(chunk) = chunk else { break };
                    let chunk = chunk.map_err(|e| Self::failed(url, e))?;
                    length += chunk.len() as u64;
                    if length > limit {
                        return Err(FetchError::Refused(Refusal::TooLarge { limit }));
                    }
                    hash.update(&chunk);
                    file.write_all(&chunk).await.map_err(io)?;
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let elapsed = now - start;
            if elapsed > self.grace {
                let rate = length as f64 / elapsed.as_secs_f64();
                if rate < self.min_rate as f64 {
                    return Err(FetchError::Refused(Refusal::TooSlow {
                        min_rate: self.min_rate,
                        rate,
                        secs: elapsed.as_secs(),
                    }));
                }
            }
            if now > deadline {
                return Err(FetchError::Failed(format!(
                    "{url}: not done within {:?}",
                    self.timeout
                )));
            }
        }
        file.sync_all().await.map_err(io)?;
        Ok(Some(Body {
            sha256: hex::encode(hash.finalize()),
            length,
            validators,
        }))
    }
}

fn conditional(
    mut req: reqwest::RequestBuilder,
    validators: Option<&Validators>,
) -> reqwest::RequestBuilder {
    if let Some(v) = validators {
        if let Some(e) = &v.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        if let Some(m) = &v.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
        }
    }
    req
}

fn validators_of(r: &reqwest::Response) -> Validators {
    let header = |h: reqwest::header::HeaderName| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    }
}
